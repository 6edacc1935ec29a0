"""Dispatch metrics (派单成效): hops, first-time-right, timings, SLA compliance, load spread.

Pure: the inputs are plain OrderRecord values the caller builds from the store; the output
is a JSON-ready dict. Times are in minutes; rates are fractions 0..1; None where no order
had the data (e.g. no order resolved yet).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GROUPINGS: tuple[str, ...] = ("department", "grid", "worker", "category", "channel")
UNKNOWN_KEY = "unknown"  # group key for orders without a grid
QUEUE_KEY = "queue"  # group key for orders nobody was assigned


@dataclass(frozen=True)
class OrderRecord:
    number: str
    category: str
    channel: str
    grid: str | None
    created_at: datetime
    urgency: str
    hops: int  # departments that led it: 1 = right the first time, 0 = not dispatched yet
    first_lead: str
    final_owner: str | None  # None while the order is open
    dispatched_at: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    assignees: tuple[str, ...]  # staff ids who held an order of this ticket
    sla_met: Mapping[str, bool]  # stage -> met (stages still pending are left out)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Return the q-th percentile (0..100), interpolating between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(records: Sequence[OrderRecord], *, by: str | None = None) -> dict[str, Any]:
    """Summarise orders overall, or per department, grid, worker, category or channel."""
    if by is None:
        return _summary(records)
    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r}; use None or one of: {', '.join(GROUPINGS)}")
    groups: dict[str, list[OrderRecord]] = {}
    for record in records:
        for key in _KEYS[by](record):
            groups.setdefault(key, []).append(record)
    return {
        "by": by,
        "overall": _summary(records),
        "groups": {key: _summary(groups[key]) for key in sorted(groups)},
    }


def _department(record: OrderRecord) -> tuple[str, ...]:
    # An open order belongs to whoever leads it now; we only know the first lead then.
    return (record.final_owner or record.first_lead,)


_KEYS: dict[str, Callable[[OrderRecord], tuple[str, ...]]] = {
    "department": _department,
    "grid": lambda r: (r.grid or UNKNOWN_KEY,),
    # An order with several assignees counts once for each of them.
    "worker": lambda r: tuple(dict.fromkeys(r.assignees)) or (QUEUE_KEY,),
    "category": lambda r: (r.category,),
    "channel": lambda r: (r.channel,),
}


def _summary(records: Sequence[OrderRecord]) -> dict[str, Any]:
    dispatched = [r for r in records if r.hops >= 1]
    hops = [float(r.hops) for r in dispatched]
    return {
        "count": len(records),
        "hops": {"mean": _mean(hops), "p95": percentile(hops, 95)},
        "first_time_right": _rate([r.hops == 1 for r in dispatched]),
        "minutes_to_dispatch": _timing(records, lambda r: r.dispatched_at),
        "minutes_to_first_response": _timing(records, lambda r: r.first_response_at),
        "minutes_to_resolution": _timing(records, lambda r: r.resolved_at),
        "sla": _sla(records),
        "load": _load(records),
    }


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _rate(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _timing(
    records: Sequence[OrderRecord], at: Callable[[OrderRecord], datetime | None]
) -> dict[str, float | None]:
    minutes = []
    for record in records:
        moment = at(record)
        if moment is not None:
            minutes.append((moment - record.created_at).total_seconds() / 60)
    return {
        "mean": _mean(minutes),
        "p50": percentile(minutes, 50),
        "p95": percentile(minutes, 95),
    }


def _sla(records: Sequence[OrderRecord]) -> dict[str, dict[str, float | int | None]]:
    outcomes: dict[str, list[bool]] = {}
    for record in records:
        for stage, met in record.sla_met.items():
            outcomes.setdefault(stage, []).append(bool(met))
    return {
        stage: {"orders": len(flags), "met": sum(flags), "rate": _rate(flags)}
        for stage, flags in sorted(outcomes.items())
    }


def _load(records: Sequence[OrderRecord]) -> dict[str, float | int | None]:
    per_worker = Counter(w for r in records for w in dict.fromkeys(r.assignees))
    counts = list(per_worker.values())
    return {
        "workers": len(counts),
        "max": max(counts) if counts else None,
        "min": min(counts) if counts else None,
        "stdev": statistics.pstdev(counts) if counts else None,
    }
