"""The voice hotline's webhooks in-process: real hub and database, a scripted Rasa on loopback.

Requests are signed with twilio's own RequestValidator over the public URL, as Twilio
signs them. Runs on SQLite and PostgreSQL through tests/conftest.py.
"""
from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker
from twilio.request_validator import RequestValidator

from bot.app import App
from bot.community import load_community
from bot.conversations import set_conversation_state
from bot.db import session_scope
from bot.hub import Hub, RasaClient
from bot.models import CallbackTask, Conversation, Ticket, VoiceCall
from bot.reports import ReportDraft, submit_report
from bot.settings import Secret, Settings, TwilioSettings
from bot.webhooks import voice
from bot.webkeys import APP, HUB
from channels import twilio_voice as tv
from routing.catalogue import Catalogue
from routing.roster import Roster

pytestmark = pytest.mark.integration

TOKEN = "voice-test-auth-token"
PUBLIC = "https://linli.example.test"
TRANSFER = "+8613900000000"
CALLER = "+8613700000001"
START = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
CONFIRM = "我记下了：7号楼1单元，电梯故障，电话137****0001。对吗？"


def reply(text: str) -> web.Response:
    return web.json_response([{"text": text}])


@dataclass
class FakeRasa:
    """Plays the Rasa server: the REST channel and the tracker API, scripted per message."""

    app: App | None = None
    slots: dict[str, dict[str, Any]] = field(default_factory=dict)
    heard: list[str] = field(default_factory=list)
    tracker_down: bool = False

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        sender, text, meta = body["sender"], body["message"], body["metadata"]
        self.heard.append(text)
        assert self.app is not None
        if text == "转人工":
            with session_scope(self.app.sessions) as session:
                conversation = session.get(Conversation, meta["conversation_id"])
                set_conversation_state(session, conversation=conversation, state="queued",
                                       now=self.app.clock())
            return reply("好的，正在为您转接人工客服，预计3分钟内回复，请稍等。")
        if text == "查询进度":
            return reply("您的工单GD20261130-0042已派单，师傅正在处理。")
        if "电梯" in text:
            self.slots[sender] = {"report_category": "elevator_fault", "report_building": "7",
                                  "report_unit": "1", "report_room": None,
                                  "report_phone": "13700000001", "requested_slot": None}
            return web.json_response([{"text": CONFIRM, "buttons": [
                {"title": "确认", "payload": "/affirm"}, {"title": "修改", "payload": "/deny"}]}])
        if text == "/affirm":
            with session_scope(self.app.sessions) as session:
                ticket = submit_report(
                    session, now=self.app.clock(), catalogue=self.app.catalogue,
                    roster=self.app.roster, conversation_id=meta["conversation_id"],
                    resident_id=meta["resident_id"],
                    draft=ReportDraft(category="elevator_fault", description="电梯坏了",
                                      channel=meta["channel"], building="7", unit="1",
                                      phone=meta["phone"]))
                number = ticket.number
            self.slots.pop(sender, None)
            return reply(f"已登记，工单号{number}，已派给物业。想知道进度，随时问我。")
        return reply("请问是几号楼？")

    async def tracker(self, request: web.Request) -> web.Response:
        if self.tracker_down:
            return web.Response(status=500)
        sender = request.match_info["sender"]
        return web.json_response({"sender_id": sender, "slots": self.slots.get(sender, {})})


@dataclass
class Line:
    """One phone line into the in-process hub."""

    client: TestClient
    app: App
    rasa: FakeRasa
    hub: Hub

    async def post(self, path: str, call_sid: str = "CA0001", *, query: str = "",
                   token: str = TOKEN, url: str | None = None, **fields: str) -> tuple[int, str]:
        params = {"CallSid": call_sid, "From": CALLER, "To": "+8657188001234",
                  "AccountSid": "AC" + "0" * 32, **fields}
        path_qs = path + (f"?{query}" if query else "")
        signature = RequestValidator(token).compute_signature(url or PUBLIC + path_qs, params)
        response = await self.client.post(path_qs, data=params,
                                          headers={"X-Twilio-Signature": signature})
        return response.status, await response.text()

    def rows(self, model: Any, **where: Any) -> list[Any]:
        with session_scope(self.app.sessions) as session:
            query = select(model).filter_by(**where)
            return list(session.execute(query).scalars())


MakeLine = Callable[..., Awaitable[Line]]


@pytest.fixture
async def make_line(db_engine: Engine, db_session_factory: sessionmaker, catalogue: Catalogue,
                    roster: Roster) -> AsyncIterator[MakeLine]:
    opened: list[tuple[TestServer, TestClient, Hub]] = []
    ticks = itertools.count()

    async def make(transfer_number: str = TRANSFER) -> Line:
        rasa = FakeRasa()
        rasa_app = web.Application()
        rasa_app.add_routes([web.post("/webhooks/rest/webhook", rasa.webhook),
                             web.get("/conversations/{sender}/tracker", rasa.tracker)])
        rasa_server = TestServer(rasa_app, host="127.0.0.1")
        await rasa_server.start_server()
        rasa_url = str(rasa_server.make_url("")).rstrip("/")
        settings = Settings(public_base_url=PUBLIC, rasa_url=rasa_url, twilio=TwilioSettings(
            account_sid="AC" + "0" * 32, auth_token=Secret(TOKEN), from_number="+8657188001234",
            transfer_number=transfer_number))
        app = App(settings=settings, engine=db_engine, sessions=db_session_factory,
                  catalogue=catalogue, community=load_community(), roster=roster,
                  clock=lambda: START + timedelta(seconds=next(ticks)))
        rasa.app = app
        hub = Hub(app, RasaClient(rasa_url, timeout_s=5))
        server = web.Application()
        server[APP], server[HUB] = app, hub
        server.add_routes(voice.routes())
        client = TestClient(TestServer(server, host="127.0.0.1"))
        await client.start_server()
        opened.append((rasa_server, client, hub))
        return Line(client, app, rasa, hub)

    yield make
    for rasa_server, client, hub in opened:
        await hub.close()
        await client.close()
        await rasa_server.close()


def says(xml: str, text: str) -> bool:
    return text in xml


# --- signatures and bad bodies ----------------------------------------------------------


async def test_forged_or_missing_signature_is_refused_and_nothing_stored(make_line: MakeLine):
    line = await make_line()
    assert (await line.post("/twilio/voice", token="not-our-token"))[0] == 403
    # Signed over the hub's own address instead of the public one Twilio calls.
    local = str(line.client.make_url("/twilio/voice"))
    assert (await line.post("/twilio/voice", url=local))[0] == 403
    response = await line.client.post("/twilio/voice", data={"CallSid": "CA0001"})
    assert response.status == 403
    # The attempt counter is part of the signed URL: changing it breaks the signature.
    status, _ = await line.post("/twilio/voice/menu", query="attempt=0")
    assert status == 200
    params = {"CallSid": "CA0002", "From": CALLER}
    signature = RequestValidator(TOKEN).compute_signature(
        PUBLIC + "/twilio/voice/menu?attempt=0", params)
    response = await line.client.post("/twilio/voice/menu?attempt=1", data=params,
                                      headers={"X-Twilio-Signature": signature})
    assert response.status == 403
    assert [call.call_sid for call in line.rows(VoiceCall)] == ["CA0001"]


async def test_malformed_or_oversized_bodies_are_400(make_line: MakeLine):
    line = await make_line()
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/twilio/voice", {})
    headers = {"X-Twilio-Signature": signature}
    big = urlencode({"CallSid": "CA1", "SpeechResult": "漏" * 20_000})
    for body, content_type in ((big, "application/x-www-form-urlencoded"),
                               (b"CallSid=\xff\xfe", "application/x-www-form-urlencoded"),
                               ('{"CallSid": "CA1"}', "application/json")):
        response = await line.client.post("/twilio/voice", data=body,
                                          headers={**headers, "Content-Type": content_type})
        assert response.status == 400, body[:20]
    status, _ = await line.post("/twilio/voice", call_sid="")  # signed, but no CallSid
    assert status == 400
    assert line.rows(VoiceCall) == []


# --- the menu ---------------------------------------------------------------------------


async def test_incoming_call_speaks_the_menu_in_mandarin(make_line: MakeLine):
    line = await make_line()
    status, xml = await line.post("/twilio/voice")
    assert status == 200
    assert '<Gather action="https://linli.example.test/twilio/voice/menu?attempt=0"' in xml
    assert 'language="cmn-Hans-CN"' in xml and 'voice="Polly.Zhiyu"' in xml
    assert says(xml, "您好，这里是和睦社区服务热线。") and "报修，请按一。" in xml
    [call] = line.rows(VoiceCall)
    assert (call.caller, call.step, call.conversation_id) == ("13700000001", "menu", None)


async def test_report_by_voice_is_read_back_digit_by_digit(make_line: MakeLine):
    line = await make_line()
    await line.post("/twilio/voice")
    _, xml = await line.post("/twilio/voice/menu", Digits="1")
    assert says(xml, voice.REPORT_PROMPT)
    assert 'action="https://linli.example.test/twilio/voice/turn?attempt=0"' in xml
    assert line.rows(VoiceCall)[0].step == "report"

    _, xml = await line.post("/twilio/voice/turn", SpeechResult="7号楼1单元电梯坏了",
                             Confidence="0.91")
    # The bot's buttons become keys; the masked phone is read as its last four digits.
    assert "7号楼1单元，电梯故障，电话尾号0001。对吗？确认，请按一。修改，请按二。" in xml
    assert 'language="cmn-Hans-CN"' in xml
    [call] = line.rows(VoiceCall)
    assert call.conversation_id is not None and "确认，请按一" in call.last_prompt

    _, xml = await line.post("/twilio/voice/turn", Digits="1")
    assert line.rasa.heard == ["7号楼1单元电梯坏了", "/affirm"]
    [ticket] = line.rows(Ticket)
    assert (ticket.category, ticket.building, ticket.unit, ticket.channel) == (
        "elevator_fault", "7", "1", "voice")
    assert ticket.conversation_id == call.conversation_id
    spoken = tv.speak_ticket_number(ticket.number)
    assert xml.count(spoken) == 2 and ticket.number not in xml
    assert says(xml, "已登记，已派给物业。")
    assert 'action="https://linli.example.test/twilio/voice/readback"' in xml
    [call] = line.rows(VoiceCall)
    assert (call.step, call.ticket_number) == ("done", ticket.number)

    _, xml = await line.post("/twilio/voice/readback", Digits="*")
    assert says(xml, "您报修的是7号楼1单元，电梯故障。") and xml.count(spoken) == 2
    _, xml = await line.post("/twilio/voice/readback")
    assert says(xml, tv.GOODBYE_TEXT) and "<Hangup />" in xml
    # The call ended normally: no call-back owed.
    await line.post("/twilio/voice/status", CallStatus="completed")
    assert line.rows(CallbackTask) == []
    assert line.rows(VoiceCall)[0].ended_at is not None


async def test_menu_2_reads_progress_and_listens_for_more(make_line: MakeLine):
    line = await make_line()
    await line.post("/twilio/voice")
    _, xml = await line.post("/twilio/voice/menu", Digits="2")
    assert line.rasa.heard == ["查询进度"]
    assert "您的工单号 G D，二零二六，幺幺三零，零零四二已派单" in xml
    assert says(xml, "您的工单") and voice.MORE_PROMPT in xml
    assert "/twilio/voice/turn?attempt=0" in xml
    assert line.rows(VoiceCall)[0].step == "status"


async def test_menu_3_asks_for_the_question(make_line: MakeLine):
    line = await make_line()
    _, xml = await line.post("/twilio/voice/menu", SpeechResult="咨询")
    assert says(xml, voice.CONSULT_PROMPT) and "/twilio/voice/turn?attempt=0" in xml
    assert line.rows(VoiceCall)[0].step == "consult"


async def test_menu_0_queues_for_agents_and_dials_staff(make_line: MakeLine):
    line = await make_line()
    await line.post("/twilio/voice")
    _, xml = await line.post("/twilio/voice/menu", Digits="0")
    assert says(xml, tv.TRANSFER_TEXT)
    assert (f'<Dial action="https://linli.example.test/twilio/voice/dial" method="POST" '
            f'timeout="30">{TRANSFER}</Dial>') in xml
    [conversation] = line.rows(Conversation)
    assert conversation.state == "queued" and conversation.channel == "voice"
    [call] = line.rows(VoiceCall)
    assert (call.step, call.conversation_id) == ("transfer", conversation.id)

    _, xml = await line.post("/twilio/voice/dial", DialCallStatus="no-answer")
    assert says(xml, tv.NO_ANSWER_TEXT)
    [task] = line.rows(CallbackTask)
    assert (task.reason, task.phone, task.conversation_id) == (
        "no_answer", "13700000001", conversation.id)
    assert any(turn["text"] == "转人工" for turn in task.draft["transcript"])


async def test_star_repeats_the_menu(make_line: MakeLine):
    line = await make_line()
    _, xml = await line.post("/twilio/voice/menu", Digits="*")
    assert "报修，请按一。" in xml and "找人工，请按零。" in xml
    assert "/twilio/voice/menu?attempt=0" in xml and "对不起" not in xml


async def test_two_silences_put_the_caller_through(make_line: MakeLine):
    line = await make_line()
    await line.post("/twilio/voice")
    _, xml = await line.post("/twilio/voice/menu", query="attempt=0")
    assert says(xml, tv.RETRY_PREFIX) and "/twilio/voice/menu?attempt=1" in xml
    assert "<Dial" not in xml
    _, xml = await line.post("/twilio/voice/menu", query="attempt=1", SpeechResult="嗯")
    assert f">{TRANSFER}</Dial>" in xml and "/twilio/voice/dial" in xml
    assert line.rows(VoiceCall)[0].step == "transfer"
    _, xml = await line.post("/twilio/voice/dial", DialCallStatus="completed")
    assert "<Hangup />" in xml and line.rows(CallbackTask) == []
    await line.post("/twilio/voice/status", CallStatus="completed")
    assert line.rows(CallbackTask) == []


async def test_no_transfer_number_promises_and_stores_a_call_back(make_line: MakeLine):
    line = await make_line(transfer_number="")
    await line.post("/twilio/voice")
    await line.post("/twilio/voice/menu", query="attempt=0")
    _, xml = await line.post("/twilio/voice/menu", query="attempt=1")
    assert says(xml, tv.BUSY_CALLBACK_TEXT) and "<Hangup />" in xml and "<Dial" not in xml
    [task] = line.rows(CallbackTask)
    assert (task.reason, task.phone, task.call_sid) == ("no_input", "13700000001", "CA0001")
    await line.post("/twilio/voice/status", CallStatus="completed")
    assert len(line.rows(CallbackTask)) == 1

    _, xml = await line.post("/twilio/voice/menu", call_sid="CA0002", Digits="0")
    assert says(xml, tv.BUSY_CALLBACK_TEXT) and "<Dial" not in xml
    assert [t.reason for t in line.rows(CallbackTask, call_sid="CA0002")] == ["no_agent"]


# --- the conversation -------------------------------------------------------------------


async def test_silence_in_a_report_repeats_the_question_then_hands_over(make_line: MakeLine):
    line = await make_line()
    await line.post("/twilio/voice/menu", Digits="1")
    _, xml = await line.post("/twilio/voice/turn", query="attempt=0")
    assert says(xml, tv.RETRY_PREFIX) and voice.REPORT_PROMPT in xml
    assert "/twilio/voice/turn?attempt=1" in xml
    _, xml = await line.post("/twilio/voice/turn", query="attempt=1")
    assert f">{TRANSFER}</Dial>" in xml
    assert line.rasa.heard == []


async def test_saying_zhuan_rengong_mid_report_transfers(make_line: MakeLine):
    line = await make_line()
    await line.post("/twilio/voice/menu", Digits="1")
    _, xml = await line.post("/twilio/voice/turn", SpeechResult="转人工")
    assert f">{TRANSFER}</Dial>" in xml
    assert line.rows(Conversation)[0].state == "queued"
    assert line.rows(VoiceCall)[0].step == "transfer"


async def test_hang_up_mid_report_leaves_one_call_back_with_a_draft(make_line: MakeLine):
    line = await make_line()
    await line.post("/twilio/voice")
    await line.post("/twilio/voice/menu", Digits="1")
    await line.post("/twilio/voice/turn", SpeechResult="7号楼1单元电梯坏了")
    for _ in range(2):  # Twilio may report the end of a call more than once
        status, xml = await line.post("/twilio/voice/status", CallStatus="completed")
        assert status == 200 and xml.endswith("<Response />")
    [task] = line.rows(CallbackTask)
    assert (task.reason, task.phone, task.call_sid, task.status) == (
        "hangup", "13700000001", "CA0001", "open")
    assert task.conversation_id == line.rows(VoiceCall)[0].conversation_id
    assert task.draft["slots"] == {"report_category": "elevator_fault", "report_building": "7",
                                   "report_unit": "1", "report_phone": "13700000001"}
    said = [(turn["direction"], turn["text"]) for turn in task.draft["transcript"]]
    assert said[0] == ("in", "7号楼1单元电梯坏了") and said[1][0] == "out"
    assert line.rows(VoiceCall)[0].ended_at is not None


async def test_hang_up_with_rasa_down_still_keeps_the_transcript(make_line: MakeLine):
    line = await make_line()
    await line.post("/twilio/voice/menu", Digits="1")
    await line.post("/twilio/voice/turn", SpeechResult="7号楼1单元电梯坏了")
    line.rasa.tracker_down = True
    await line.post("/twilio/voice/status", CallStatus="no-answer")
    [task] = line.rows(CallbackTask)
    assert task.draft["slots"] == {}
    assert task.draft["transcript"][0]["text"] == "7号楼1单元电梯坏了"


async def test_status_while_ringing_does_nothing(make_line: MakeLine):
    line = await make_line()
    await line.post("/twilio/voice/menu", Digits="1")
    await line.post("/twilio/voice/status", CallStatus="in-progress")
    assert line.rows(CallbackTask) == []
    assert line.rows(VoiceCall)[0].ended_at is None


async def test_a_failure_inside_apologises_and_offers_a_person(make_line: MakeLine,
                                                              monkeypatch: pytest.MonkeyPatch):
    line = await make_line()

    async def broken(_inbound: Any) -> Any:
        raise RuntimeError("database is gone")

    monkeypatch.setattr(line.hub, "handle", broken)
    status, xml = await line.post("/twilio/voice/turn", SpeechResult="我家漏水了")
    assert status == 200
    assert says(xml, voice.APOLOGY) and f">{TRANSFER}</Dial>" in xml

    quiet = await make_line(transfer_number="")
    monkeypatch.setattr(quiet.hub, "handle", broken)
    status, xml = await quiet.post("/twilio/voice/turn", call_sid="CA0009", SpeechResult="漏水")
    assert status == 200 and says(xml, tv.BUSY_CALLBACK_TEXT)
    with session_scope(quiet.app.sessions) as session:
        count = session.execute(select(func.count()).select_from(CallbackTask)
                                .where(CallbackTask.call_sid == "CA0009")).scalar_one()
    assert count == 1


def test_without_number_keeps_the_rest_of_the_reply():
    replies = ["已登记，工单号GD20261130-0001，已派给物业。想知道进度，随时问我。"]
    assert voice.without_number(replies, "GD20261130-0001") == (
        "已登记，已派给物业。想知道进度，随时问我。")
    assert voice.without_number(["工单GD20261130-0001"], "GD20261130-0001") == ""
