"""What every action needs: the application, the resident's metadata and a session."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rasa_sdk import Tracker
from sqlalchemy.orm import Session

from bot.app import App, shared_app
from bot.db import session_scope

REPORT_SLOTS = (
    "report_category", "report_description", "report_urgency", "report_building", "report_unit",
    "report_room", "report_floor", "report_phone", "report_time_window",
)


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


@contextmanager
def session() -> Iterator[Session]:
    with session_scope(app().sessions) as current:
        yield current
