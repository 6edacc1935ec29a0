"""Read-only views of a work order: its timeline derived from events, and its JSON form.

Phone numbers are masked here (138****0000): this is what leaves the store for the API,
the console and the logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from bot.models import Ticket, TicketEvent
from bot.tickets import LOCATION_FIELDS, STATUS_LABELS, display_tz
from routing.catalogue import Catalogue, default_catalogue

_PHONE_KEYS = frozenset({"contact_phone", "phone"})


@dataclass(frozen=True)
class TicketTimeline:
    created_at: datetime
    dispatched_at: datetime | None = None
    first_response_at: datetime | None = None
    on_site_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    cancelled_at: datetime | None = None
    reopened_count: int = 0

    def as_dict(self) -> dict[str, str | int | None]:
        """Return the timeline with ISO-8601 strings, for JSON."""
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}


def derive_timeline(events: Sequence[TicketEvent], *, created_at: datetime) -> TicketTimeline:
    """Work out milestone times from status events, oldest event first."""
    first: dict[str, datetime] = {}
    resolved_at = closed_at = cancelled_at = None
    reopened = 0
    for event in events:
        if event.kind != "status_changed":
            continue
        to = event.data.get("to")
        first.setdefault(to, event.at)
        if to == "resolved":
            resolved_at = event.at
        elif to == "closed":
            closed_at = event.at
        elif to == "cancelled":
            cancelled_at = event.at
        elif to == "reopened":
            reopened += 1
            resolved_at = closed_at = None  # the earlier resolution no longer stands
    responses = [first[s] for s in ("accepted", "in_progress", "resolved") if s in first]
    return TicketTimeline(
        created_at=created_at,
        dispatched_at=first.get("dispatched"),
        first_response_at=min(responses) if responses else None,
        on_site_at=first.get("in_progress"),
        resolved_at=resolved_at,
        closed_at=closed_at,
        cancelled_at=cancelled_at,
        reopened_count=reopened,
    )


def ticket_timeline(ticket: Ticket) -> TicketTimeline:
    """Return the ticket's milestone times, derived from its events."""
    return derive_timeline(list(ticket.events), created_at=ticket.created_at)


def mask_phone(phone: str | None) -> str | None:
    """Hide the middle digits of a phone number, e.g. 138****0000."""
    if not phone:
        return None
    digits = re.sub(r"\D", "", phone)
    if len(digits) < 7:
        return "****"
    return f"{digits[:3]}****{digits[-4:]}"


def format_location(
    *,
    building: str | None = None,
    unit: str | None = None,
    room: str | None = None,
    floor: str | None = None,
    address_text: str | None = None,
) -> str:
    """Render a location the way residents say it, e.g. 5号楼2单元501."""
    parts: list[str] = []
    if building:
        parts.append(building + "号楼" if re.fullmatch(r"[0-9A-Za-z]+", building) else building)
    if unit:
        parts.append(unit + "单元" if re.fullmatch(r"[0-9A-Za-z]+", unit) else unit)
    if room:
        parts.append(room)
    elif floor:
        parts.append(floor + "层" if re.fullmatch(r"-?[0-9A-Za-z]+", floor) else floor)
    structured = "".join(parts)
    if structured and address_text:
        return f"{structured}（{address_text}）"
    return structured or address_text or ""


def _mask_phones(value: Any, key: str | None = None) -> Any:
    if key in _PHONE_KEYS and isinstance(value, str):
        return mask_phone(value)
    if isinstance(value, Mapping):
        return {k: _mask_phones(v, key if k in ("old", "new") else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_phones(v, key) for v in value]
    return value


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def ticket_as_dict(ticket: Ticket, *, catalogue: Catalogue | None = None) -> dict[str, Any]:
    """Return the ticket as JSON-ready data for the API, with the phone masked."""
    catalogue = catalogue or default_catalogue()
    category = (
        catalogue.category(ticket.category) if catalogue.has_category(ticket.category) else None
    )
    departments = {d.id: d for d in catalogue.departments}
    lead = departments.get(ticket.lead_department)
    sla = catalogue.sla(ticket.urgency)
    location = {name: getattr(ticket, name) for name in LOCATION_FIELDS}
    timeline = ticket_timeline(ticket)
    due = {
        f"{name}_due": _iso(ticket.created_at + delta) if delta is not None else None
        for name, delta in (
            ("dispatch", sla.dispatch),
            ("first_response", sla.first_response),
            ("on_site", sla.on_site),
            ("resolve", sla.resolve),
        )
    }
    return {
        "number": ticket.number,
        "category": ticket.category,
        "category_name": category.name if category else ticket.category,
        "category_short_name": category.short_name if category else ticket.category,
        "lead_department": ticket.lead_department,
        "lead_department_name": lead.name if lead else ticket.lead_department,
        "assisting_departments": [
            {"id": d, "name": departments[d].name if d in departments else d}
            for d in (category.assisting if category else ())
        ],
        "status": ticket.status,
        "status_label": STATUS_LABELS[ticket.status],
        "location": location,
        "location_display": format_location(**location),
        "urgency": ticket.urgency,
        "urgency_label": sla.label,
        "urgency_reason": ticket.urgency_reason,
        "channel": ticket.channel,
        "description": ticket.description,
        "contact_phone": mask_phone(ticket.contact_phone),
        "time_window": ticket.time_window,
        "in_home": category.in_home if category else False,
        "events": [
            {
                "kind": e.kind,
                "actor": e.actor,
                "at": _iso(e.at),
                "data": _mask_phones(e.data),
            }
            for e in ticket.events
        ],
        "timeline": timeline.as_dict(),
        "sla": due,
        "rating": (
            {
                "score": ticket.rating.score,
                "comment": ticket.rating.comment,
                "at": _iso(ticket.rating.at),
            }
            if ticket.rating is not None
            else None
        ),
        "created_at": _iso(ticket.created_at),
        "created_at_local": ticket.created_at.astimezone(display_tz()).strftime("%Y-%m-%d %H:%M"),
        "updated_at": _iso(ticket.updated_at),
    }
