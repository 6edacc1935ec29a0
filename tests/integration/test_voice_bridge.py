"""An agent's reply on the hotline, against a loopback stand-in for Twilio's REST API.

The fake answers the Calls and Messages endpoints the way Twilio documents them (a call
that is no longer in progress answers 400 with code 21220) and records every request,
so the tests read the TwiML the live call was given and the SMS the caller received.
Runs on SQLite and PostgreSQL through tests/conftest.py.
"""
from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker
from twilio.request_validator import RequestValidator

from bot.accounts import create_account, sign_in
from bot.app import App
from bot.community import load_community
from bot.console.voice_bridge import (
    ANSWER_PROMPT,
    SMS_PREFIX,
    VoiceBridgeError,
    speak,
    transfer_call,
)
from bot.conversations import open_conversation
from bot.db import session_scope
from bot.handoff import claim, queue
from bot.hub import Hub, RasaClient
from bot.models import (
    Account,
    CallbackTask,
    Conversation,
    Message,
    OutboxMessage,
    VoiceCall,
)
from bot.outbox import Outbox
from bot.senders.twilio_sms import TwilioSmsSender
from bot.settings import Secret, Settings, TwilioSettings
from bot.webhooks import voice
from bot.webkeys import APP, HUB, OUTBOX
from routing.catalogue import Catalogue
from routing.roster import Roster
from tests.loopback import free_port

pytestmark = pytest.mark.integration

ACCOUNT = "AC" + "1" * 32
TOKEN = "bridge-test-auth-token"
PUBLIC = "https://linli.example.test"
CALLER = "13700000009"
START = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


@dataclass
class FakeTwilio:
    """Twilio's Calls and Messages endpoints on loopback; `ended` calls answer 21220."""

    ended: set[str] = field(default_factory=set)
    broken: bool = False
    updates: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)

    async def call(self, request: web.Request) -> web.Response:
        if request.match_info["account"] != ACCOUNT:
            return web.json_response({"code": 20404, "message": "not found", "status": 404},
                                     status=404)
        if self.broken:
            return web.json_response({"code": 20500, "message": "Internal Server Error",
                                      "status": 500}, status=500)
        sid = request.match_info["sid"]
        form = {key: values[0] for key, values in parse_qs((await request.read()).decode()).items()}
        if sid in self.ended:
            return web.json_response({"code": 21220, "message": "Call is not in-progress. "
                                      "Cannot redirect.", "status": 400}, status=400)
        self.updates.append((sid, form))
        return web.json_response({"sid": sid, "account_sid": ACCOUNT, "status": "in-progress"})

    async def message(self, request: web.Request) -> web.Response:
        form = parse_qs((await request.read()).decode())
        self.texts.append((form["To"][0], form["Body"][0]))
        return web.json_response({"sid": f"SM{len(self.texts):032d}", "status": "queued"},
                                 status=201)


@dataclass
class Line:
    app: App
    twilio: FakeTwilio
    server: web.Application  # the hub's aiohttp app: APP and OUTBOX, as the console sees it
    conversation_id: int

    def rows(self, model: Any, **where: Any) -> list[Any]:
        with session_scope(self.app.sessions) as session:
            return list(session.execute(select(model).filter_by(**where)).scalars())


class CountingOutbox:
    kicks = 0

    def kick(self) -> None:
        self.kicks += 1


@pytest.fixture
async def line(db_engine: Engine, db_session_factory: sessionmaker, catalogue: Catalogue,
               roster: Roster) -> AsyncIterator[Line]:
    twilio = FakeTwilio()
    fake = web.Application()
    fake.add_routes([
        web.post("/2010-04-01/Accounts/{account}/Calls/{sid}.json", twilio.call),
        web.post("/2010-04-01/Accounts/{account}/Messages.json", twilio.message),
    ])
    server = TestServer(fake, host="127.0.0.1")
    await server.start_server()
    ticks = itertools.count()
    settings = Settings(public_base_url=PUBLIC, twilio=TwilioSettings(
        account_sid=ACCOUNT, auth_token=Secret(TOKEN), from_number="+8657188001234",
        api_base=str(server.make_url("")).rstrip("/")))
    app = App(settings=settings, engine=db_engine, sessions=db_session_factory,
              catalogue=catalogue, community=load_community(), roster=roster,
              clock=lambda: START + timedelta(seconds=next(ticks)))
    with session_scope(app.sessions) as session:
        conversation = open_conversation(session, channel="voice", sender_key=CALLER,
                                         now=app.clock())
        session.flush()
        session.add(VoiceCall(call_sid="CAlive", caller=CALLER, conversation_id=conversation.id,
                              step="held", failures=0, started_at=app.clock(),
                              updated_at=app.clock()))
        conversation_id = conversation.id
    hub_app = web.Application()
    hub_app[APP], hub_app[OUTBOX] = app, CountingOutbox()
    yield Line(app, twilio, hub_app, conversation_id)
    await server.close()


def hang_up(line: Line, call_sid: str = "CAlive") -> None:
    with session_scope(line.app.sessions) as session:
        session.get(VoiceCall, call_sid).ended_at = line.app.clock()


def verbs(twiml: str) -> list[ET.Element]:
    return list(ET.fromstring(twiml))


def spoken(element: ET.Element) -> str:
    return "".join(element.itertext())


# --- speaking into a live call ---------------------------------------------------------------


async def test_a_live_caller_hears_the_agent_slowly_in_mandarin_then_can_answer(line: Line):
    result = await speak(line.server, line.conversation_id, "您好，我是客服小王，师傅十分钟后到。")
    assert result == "spoken"
    [(sid, form)] = line.twilio.updates
    assert sid == "CAlive" and "Url" not in form
    say, gather = verbs(form["Twiml"])
    assert say.tag == "Say" and spoken(say) == "您好，我是客服小王，师傅十分钟后到。"
    assert (say.get("voice"), say.get("language")) == ("Polly.Zhiyu", "cmn-CN")
    assert say[0].tag == "prosody" and say[0].get("rate") == "slow"
    assert gather.tag == "Gather"
    assert gather.get("action") == f"{PUBLIC}/twilio/voice/turn?attempt=0"
    assert (gather.get("language"), gather.get("input")) == ("cmn-Hans-CN", "speech dtmf")
    assert spoken(gather) == ANSWER_PROMPT
    # Nothing went by SMS; a silent caller will hear the agent's words again.
    assert line.rows(OutboxMessage) == []
    assert line.rows(VoiceCall)[0].last_prompt == "您好，我是客服小王，师傅十分钟后到。"


async def test_ticket_numbers_and_masked_phones_are_made_speakable(line: Line):
    await speak(line.app, line.conversation_id, "您的工单GD20261201-0042已派单，联系电话138****0000。")
    text = spoken(verbs(line.twilio.updates[0][1]["Twiml"])[0])
    assert "工单号 G D，二零二六，幺二零幺，零零四二" in text and "尾号0000" in text
    assert "*" not in text


async def test_a_reply_too_long_for_one_call_update_is_refused_before_twilio(line: Line):
    with pytest.raises(VoiceBridgeError) as caught:
        await speak(line.app, line.conversation_id, "请您注意安全。" * 700)
    assert caught.value.status == 422 and "分几次" in caught.value.chinese
    assert line.twilio.updates == []


# --- the caller has hung up -----------------------------------------------------------------


async def test_after_a_hang_up_the_reply_goes_by_sms_and_reaches_the_caller(line: Line):
    hang_up(line)
    result = await speak(line.server, line.conversation_id, "师傅明天上午九点上门，请您在家。")
    assert result == "sms" and line.twilio.updates == []
    [row] = line.rows(OutboxMessage)
    assert (row.channel, row.address, row.kind, row.status) == ("sms", CALLER, "reply", "pending")
    assert row.text == SMS_PREFIX + "师傅明天上午九点上门，请您在家。"
    assert row.conversation_id == line.conversation_id
    assert line.server[OUTBOX].kicks == 1
    # The outbox delivers it through Twilio's Messages API, as in production.
    sender = TwilioSmsSender(line.app.settings.twilio, line.app.sessions)
    outbox = Outbox(line.app.sessions, {"sms": sender}, clock=line.app.clock)
    assert await outbox.run_once() == 1
    await outbox.stop()
    assert line.twilio.texts == [("+8613700000009", row.text)]


async def test_a_call_twilio_says_is_over_falls_back_to_sms_and_is_marked_ended(line: Line):
    line.twilio.ended.add("CAlive")  # the status callback never reached us
    assert await speak(line.app, line.conversation_id, "已经帮您登记好了。") == "sms"
    assert line.rows(VoiceCall)[0].ended_at is not None
    assert [m.address for m in line.rows(OutboxMessage)] == [CALLER]


async def test_a_withheld_number_after_a_hang_up_is_a_clear_error(line: Line):
    with session_scope(line.app.sessions) as session:
        session.get(VoiceCall, "CAlive").caller = None
        session.get(Conversation, line.conversation_id).sender_key = "call-CAlive"
    hang_up(line)
    with pytest.raises(VoiceBridgeError) as caught:
        await speak(line.app, line.conversation_id, "您好")
    assert caught.value.status == 409 and "号码未显示" in caught.value.chinese
    assert line.rows(OutboxMessage) == []


# --- Twilio trouble and bad requests -----------------------------------------------------------


async def test_twilio_failing_is_an_error_for_the_agent_and_nothing_is_sent(line: Line):
    line.twilio.broken = True
    with pytest.raises(VoiceBridgeError) as caught:
        await speak(line.app, line.conversation_id, "您好")
    assert caught.value.status == 502 and "电话线路" in caught.value.chinese
    assert line.rows(OutboxMessage) == [] and line.rows(VoiceCall)[0].ended_at is None


async def test_twilio_unreachable_is_an_error_for_the_agent(line: Line):
    settings = line.app.settings
    gone = TwilioSettings(account_sid=ACCOUNT, auth_token=Secret(TOKEN), from_number="+1",
                          api_base=f"http://127.0.0.1:{free_port()}")
    app = App(settings=Settings(public_base_url=settings.public_base_url, twilio=gone),
              engine=line.app.engine, sessions=line.app.sessions, catalogue=line.app.catalogue,
              community=line.app.community, roster=line.app.roster, clock=line.app.clock)
    with pytest.raises(VoiceBridgeError) as caught:
        await speak(app, line.conversation_id, "您好")
    assert "连不上" in caught.value.chinese


async def test_only_hotline_conversations_can_be_spoken_to(line: Line):
    with session_scope(line.app.sessions) as session:
        web_chat = open_conversation(session, channel="web", sender_key="w-1",
                                     now=line.app.clock())
        session.flush()
        web_id = web_chat.id
    with pytest.raises(VoiceBridgeError) as caught:
        await speak(line.app, web_id, "您好")
    assert caught.value.status == 409
    with pytest.raises(VoiceBridgeError) as caught:
        await speak(line.app, 987654, "您好")
    assert caught.value.status == 404
    with pytest.raises(VoiceBridgeError):
        await speak(line.app, line.conversation_id, "   ")
    assert line.twilio.updates == []


# --- putting the call through to the agent -----------------------------------------------------


async def test_a_live_call_is_put_through_to_the_agents_phone(line: Line):
    assert await transfer_call(line.server, line.conversation_id, "139 0000 0002") is True
    [(sid, form)] = line.twilio.updates
    say, dial = verbs(form["Twiml"])
    assert say.tag == "Say" and "转接" in spoken(say)
    assert dial.tag == "Dial" and (dial.text or "").strip() == "+8613900000002"
    assert dial.get("action") == f"{PUBLIC}/twilio/voice/dial"
    assert line.rows(VoiceCall)[0].step == "transfer"


async def test_a_transfer_after_the_hang_up_or_to_no_number_does_nothing(line: Line):
    with pytest.raises(VoiceBridgeError) as caught:
        await transfer_call(line.app, line.conversation_id, "")
    assert caught.value.status == 422
    with pytest.raises(VoiceBridgeError):
        await transfer_call(line.app, line.conversation_id, "12")
    hang_up(line)
    assert await transfer_call(line.app, line.conversation_id, "13900000002") is False
    assert line.twilio.updates == []


# --- the whole hold: queued by keypad 0, kept on the line, answered by the agent ---------------


class QueueingRasa:
    """Rasa's REST webhook: 转人工 queues the conversation as action_handoff does."""

    def __init__(self, app: App) -> None:
        self.app, self.heard = app, []

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.heard.append(body["message"])
        if body["message"] == "转人工":
            with session_scope(self.app.sessions) as session:
                conversation = session.get(Conversation, body["metadata"]["conversation_id"])
                minutes = queue(session, conversation=conversation, reason="asked",
                                now=self.app.clock())
            return web.json_response(
                [{"text": f"好的，正在为您转接人工客服，预计{minutes}分钟内回复，请稍等。"}])
        return web.json_response([{"text": "请问是几号楼？"}])


async def test_a_queued_caller_is_held_for_the_console_and_hears_the_agent(line: Line):
    app = line.app
    with session_scope(app.sessions) as session:
        create_account(session, username="agent-hold", password="pw-for-tests-1", role="agent",
                       display_name="小王", now=app.clock())
        session.flush()
        assert sign_in(session, username="agent-hold", password="pw-for-tests-1",
                       now=app.clock())
    rasa = QueueingRasa(app)
    rasa_app = web.Application()
    rasa_app.add_routes([web.post("/webhooks/rest/webhook", rasa.webhook)])
    rasa_server = TestServer(rasa_app, host="127.0.0.1")
    await rasa_server.start_server()
    hub = Hub(app, RasaClient(str(rasa_server.make_url("")).rstrip("/"), timeout_s=5))
    hotline = web.Application()
    hotline[APP], hotline[HUB] = app, hub
    hotline.add_routes(voice.routes())
    client = TestClient(TestServer(hotline, host="127.0.0.1"))
    await client.start_server()

    async def post(path: str, **fields: str) -> str:
        params = {"CallSid": "CAheld", "From": "+86" + "13700000008", "To": "+8657188001234",
                  "AccountSid": ACCOUNT, **fields}
        signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, params)
        reply = await client.post(path, data=params, headers={"X-Twilio-Signature": signature})
        assert reply.status == 200
        return await reply.text()

    try:
        await post("/twilio/voice")
        held = verbs(await post("/twilio/voice/menu", Digits="0"))
        assert [v.tag for v in held] == ["Gather"]  # no <Dial>: the console has an agent
        assert "预计3分钟" in spoken(held[0]) and held[0].find("Pause") is not None
        assert held[0].get("action") == f"{PUBLIC}/twilio/voice/turn"
        [call] = line.rows(VoiceCall, call_sid="CAheld")
        assert call.step == "held"
        conversation_id = call.conversation_id

        quiet = verbs(await post("/twilio/voice/turn"))  # silence: keep holding
        assert spoken(quiet[0]) == voice.HOLD_REMINDER
        said = verbs(await post("/twilio/voice/turn", SpeechResult="我在七号楼一单元"))
        assert spoken(said[0]) == voice.HOLD_TEXT
        assert rasa.heard == ["转人工"]  # the bot did not answer for the agent
        words = [m.text for m in line.rows(Message, conversation_id=conversation_id,
                                           direction="in")]
        assert "我在七号楼一单元" in words
        assert line.rows(CallbackTask) == []

        with session_scope(app.sessions) as session:
            agent_id = session.execute(
                select(Account.id).where(Account.username == "agent-hold")).scalar_one()
            claim(session, conversation_id=conversation_id, agent_id=agent_id, now=app.clock())
        assert await speak(app, conversation_id, "收到，师傅马上过去。") == "spoken"
        assert line.twilio.updates[-1][0] == "CAheld"
    finally:
        await client.close()
        await hub.close()
        await rasa_server.close()
