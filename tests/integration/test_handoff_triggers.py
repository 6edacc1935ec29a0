"""Every handoff trigger, against a real database on both backends: the queue and the wait.

The actions run as the action server runs them (a Tracker in, a CollectingDispatcher out)
with actions.context pointed at the test database. What is asserted is what the agents'
queue holds (bot.handoff.waiting) and what the resident is told.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

import actions.context
import actions.emergency
from actions.emergency import ActionEmergency
from actions.handoff import ActionFallback, ActionHandoff, maybe_escalate
from bot.accounts import create_account, sign_in
from bot.app import App
from bot.community import load_community
from bot.conversations import open_conversation
from bot.db import session_scope
from bot.handoff import PRIORITIES, estimate_wait, waiting
from bot.hub import Hub, Inbound, RasaClient
from bot.models import Conversation, Ticket
from bot.settings import Settings
from bot.texts import domain_texts
from routing.catalogue import Catalogue
from routing.learning import LearnedRoutes
from routing.roster import Roster

pytestmark = pytest.mark.integration

START = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)


@pytest.fixture
def app(db_engine: Engine, db_session_factory: sessionmaker, catalogue: Catalogue,
        roster: Roster, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """The actions' App on this backend, with a clock that moves a second per reading."""
    ticks = itertools.count()
    current = App(settings=Settings(), engine=db_engine, sessions=db_session_factory,
                  catalogue=catalogue, community=load_community(), roster=roster,
                  clock=lambda: START + timedelta(seconds=next(ticks)))
    monkeypatch.setattr(actions.context, "shared_app", lambda: current)
    # SLA jobs and learned routes have their own tests; here they would touch other stores.
    monkeypatch.setattr(actions.emergency, "schedule_sla", lambda *args, **kwargs: [])
    monkeypatch.setattr(actions.emergency, "learned_routes", lambda: LearnedRoutes())
    yield current


def new_conversation(app: App, sender: str, channel: str = "sms") -> int:
    with session_scope(app.sessions) as session:
        conversation = open_conversation(session, channel=channel, sender_key=sender,
                                         now=app.clock())
        session.flush()
        return conversation.id


def agents_signed_in(app: App, count: int) -> None:
    with session_scope(app.sessions) as session:
        for number in range(count):
            create_account(session, username=f"agent-t{number}", password="pw-for-tests-1",
                           role="agent", display_name=f"坐席{number}", now=app.clock())
            session.flush()
            assert sign_in(session, username=f"agent-t{number}", password="pw-for-tests-1",
                           now=app.clock())


def tracker(conversation_id: int | None, text: str, *, intent: str,
            events: list[dict[str, Any]] | None = None, category: str | None = None,
            entities: list[dict[str, Any]] | None = None) -> Tracker:
    latest: dict[str, Any] = {
        "text": text, "original_text": text, "intent": {"name": intent, "confidence": 0.9},
        "entities": entities or [],
        "metadata": {"channel": "sms", "conversation_id": conversation_id,
                     "resident_id": None, "phone": "13900000001"},
    }
    if category:
        latest["category"] = {"name": category, "confidence": 0.9}
    return Tracker(f"conv-{conversation_id}", {}, latest, events or [], False, None, {},
                   "action_listen")


def fallback_events(count: int) -> list[dict[str, Any]]:
    return [{"event": "user", "text": "嗯嗯", "parse_data": {"intent": {"name": "nlu_fallback"}}}
            for _ in range(count)]


def said(dispatcher: CollectingDispatcher) -> list[tuple[str, str | None]]:
    return [(m["response"], m.get("wait")) for m in dispatcher.messages]


def row(app: App, conversation_id: int) -> Conversation:
    with session_scope(app.sessions) as session:
        conversation = session.get(Conversation, conversation_id)
        assert conversation is not None
        session.expunge(conversation)
        return conversation


def queue_ids(app: App) -> list[int]:
    with session_scope(app.sessions) as session:
        return [conversation.id for conversation in waiting(session)]


# --- each trigger --------------------------------------------------------------------------


def test_every_trigger_queues_with_its_priority_and_life_safety_goes_first(app: App) -> None:
    asked, failed, upset, danger = (new_conversation(app, f"1390000000{n}") for n in range(4))

    d = CollectingDispatcher()
    ActionHandoff().run(d, tracker(asked, "转人工", intent="request_human"), {})
    assert said(d) == [("utter_handoff", "3分钟")]  # nobody ahead, one agent's pace

    d = CollectingDispatcher()
    ActionFallback().run(d, tracker(failed, "嗯嗯", intent="nlu_fallback",
                                    events=fallback_events(2)), {})
    assert said(d) == [("utter_handoff_after_fallback", "6分钟")]  # behind the first

    d = CollectingDispatcher()
    ActionFallback().run(d, tracker(upset, "气死我了到底有没有人管", intent="nlu_fallback",
                                    events=fallback_events(1)), {})
    assert said(d) == [("utter_handoff_distress", "3分钟")]  # jumps both, first strike

    d = CollectingDispatcher()
    ActionEmergency().run(d, tracker(danger, "电梯里困人了", intent="report_emergency",
                                     category="elevator_trapped"), {})
    responses = [name for name, _ in said(d)]
    assert responses[:3] == ["utter_emergency_trapped", "utter_emergency_ticket",
                             "utter_emergency_handoff"]
    assert dict(said(d))["utter_emergency_handoff"] == "3分钟"

    assert queue_ids(app) == [danger, upset, asked, failed]
    reasons = {cid: (row(app, cid).handoff_reason, row(app, cid).queue_priority)
               for cid in (asked, failed, upset, danger)}
    assert reasons == {asked: ("asked", PRIORITIES["asked"]),
                       failed: ("fallback", PRIORITIES["fallback"]),
                       upset: ("distress", PRIORITIES["distress"]),
                       danger: ("life_safety", PRIORITIES["life_safety"])}
    assert PRIORITIES["life_safety"] < PRIORITIES["distress"] < PRIORITIES["asked"]
    with session_scope(app.sessions) as session:
        # The P1 order and the queue entry were written together.
        ticket = session.query(Ticket).filter_by(conversation_id=danger).one()
        assert ticket.urgency == "P1"
        # Those who came first now wait behind the urgent two: three ahead of the fallback.
        last = session.get(Conversation, failed)
        assert estimate_wait(session, conversation=last, now=app.clock()) == 12


def test_the_promised_wait_shrinks_with_agents_online(app: App) -> None:
    agents_signed_in(app, 2)
    first, second, third = (new_conversation(app, f"1380000000{n}") for n in range(3))
    waits = []
    for conversation_id in (first, second, third):
        d = CollectingDispatcher()
        ActionHandoff().run(d, tracker(conversation_id, "人工客服", intent="request_human"), {})
        waits.append(said(d)[0][1])
    # (ahead + 1) × 3 minutes shared by 2 agents, never under 2 minutes.
    assert waits == ["2分钟", "3分钟", "4分钟"]


def test_one_fallback_alone_asks_again_and_queues_nothing(app: App) -> None:
    conversation_id = new_conversation(app, "13900000011")
    d = CollectingDispatcher()
    ActionFallback().run(d, tracker(conversation_id, "嗯那个", intent="nlu_fallback",
                                    events=fallback_events(1)), {})
    assert said(d) == [("utter_ask_rephrase", None)]
    assert row(app, conversation_id).state == "bot" and queue_ids(app) == []


def test_asking_for_a_person_while_upset_is_queued_as_distress(app: App) -> None:
    conversation_id = new_conversation(app, "13900000012")
    d = CollectingDispatcher()
    ActionHandoff().run(d, tracker(conversation_id, "什么破机器人，给我转人工！！！",
                                   intent="request_human"), {})
    assert said(d)[0][0] == "utter_handoff"
    assert row(app, conversation_id).handoff_reason == "distress"


def test_life_safety_moves_an_already_queued_resident_to_the_front(app: App) -> None:
    earlier, resident = new_conversation(app, "13900000021"), new_conversation(app, "13900000022")
    for conversation_id in (earlier, resident):
        ActionHandoff().run(CollectingDispatcher(),
                            tracker(conversation_id, "转人工", intent="request_human"), {})
    d = CollectingDispatcher()
    ActionEmergency().run(d, tracker(resident, "我家里着火了", intent="report_emergency",
                                     category="fire_hazard"), {})
    assert queue_ids(app) == [resident, earlier]
    assert row(app, resident).handoff_reason == "life_safety"
    assert dict(said(d))["utter_emergency_handoff"] == "3分钟"


def test_maybe_escalate_queues_only_the_upset_and_tells_them_once(app: App) -> None:
    calm, upset = new_conversation(app, "13900000031"), new_conversation(app, "13900000032")
    d = CollectingDispatcher()
    assert maybe_escalate(tracker(calm, "水管漏了好几天了", intent="report_problem"), d) is False
    assert d.messages == [] and row(app, calm).state == "bot"

    d = CollectingDispatcher()
    text = "三天了还没人来修，我一个老人家怎么办"
    assert maybe_escalate(tracker(upset, text, intent="report_problem"), d) is True
    assert said(d) == [("utter_handoff_distress", "3分钟")]
    assert (row(app, upset).state, row(app, upset).handoff_reason) == ("queued", "distress")

    d = CollectingDispatcher()  # already waiting: not told again, not queued twice
    assert maybe_escalate(tracker(upset, "呜呜呜", intent="chitchat"), d) is False
    assert d.messages == [] and queue_ids(app) == [upset]


def test_emergency_without_a_conversation_still_opens_the_order(app: App) -> None:
    d = CollectingDispatcher()
    ActionEmergency().run(d, tracker(None, "闻到很大的煤气味", intent="report_emergency",
                                     category="gas_leak"), {})
    assert "utter_emergency_handoff" not in [name for name, _ in said(d)]
    assert queue_ids(app) == []


def test_every_response_the_triggers_use_is_in_the_domain() -> None:
    texts = domain_texts()
    for name in ("utter_handoff", "utter_handoff_after_fallback", "utter_handoff_distress",
                 "utter_emergency_handoff"):
        assert name in texts, f"{name} is missing from domain/"
        if name != "utter_handoff":
            assert "{wait}" in texts[name]


# --- the hub: anger and distress on any message, whatever the bot made of it ---------------


class ScriptedRasa:
    """Rasa's REST webhook answering every message with one line, as utter_chitchat would."""

    def __init__(self) -> None:
        self.heard: list[str] = []

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.heard.append(body["message"])
        return web.json_response([{"text": "我是社区的智能助手，专门帮您报修和办事。"}])


@pytest.fixture
async def hub(app: App) -> Any:
    rasa = ScriptedRasa()
    server_app = web.Application()
    server_app.add_routes([web.post("/webhooks/rest/webhook", rasa.webhook)])
    server = TestServer(server_app, host="127.0.0.1")
    await server.start_server()
    current = Hub(app, RasaClient(str(server.make_url("")).rstrip("/"), timeout_s=5))
    yield current
    await current.close()
    await server.close()


def sms(sender: str, text: str) -> Inbound:
    return Inbound(channel="sms", sender_key=sender, text=text, provider_message_id=None,
                   phone=sender)


async def test_hub_queues_an_angry_resident_and_the_bot_still_answers(app: App, hub: Hub) -> None:
    outcome = await hub.handle(sms("13900000041", "你们这是什么破服务，打了五次电话都没人管"))
    assert outcome.state == "queued"
    assert outcome.replies[0].startswith("我是社区的智能助手")
    assert "预计3分钟" in outcome.replies[-1]
    assert row(app, outcome.conversation_id).handoff_reason == "distress"


async def test_hub_leaves_an_ordinary_report_with_the_bot(app: App, hub: Hub) -> None:
    outcome = await hub.handle(sms("13900000042", "我要投诉楼上邻居天天晚上跳绳"))
    assert outcome.state == "bot" and len(outcome.replies) == 1 and queue_ids(app) == []


async def test_hub_moves_a_waiting_resident_up_when_they_get_upset(app: App, hub: Hub) -> None:
    first = new_conversation(app, "13900000043")
    second = (await hub.handle(sms("13900000044", "你好"))).conversation_id
    for conversation_id in (first, second):
        ActionHandoff().run(CollectingDispatcher(),
                            tracker(conversation_id, "转人工", intent="request_human"), {})
    assert queue_ids(app) == [first, second]
    outcome = await hub.handle(sms("13900000044", "怎么还没人理我？？？"))
    assert outcome.replies == [domain_texts()["utter_queued_ack"]]
    assert queue_ids(app) == [second, first]
