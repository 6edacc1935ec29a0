"""Following up an order: status, cancellation, added information."""
from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import ActiveLoop, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.context import app, drop_report, session, turn_of
from bot.reports import find_ticket
from bot.tickets import STATUS_LABELS, TicketError, add_info

# The words that announce an addition; what follows them is the addition itself.
_ADDINFO_LEAD = re.compile(
    r"^[\s，,。.！!…~]*(?:喂|那个|哎|嗯|对了|还有)?[\s，,]*(?:我)?(?:还|再)?(?:要|想)?"
    r"(?:补充(?:一下|一点|说明|几句)?|加一句|再说一句|多说一句|刚才忘了说|忘了说|还有一点|另外)"
    r"[\s，,。.：:！!…~]*"
)

_STATUS_DETAIL = {
    "new": "正在派单，很快有人联系您。",
    "dispatched": "已派给{department}，等待接单。",
    "accepted": "{department}已接单，会尽快处理。",
    "in_progress": "{department}正在处理。",
    "resolved": "已处理完，满意的话请给个评价。",
    "closed": "已办结。",
    "cancelled": "已撤销。",
    "reopened": "已重新处理，会尽快联系您。",
}


def addition_in(text: str) -> str:
    """Return what the resident added after words like 我还要补充一下, or ''."""
    rest = _ADDINFO_LEAD.sub("", text, count=1).strip()
    return rest if len(rest) >= 2 and rest != text.strip() or len(rest) >= 6 else ""


class ActionTicketStatus(Action):
    def name(self) -> str:
        return "action_ticket_status"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: DomainDict) -> list[EventType]:
        turn = turn_of(tracker)
        catalogue = app().catalogue
        with session() as db:
            ticket = find_ticket(db, text=turn.text, conversation_id=turn.conversation_id,
                                 resident_id=turn.resident_id, open_only=False)
            if ticket is None:
                dispatcher.utter_message(response="utter_no_ticket")
                return []
            department = catalogue.department(ticket.lead_department).name
            category = catalogue.category(ticket.category).short_name
            detail = _STATUS_DETAIL.get(ticket.status, "").format(department=department)
            dispatcher.utter_message(response="utter_ticket_status", number=ticket.number,
                                     category=category, status=STATUS_LABELS[ticket.status],
                                     detail=detail)
            return [SlotSet("ticket_number", ticket.number)]


class ActionCancelTicket(Action):
    """Drop a report still being collected, or ask to confirm cancelling an open order."""

    def name(self) -> str:
        return "action_cancel_ticket"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: DomainDict) -> list[EventType]:
        if tracker.active_loop_name == "report_form":
            return drop_report(dispatcher)
        turn = turn_of(tracker)
        catalogue = app().catalogue
        with session() as db:
            ticket = find_ticket(db, text=turn.text, conversation_id=turn.conversation_id,
                                 resident_id=turn.resident_id)
            if ticket is None:
                dispatcher.utter_message(response="utter_no_ticket")
                return [ActiveLoop(None)]
            number = ticket.number
            category = catalogue.category(ticket.category).short_name
        dispatcher.utter_message(response="utter_confirm_cancel", number=number, category=category)
        return [ActiveLoop(None), SlotSet("confirm_pending", f"cancel:{number}")]


class ValidateAddinfoForm(FormValidationAction):
    def name(self) -> str:
        return "validate_addinfo_form"

    async def extract_addinfo_text(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                   domain: DomainDict) -> dict[str, Any]:
        # The addition often comes in the same breath: 我还要补充一下，漏水的地方在厨房.
        if tracker.get_slot("requested_slot") is None:
            addition = addition_in(turn_of(tracker).text)
            if addition:
                return {"addinfo_text": addition}
        return {}

    def validate_addinfo_text(self, value: Any, dispatcher: CollectingDispatcher,
                              tracker: Tracker, domain: DomainDict) -> dict[str, Any]:
        text = str(value or "").strip()
        return {"addinfo_text": text[:1000] or None}


class ActionAddInfo(Action):
    def name(self) -> str:
        return "action_add_info"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: DomainDict) -> list[EventType]:
        turn = turn_of(tracker)
        text = tracker.get_slot("addinfo_text") or ""
        current = app()
        with session() as db:
            ticket = find_ticket(db, text=None, conversation_id=turn.conversation_id,
                                 resident_id=turn.resident_id)
            if ticket is None:
                dispatcher.utter_message(response="utter_no_ticket")
                return [SlotSet("addinfo_text", None)]
            try:
                add_info(db, ticket=ticket, text=text, actor="resident", now=current.clock())
            except TicketError:
                dispatcher.utter_message(response="utter_ticket_closed_cannot_change",
                                         number=ticket.number,
                                         status=STATUS_LABELS[ticket.status])
                return [SlotSet("addinfo_text", None)]
            number = ticket.number
        dispatcher.utter_message(response="utter_info_added", number=number)
        return [SlotSet("addinfo_text", None), SlotSet("ticket_number", number)]
