"""Reporting a problem: start, collect what is missing, read back, confirm or correct."""
from __future__ import annotations

from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import ActiveLoop, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.context import app, drop_report, jobstore, learned_routes, session, turn_of
from bot.dispatch import cancel_open_orders
from bot.reports import (
    ReportDraft,
    find_ticket,
    location_problem,
    required_fields,
    submit_report,
    summary,
)
from bot.scheduler import schedule_sla
from bot.ticket_view import format_location
from bot.tickets import STATUS_LABELS, TicketError, cancel_ticket, update_location
from bot.triage import triage

_FIELD_SLOTS = {
    "building": "report_building", "unit": "report_unit", "room": "report_room",
    "phone": "report_phone", "time_window": "report_time_window",
}


def ranking_from(tracker: Tracker) -> tuple[tuple[str, float], ...]:
    """Return the classifier's category ranking kept from the report's first message."""
    return tuple((str(name), float(p)) for name, p in tracker.get_slot("report_ranking") or ())


def draft_from(tracker: Tracker) -> ReportDraft:
    """Collect the report slots into a draft."""
    return ReportDraft(
        category=tracker.get_slot("report_category") or "other",
        description=tracker.get_slot("report_description") or "",
        channel=turn_of(tracker).channel,
        building=tracker.get_slot("report_building"),
        unit=tracker.get_slot("report_unit"),
        room=tracker.get_slot("report_room"),
        floor=tracker.get_slot("report_floor"),
        phone=tracker.get_slot("report_phone"),
        time_window=tracker.get_slot("report_time_window"),
        urgency=tracker.get_slot("report_urgency"),
        urgency_reason=None,
    )


class ActionStartReport(Action):
    def name(self) -> str:
        return "action_start_report"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: DomainDict) -> list[EventType]:
        turn = turn_of(tracker)
        result = triage(tracker.latest_message, app().catalogue, text=turn.text)
        events: list[EventType] = [
            SlotSet("report_category", result.category),
            SlotSet("report_ranking", [list(item) for item in result.ranking]),
            SlotSet("report_description", turn.text[:500]),
            SlotSet("report_urgency", result.urgency),
            SlotSet("confirm_pending", None),
        ]
        if turn.phone and not tracker.get_slot("report_phone"):
            events.append(SlotSet("report_phone", turn.phone))
        return events


class ValidateReportForm(FormValidationAction):
    def name(self) -> str:
        return "validate_report_form"

    async def required_slots(self, domain_slots: list[str], dispatcher: CollectingDispatcher,
                             tracker: Tracker, domain: DomainDict) -> list[str]:
        category = tracker.get_slot("report_category") or "other"
        return [_FIELD_SLOTS[name] for name in required_fields(app().catalogue, category)]

    def validate_report_building(self, value: Any, dispatcher: CollectingDispatcher,
                                 tracker: Tracker, domain: DomainDict) -> dict[str, Any]:
        community = app().community
        if location_problem(community, building=str(value), unit=None, room=None):
            dispatcher.utter_message(response="utter_invalid_building",
                                     max_building=community.max_building)
            return {"report_building": None}
        return {"report_building": str(value)}

    def validate_report_unit(self, value: Any, dispatcher: CollectingDispatcher,
                             tracker: Tracker, domain: DomainDict) -> dict[str, Any]:
        building = tracker.get_slot("report_building")
        if location_problem(app().community, building=building, unit=str(value), room=None):
            found = app().community.building(building)
            units = found.units if found else 1
            dispatcher.utter_message(text=f"{building}号楼只有1到{units}单元，请再说一下。")
            return {"report_unit": None}
        return {"report_unit": str(value)}

    def validate_report_room(self, value: Any, dispatcher: CollectingDispatcher,
                             tracker: Tracker, domain: DomainDict) -> dict[str, Any]:
        building = tracker.get_slot("report_building")
        if location_problem(app().community, building=building, unit=None, room=str(value)):
            dispatcher.utter_message(response="utter_invalid_room")
            return {"report_room": None}
        return {"report_room": str(value)}

    def validate_report_phone(self, value: Any, dispatcher: CollectingDispatcher,
                              tracker: Tracker, domain: DomainDict) -> dict[str, Any]:
        digits = "".join(ch for ch in str(value) if ch.isdigit())
        if not (len(digits) == 11 and digits.startswith("1")) and not 10 <= len(digits) <= 12:
            dispatcher.utter_message(response="utter_invalid_phone")
            return {"report_phone": None}
        return {"report_phone": digits}

    def validate_report_time_window(self, value: Any, dispatcher: CollectingDispatcher,
                                    tracker: Tracker, domain: DomainDict) -> dict[str, Any]:
        text = str(value).strip()
        if not text:
            dispatcher.utter_message(response="utter_invalid_time")
            return {"report_time_window": None}
        return {"report_time_window": text[:64]}


def read_back(dispatcher: CollectingDispatcher, tracker: Tracker) -> list[EventType]:
    """Say back the whole report and wait for a yes or a correction."""
    dispatcher.utter_message(response="utter_confirm_report",
                             summary=summary(app().catalogue, draft_from(tracker)))
    return [SlotSet("confirm_pending", "report")]


class ActionConfirmReport(Action):
    def name(self) -> str:
        return "action_confirm_report"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: DomainDict) -> list[EventType]:
        return read_back(dispatcher, tracker)


class ActionHandleAffirm(Action):
    """A yes confirms whatever is waiting: a read-back report or a cancellation."""

    def name(self) -> str:
        return "action_handle_affirm"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: DomainDict) -> list[EventType]:
        pending = tracker.get_slot("confirm_pending") or ""
        turn = turn_of(tracker)
        current = app()
        if pending == "report":
            with session() as db:
                ticket = submit_report(db, now=current.clock(), catalogue=current.catalogue,
                                       roster=current.roster, draft=draft_from(tracker),
                                       resident_id=turn.resident_id,
                                       conversation_id=turn.conversation_id,
                                       ranking=ranking_from(tracker), learned=learned_routes())
                number = ticket.number
                department = current.catalogue.department(ticket.lead_department).name
            # After the commit: on SQLite the job store writes through its own connection.
            schedule_sla(jobstore(), ticket=ticket, catalogue=current.catalogue,
                         now=current.clock())
            dispatcher.utter_message(response="utter_ticket_created", number=number,
                                     department=department)
            return [SlotSet("confirm_pending", None), SlotSet("ticket_number", number),
                    SlotSet("report_category", None), SlotSet("report_description", None),
                    SlotSet("report_urgency", None)]
        if pending.startswith("cancel:"):
            number = pending.removeprefix("cancel:")
            with session() as db:
                ticket = find_ticket(db, text=number, conversation_id=None, resident_id=None)
                try:
                    if ticket is None:
                        raise TicketError(number)
                    cancel_ticket(db, ticket=ticket, actor="resident", now=current.clock(),
                                  reason="居民撤销")
                    cancel_open_orders(db, ticket=ticket, actor="resident", now=current.clock())
                except TicketError:
                    status = STATUS_LABELS.get(ticket.status, "") if ticket else "已办结"
                    dispatcher.utter_message(response="utter_ticket_closed_cannot_change",
                                             number=number, status=status)
                    return [SlotSet("confirm_pending", None)]
            dispatcher.utter_message(response="utter_ticket_cancelled", number=number)
            return [SlotSet("confirm_pending", None)]
        dispatcher.utter_message(response="utter_anything_else")
        return []


class ActionHandleDeny(Action):
    """A no reopens the read-back for a correction, keeps an order, or drops a report."""

    def name(self) -> str:
        return "action_handle_deny"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: DomainDict) -> list[EventType]:
        pending = tracker.get_slot("confirm_pending") or ""
        if tracker.active_loop_name == "report_form":
            return drop_report(dispatcher)
        if pending == "report":
            dispatcher.utter_message(response="utter_ask_what_is_wrong")
            return [ActiveLoop(None)]
        if pending.startswith("cancel:"):
            dispatcher.utter_message(response="utter_cancel_kept",
                                     number=pending.removeprefix("cancel:"))
            return [ActiveLoop(None), SlotSet("confirm_pending", None)]
        dispatcher.utter_message(response="utter_anything_else")
        return [ActiveLoop(None)]


class ActionHandleCorrection(Action):
    """New values arrived (the slots already hold them): read back again, or fix the order."""

    def name(self) -> str:
        return "action_handle_correction"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: DomainDict) -> list[EventType]:
        pending = tracker.get_slot("confirm_pending") or ""
        if pending == "report":
            return read_back(dispatcher, tracker)
        return update_order_location(dispatcher, tracker)


class ActionHandleInform(Action):
    """Bare information outside a form completes whatever it belongs to."""

    def name(self) -> str:
        return "action_handle_inform"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: DomainDict) -> list[EventType]:
        if (tracker.get_slot("confirm_pending") or "") == "report":
            return read_back(dispatcher, tracker)
        return update_order_location(dispatcher, tracker)


def update_order_location(dispatcher: CollectingDispatcher, tracker: Tracker) -> list[EventType]:
    """Put a location the resident just gave onto their open order, or ask what is wrong."""
    latest = tracker.latest_message or {}
    given = {e["entity"]: str(e["value"]) for e in latest.get("entities") or []
             if e.get("entity") in ("building", "unit", "room", "floor")}
    turn = turn_of(tracker)
    if given:
        current = app()
        with session() as db:
            ticket = find_ticket(db, text=None, conversation_id=turn.conversation_id,
                                 resident_id=turn.resident_id)
            if ticket is not None:
                try:
                    update_location(db, ticket=ticket, actor="resident", now=current.clock(),
                                    reason="居民补充地点", **given)
                except TicketError:
                    ticket = None
                else:
                    location = format_location(building=ticket.building, unit=ticket.unit,
                                               room=ticket.room, floor=ticket.floor)
            if ticket is not None:
                dispatcher.utter_message(response="utter_location_added", location=location)
                return []
    dispatcher.utter_message(response="utter_ask_problem")
    return []
