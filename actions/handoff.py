"""A person is one word away: explicit requests, the two-strike fallback, anger and distress.

Every trigger goes through bot.handoff.queue, which ranks the conversation (life safety,
then distress, then the rest) and estimates the wait; the resident is told a person is
coming and roughly when.
"""
from __future__ import annotations

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.context import app, session, turn_of
from bot.handoff import MIN_WAIT_MINUTES, queue
from bot.models import Conversation
from nlu.distress import detect_distress

__all__ = ["ActionFallback", "ActionHandoff", "consecutive_fallbacks", "hand_off",
           "maybe_escalate", "queue_turn"]


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


def queue_turn(tracker: Tracker, reason: str, *, only_from_bot: bool = False) -> str | None:
    """Queue this turn's conversation; return the promised wait ("3分钟"), None if not queued.

    With only_from_bot, a conversation already queued or with an agent is left as it is
    (apart from moving up the queue) and None comes back, so nobody is told twice.
    """
    turn = turn_of(tracker)
    current = app()
    if turn.conversation_id is None:
        return None if only_from_bot else f"{MIN_WAIT_MINUTES}分钟"
    with session() as db:
        conversation = db.get(Conversation, turn.conversation_id)
        if conversation is None or conversation.state == "closed":
            return None if only_from_bot else f"{MIN_WAIT_MINUTES}分钟"
        was = conversation.state
        minutes = queue(db, conversation=conversation, reason=reason, now=current.clock())
    if only_from_bot and was != "bot":
        return None
    return f"{max(minutes, MIN_WAIT_MINUTES)}分钟"


def hand_off(dispatcher: CollectingDispatcher, tracker: Tracker, response: str,
             reason: str = "asked") -> list[EventType]:
    """Queue the conversation for the agents and tell the resident how long it may take."""
    wait = queue_turn(tracker, reason)
    dispatcher.utter_message(response=response, wait=wait)
    return [ActiveLoop(None), SlotSet("requested_slot", None), FollowupAction("action_listen")]


def maybe_escalate(tracker: Tracker, dispatcher: CollectingDispatcher) -> bool:
    """If the resident's latest words show anger or distress, queue them for a person.

    The bot still answers this turn; the resident is also told a person is coming.
    Call it at the end of any action that answers free text. True if it queued.
    """
    if detect_distress(turn_of(tracker).text) is None:
        return False
    wait = queue_turn(tracker, "distress", only_from_bot=True)
    if wait is None:
        return False
    dispatcher.utter_message(response="utter_handoff_distress", wait=wait)
    return True


class ActionHandoff(Action):
    def name(self) -> str:
        return "action_handoff"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: DomainDict) -> list[EventType]:
        # 气死了，转人工: asked for, and upset too; the queue should know both.
        upset = detect_distress(turn_of(tracker).text) is not None
        return hand_off(dispatcher, tracker, "utter_handoff", "distress" if upset else "asked")


class ActionFallback(Action):
    def name(self) -> str:
        return "action_fallback"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: DomainDict) -> list[EventType]:
        if detect_distress(turn_of(tracker).text) is not None:
            # Not understood *and* upset: asking them to rephrase would make it worse.
            return hand_off(dispatcher, tracker, "utter_handoff_distress", "distress")
        if consecutive_fallbacks(tracker) >= 2:
            return hand_off(dispatcher, tracker, "utter_handoff_after_fallback", "fallback")
        dispatcher.utter_message(response="utter_ask_rephrase")
        return []
