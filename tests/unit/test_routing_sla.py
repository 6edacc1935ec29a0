"""SLA deadlines follow the catalogue; reminders come before the breach; the ladder climbs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from routing.catalogue import URGENCIES, Catalogue, default_catalogue
from routing.roster import DEFAULT_ROSTER_PATH, NaiveDatetimeError, Roster, load_roster
from routing.sla import (
    ESCALATION_LADDER,
    STAGES,
    Deadline,
    deadlines,
    escalation_target,
    met_on_time,
    stage_met,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return default_catalogue()


@pytest.fixture(scope="module")
def roster(catalogue: Catalogue) -> Roster:
    # Reads the committed data file once; it is test input, not external I/O.
    return load_roster(DEFAULT_ROSTER_PATH, catalogue=catalogue,
                       buildings=[str(n) for n in range(1, 17)])


@pytest.mark.parametrize("urgency", URGENCIES)
def test_deadlines_equal_the_catalogue_targets(catalogue: Catalogue, urgency: str) -> None:
    sla = catalogue.sla(urgency)
    expected = {
        stage: getattr(sla, stage)
        for stage in STAGES
        if getattr(sla, stage) is not None
    }
    found = deadlines(urgency=urgency, created_at=T0, catalogue=catalogue)
    assert [d.stage for d in found] == [s for s in STAGES if s in expected]
    assert {d.stage: d.due - T0 for d in found} == expected
    for deadline in found:
        assert T0 <= deadline.remind_at < deadline.due
        assert deadline.due - deadline.remind_at >= timedelta(minutes=1) or deadline.remind_at == T0


def test_p1_has_all_four_stages_and_p3_two(catalogue: Catalogue) -> None:
    p1 = deadlines(urgency="P1", created_at=T0, catalogue=catalogue)
    assert [(d.stage, d.due - T0) for d in p1] == [
        ("dispatch", timedelta(minutes=1)),
        ("first_response", timedelta(minutes=5)),
        ("on_site", timedelta(minutes=30)),
        ("resolve", timedelta(hours=4)),
    ]
    p3 = deadlines(urgency="P3", created_at=T0, catalogue=catalogue)
    assert [(d.stage, d.due - T0) for d in p3] == [
        ("first_response", timedelta(hours=2)),
        ("resolve", timedelta(days=3)),
    ]


@pytest.mark.parametrize(
    ("urgency", "stage", "remind_after"),
    [
        ("P1", "dispatch", timedelta(0)),  # 1 minute allowed: remind at once
        ("P1", "first_response", timedelta(minutes=4)),  # 80% of 5m = 4m
        ("P1", "on_site", timedelta(minutes=24)),
        ("P1", "resolve", timedelta(hours=3, minutes=12)),
        ("P2", "first_response", timedelta(minutes=24)),
        ("P2", "resolve", timedelta(hours=19, minutes=12)),
        ("P3", "first_response", timedelta(minutes=96)),
        ("P3", "resolve", timedelta(days=2, hours=9, minutes=36)),
        ("P4", "resolve", timedelta(days=5, hours=14, minutes=24)),
    ],
)
def test_reminder_at_80_percent(
    catalogue: Catalogue, urgency: str, stage: str, remind_after: timedelta
) -> None:
    found = {d.stage: d for d in deadlines(urgency=urgency, created_at=T0, catalogue=catalogue)}
    assert found[stage].remind_at - T0 == remind_after


def test_deadlines_keep_the_callers_time_zone(catalogue: Catalogue) -> None:
    shanghai = T0.astimezone(ZoneInfo("Asia/Shanghai"))
    found = deadlines(urgency="P2", created_at=shanghai, catalogue=catalogue)
    assert found[0].due == T0 + timedelta(minutes=30)
    assert found[0].due.utcoffset() == timedelta(hours=8)


def test_naive_creation_time_is_refused(catalogue: Catalogue) -> None:
    with pytest.raises(NaiveDatetimeError):
        deadlines(urgency="P2", created_at=datetime(2026, 11, 25, 10), catalogue=catalogue)


def test_unknown_urgency_is_refused(catalogue: Catalogue) -> None:
    with pytest.raises(ValueError, match="P1, P2, P3, P4"):
        deadlines(urgency="P0", created_at=T0, catalogue=catalogue)


# --- escalation -------------------------------------------------------------------------


def test_escalation_ladder_order() -> None:
    assert ESCALATION_LADDER == ("worker", "department_head", "community_director",
                                 "street_office")


@pytest.mark.parametrize(
    ("level", "department", "assignee", "expected"),
    [
        (0, "property", "wy02", ("worker", "wy02")),
        (0, "property", None, ("worker", None)),  # still in the department queue
        (1, "property", "wy02", ("department_head", "wy01")),
        (1, "elevator_maintenance", "dt03", ("department_head", "dt01")),
        (1, "grid", "wg21", ("department_head", None)),  # the grid station has no head
        (2, "property", "wy02", ("community_director", "jw01")),
        (2, "grid", "wg21", ("community_director", "jw01")),
        (3, "property", "wy02", ("street_office", "jd01")),
        (7, "utilities_gas", "rq01", ("street_office", "jd01")),  # the top rung stays
    ],
)
def test_escalation_target(
    roster: Roster, level: int, department: str, assignee: str | None, expected: tuple
) -> None:
    assert escalation_target(level=level, department=department, assignee=assignee,
                             roster=roster) == expected


@pytest.mark.parametrize("level", [-1, 1.5, True])
def test_bad_escalation_level_is_refused(roster: Roster, level: object) -> None:
    with pytest.raises(ValueError, match="escalation level"):
        escalation_target(level=level, department="property", assignee=None,  # type: ignore
                          roster=roster)


# --- stages -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    dispatched_at: datetime | None = None
    first_response_at: datetime | None = None
    on_site_at: datetime | None = None
    resolved_at: datetime | None = None
    cancelled_at: datetime | None = None


AT = T0 + timedelta(minutes=10)


@pytest.mark.parametrize(
    ("stage", "timeline", "expected"),
    [
        ("dispatch", Timeline(), False),
        ("dispatch", Timeline(dispatched_at=AT), True),
        ("first_response", Timeline(dispatched_at=AT), False),
        ("first_response", Timeline(first_response_at=AT), True),
        ("on_site", Timeline(first_response_at=AT), False),
        ("on_site", Timeline(on_site_at=AT), True),
        ("resolve", Timeline(on_site_at=AT), False),
        ("resolve", Timeline(resolved_at=AT), True),
        ("resolve", Timeline(cancelled_at=AT), True),  # nothing left to chase
    ],
)
def test_stage_met(stage: str, timeline: Timeline, expected: bool) -> None:
    assert stage_met(stage, timeline) is expected


def test_unknown_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="'arrival'.*dispatch, first_response"):
        stage_met("arrival", Timeline())


def test_stage_met_works_with_the_ticket_timeline() -> None:
    from bot.ticket_view import TicketTimeline  # the real duck, built in memory

    timeline = TicketTimeline(created_at=T0, dispatched_at=AT)
    assert stage_met("dispatch", timeline) and not stage_met("resolve", timeline)


DUE = Deadline(stage="first_response", due=T0 + timedelta(minutes=30),
               remind_at=T0 + timedelta(minutes=24))


@pytest.mark.parametrize(
    ("timeline", "now", "expected"),
    [
        (Timeline(first_response_at=T0 + timedelta(minutes=30)), None, True),  # on the dot
        (Timeline(first_response_at=T0 + timedelta(minutes=31)), None, False),
        (Timeline(), T0 + timedelta(minutes=20), None),  # can still be met
        (Timeline(), None, None),
        (Timeline(), T0 + timedelta(minutes=31), False),  # breached
        (Timeline(cancelled_at=AT), T0 + timedelta(hours=9), None),
    ],
)
def test_met_on_time(timeline: Timeline, now: datetime | None, expected: bool | None) -> None:
    assert met_on_time(deadline=DUE, timeline=timeline, now=now) is expected
