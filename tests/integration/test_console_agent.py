"""The agents' console API and websocket, in-process over real HTTP, on both databases.

The hub's whole aiohttp app runs (create_web_app) without its outbox worker and scheduler;
tests drive the outbox themselves where delivery matters. Conversations are put in the
queue the way the bot does it (bot.handoff.queue). Rasa is down unless a test serves a
tracker, as the console must work without it.
"""
from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from bot import handoff
from bot.accounts import create_account
from bot.app import App, utc_now
from bot.community import load_community
from bot.console.agent_service import RETURN_TEXT
from bot.conversations import find_or_create_resident, record_inbound
from bot.db import make_session_factory, session_scope
from bot.models import (
    Account,
    AuditEntry,
    CallbackTask,
    Conversation,
    Message,
    OutboxMessage,
    Resident,
    Ticket,
    WebSession,
    WorkOrder,
)
from bot.settings import Settings
from bot.web import create_web_app
from bot.webkeys import BUS, OUTBOX
from tests.loopback import free_port

pytestmark = pytest.mark.integration

PASSWORD = "linli-test-2026"
API = "/console/api/agent"


@dataclass
class Agent:
    """A signed-in console user; sends its own cookie and CSRF token."""

    client: TestClient
    token: str
    csrf: str
    account_id: int
    display_name: str

    def headers(self, csrf: bool = True) -> dict[str, str]:
        headers = {"Cookie": f"linli_session={self.token}"}
        if csrf:
            headers["X-CSRF-Token"] = self.csrf
        return headers

    async def get(self, path: str) -> tuple[int, Any]:
        response = await self.client.get(path, headers=self.headers(False))
        return response.status, await response.json(content_type=None)

    async def post(self, path: str, body: Any = None, *, csrf: bool = True) -> tuple[int, Any]:
        response = await self.client.post(path, json=body or {}, headers=self.headers(csrf))
        return response.status, await response.json(content_type=None)


@dataclass
class Console:
    client: TestClient
    server: web.Application
    sessions: sessionmaker

    def account(self, username: str, role: str = "agent", name: str | None = None) -> int:
        with session_scope(self.sessions) as session:
            account = create_account(session, username=username, password=PASSWORD, role=role,
                                     display_name=name or username, now=utc_now(),
                                     department="property" if role == "staff" else None)
            session.flush()
            return account.id

    async def login(self, username: str, role: str = "agent", name: str | None = None) -> Agent:
        account_id = self.account(username, role, name)
        response = await self.client.post("/console/api/login",
                                          json={"username": username, "password": PASSWORD})
        body = await response.json()
        assert response.status == 200, body
        token = response.cookies["linli_session"].value
        self.client.session.cookie_jar.clear()  # each Agent sends its own cookie
        return Agent(self.client, token, body["csrf_token"], account_id, body["display_name"])

    def queued(self, channel: str = "sms", sender: str = "13800001111", text: str = "转人工",
               reason: str = "asked", minutes_ago: float = 0) -> int:
        """A conversation the bot has handed to the queue, as bot.handoff does it."""
        now = utc_now() - timedelta(minutes=minutes_ago)
        with session_scope(self.sessions) as session:
            resident = None
            if channel in ("sms", "voice"):
                resident = find_or_create_resident(session, now=now, phone=sender)
            elif channel == "wechat":
                resident = find_or_create_resident(session, now=now, wechat_openid=sender)
            message, _ = record_inbound(session, channel=channel, sender_key=sender, text=text,
                                        now=now, resident=resident)
            conversation = session.get(Conversation, message.conversation_id)
            handoff.queue(session, conversation=conversation, reason=reason, now=now)
            return conversation.id

    def rows(self, model: Any, **where: Any) -> list[Any]:
        with self.sessions() as session:
            query = select(model).order_by(model.id)
            for name, value in where.items():
                query = query.where(getattr(model, name) == value)
            return list(session.scalars(query))

    def conversation(self, conversation_id: int) -> Conversation:
        with self.sessions() as session:
            return session.get(Conversation, conversation_id)

    def actions(self, conversation_id: int) -> list[str]:
        return [e.action for e in self.rows(AuditEntry, conversation_id=conversation_id)]


async def start_console(db_engine: Engine, sessions: sessionmaker, catalogue: Any, roster: Any,
                        rasa_url: str | None = None) -> Console:
    # Nothing listens on a fresh free port: Rasa is down unless a test serves a tracker.
    settings = Settings(rasa_url=rasa_url or f"http://127.0.0.1:{free_port()}")
    app = App(settings=settings, engine=db_engine, sessions=sessions, catalogue=catalogue,
              community=load_community(), roster=roster)
    server = create_web_app(app, with_scheduler=False, with_outbox=False)
    client = TestClient(TestServer(server, host="127.0.0.1"))
    await client.start_server()
    return Console(client, server, sessions)


@pytest.fixture
async def console(db_engine: Engine, db_session_factory: sessionmaker, catalogue: Any,
                  roster: Any) -> AsyncIterator[Console]:
    running = await start_console(db_engine, db_session_factory, catalogue, roster)
    yield running
    await running.client.close()


# --- access --------------------------------------------------------------------------------


async def test_login_serves_the_page_and_the_queue(console: Console) -> None:
    page = await console.client.get("/console/agent")
    assert page.status == 200 and "人工客服" in await page.text()
    agent = await console.login("wang", name="王小梅")
    status, body = await agent.get(API + "/queue")
    assert status == 200 and body == {"conversations": []}
    status, options = await agent.get(API + "/options")
    assert status == 200
    assert 8 <= len(options["canned"]) <= 12
    assert any("王小梅" in reply["text"] for reply in options["canned"])
    assert {"id": "water_leak", "name": "漏水"}["id"] in [c["id"] for c in options["categories"]]


async def test_without_a_session_every_endpoint_answers_401(console: Console) -> None:
    conversation_id = console.queued()
    for method, path in (("GET", "/queue"), ("GET", "/mine"),
                         ("GET", f"/conversations/{conversation_id}"),
                         ("POST", f"/conversations/{conversation_id}/claim")):
        response = await console.client.request(method, API + path, json={})
        assert response.status == 401, path
        assert "登录" in (await response.json())["error"]
    response = await console.client.get(API + "/queue",
                                        headers={"Cookie": "linli_session=forged-token"})
    assert response.status == 401
    ws = await console.client.ws_connect("/console/ws")
    frame = await ws.receive()
    assert frame.type == WSMsgType.CLOSE and frame.data == 4401
    assert console.conversation(conversation_id).state == "queued"


async def test_staff_may_not_use_the_agent_console(console: Console) -> None:
    conversation_id = console.queued()
    staff = await console.login("li-staff", role="staff")
    assert (await staff.get(API + "/queue"))[0] == 403
    status, body = await staff.post(API + f"/conversations/{conversation_id}/claim")
    assert status == 403 and "权限" in body["error"]
    assert console.conversation(conversation_id).state == "queued"


async def test_a_post_without_the_csrf_token_is_refused(console: Console) -> None:
    conversation_id = console.queued()
    agent = await console.login("zhao")
    status, body = await agent.post(API + f"/conversations/{conversation_id}/claim", csrf=False)
    assert status == 403 and "刷新" in body["error"]
    assert console.conversation(conversation_id).state == "queued"
    assert "claim" not in console.actions(conversation_id)


@pytest.mark.parametrize("path", ["/conversations/999999", "/conversations/abc",
                                  "/conversations/99999999999999999999",
                                  "/conversations/999999/claim"])
async def test_a_tampered_conversation_id_is_404(console: Console, path: str) -> None:
    agent = await console.login("qian")
    if path.endswith("/claim"):
        status, body = await agent.post(API + path)
    else:
        status, body = await agent.get(API + path)
    assert status == 404 and "找不到" in body["error"]


# --- the queue -----------------------------------------------------------------------------


async def test_queue_is_ordered_by_urgency_then_wait_in_chinese(console: Console) -> None:
    asked = console.queued(sender="13800000001", text="我要找人", minutes_ago=12)
    fallback = console.queued(sender="13800000002", reason="fallback", minutes_ago=20)
    danger = console.queued(channel="web", sender="web-abc", text="电梯里困人了！",
                            reason="life_safety", minutes_ago=1)
    agent = await console.login("sun")
    status, body = await agent.get(API + "/queue")
    assert status == 200
    rows = body["conversations"]
    assert [row["id"] for row in rows] == [danger, fallback, asked]
    assert [row["reason_label"] for row in rows] == ["生命安全", "机器人没听懂", "主动要求"]
    assert [row["channel_label"] for row in rows] == ["网页", "短信", "短信"]
    assert rows[0]["last_message"] == "电梯里困人了！"
    assert rows[2]["wait_text"] == "已等12分钟"
    assert rows[2]["resident"] == "138****0001"  # masked in the shared queue


# --- claim ---------------------------------------------------------------------------------


async def test_two_agents_claiming_at_once_exactly_one_wins(
        db_engine: Engine, catalogue: Any, roster: Any) -> None:
    # Real commits on a real engine: two transactions must truly race.
    sessions = make_session_factory(db_engine)
    console = await start_console(db_engine, sessions, catalogue, roster)
    suffix = str(free_port())
    try:
        conversation_id = console.queued(sender="1390000" + suffix[-4:])
        first = await console.login(f"race-a-{suffix}", name="甲客服")
        second = await console.login(f"race-b-{suffix}", name="乙客服")
        path = API + f"/conversations/{conversation_id}/claim"
        results = await asyncio.gather(first.post(path), second.post(path))
        statuses = sorted(status for status, _ in results)
        assert statuses == [200, 409], results
        winner = first if results[0][0] == 200 else second
        loser_body = results[1][1] if winner is first else results[0][1]
        assert loser_body["error"] == f"已被{winner.display_name}接手。"
        stored = console.conversation(conversation_id)
        assert (stored.state, stored.agent_id) == ("agent", winner.account_id)
        assert sorted(console.actions(conversation_id)) == ["claim", "claim_refused"]
    finally:
        await console.client.close()
        with session_scope(sessions) as session:
            accounts = list(session.scalars(
                select(Account.id).where(Account.username.like(f"race-%-{suffix}"))))
            resident_id = session.get(Conversation, conversation_id).resident_id
            for statement in (
                    delete(AuditEntry).where(AuditEntry.account_id.in_(accounts)),
                    delete(AuditEntry).where(AuditEntry.conversation_id == conversation_id),
                    delete(WebSession).where(WebSession.account_id.in_(accounts)),
                    delete(Message).where(Message.conversation_id == conversation_id),
                    delete(Conversation).where(Conversation.id == conversation_id),
                    delete(Resident).where(Resident.id == resident_id),
                    delete(Account).where(Account.id.in_(accounts))):
                session.execute(statement.execution_options(synchronize_session=False))


@pytest.mark.parametrize(("state", "message"), [
    ("bot", "这个会话已交还智能助手，不在排队中了。"),
    ("closed", "居民已离开，这个会话已结束。"),  # the resident left while queued
])
async def test_claiming_a_conversation_no_longer_queued_is_409(console: Console, state: str,
                                                               message: str) -> None:
    conversation_id = console.queued()
    agent = await console.login("zhou")
    with session_scope(console.sessions) as session:
        session.get(Conversation, conversation_id).state = state
    status, body = await agent.post(API + f"/conversations/{conversation_id}/claim")
    assert (status, body["error"]) == (409, message)
    assert console.conversation(conversation_id).agent_id is None


# --- reply ---------------------------------------------------------------------------------


async def test_a_reply_to_a_conversation_another_agent_owns_is_409_and_nothing_is_sent(
        console: Console) -> None:
    conversation_id = console.queued()
    owner = await console.login("wu", name="吴客服")
    other = await console.login("zheng")
    assert (await owner.post(API + f"/conversations/{conversation_id}/claim"))[0] == 200
    status, body = await other.post(API + f"/conversations/{conversation_id}/reply",
                                    {"text": "我来回答"})
    assert status == 409 and "吴客服" in body["error"]
    assert console.rows(Message, conversation_id=conversation_id, direction="out") == []
    assert console.rows(OutboxMessage, conversation_id=conversation_id) == []
    assert "reply_refused" in console.actions(conversation_id)
    # Not claimed at all: also refused.
    queued = console.queued(sender="13800002222")
    status, body = await other.post(API + f"/conversations/{queued}/reply", {"text": "你好"})
    assert status == 409 and "认领" in body["error"]


@pytest.mark.parametrize(("channel", "sender", "address"), [
    ("web", "web-resident-1", "web-resident-1"),
    ("sms", "13800003333", "13800003333"),
    ("wechat", "oOPENID-resident-1", "oOPENID-resident-1"),
])
async def test_a_reply_is_stored_and_queued_for_the_residents_own_channel(
        console: Console, channel: str, sender: str, address: str) -> None:
    conversation_id = console.queued(channel=channel, sender=sender)
    agent = await console.login("feng", name="冯客服")
    assert (await agent.post(API + f"/conversations/{conversation_id}/claim"))[0] == 200
    text = "您好，我是冯客服，马上帮您处理。"
    status, body = await agent.post(API + f"/conversations/{conversation_id}/reply",
                                    {"text": text})
    assert status == 200, body
    [message] = console.rows(Message, conversation_id=conversation_id, direction="out")
    assert (message.channel, message.text, message.payload) == (
        channel, text, {"agent": agent.account_id})
    [queued] = console.rows(OutboxMessage, conversation_id=conversation_id)
    assert (queued.channel, queued.address, queued.text, queued.kind, queued.status) == (
        channel, address, text, "reply", "pending")
    assert console.actions(conversation_id)[-1] == "reply"
    status, detail = await agent.get(API + f"/conversations/{conversation_id}")
    assert [(m["by"], m["agent_name"]) for m in detail["messages"]][-1] == ("agent", "冯客服")


async def test_a_web_reply_reaches_the_residents_open_chat(console: Console) -> None:
    conversation_id = console.queued(channel="web", sender="web-sid-42")
    agent = await console.login("chen", name="陈客服")
    await agent.post(API + f"/conversations/{conversation_id}/claim")
    resident = await console.client.ws_connect("/ws?sid=sid-42")
    await asyncio.sleep(0.2)  # the socket's own catch-up pass runs first
    status, typing = await agent.post(API + f"/conversations/{conversation_id}/typing")
    assert status == 200 and typing == {"sent": True}
    assert await resident.receive_json(timeout=5) == {"type": "typing", "name": "陈客服"}
    await agent.post(API + f"/conversations/{conversation_id}/reply", {"text": "您好，请讲。"})
    assert await console.server[OUTBOX].run_once() == 1
    assert await resident.receive_json(timeout=5) == {"type": "update", "text": "您好，请讲。"}
    [sent] = console.rows(OutboxMessage, conversation_id=conversation_id)
    assert sent.status == "sent"
    await resident.close()


class BridgeFailed(RuntimeError):
    chinese = "电话线路暂时连不上，请稍后再试。"


def fake_bridge(monkeypatch: pytest.MonkeyPatch, behaviour: str) -> list[tuple[Any, ...]]:
    """Stand in for bot.console.voice_bridge: missing, speaking, failing or transferring."""
    calls: list[tuple[Any, ...]] = []
    if behaviour == "missing":
        monkeypatch.setitem(sys.modules, "bot.console.voice_bridge", None)
        return calls
    fake = types.ModuleType("bot.console.voice_bridge")

    async def speak(app: Any, conversation: Conversation, text: str) -> str:
        calls.append(("speak", conversation.id, text))
        if behaviour == "fails":
            raise BridgeFailed("twilio unreachable")
        return "spoken"

    async def transfer_call(app: Any, conversation: int, phone: str) -> bool:
        calls.append(("transfer_call", conversation, phone))
        return behaviour != "hung_up"

    fake.speak, fake.transfer_call = speak, transfer_call  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bot.console.voice_bridge", fake)
    return calls


@pytest.mark.parametrize("bridge", ["missing", "fails", "speaks"])
async def test_a_hotline_reply_is_spoken_or_sent_by_sms(
        console: Console, monkeypatch: pytest.MonkeyPatch, bridge: str) -> None:
    calls = fake_bridge(monkeypatch, bridge)
    conversation_id = console.queued(channel="voice", sender="13900004444")
    agent = await console.login("han")
    await agent.post(API + f"/conversations/{conversation_id}/claim")
    status, body = await agent.post(API + f"/conversations/{conversation_id}/reply",
                                    {"text": "师傅半小时内到。"})
    assert status == 200
    queued = console.rows(OutboxMessage, conversation_id=conversation_id)
    if bridge == "speaks":
        assert body["via"] == "voice" and queued == []
        assert calls == [("speak", conversation_id, "师傅半小时内到。")]
    else:
        assert body["via"] == "sms"
        assert [(q.channel, q.address, q.text) for q in queued] == [
            ("sms", "13900004444", "师傅半小时内到。")]
    if bridge == "fails":
        assert body["warning"] == BridgeFailed.chinese + "已改发短信。"
    assert len(console.rows(Message, conversation_id=conversation_id, direction="out")) == 1


async def test_a_hotline_reply_after_the_hang_up_goes_by_sms_through_the_real_bridge(
        console: Console) -> None:
    pytest.importorskip("bot.console.voice_bridge")
    conversation_id = console.queued(channel="voice", sender="13900005555")
    agent = await console.login("wei")
    await agent.post(API + f"/conversations/{conversation_id}/claim")
    status, body = await agent.post(API + f"/conversations/{conversation_id}/reply",
                                    {"text": "明天上午来修。"})
    assert status == 200 and body["via"] == "sms", body
    [queued] = console.rows(OutboxMessage, conversation_id=conversation_id)
    assert (queued.channel, queued.address) == ("sms", "13900005555")
    assert queued.text.endswith("明天上午来修。")


@pytest.mark.parametrize("bridge", ["transfers", "hung_up"])
async def test_a_live_call_can_be_put_through_to_the_agents_phone(
        console: Console, monkeypatch: pytest.MonkeyPatch, bridge: str) -> None:
    calls = fake_bridge(monkeypatch, bridge)
    conversation_id = console.queued(channel="voice", sender="13900006666")
    agent = await console.login("tang")
    with session_scope(console.sessions) as session:
        session.get(Account, agent.account_id).phone = "13700009999"
    await agent.post(API + f"/conversations/{conversation_id}/claim")
    status, body = await agent.post(API + f"/conversations/{conversation_id}/call-transfer")
    assert calls == [("transfer_call", conversation_id, "13700009999")]
    if bridge == "transfers":
        assert status == 200
    else:
        assert status == 409 and "挂断" in body["error"]
    assert "call_transfer" in console.actions(conversation_id)
    web_id = console.queued(channel="web", sender="web-not-a-call")
    await agent.post(API + f"/conversations/{web_id}/claim")
    status, body = await agent.post(API + f"/conversations/{web_id}/call-transfer")
    assert status == 409 and "不是电话" in body["error"]


# --- transfer, return, dispatch ------------------------------------------------------------


async def test_transfer_gives_the_conversation_to_a_colleague(console: Console) -> None:
    conversation_id = console.queued()
    first = await console.login("jiang", name="蒋客服")
    second = await console.login("shen", name="沈客服")
    staff_id = console.account("tao-staff", role="staff")
    await first.post(API + f"/conversations/{conversation_id}/claim")
    status, agents = await first.get(API + "/agents")
    assert second.account_id in [a["id"] for a in agents["agents"]]
    assert staff_id not in [a["id"] for a in agents["agents"]]
    for target in (staff_id, 999999, "x"):
        status, body = await first.post(API + f"/conversations/{conversation_id}/transfer",
                                        {"to": target})
        assert status == 404, body
    status, body = await first.post(API + f"/conversations/{conversation_id}/transfer",
                                    {"to": second.account_id})
    assert status == 200 and body["to"] == "沈客服"
    assert console.conversation(conversation_id).agent_id == second.account_id
    status, body = await first.post(API + f"/conversations/{conversation_id}/reply",
                                    {"text": "还在吗"})
    assert status == 409 and "沈客服" in body["error"]
    assert (await second.post(API + f"/conversations/{conversation_id}/reply",
                              {"text": "您好，我是沈客服。"}))[0] == 200
    status, mine = await second.get(API + "/mine")
    assert [row["id"] for row in mine["conversations"]] == [conversation_id]
    assert "transfer" in console.actions(conversation_id)


async def test_return_to_bot_tells_the_resident_and_frees_the_conversation(
        console: Console) -> None:
    conversation_id = console.queued(channel="wechat", sender="oOPENID-return")
    agent = await console.login("yang")
    await agent.post(API + f"/conversations/{conversation_id}/claim")
    status, _ = await agent.post(API + f"/conversations/{conversation_id}/return")
    assert status == 200
    stored = console.conversation(conversation_id)
    assert (stored.state, stored.agent_id, stored.queue_priority) == ("bot", None, None)
    [queued] = console.rows(OutboxMessage, conversation_id=conversation_id)
    assert (queued.channel, queued.address, queued.text) == ("wechat", "oOPENID-return",
                                                             RETURN_TEXT)
    assert console.rows(Message, conversation_id=conversation_id, direction="out")[-1].text \
        == RETURN_TEXT
    # It is the bot's again: the agent can no longer act on it.
    status, body = await agent.post(API + f"/conversations/{conversation_id}/reply",
                                    {"text": "在吗"})
    assert status == 409
    assert "return_to_bot" in console.actions(conversation_id)


async def test_dispatch_draft_creates_a_dispatched_order(console: Console) -> None:
    conversation_id = console.queued(sender="13800005555", text="厨房水管漏水了，水一直流")
    agent = await console.login("xu", name="许客服")
    await agent.post(API + f"/conversations/{conversation_id}/claim")
    status, detail = await agent.get(API + f"/conversations/{conversation_id}")
    assert detail["draft"]["contact_phone"] == "13800005555"  # the owner sees it in full
    assert "厨房水管漏水了" in detail["draft"]["description"]
    assert detail["draft_from_bot"] is False  # Rasa is down: the console still works
    draft = {"category": "water_leak", "building": "3", "unit": "2", "room": "501",
             "description": "厨房水管漏水", "contact_phone": "13800005555", "urgency": "P2"}
    status, body = await agent.post(API + f"/conversations/{conversation_id}/dispatch",
                                    {**draft, "room": None})
    assert status == 400 and "房号" in body["error"]
    status, body = await agent.post(API + f"/conversations/{conversation_id}/dispatch",
                                    {**draft, "building": "99"})
    assert status == 400 and "楼号" in body["error"]
    status, body = await agent.post(API + f"/conversations/{conversation_id}/dispatch", draft)
    assert status == 200, body
    [ticket] = console.rows(Ticket, conversation_id=conversation_id)
    assert (ticket.number, ticket.status, ticket.category, ticket.room) == (
        body["number"], "dispatched", "water_leak", "501")
    assert console.rows(WorkOrder, ticket_id=ticket.id)
    with console.sessions() as session:
        events = session.get(Ticket, ticket.id).events
        assert {e.actor for e in events} == {"agent:xu"}
    [told] = console.rows(OutboxMessage, conversation_id=conversation_id)
    assert (told.channel, told.address) == ("sms", "13800005555")
    assert ticket.number in told.text
    audit = console.rows(AuditEntry, conversation_id=conversation_id, action="dispatch_draft")
    assert [entry.ticket_id for entry in audit] == [ticket.id]
    status, body = await agent.post(API + f"/conversations/{conversation_id}/dispatch", draft)
    assert status == 409 and body["code"] == "duplicate" and ticket.number in body["error"]
    status, body = await agent.post(API + f"/conversations/{conversation_id}/dispatch",
                                    {**draft, "force": True})
    assert status == 200 and body["number"] != ticket.number


async def test_the_draft_comes_from_the_bots_tracker_when_rasa_is_up(
        db_engine: Engine, db_session_factory: sessionmaker, catalogue: Any,
        roster: Any) -> None:
    async def tracker(request: web.Request) -> web.Response:
        return web.json_response({"sender_id": request.match_info["sender"], "slots": {
            "report_category": "elevator_fault", "report_building": "5",
            "report_unit": "1", "report_phone": "13700006666", "requested_slot": None}})

    rasa = web.Application()
    rasa.router.add_get("/conversations/{sender}/tracker", tracker)
    rasa_server = TestServer(rasa, host="127.0.0.1")
    await rasa_server.start_server()
    console = await start_console(db_engine, db_session_factory, catalogue, roster,
                                  rasa_url=str(rasa_server.make_url("")).rstrip("/"))
    try:
        conversation_id = console.queued(sender="13700006666", text="电梯坏了转人工")
        agent = await console.login("lu")
        status, detail = await agent.get(API + f"/conversations/{conversation_id}")
        assert status == 200 and detail["draft_from_bot"] is True
        draft = detail["draft"]
        assert (draft["category"], draft["building"], draft["unit"]) == (
            "elevator_fault", "5", "1")
        assert draft["contact_phone"] == "137****6666"  # not claimed: masked
        assert console.actions(conversation_id) == ["view_conversation"]
    finally:
        await console.client.close()
        await rasa_server.close()


# --- live events ---------------------------------------------------------------------------


async def test_the_console_socket_streams_every_event(console: Console) -> None:
    conversation_id = console.queued()
    agent = await console.login("kong", name="孔客服")
    ws = await console.client.ws_connect("/console/ws", headers=agent.headers(False))
    assert await ws.receive_json(timeout=5) == {"type": "ready"}
    # What the hub publishes when a queued resident writes again reaches the console.
    console.server[BUS].publish({"type": "message", "conversation_id": conversation_id,
                                 "direction": "in", "text": "还在吗？"})
    assert (await ws.receive_json(timeout=5))["text"] == "还在吗？"
    await agent.post(API + f"/conversations/{conversation_id}/claim")
    claimed = await ws.receive_json(timeout=5)
    assert (claimed["type"], claimed["conversation_id"], claimed["agent"]) == (
        "claimed", conversation_id, "孔客服")
    await agent.post(API + f"/conversations/{conversation_id}/reply", {"text": "在的"})
    reply = await ws.receive_json(timeout=5)
    assert (reply["type"], reply["text"]) == ("reply", "在的")
    await agent.post(API + f"/conversations/{conversation_id}/return")
    assert (await ws.receive_json(timeout=5))["type"] == "returned"
    await ws.close()


async def test_every_view_and_action_is_audited(console: Console) -> None:
    conversation_id = console.queued(channel="web", sender="web-audit")
    first = await console.login("he")
    second = await console.login("lv")
    one = API + f"/conversations/{conversation_id}"
    await first.get(one)
    await first.post(one + "/claim")
    await second.post(one + "/claim")
    await first.post(one + "/reply", {"text": "您好"})
    await first.post(one + "/transfer", {"to": second.account_id})
    await second.post(one + "/return")
    entries = console.rows(AuditEntry, conversation_id=conversation_id)
    assert [(e.action, e.account_id) for e in entries] == [
        ("view_conversation", first.account_id), ("claim", first.account_id),
        ("claim_refused", second.account_id), ("reply", first.account_id),
        ("transfer", first.account_id), ("return_to_bot", second.account_id)]


async def test_the_console_socket_closes_when_the_session_ends(
        console: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.console import agent as console_agent

    monkeypatch.setattr(console_agent, "SESSION_RECHECK_S", 0.1)
    agent = await console.login("cao")
    ws = await console.client.ws_connect("/console/ws", headers=agent.headers(False))
    assert await ws.receive_json(timeout=5) == {"type": "ready"}
    with session_scope(console.sessions) as session:
        session.execute(delete(WebSession).where(WebSession.account_id == agent.account_id))
    frame = await ws.receive(timeout=5)
    assert frame.type == WSMsgType.CLOSE and frame.data == 4401


# --- call-back tasks -------------------------------------------------------------------------


def _callback(console: Console, phone: str | None, reason: str = "hangup") -> int:
    with session_scope(console.sessions) as session:
        task = CallbackTask(phone=phone, reason=reason, status="open", created_at=utc_now(),
                            draft={"slots": {"report_category": "漏水渗水",
                                             "report_building": "5"},
                                   "transcript": [{"direction": "in", "text": "厨房漏水了"}]})
        session.add(task)
        session.flush()
        return task.id


async def test_callback_tasks_are_listed_masked_revealed_with_audit_and_closed(
    console: Console,
) -> None:
    task_id = _callback(console, "13700002222")
    anonymous = _callback(console, None, reason="no_answer")
    agent = await console.login("callback-agent")
    status, body = await agent.get(API + "/callbacks")
    assert status == 200
    listed = {task["id"]: task for task in body["tasks"]}
    assert listed[task_id]["phone"] == "137****2222" and "13700002222" not in str(body)
    assert "厨房漏水了" in listed[task_id]["summary"] and "楼：5" in listed[task_id]["summary"]
    assert listed[anonymous]["has_phone"] is False

    status, body = await agent.post(API + f"/callbacks/{task_id}/phone")
    assert (status, body["phone"]) == (200, "13700002222")
    assert "view_callback_phone" in [e.action for e in console.rows(AuditEntry)]

    status, _ = await agent.post(API + f"/callbacks/{task_id}/done", {"note": "已回电，明早上门"})
    assert status == 200
    assert console.rows(CallbackTask, id=task_id)[0].status == "done"
    assert (await agent.post(API + f"/callbacks/{task_id}/done"))[0] == 409
    assert task_id not in {t["id"] for t in (await agent.get(API + "/callbacks"))[1]["tasks"]}
    assert (await agent.post(API + "/callbacks/999999/phone"))[0] == 404
    assert (await agent.post(API + "/callbacks/x1/phone"))[0] == 404


async def test_callback_tasks_need_an_agent_and_the_csrf_token(console: Console) -> None:
    task_id = _callback(console, "13700003333")
    staff = await console.login("callback-staff", role="staff")
    assert (await staff.get(API + "/callbacks"))[0] == 403
    agent = await console.login("callback-agent2")
    assert (await agent.post(API + f"/callbacks/{task_id}/phone", csrf=False))[0] == 403
    assert console.rows(CallbackTask, id=task_id)[0].status == "open"
