"""Metrics come from the event log of real orders, on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from bot.dispatch import active_lead, dispatch_ticket
from bot.metrics import service_metrics
from bot.staff import accept_order, resolve_order, return_order
from bot.tickets import create_ticket
from routing.catalogue import Catalogue
from routing.roster import Roster

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai


def _dispatched(session: Session, catalogue: Catalogue, roster: Roster, category: str,
                building: str, at: datetime):
    ticket = create_ticket(session, now=at, category=category, description="测试",
                           channel="sms", building=building, catalogue=catalogue)
    dispatch_ticket(session, ticket=ticket, catalogue=catalogue, roster=roster, now=at)
    return ticket


def _holder(roster: Roster, order) -> str:
    return order.assignee or roster.members(order.department)[0].id


def test_hops_first_time_right_times_and_groups(db_session: Session, catalogue: Catalogue,
                                                roster: Roster) -> None:
    # Right first time, resolved after 2 hours.
    leak = _dispatched(db_session, catalogue, roster, "water_leak", "5", NOW)
    lead = active_lead(leak)
    accept_order(db_session, order_id=lead.id, staff_id=_holder(roster, lead), roster=roster,
                 now=NOW + timedelta(minutes=10))
    resolve_order(db_session, order_id=lead.id, staff_id=_holder(roster, lead), note="修好了",
                  roster=roster, now=NOW + timedelta(hours=2))
    # Returned once as not our function, then resolved by the next department.
    lights = _dispatched(db_session, catalogue, roster, "public_facility", "9", NOW)
    first = active_lead(lights)
    return_order(db_session, order_id=first.id, staff_id=_holder(roster, first),
                 reason="not_our_function", note="不归我们管", roster=roster,
                 catalogue=catalogue, now=NOW + timedelta(minutes=20))
    second = active_lead(lights)
    assert second.department != first.department
    accept_order(db_session, order_id=second.id, staff_id=_holder(roster, second),
                 roster=roster, now=NOW + timedelta(minutes=40))
    # Still open, its resolution not yet due.
    _dispatched(db_session, catalogue, roster, "parking", "12", NOW)
    db_session.flush()

    overall = service_metrics(db_session, catalogue=catalogue, roster=roster,
                              now=NOW + timedelta(hours=3))
    assert overall["count"] == 3
    assert overall["hops"]["mean"] == pytest.approx(4 / 3, abs=1e-3)
    assert overall["first_time_right"] == pytest.approx(2 / 3, abs=1e-3)
    assert overall["minutes_to_resolution"]["p50"] == pytest.approx(120)
    assert overall["sla"]["resolve"]["met"] == 1

    by_department = service_metrics(db_session, catalogue=catalogue, roster=roster,
                                    now=NOW + timedelta(hours=3), by="department")
    assert "property" in by_department["groups"]
    by_channel = service_metrics(db_session, catalogue=catalogue, roster=roster,
                                 now=NOW + timedelta(hours=3), by="channel")
    assert set(by_channel["groups"]) == {"sms"}
    with pytest.raises(ValueError, match="group by"):
        service_metrics(db_session, catalogue=catalogue, roster=roster, now=NOW, by="colour")
