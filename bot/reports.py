"""Resident-level services behind the dialogue: submit a report, find and follow up orders."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.community import Community
from bot.conversations import find_or_create_resident
from bot.dispatch import dispatch_ticket
from bot.models import Conversation, Resident, Ticket
from bot.ticket_view import format_location, mask_phone
from bot.tickets import (
    OPEN_STATUSES,
    create_ticket,
    get_ticket_by_number,
    latest_open_ticket_for_resident,
)
from routing.catalogue import Catalogue
from routing.learning import LearnedRoutes
from routing.roster import Roster

# Which part of an address a report needs before it can be dispatched. Problems inside a
# home need the door; lifts and stairwells the building and unit; shared outdoor spaces
# the building; the rest (fees, documents, advice) only a way to reach the resident.
_UNIT_LEVEL = frozenset({"elevator_trapped", "elevator_fault", "fire_hazard"})
_HOME_LEVEL_EXTRA = frozenset({"neighbor_noise", "neighbor_dispute"})
_BUILDING_LEVEL = frozenset({"public_facility", "sanitation", "pet_nuisance", "illegal_construction"})
_TICKET_NUMBER = re.compile(r"GD\s*\d{8}\s*-?\s*\d{1,4}", re.IGNORECASE)


@dataclass(frozen=True)
class ReportDraft:
    """What the conversation has collected for one report."""

    category: str
    description: str
    channel: str
    building: str | None = None
    unit: str | None = None
    room: str | None = None
    floor: str | None = None
    phone: str | None = None
    time_window: str | None = None
    urgency: str | None = None
    urgency_reason: str | None = None


def required_fields(catalogue: Catalogue, category: str) -> list[str]:
    """Return the fields a report of this category needs, in the order they are asked."""
    entry = catalogue.category(category if catalogue.has_category(category) else "other")
    if entry.in_home or entry.id in _HOME_LEVEL_EXTRA:
        fields = ["building", "unit", "room"]
    elif entry.id in _UNIT_LEVEL:
        fields = ["building", "unit"]
    elif entry.id in _BUILDING_LEVEL:
        fields = ["building"]
    else:
        fields = []
    fields.append("phone")
    if entry.in_home:
        fields.append("time_window")
    return fields


def location_problem(community: Community, *, building: str | None, unit: str | None,
                     room: str | None) -> str | None:
    """Return which of building/unit/room does not exist in the community, or None."""
    if building is None:
        return None
    found = community.building(building)
    if found is None:
        return "building"
    if unit is not None and (not unit.isdigit() or not 1 <= int(unit) <= found.units):
        return "unit"
    if room is not None:
        if not re.fullmatch(r"\d{3,4}", room) or not 1 <= int(room[:-2]) <= found.floors:
            return "room"
    return None


def summary(catalogue: Catalogue, draft: ReportDraft) -> str:
    """Say back what was recorded in one short line, e.g. 5号楼2单元501，漏水，电话138****0000."""
    name = catalogue.category(draft.category).short_name if catalogue.has_category(
        draft.category) else draft.category
    parts = [format_location(building=draft.building, unit=draft.unit, room=draft.room,
                             floor=draft.floor), name]
    if draft.phone:
        parts.append(f"电话{mask_phone(draft.phone)}")
    if draft.time_window:
        parts.append(f"{draft.time_window}上门")
    return "，".join(part for part in parts if part)


def resident_for(session: Session, *, now: datetime, resident_id: int | None,
                 conversation_id: int | None, phone: str | None) -> Resident | None:
    """Find the resident behind a conversation, creating one from a phone number if needed."""
    if resident_id is not None:
        resident = session.get(Resident, resident_id)
        if resident is not None:
            return resident
    conversation = session.get(Conversation, conversation_id) if conversation_id else None
    if conversation is not None and conversation.resident is not None:
        return conversation.resident
    if phone:
        resident = find_or_create_resident(session, now=now, phone=phone)
        if conversation is not None and conversation.resident_id is None:
            conversation.resident = resident
        return resident
    return None


def submit_report(session: Session, *, now: datetime, catalogue: Catalogue, roster: Roster,
                  draft: ReportDraft, conversation_id: int | None, resident_id: int | None,
                  ranking: tuple[tuple[str, float], ...] = (),
                  learned: LearnedRoutes | None = None) -> Ticket:
    """Create the work order for a confirmed report and dispatch it in the same transaction."""
    resident = resident_for(session, now=now, resident_id=resident_id,
                            conversation_id=conversation_id, phone=draft.phone)
    conversation = session.get(Conversation, conversation_id) if conversation_id else None
    category = draft.category if catalogue.has_category(draft.category) else "other"
    ticket = create_ticket(
        session, now=now, category=category, description=draft.description or category,
        channel=draft.channel, resident=resident, conversation=conversation,
        building=draft.building, unit=draft.unit, room=draft.room, floor=draft.floor,
        contact_phone=draft.phone or (resident.phone if resident else None),
        time_window=draft.time_window, urgency=draft.urgency, urgency_reason=draft.urgency_reason,
        catalogue=catalogue,
    )
    dispatch_ticket(session, ticket=ticket, catalogue=catalogue, roster=roster, now=now,
                    ranking=ranking, learned=learned)
    return ticket


def find_ticket(session: Session, *, text: str | None, conversation_id: int | None,
                resident_id: int | None, open_only: bool = True) -> Ticket | None:
    """Find the order a resident means: a number they said, else their latest open one."""
    match = _TICKET_NUMBER.search(text or "")
    if match:
        return get_ticket_by_number(session, number=match.group(0))
    resident = session.get(Resident, resident_id) if resident_id else None
    conversation = session.get(Conversation, conversation_id) if conversation_id else None
    if resident is None and conversation is not None:
        resident = conversation.resident
    if resident is not None:
        ticket = latest_open_ticket_for_resident(session, resident=resident)
        if ticket is not None or open_only:
            return ticket
    if conversation is None:
        return None
    query = select(Ticket).where(Ticket.conversation_id == conversation.id)
    if open_only:
        query = query.where(Ticket.status.in_(OPEN_STATUSES))
    return session.execute(query.order_by(Ticket.id.desc()).limit(1)).scalar_one_or_none()
