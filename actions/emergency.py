"""Life safety first: advise the emergency number, open a P1 order, alert the on-duty human,
and put the conversation at the head of the agents' queue."""
from __future__ import annotations

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.context import app, jobstore, learned_routes, session, turn_of
from bot.handoff import MIN_WAIT_MINUTES, queue
from bot.models import Conversation
from bot.reports import ReportDraft, submit_report
from bot.scheduler import schedule_sla
from bot.tickets import record_event
from bot.triage import EMERGENCY_URGENCY, triage

# When the safety detector did not name the danger, the category tells it.
_KIND_BY_CATEGORY = {
    "elevator_trapped": "trapped",
    "gas_leak": "gas",
    "fire_hazard": "fire",
    "medical_service": "medical",
    "public_security": "violence",
}


class ActionEmergency(Action):
    def name(self) -> str:
        return "action_emergency"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: DomainDict) -> list[EventType]:
        turn = turn_of(tracker)
        current = app()
        result = triage(tracker.latest_message, current.catalogue, text=turn.text)
        kind = result.emergency or _KIND_BY_CATEGORY.get(result.category, "medical")
        dispatcher.utter_message(response=f"utter_emergency_{kind}")

        draft = ReportDraft(
            category=result.category,
            description=turn.text[:500],
            channel=turn.channel,
            building=tracker.get_slot("report_building"),
            unit=tracker.get_slot("report_unit"),
            room=tracker.get_slot("report_room"),
            floor=tracker.get_slot("report_floor"),
            phone=tracker.get_slot("report_phone") or turn.phone,
            urgency=EMERGENCY_URGENCY,
            urgency_reason=result.urgency_reason,
        )
        with session() as db:
            ticket = submit_report(db, now=current.clock(), catalogue=current.catalogue,
                                   roster=current.roster, draft=draft,
                                   conversation_id=turn.conversation_id,
                                   resident_id=turn.resident_id, ranking=result.ranking,
                                   learned=learned_routes())
            lead = current.catalogue.department(ticket.lead_department)
            record_event(db, ticket=ticket, kind="on_duty_alerted", actor="bot",
                         now=current.clock(),
                         data={"emergency": kind, "department": lead.id, "phone": lead.phone})
            number = ticket.number
            # In the same transaction as the order: no P1 without a person on the way.
            conversation = (db.get(Conversation, turn.conversation_id)
                            if turn.conversation_id else None)
            minutes = None
            if conversation is not None and conversation.state != "closed":
                minutes = queue(db, conversation=conversation, reason="life_safety",
                                now=current.clock())
        schedule_sla(jobstore(), ticket=ticket, catalogue=current.catalogue, now=current.clock())
        dispatcher.utter_message(response="utter_emergency_ticket", number=number)
        if minutes is not None:
            dispatcher.utter_message(response="utter_emergency_handoff",
                                     wait=f"{max(minutes, MIN_WAIT_MINUTES)}分钟")
        if not draft.building:
            dispatcher.utter_message(response="utter_emergency_ask_location")
        return [ActiveLoop(None), SlotSet("requested_slot", None), SlotSet("ticket_number", number),
                SlotSet("confirm_pending", None), SlotSet("report_category", None)]
