"""Ticket status machine, numbering helpers and presentation, without a database.

Tickets here are transient ORM objects and the Session is unbound, so nothing is
flushed: the services only mutate objects and append events in memory.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from bot.models import TICKET_STATUSES, Ticket, TicketEvent
from bot.ticket_view import derive_timeline, format_location, mask_phone, ticket_timeline
from bot.tickets import (
    STATUS_LABELS,
    TRANSITIONS,
    InvalidTicketData,
    InvalidTransition,
    TicketNotEditable,
    add_info,
    allowed_transitions,
    cancel_ticket,
    correct_ticket,
    format_ticket_number,
    normalize_ticket_number,
    ticket_day,
    transition,
    update_location,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


@pytest.fixture
def session() -> Session:
    return Session(future=True)  # unbound: any attempt at I/O would raise


def _ticket(status: str = "new") -> Ticket:
    return Ticket(
        number="GD20261128-0001",
        category="water_leak",
        lead_department="property",
        description="厨房水管漏水",
        urgency="P2",
        channel="wechat",
        status=status,
        building="5",
        created_at=T0,
        updated_at=T0,
    )


def _at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_happy_path_records_one_event_per_step(session: Session) -> None:
    ticket = _ticket()
    for minute, status in enumerate(
        ["dispatched", "accepted", "in_progress", "resolved", "closed"], start=1
    ):
        transition(session, ticket=ticket, to=status, actor="agent:wang", now=_at(minute))
    assert ticket.status == "closed"
    assert [(e.data["from"], e.data["to"]) for e in ticket.events] == [
        ("new", "dispatched"),
        ("dispatched", "accepted"),
        ("accepted", "in_progress"),
        ("in_progress", "resolved"),
        ("resolved", "closed"),
    ]
    assert ticket.updated_at == _at(5)


@pytest.mark.parametrize("status", ["new", "dispatched", "accepted", "in_progress", "reopened"])
def test_every_open_status_can_be_cancelled(session: Session, status: str) -> None:
    ticket = _ticket(status)
    event = cancel_ticket(session, ticket=ticket, actor="resident", now=_at(1), reason="已自行修好")
    assert ticket.status == "cancelled"
    assert event.data == {"from": status, "to": "cancelled", "reason": "已自行修好"}


ILLEGAL = [
    (current, target)
    for current in TICKET_STATUSES
    for target in TICKET_STATUSES
    if target not in TRANSITIONS[current]
]


@pytest.mark.parametrize(("current", "target"), ILLEGAL)
def test_illegal_transition_names_allowed_and_changes_nothing(
    session: Session, current: str, target: str
) -> None:
    ticket = _ticket(current)
    with pytest.raises(InvalidTransition) as info:
        transition(session, ticket=ticket, to=target, actor="bot", now=_at(1))
    assert ticket.status == current
    assert ticket.events == []
    assert ticket.updated_at == T0
    assert info.value.allowed == TRANSITIONS[current]
    for allowed in TRANSITIONS[current]:
        assert allowed in str(info.value)


def test_cancelled_and_resolved_cannot_be_cancelled(session: Session) -> None:
    with pytest.raises(InvalidTransition, match="final"):
        cancel_ticket(session, ticket=_ticket("cancelled"), actor="bot", now=_at(1))
    with pytest.raises(InvalidTransition, match="closed, reopened"):
        cancel_ticket(session, ticket=_ticket("resolved"), actor="bot", now=_at(1))


def test_reopened_ticket_goes_back_to_work(session: Session) -> None:
    assert set(allowed_transitions("reopened")) == {
        "dispatched",
        "accepted",
        "in_progress",
        "cancelled",
    }
    assert allowed_transitions("closed") == ("reopened",)


def test_unknown_status_is_refused(session: Session) -> None:
    with pytest.raises(InvalidTicketData, match="unknown status 'done'"):
        transition(session, ticket=_ticket(), to="done", actor="bot", now=_at(1))


def test_naive_clock_is_refused(session: Session) -> None:
    with pytest.raises(InvalidTicketData, match="timezone-aware"):
        transition(
            session, ticket=_ticket(), to="dispatched", actor="bot", now=datetime(2026, 1, 1)
        )


def test_add_info_keeps_the_description(session: Session) -> None:
    ticket = _ticket()
    add_info(session, ticket=ticket, text=" 楼下也在滴水 ", actor="resident", now=_at(3))
    assert ticket.description == "厨房水管漏水"
    assert [(e.kind, e.data) for e in ticket.events] == [("info_added", {"text": "楼下也在滴水"})]
    with pytest.raises(InvalidTicketData):
        add_info(session, ticket=ticket, text="  ", actor="resident", now=_at(4))


def test_location_update_logs_old_and_new(session: Session) -> None:
    ticket = _ticket()
    changes = update_location(
        session, ticket=ticket, actor="resident", now=_at(2), building="6", unit="1", room="302"
    )
    assert changes == {
        "building": {"old": "5", "new": "6"},
        "unit": {"old": None, "new": "1"},
        "room": {"old": None, "new": "302"},
    }
    assert ticket.events[-1].kind == "location_updated"
    assert ticket.events[-1].data["changes"] == changes
    assert (ticket.building, ticket.unit, ticket.room) == ("6", "1", "302")


def test_correction_without_change_logs_nothing(session: Session) -> None:
    ticket = _ticket()
    assert update_location(session, ticket=ticket, actor="resident", now=_at(2), building="5") == {}
    assert ticket.events == []


def test_correction_rejects_unknown_fields_and_frozen_tickets(session: Session) -> None:
    with pytest.raises(InvalidTicketData, match="add_info"):
        correct_ticket(
            session, ticket=_ticket(), changes={"description": "x"}, actor="a", now=_at(1)
        )
    with pytest.raises(InvalidTicketData, match="not location fields: urgency"):
        update_location(session, ticket=_ticket(), actor="a", now=_at(1), urgency="P1")
    with pytest.raises(TicketNotEditable, match="reopen"):
        update_location(session, ticket=_ticket("closed"), actor="a", now=_at(1), room="1")


def test_timeline_is_derived_from_events() -> None:
    def status(to: str, minute: int) -> TicketEvent:
        return TicketEvent(kind="status_changed", actor="a", data={"to": to}, at=_at(minute))

    events = [
        status("dispatched", 1),
        TicketEvent(kind="info_added", actor="r", data={"text": "x"}, at=_at(2)),
        status("accepted", 4),
        status("in_progress", 20),
        status("resolved", 60),
        status("reopened", 90),
        status("in_progress", 95),
        status("resolved", 120),
        status("closed", 130),
    ]
    timeline = derive_timeline(events, created_at=T0)
    assert timeline.dispatched_at == _at(1)
    assert timeline.first_response_at == _at(4)
    assert timeline.on_site_at == _at(20)
    assert timeline.resolved_at == _at(120)  # the resolution that stands, not the first
    assert timeline.closed_at == _at(130)
    assert timeline.reopened_count == 1
    assert timeline.as_dict()["closed_at"] == "2026-11-28T04:10:00+00:00"


def test_reopened_ticket_has_no_resolution_time(session: Session) -> None:
    ticket = _ticket("resolved")
    transition(session, ticket=ticket, to="reopened", actor="resident", now=_at(5))
    assert ticket_timeline(ticket).resolved_at is None
    assert ticket_timeline(ticket).reopened_count == 1


@pytest.mark.parametrize(
    ("now", "day"),
    [
        (datetime(2026, 11, 28, 15, 59, tzinfo=UTC), "20261128"),
        (datetime(2026, 11, 28, 16, 0, tzinfo=UTC), "20261129"),
        (datetime(2026, 11, 28, 17, 0, tzinfo=UTC), "20261129"),
    ],
)
def test_ticket_day_is_the_shanghai_date(now: datetime, day: str) -> None:
    assert ticket_day(now) == day


def test_ticket_number_format() -> None:
    assert format_ticket_number("20261128", 7) == "GD20261128-0007"


@pytest.mark.parametrize(
    "text",
    [
        "GD20261128-0007",
        "gd20261128-0007",
        "GD202611280007",
        " gd 20261128 0007 ",
        "ＧＤ２０２６１１２８－０００７",
        "GD20261128-7",
        "20261128-0007",
        "GD20261128 — 0007",
    ],
)
def test_ticket_number_is_forgiving(text: str) -> None:
    assert normalize_ticket_number(text) == "GD20261128-0007"


@pytest.mark.parametrize("text", ["", "GD2026-0007", "我的工单", "GD20261128", "XX20261128-0007"])
def test_ticket_number_rejects_other_text(text: str) -> None:
    assert normalize_ticket_number(text) is None


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("13800000000", "138****0000"),
        ("13912345678", "139****5678"),
        ("057188001234", "057****1234"),
        ("12", "****"),
        (None, None),
    ],
)
def test_mask_phone(phone: str | None, masked: str | None) -> None:
    assert mask_phone(phone) == masked


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ({"building": "5", "unit": "2", "room": "501"}, "5号楼2单元501"),
        ({"building": "5栋", "room": "501"}, "5栋501"),
        ({"building": "12", "floor": "3"}, "12号楼3层"),
        ({"address_text": "东门岗亭旁"}, "东门岗亭旁"),
        ({"building": "3", "address_text": "地下车库"}, "3号楼（地下车库）"),
        ({}, ""),
    ],
)
def test_format_location(location: dict[str, str], shown: str) -> None:
    assert format_location(**location) == shown


def test_every_status_has_a_chinese_label() -> None:
    assert set(STATUS_LABELS) == set(TICKET_STATUSES) == set(TRANSITIONS)
    assert STATUS_LABELS["resolved"] == "已办结"
