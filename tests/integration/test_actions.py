"""Custom actions against a real database: trackers in, events and response keys out."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select

from actions.emergency import ActionEmergency
from actions.followup import ActionCancelTicket, ActionTicketStatus
from actions.report import ActionConfirmReport, ActionHandleAffirm, ActionStartReport
from bot.app import shared_app
from bot.migrate import upgrade
from bot.models import Ticket, TicketEvent

pytestmark = pytest.mark.integration


@pytest.fixture()
def database(tmp_path, monkeypatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'actions.db'}"
    upgrade(url)
    monkeypatch.setenv("DATABASE_URL", url)
    shared_app.cache_clear()
    yield url
    shared_app().engine.dispose()
    shared_app.cache_clear()


def tracker(*, text: str, intent: str = "report_problem", category: str | None = None,
            slots: dict[str, Any] | None = None, entities: list[dict] | None = None,
            channel: str = "sms", phone: str | None = "13900000001",
            active_loop: str | None = None) -> Tracker:
    latest = {
        "text": text, "original_text": text, "intent": {"name": intent, "confidence": 0.9},
        "entities": entities or [],
        "metadata": {"channel": channel, "conversation_id": None, "resident_id": None,
                     "phone": phone},
    }
    if category:
        latest["category"] = {"name": category, "confidence": 0.9}
    return Tracker("t-1", dict(slots or {}), latest, [], False, None,
                   {"name": active_loop} if active_loop else {}, "action_listen")


def slot_events(events: list[dict]) -> dict[str, Any]:
    return {e["name"]: e["value"] for e in events if e.get("event") == "slot"}


def responses(dispatcher: CollectingDispatcher) -> list[str]:
    return [m.get("response") for m in dispatcher.messages]


def test_start_read_back_and_confirm_writes_one_order(database) -> None:
    dispatcher = CollectingDispatcher()
    text = "喂 五号楼二单元的电梯又坏了"
    started = slot_events(ActionStartReport().run(
        dispatcher, tracker(text=text, category="elevator_fault"), {}))
    assert started["report_category"] == "elevator_fault"
    assert started["report_phone"] == "13900000001"  # the SMS sender's number
    assert started["report_description"] == text

    slots = {**started, "report_building": "5", "report_unit": "2"}
    events = ActionConfirmReport().run(dispatcher, tracker(text="", slots=slots), {})
    assert SlotSet("confirm_pending", "report") in events
    assert dispatcher.messages[-1]["response"] == "utter_confirm_report"
    assert "5号楼2单元" in dispatcher.messages[-1]["summary"]

    slots["confirm_pending"] = "report"
    events = ActionHandleAffirm().run(dispatcher, tracker(text="对", intent="affirm",
                                                          slots=slots), {})
    number = slot_events(events)["ticket_number"]
    assert dispatcher.messages[-1]["response"] == "utter_ticket_created"
    with shared_app().sessions() as session:
        ticket = session.execute(select(Ticket).where(Ticket.number == number)).scalar_one()
        assert (ticket.category, ticket.building, ticket.unit) == ("elevator_fault", "5", "2")
        assert ticket.contact_phone == "13900000001" and ticket.resident is not None


def test_affirm_with_nothing_pending_writes_nothing(database) -> None:
    dispatcher = CollectingDispatcher()
    ActionHandleAffirm().run(dispatcher, tracker(text="好的", intent="affirm"), {})
    assert responses(dispatcher) == ["utter_anything_else"]
    with shared_app().sessions() as session:
        assert session.execute(select(Ticket)).first() is None


def test_emergency_opens_a_p1_order_and_alerts_on_duty(database) -> None:
    dispatcher = CollectingDispatcher()
    ActionEmergency().run(dispatcher, tracker(
        text="救命 家里着火了", intent="report_emergency", category="fire_hazard",
        entities=[{"entity": "emergency", "value": "fire"}]), {})
    assert responses(dispatcher)[:2] == ["utter_emergency_fire", "utter_emergency_ticket"]
    assert responses(dispatcher)[-1] == "utter_emergency_ask_location"
    with shared_app().sessions() as session:
        ticket = session.execute(select(Ticket)).scalar_one()
        assert ticket.urgency == "P1" and ticket.lead_department == "property"
        kinds = session.execute(select(TicketEvent.kind)).scalars().all()
        assert "on_duty_alerted" in kinds


def test_status_and_cancel_without_any_order(database) -> None:
    dispatcher = CollectingDispatcher()
    ActionTicketStatus().run(dispatcher, tracker(text="我的工单怎么样了", intent="status_query",
                                                 phone=None), {})
    ActionCancelTicket().run(dispatcher, tracker(text="不用修了", intent="cancel_ticket",
                                                 phone=None), {})
    assert responses(dispatcher) == ["utter_no_ticket", "utter_no_ticket"]


def test_cancel_inside_a_report_drops_it(database) -> None:
    dispatcher = CollectingDispatcher()
    events = ActionCancelTicket().run(dispatcher, tracker(
        text="算了不修了", intent="cancel_ticket", active_loop="report_form",
        slots={"report_category": "heating"}), {})
    assert responses(dispatcher) == ["utter_report_dropped"]
    assert slot_events(events)["report_category"] is None
