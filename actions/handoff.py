"""A person is one word away: explicit requests and the two-strike fallback."""
from __future__ import annotations

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy import func, select

from actions.context import app, session, turn_of
from bot.conversations import set_conversation_state
from bot.models import Conversation

# A rough promise is better than none: minutes per conversation already waiting.
_MINUTES_PER_WAITING = 3
_MIN_WAIT_MINUTES = 3


def consecutive_fallbacks(tracker: Tracker) -> int:
    """Count the resident's latest messages in a row that the NLU did not understand."""
    count = 0
    for event in reversed(tracker.events):
        if event.get("event") != "user":
            continue
        if (event.get("parse_data") or {}).get("intent", {}).get("name") != "nlu_fallback":
            break
        count += 1
    return count


def hand_off(dispatcher: CollectingDispatcher, tracker: Tracker, response: str) -> list[EventType]:
    """Queue the conversation for the agents and tell the resident how long it may take."""
    turn = turn_of(tracker)
    current = app()
    waiting = 0
    with session() as db:
        waiting = db.execute(
            select(func.count()).select_from(Conversation).where(Conversation.state == "queued")
        ).scalar_one()
        conversation = db.get(Conversation, turn.conversation_id) if turn.conversation_id else None
        if conversation is not None:
            set_conversation_state(db, conversation=conversation, state="queued",
                                   now=current.clock())
    minutes = max(_MIN_WAIT_MINUTES, waiting * _MINUTES_PER_WAITING)
    dispatcher.utter_message(response=response, wait=f"{minutes}分钟")
    return [ActiveLoop(None), SlotSet("requested_slot", None), FollowupAction("action_listen")]


class ActionHandoff(Action):
    def name(self) -> str:
        return "action_handoff"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: DomainDict) -> list[EventType]:
        return hand_off(dispatcher, tracker, "utter_handoff")


class ActionFallback(Action):
    def name(self) -> str:
        return "action_fallback"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: DomainDict) -> list[EventType]:
        if consecutive_fallbacks(tracker) >= 2:
            return hand_off(dispatcher, tracker, "utter_handoff_after_fallback")
        dispatcher.utter_message(response="utter_ask_rephrase")
        return []
