"""SLA deadlines (时限) and the escalation ladder (督办) for a work order.

Deadlines come from the catalogue's targets per urgency; a reminder goes out at 80% of the
allowed time so the worker can still make it. When a deadline is missed the order climbs
one rung of the ladder per breach: worker, department head, community director, street.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from routing.catalogue import Catalogue
from routing.roster import Roster, local_time

STAGES: tuple[str, ...] = ("dispatch", "first_response", "on_site", "resolve")
ESCALATION_LADDER: tuple[str, ...] = (
    "worker",
    "department_head",
    "community_director",
    "street_office",
)
REMIND_SHARE = 0.8
MIN_WARNING = timedelta(minutes=1)
STREET_OFFICE = "street_office"

# The timeline attribute that records each stage's milestone.
_STAGE_FIELD = {
    "dispatch": "dispatched_at",
    "first_response": "first_response_at",
    "on_site": "on_site_at",
    "resolve": "resolved_at",
}


@dataclass(frozen=True)
class Deadline:
    stage: str  # "dispatch" | "first_response" | "on_site" | "resolve"
    due: datetime
    remind_at: datetime  # reminder before the breach


def deadlines(*, urgency: str, created_at: datetime, catalogue: Catalogue) -> tuple[Deadline, ...]:
    """Return the order's deadlines in stage order; stages without a target are left out."""
    local_time(created_at)  # refuse a naive clock: deadlines are compared with aware times
    sla = catalogue.sla(urgency)
    allowed = {
        "dispatch": sla.dispatch,
        "first_response": sla.first_response,
        "on_site": sla.on_site,
        "resolve": sla.resolve,
    }
    found = []
    for stage in STAGES:
        span = allowed[stage]
        if span is None:
            continue
        due = created_at + span
        # 80% of the time, yet at least a minute of warning, and never before creation.
        remind_at = max(created_at, min(created_at + span * REMIND_SHARE, due - MIN_WARNING))
        found.append(Deadline(stage=stage, due=due, remind_at=remind_at))
    return tuple(found)


def escalation_target(
    *, level: int, department: str, assignee: str | None, roster: Roster
) -> tuple[str, str | None]:
    """Return (rung, staff id or None) for escalation level 0.. (levels past the top stay there)."""
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise ValueError(f"escalation level must be a whole number >= 0, got {level!r}")
    rung = ESCALATION_LADDER[min(level, len(ESCALATION_LADDER) - 1)]
    if rung == "worker":
        return rung, assignee
    if rung == "department_head":
        head = roster.head(department)
        return rung, None if head is None else head.id
    if rung == "community_director":
        director = roster.director()
        return rung, None if director is None else director.id
    contact = roster.head(STREET_OFFICE) or next(iter(roster.members(STREET_OFFICE)), None)
    return rung, None if contact is None else contact.id


def stage_met(stage: str, timeline: Any) -> bool:
    """Tell whether a stage's milestone is reached (a cancelled order has nothing left due)."""
    if stage not in _STAGE_FIELD:
        raise ValueError(f"unknown SLA stage {stage!r}; use one of: {', '.join(STAGES)}")
    if getattr(timeline, "cancelled_at", None) is not None:
        return True
    return getattr(timeline, _STAGE_FIELD[stage]) is not None


def met_on_time(
    *, deadline: Deadline, timeline: Any, now: datetime | None = None
) -> bool | None:
    """Tell whether a stage was reached in time; None while pending (or cancelled before it)."""
    if deadline.stage not in _STAGE_FIELD:
        raise ValueError(f"unknown SLA stage {deadline.stage!r}; use one of: {', '.join(STAGES)}")
    reached = getattr(timeline, _STAGE_FIELD[deadline.stage])
    if reached is not None:
        return bool(reached <= deadline.due)
    if getattr(timeline, "cancelled_at", None) is not None:
        return None  # cancelled before reaching the stage: it no longer counts
    if now is not None and local_time(now) > deadline.due:
        return False
    return None
