"""Work-order (工单) services: numbering, the status machine and the event log.

Every change appends a TicketEvent; times such as dispatched_at or resolved_at are
derived from those events rather than stored, so the history is the single truth.
Services take the Session and the clock (`now`, timezone-aware) explicitly and never
commit: the caller owns the transaction.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.conversations import InvalidPhone, normalize_phone
from bot.models import (
    CHANNELS,
    TICKET_STATUSES,
    URGENCIES,
    Conversation,
    Rating,
    Resident,
    Ticket,
    TicketCounter,
    TicketEvent,
)
from routing.catalogue import Catalogue, default_catalogue

DISPLAY_TIMEZONE = "Asia/Shanghai"

STATUS_LABELS: Mapping[str, str] = {
    "new": "已受理",
    "dispatched": "已派单",
    "accepted": "已接单",
    "in_progress": "处理中",
    "resolved": "已办结",
    "closed": "已关闭",
    "cancelled": "已取消",
    "reopened": "已重新处理",
}

TRANSITIONS: Mapping[str, tuple[str, ...]] = {
    "new": ("dispatched", "cancelled"),
    "dispatched": ("accepted", "cancelled"),
    "accepted": ("in_progress", "cancelled"),
    "in_progress": ("resolved", "cancelled"),
    "resolved": ("closed", "reopened"),
    "closed": ("reopened",),
    "reopened": ("dispatched", "accepted", "in_progress", "cancelled"),
    "cancelled": (),
}

# Still being worked on: what "my ticket" most likely refers to.
OPEN_STATUSES: tuple[str, ...] = ("new", "dispatched", "accepted", "in_progress", "reopened")
# Field edits on these need a reopen first, so the history reads in order.
FROZEN_STATUSES: tuple[str, ...] = ("closed", "cancelled")
RATABLE_STATUSES: tuple[str, ...] = ("resolved", "closed")

LOCATION_FIELDS: tuple[str, ...] = ("building", "unit", "room", "floor", "address_text")
CORRECTABLE_FIELDS: tuple[str, ...] = LOCATION_FIELDS + (
    "category",
    "lead_department",
    "urgency",
    "urgency_reason",
    "contact_phone",
    "time_window",
)


class TicketError(Exception):
    """Base of work-order errors; the message says what to do instead."""


class InvalidTicketData(TicketError, ValueError):
    """A field value the work order cannot hold."""


class InvalidTransition(TicketError):
    """A status change the state machine forbids; nothing was changed."""

    def __init__(self, number: str, current: str, requested: str, allowed: Sequence[str]) -> None:
        self.number = number
        self.current = current
        self.requested = requested
        self.allowed = tuple(allowed)
        options = ", ".join(self.allowed) if self.allowed else "none (it is final)"
        super().__init__(
            f"ticket {number} cannot go from {current!r} to {requested!r}; "
            f"allowed from {current!r}: {options}"
        )


class TicketNotEditable(TicketError):
    """The ticket is closed or cancelled; reopen it before editing."""


class RatingNotAllowed(TicketError):
    """The ticket cannot be rated yet, or the score is out of range."""


@functools.lru_cache(maxsize=1)
def display_tz() -> ZoneInfo:
    """Return the Asia/Shanghai zone used for numbering and display."""
    return ZoneInfo(DISPLAY_TIMEZONE)


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidTicketData("'now' must be timezone-aware, e.g. datetime.now(timezone.utc)")


def ticket_day(now: datetime) -> str:
    """Return the Asia/Shanghai calendar day of `now` as YYYYMMDD."""
    _require_aware(now)
    return now.astimezone(display_tz()).strftime("%Y%m%d")


def format_ticket_number(day: str, sequence: int) -> str:
    """Return the ticket number for a day and its daily sequence, e.g. GD20261128-0007."""
    return f"GD{day}-{sequence:04d}"


def normalize_ticket_number(text: str) -> str | None:
    """Return the canonical GD<day>-<seq> form of loosely typed input, or None."""
    folded = unicodedata.normalize("NFKC", text).upper().strip()
    folded = re.sub(r"\s+", "", folded)
    with_separator = re.fullmatch(r"(?:GD)?(\d{8})[^0-9A-Z]+(\d{1,6})", folded)
    if with_separator:
        return format_ticket_number(with_separator[1], int(with_separator[2]))
    bare = re.fullmatch(r"(?:GD)?(\d{8})(\d{4,6})", folded)
    if bare:
        return format_ticket_number(bare[1], int(bare[2]))
    return None


def next_ticket_number(session: Session, *, now: datetime) -> str:
    """Reserve the next number of `now`'s day; the reservation lives in this transaction."""
    day = ticket_day(now)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # The upsert locks the day's row until commit, so concurrent creators queue.
        stmt = postgresql.insert(TicketCounter).values(day=day, value=1)
        stmt = stmt.on_conflict_do_update(
            index_elements=[TicketCounter.day], set_={"value": TicketCounter.value + 1}
        ).returning(TicketCounter.value)
        value = session.execute(stmt).scalar_one()
    elif dialect == "sqlite":
        # The write lock taken by this statement is held until commit, so the read
        # below sees our own increment and no other writer can interleave.
        stmt = sqlite.insert(TicketCounter).values(day=day, value=1)
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=[TicketCounter.day], set_={"value": TicketCounter.value + 1}
            )
        )
        value = session.execute(
            select(TicketCounter.value).where(TicketCounter.day == day)
        ).scalar_one()
    else:
        raise TicketError(f"ticket numbering supports sqlite and postgresql, not {dialect}")
    return format_ticket_number(day, value)


def _clean(field: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        return None
    if field == "contact_phone":
        try:
            value = normalize_phone(value)
        except InvalidPhone as exc:
            raise InvalidTicketData(str(exc)) from exc
    limit = getattr(Ticket.__table__.c[field].type, "length", None)
    if limit is not None and len(value) > limit:
        raise InvalidTicketData(f"{field} is {len(value)} characters; shorten it to {limit}")
    return value


def _check_choice(field: str, value: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise InvalidTicketData(f"unknown {field} {value!r}; use one of {', '.join(choices)}")


def _check_actor(actor: str) -> None:
    if not actor or len(actor) > 64:
        raise InvalidTicketData(
            "actor must name who acted (1-64 chars), e.g. 'bot' or 'agent:wang'"
        )


def _append_event(
    session: Session, ticket: Ticket, *, kind: str, actor: str, now: datetime, data: dict[str, Any]
) -> TicketEvent:
    event = TicketEvent(kind=kind, actor=actor, at=now, data=data)
    ticket.events.append(event)
    session.add(event)
    ticket.updated_at = now
    return event


def record_event(
    session: Session,
    *,
    ticket: Ticket,
    kind: str,
    actor: str,
    now: datetime,
    data: dict[str, Any] | None = None,
) -> TicketEvent:
    """Append an event that changes no field, e.g. 'on_duty_alerted' for a life-safety order."""
    _require_aware(now)
    _check_actor(actor)
    if not kind or kind == "status_changed":
        raise InvalidTicketData("name the event kind; status changes go through transition()")
    return _append_event(session, ticket, kind=kind, actor=actor, now=now, data=dict(data or {}))


def create_ticket(
    session: Session,
    *,
    now: datetime,
    category: str,
    description: str,
    channel: str,
    resident: Resident | None = None,
    conversation: Conversation | None = None,
    building: str | None = None,
    unit: str | None = None,
    room: str | None = None,
    floor: str | None = None,
    address_text: str | None = None,
    contact_phone: str | None = None,
    time_window: str | None = None,
    urgency: str | None = None,
    urgency_reason: str | None = None,
    lead_department: str | None = None,
    actor: str = "bot",
    catalogue: Catalogue | None = None,
) -> Ticket:
    """Create a work order in status 'new' with the next number of its Shanghai day."""
    _require_aware(now)
    _check_actor(actor)
    catalogue = catalogue or default_catalogue()
    entry = catalogue.category(category)
    lead = lead_department or entry.lead
    catalogue.department(lead)
    urgency = urgency or entry.urgency
    _check_choice("urgency", urgency, URGENCIES)
    _check_choice("channel", channel, CHANNELS)
    if not description or not description.strip():
        raise InvalidTicketData("description is empty; pass what the resident reported")
    fields: dict[str, str | None] = {
        "building": building,
        "unit": unit,
        "room": room,
        "floor": floor,
        "address_text": address_text,
        "contact_phone": contact_phone,
        "time_window": time_window,
        "urgency_reason": urgency_reason,
    }
    fields = {name: _clean(name, value) for name, value in fields.items()}

    number = next_ticket_number(session, now=now)  # before the Ticket exists: autoflush
    ticket = Ticket(
        number=number,
        resident=resident,
        conversation=conversation,
        category=category,
        lead_department=lead,
        description=description.strip(),
        urgency=urgency,
        channel=channel,
        status="new",
        created_at=now,
        updated_at=now,
        **fields,
    )
    session.add(ticket)
    _append_event(
        session,
        ticket,
        kind="created",
        actor=actor,
        now=now,
        data={
            "status": "new",
            "category": category,
            "lead_department": lead,
            "urgency": urgency,
            "channel": channel,
            "description": ticket.description,
            **fields,
        },
    )
    session.flush()
    return ticket


def allowed_transitions(status: str) -> tuple[str, ...]:
    """Return the statuses a ticket in `status` may move to."""
    _check_choice("status", status, TICKET_STATUSES)
    return TRANSITIONS[status]


def transition(
    session: Session,
    *,
    ticket: Ticket,
    to: str,
    actor: str,
    now: datetime,
    reason: str | None = None,
) -> TicketEvent:
    """Move the ticket to status `to`, or raise InvalidTransition and change nothing."""
    _require_aware(now)
    _check_actor(actor)
    _check_choice("status", to, TICKET_STATUSES)
    allowed = TRANSITIONS[ticket.status]
    if to not in allowed:
        raise InvalidTransition(ticket.number, ticket.status, to, allowed)
    previous = ticket.status
    ticket.status = to
    return _append_event(
        session,
        ticket,
        kind="status_changed",
        actor=actor,
        now=now,
        data={"from": previous, "to": to, "reason": reason},
    )


def cancel_ticket(
    session: Session, *, ticket: Ticket, actor: str, now: datetime, reason: str | None = None
) -> TicketEvent:
    """Cancel an open ticket, or raise InvalidTransition if it is already finished."""
    return transition(session, ticket=ticket, to="cancelled", actor=actor, now=now, reason=reason)


def add_info(
    session: Session, *, ticket: Ticket, text: str, actor: str, now: datetime
) -> TicketEvent:
    """Attach a note to the ticket without altering the original description."""
    _require_aware(now)
    _check_actor(actor)
    if not text or not text.strip():
        raise InvalidTicketData("the added information is empty; pass the resident's words")
    return _append_event(
        session, ticket, kind="info_added", actor=actor, now=now, data={"text": text.strip()}
    )


def correct_ticket(
    session: Session,
    *,
    ticket: Ticket,
    changes: Mapping[str, str | None],
    actor: str,
    now: datetime,
    reason: str | None = None,
    catalogue: Catalogue | None = None,
    kind: str = "corrected",
) -> dict[str, dict[str, str | None]]:
    """Change fields of an open ticket, log old and new values, and return what changed."""
    _require_aware(now)
    _check_actor(actor)
    if ticket.status in FROZEN_STATUSES:
        raise TicketNotEditable(
            f"ticket {ticket.number} is {STATUS_LABELS[ticket.status]}; reopen it before editing"
        )
    unknown = sorted(set(changes) - set(CORRECTABLE_FIELDS))
    if unknown:
        raise InvalidTicketData(
            f"cannot correct {', '.join(unknown)}; correctable: {', '.join(CORRECTABLE_FIELDS)}"
            "; use add_info for more description"
        )
    cleaned = {name: _clean(name, value) for name, value in changes.items()}
    catalogue = catalogue or default_catalogue()
    for required in ("category", "lead_department", "urgency"):
        if required in cleaned and cleaned[required] is None:
            raise InvalidTicketData(f"{required} cannot be cleared; pass a new value")
    new_category, new_lead = cleaned.get("category"), cleaned.get("lead_department")
    new_urgency = cleaned.get("urgency")
    if new_category:
        catalogue.category(new_category)
    if new_lead:
        catalogue.department(new_lead)
    if new_urgency:
        _check_choice("urgency", new_urgency, URGENCIES)

    applied = {
        name: {"old": getattr(ticket, name), "new": value}
        for name, value in cleaned.items()
        if getattr(ticket, name) != value
    }
    if not applied:
        return {}
    for name, change in applied.items():
        setattr(ticket, name, change["new"])
    _append_event(
        session,
        ticket,
        kind=kind,
        actor=actor,
        now=now,
        data={"changes": applied, "reason": reason},
    )
    return applied


def update_location(
    session: Session,
    *,
    ticket: Ticket,
    actor: str,
    now: datetime,
    reason: str | None = None,
    **location: str | None,
) -> dict[str, dict[str, str | None]]:
    """Replace the given location fields (building, unit, room, floor, address_text)."""
    unknown = sorted(set(location) - set(LOCATION_FIELDS))
    if unknown:
        raise InvalidTicketData(
            f"not location fields: {', '.join(unknown)}; use {', '.join(LOCATION_FIELDS)}"
        )
    return correct_ticket(
        session,
        ticket=ticket,
        changes=location,
        actor=actor,
        now=now,
        reason=reason,
        kind="location_updated",
    )


def rate_ticket(
    session: Session,
    *,
    ticket: Ticket,
    score: int,
    actor: str,
    now: datetime,
    comment: str | None = None,
) -> Rating:
    """Record the resident's 1-5 satisfaction score; a later rating replaces the earlier."""
    _require_aware(now)
    _check_actor(actor)
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise RatingNotAllowed(f"score must be a whole number 1-5, got {score!r}")
    if ticket.status not in RATABLE_STATUSES:
        raise RatingNotAllowed(
            f"ticket {ticket.number} is {STATUS_LABELS[ticket.status]}; rate it once resolved"
        )
    comment = comment.strip() if comment and comment.strip() else None
    rating = ticket.rating
    previous = rating.score if rating is not None else None
    if rating is None:
        rating = Rating(ticket=ticket, score=score, comment=comment, at=now)
        session.add(rating)
    else:
        rating.score, rating.comment, rating.at = score, comment, now
    _append_event(
        session,
        ticket,
        kind="rated",
        actor=actor,
        now=now,
        data={"score": score, "comment": comment, "previous_score": previous},
    )
    return rating


def get_ticket_by_number(session: Session, *, number: str) -> Ticket | None:
    """Find a ticket by number, forgiving case, spaces and a missing dash."""
    canonical = normalize_ticket_number(number)
    if canonical is None:
        return None
    return session.execute(select(Ticket).where(Ticket.number == canonical)).scalar_one_or_none()


def latest_open_ticket_for_resident(
    session: Session, *, resident: Resident, category: str | None = None
) -> Ticket | None:
    """Return the resident's most recent ticket still being worked on, if any."""
    if resident.id is None:  # never stored, so it has no tickets (and NULL would match)
        return None
    query = select(Ticket).where(
        Ticket.resident_id == resident.id, Ticket.status.in_(OPEN_STATUSES)
    )
    if category is not None:
        query = query.where(Ticket.category == category)
    query = query.order_by(Ticket.created_at.desc(), Ticket.id.desc()).limit(1)
    return session.execute(query).scalar_one_or_none()


def tickets_for_resident(
    session: Session, *, resident: Resident, statuses: Sequence[str] | None = None, limit: int = 20
) -> list[Ticket]:
    """Return the resident's tickets, newest first."""
    if resident.id is None:
        return []
    query = select(Ticket).where(Ticket.resident_id == resident.id)
    if statuses is not None:
        query = query.where(Ticket.status.in_(tuple(statuses)))
    query = query.order_by(Ticket.created_at.desc(), Ticket.id.desc()).limit(limit)
    return list(session.execute(query).scalars())
