"""The hub's own decisions, on real databases, with a scripted Rasa on a loopback port.

The scripted Rasa answers like Rasa's REST channel (text + buttons) and, for "/affirm",
creates a work order the way the report action does, so the hub's after-turn work
(ticket number for the read-back, photos and location onto the order) runs for real.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from bot.app import App
from bot.community import load_community
from bot.conversations import open_conversation
from bot.db import session_scope
from bot.hub import Choice, Hub, Inbound, RasaClient, Reply, render_reply
from bot.models import (
    Attachment,
    Conversation,
    Message,
    Rating,
    SmsOptOut,
    Ticket,
    TicketEvent,
    WeChatWindow,
)
from bot.settings import Settings
from bot.tickets import create_ticket, transition
from routing.catalogue import Catalogue
from routing.roster import Roster
from tests.loopback import free_port, serve_in_thread

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
CONFIRM = [{"text": "我记下了：3号楼楼道灯坏了。对吗？",
            "buttons": [{"title": "确认", "payload": "/affirm"},
                        {"title": "修改", "payload": "/deny"}]}]


class ScriptedRasa:
    """Rasa's REST webhook, answering from a script and remembering what it was sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.sessions: sessionmaker | None = None
        self.catalogue: Catalogue | None = None
        self.port = free_port()

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(body)
        message = body["message"]
        if message == "/affirm":
            number = await asyncio.to_thread(self._create, body["metadata"]["conversation_id"])
            return web.json_response([{"text": f"已登记，工单号{number}。"}])
        if message == "/deny":
            return web.json_response([{"text": "哪里不对？"}])
        return web.json_response(CONFIRM)

    def _create(self, conversation_id: int) -> str:
        assert self.sessions is not None and self.catalogue is not None
        with session_scope(self.sessions) as session:
            ticket = create_ticket(session, now=datetime.now(UTC), catalogue=self.catalogue,
                                   category="public_facility", description="楼道灯坏了",
                                   channel="wechat", building="3",
                                   conversation=session.get(Conversation, conversation_id))
            return ticket.number


@pytest.fixture(scope="module")
def rasa() -> Iterator[ScriptedRasa]:
    scripted = ScriptedRasa()
    app = web.Application()
    app.add_routes([web.post("/webhooks/rest/webhook", scripted.webhook)])
    loop = serve_in_thread(app, scripted.port)
    yield scripted
    loop.call_soon_threadsafe(loop.stop)


@pytest.fixture
def hub(rasa: ScriptedRasa, db_engine: Engine, db_session_factory: sessionmaker,
        catalogue: Catalogue, roster: Roster) -> Hub:
    rasa.sessions, rasa.catalogue = db_session_factory, catalogue
    rasa.received.clear()
    app = App(settings=Settings(), engine=db_engine, sessions=db_session_factory,
              catalogue=catalogue, community=load_community(), roster=roster)
    return Hub(app, RasaClient(f"http://127.0.0.1:{rasa.port}"))


def _say(hub: Hub, channel: str, sender: str, text: str, **extra: Any):  # noqa: ANN202
    async def turn():  # noqa: ANN202 - the client session belongs to this loop
        try:
            return await hub.handle(Inbound(channel=channel, sender_key=sender, text=text,
                                            **extra))
        finally:
            await hub.close()
    return asyncio.run(turn())


def test_choices_render_per_channel() -> None:
    reply = Reply("信息对吗？", (Choice("确认", "/affirm"), Choice("修改", "/deny")))
    assert render_reply(reply, "sms") == "信息对吗？回复1确认，回复2修改"
    assert render_reply(reply, "wechat") == "信息对吗？回复1确认，回复2修改"
    assert render_reply(reply, "voice") == "信息对吗？确认，请按一。修改，请按二。"
    assert render_reply(reply, "web") == "信息对吗？"  # the page shows buttons


def test_a_digit_answers_the_offered_choice(hub: Hub, rasa: ScriptedRasa) -> None:
    first = _say(hub, "sms", "13800000011", "3号楼楼道灯坏了", phone="13800000011")
    assert first.replies == ["我记下了：3号楼楼道灯坏了。对吗？回复1确认，回复2修改"]
    assert first.messages[0].choices[0] == Choice("确认", "/affirm")
    second = _say(hub, "sms", "13800000011", "２", phone="13800000011")
    assert rasa.received[-1]["message"] == "/deny"
    assert second.replies == ["哪里不对？"]
    # The choices were answered: a later "2" is just text for the bot again.
    _say(hub, "sms", "13800000011", "2", phone="13800000011")
    assert rasa.received[-1]["message"] == "2"


def test_a_spoken_choice_title_also_answers(hub: Hub, rasa: ScriptedRasa) -> None:
    _say(hub, "voice", "13700000011", "楼道灯坏了", phone="13700000011")
    outcome = _say(hub, "voice", "13700000011", "确认", phone="13700000011")
    assert rasa.received[-1]["message"] == "/affirm"
    assert outcome.ticket_number and outcome.ticket_number.startswith("GD")


def test_stop_and_start_are_honoured_without_the_bot(
    hub: Hub, rasa: ScriptedRasa, db_session_factory: sessionmaker
) -> None:
    stop = _say(hub, "sms", "13800000012", "退订", phone="13800000012")
    assert "退订" in stop.replies[0] and rasa.received == []
    with session_scope(db_session_factory) as session:
        assert session.get(SmsOptOut, "13800000012") is not None
    start = _say(hub, "sms", "13800000012", "START", phone="13800000012")
    assert "恢复" in start.replies[0] and rasa.received == []
    with session_scope(db_session_factory) as session:
        assert session.get(SmsOptOut, "13800000012") is None
    # START from somebody who never opted out is an ordinary message.
    _say(hub, "sms", "13800000013", "start", phone="13800000013")
    assert rasa.received[-1]["message"] == "start"


def test_photo_and_location_before_the_order_end_up_on_it(
    hub: Hub, db_session_factory: sessionmaker
) -> None:
    openid = "oPhotoFirst01"
    photo = _say(hub, "wechat", openid, "", wechat_openid=openid, provider_message_id="9001",
                 payload={"image": {"url": "http://mmbiz.example/pic.jpg", "media_id": "M1"}})
    assert "照片收到了" in photo.replies[0]
    _say(hub, "wechat", openid, "和睦社区3号楼", wechat_openid=openid, provider_message_id="9002",
         payload={"location": {"lat": 30.27, "lng": 120.15, "label": "和睦社区3号楼",
                               "scale": "15"}})
    done = _say(hub, "wechat", openid, "1", wechat_openid=openid, provider_message_id="9003")
    assert done.ticket_number
    with session_scope(db_session_factory) as session:
        ticket = session.execute(select(Ticket).where(Ticket.number == done.ticket_number)
                                 ).scalar_one()
        photos = session.execute(select(Attachment).where(Attachment.ticket_id == ticket.id)
                                 ).scalars().all()
        assert [(p.kind, p.media_id) for p in photos] == [("image", "M1")]
        assert ticket.address_text == "和睦社区3号楼"
        kinds = session.execute(select(TicketEvent.kind).where(TicketEvent.ticket_id == ticket.id)
                                ).scalars().all()
        assert "evidence_added" in kinds and "location_shared" in kinds
    # A photo sent on its own afterwards goes straight onto the open order.
    later = _say(hub, "wechat", openid, "", wechat_openid=openid, provider_message_id="9004",
                 payload={"image": {"url": "http://mmbiz.example/2.jpg", "media_id": "M2"}})
    assert done.ticket_number in later.replies[0]


def test_a_rating_digit_after_resolution_is_recorded(
    hub: Hub, rasa: ScriptedRasa, db_session_factory: sessionmaker, catalogue: Catalogue
) -> None:
    with session_scope(db_session_factory) as session:
        ticket = create_ticket(session, now=NOW, catalogue=catalogue, category="public_facility",
                               description="灯坏了", channel="sms", building="3")
        for status in ("dispatched", "accepted", "in_progress", "resolved"):
            transition(session, ticket=ticket, to=status, actor="staff:test", now=NOW)
        session.flush()
        ticket_id = ticket.id
        conversation = open_conversation(session, channel="sms", sender_key="13800000014",
                                         now=NOW)
        conversation.pending_choices = [{"title": t, "payload": f"rate:{ticket_id}:{n}"}
                                        for n, t in enumerate(("很不满意", "不满意", "一般",
                                                               "满意", "非常满意"), 1)]
    outcome = _say(hub, "sms", "13800000014", "回复5", phone="13800000014")
    assert "谢谢您的评价" in outcome.replies[0] and rasa.received == []
    with session_scope(db_session_factory) as session:
        rating = session.execute(select(Rating).where(Rating.ticket_id == ticket_id)).scalar_one()
        assert rating.score == 5


def test_wechat_messages_open_the_service_window_but_events_do_not(
    hub: Hub, db_session_factory: sessionmaker
) -> None:
    _say(hub, "wechat", "oWindow01", "你好", wechat_openid="oWindow01", provider_message_id="9101")
    _say(hub, "wechat", "oWindow02", "报修", wechat_openid="oWindow02",
         provider_message_id="oWindow02:1:click", payload={"event": "click", "key": "LINLI_REPORT"})
    with session_scope(db_session_factory) as session:
        assert session.get(WeChatWindow, "oWindow01") is not None
        assert session.get(WeChatWindow, "oWindow02") is None


def test_a_retry_is_stored_once_and_not_answered_again(
    hub: Hub, rasa: ScriptedRasa, db_session_factory: sessionmaker
) -> None:
    first = _say(hub, "sms", "13800000015", "灯坏了", phone="13800000015",
                 provider_message_id="SM-retry-1")
    again = _say(hub, "sms", "13800000015", "灯坏了", phone="13800000015",
                 provider_message_id="SM-retry-1")
    assert first.replies and again.duplicate and again.replies == []
    assert len(rasa.received) == 1
    with session_scope(db_session_factory) as session:
        stored = session.execute(select(Message).where(
            Message.provider_message_id == "SM-retry-1")).scalars().all()
        assert len(stored) == 1


def test_rasa_down_still_stores_and_answers_politely(
    db_engine: Engine, db_session_factory: sessionmaker, catalogue: Catalogue, roster: Roster
) -> None:
    app = App(settings=Settings(), engine=db_engine, sessions=db_session_factory,
              catalogue=catalogue, community=load_community(), roster=roster)
    hub = Hub(app, RasaClient(f"http://127.0.0.1:{free_port()}", timeout_s=2))
    outcome = _say(hub, "sms", "13800000016", "电梯坏了", phone="13800000016")
    assert "0571" in outcome.replies[0]
    with session_scope(db_session_factory) as session:
        texts = session.execute(select(Message.text).where(
            Message.conversation_id == outcome.conversation_id)).scalars().all()
        assert texts[0] == "电梯坏了" and len(texts) == 2
