"""What every action needs: the application, the resident's metadata and a session."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import ActiveLoop, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.orm import Session

from bot.app import App, shared_app
from bot.db import session_scope
from bot.dispatch import load_learned_routes
from bot.scheduler import open_jobstore
from routing.learning import LearnedRoutes

REPORT_SLOTS = (
    "report_category", "report_description", "report_urgency", "report_building", "report_unit",
    "report_room", "report_floor", "report_phone", "report_time_window", "report_ranking",
)


def drop_report(dispatcher: CollectingDispatcher) -> list[EventType]:
    """Abandon the report being collected: say so, end the form, forget all but the phone."""
    dispatcher.utter_message(response="utter_report_dropped")
    return [ActiveLoop(None), SlotSet("requested_slot", None), SlotSet("confirm_pending", None)] + [
        SlotSet(name, None) for name in REPORT_SLOTS if name != "report_phone"]


@dataclass(frozen=True)
class Turn:
    """The resident behind the current turn, as the hub described them in the metadata."""

    channel: str
    conversation_id: int | None
    resident_id: int | None
    phone: str | None
    text: str


def turn_of(tracker: Tracker) -> Turn:
    """Read the hub's metadata and the resident's own words from the latest message."""
    latest: dict[str, Any] = tracker.latest_message or {}
    metadata = latest.get("metadata") or {}
    channel = metadata.get("channel") if metadata.get("channel") in (
        "web", "sms", "wechat", "voice") else "web"
    text = str(latest.get("original_text") or latest.get("text") or "")
    return Turn(
        channel=channel,
        conversation_id=_int_or_none(metadata.get("conversation_id")),
        resident_id=_int_or_none(metadata.get("resident_id")),
        phone=metadata.get("phone") or None,
        text=text,
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def app() -> App:
    return shared_app()


@lru_cache(maxsize=1)
def jobstore() -> Any:
    """Return this process's handle on the persistent SLA job store (opened on first use)."""
    return open_jobstore(app().settings.database_url)


# Routes learned from finished orders change slowly; re-reading them on every dispatch
# would cost a scan of all finished tickets per new order.
LEARNED_ROUTES_TTL_S = 600.0
_learned: dict[str, Any] = {"at": float("-inf"), "routes": None}


def learned_routes() -> LearnedRoutes:
    """Return the routes learned from finished orders, refreshed every ten minutes."""
    if time.monotonic() - _learned["at"] > LEARNED_ROUTES_TTL_S:
        with session() as db:
            _learned["routes"] = load_learned_routes(db, roster=app().roster)
        _learned["at"] = time.monotonic()
    return _learned["routes"]


@contextmanager
def session() -> Iterator[Session]:
    with session_scope(app().sessions) as current:
        yield current
