"""The routing bench's pure parts: order drawing, office hours, the relay, shifts, verdicts."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.bench_routing import (
    LIFT_CATEGORIES,
    BenchError,
    Labelled,
    add_working_hours,
    category_view,
    next_on_shift,
    plan_orders,
    poisson,
    relay_order,
    relay_path,
    spread,
    stats,
    target_rows,
    verdict,
)
from nlu.request_model import CLASSIFIER_DEFAULTS
from routing.roster import Shift, Staff

pytestmark = pytest.mark.unit

SH = ZoneInfo("Asia/Shanghai")
MONDAY = datetime(2026, 11, 30, tzinfo=SH)  # Monday 30 Nov 2026, local midnight

CONFIG = CLASSIFIER_DEFAULTS  # the RequestClassifier options category_view reads
URGENCY = {"water_leak": "P2", "heating": "P2", "elevator_trapped": "P1",
           "sanitation": "P3", "elevator_fault": "P2"}


def _local(day: int, hh: int, mm: int = 0) -> datetime:
    return MONDAY + timedelta(days=day, hours=hh, minutes=mm)


def _sample(category: str, routed: str | None = None) -> Labelled:
    routed = routed or category
    return Labelled(f"{category}的句子", category, routed, ((routed, 0.9),), "P3", None)


POOL = {c: [_sample(c)] for c in ("water_leak", "heating", "sanitation", "elevator_fault")}


def _owner(category: str, building: str) -> str:
    return "urban_management" if (category, building) == ("sanitation", "13") else "property"


def _plan(seed: int = 1, days: int = 5, per_day: float = 30) -> list[Any]:
    return plan_orders(days=days, per_day=per_day, seed=seed, pool=POOL,
                       buildings=[str(n) for n in range(1, 17)], lift_buildings=["9", "10"],
                       owner_of=_owner, start=MONDAY)


# ---------------------------------------------------------------- drawing orders


def test_poisson_has_the_asked_mean_on_both_branches() -> None:
    rng = random.Random(3)
    for mean in (4.0, 40.0, 80.0):
        draws = [poisson(rng, mean) for _ in range(3000)]
        assert abs(sum(draws) / len(draws) - mean) < 0.05 * mean
        assert min(draws) >= 0
    assert poisson(rng, 0) == 0


def test_orders_are_seeded_sorted_and_inside_the_month() -> None:
    orders = _plan()
    assert orders == _plan()
    assert orders != _plan(seed=2)
    assert [o.created_at for o in orders] == sorted(o.created_at for o in orders)
    assert [o.index for o in orders] == list(range(len(orders)))
    assert 100 < len(orders) < 200  # 5 days of ~30
    for order in orders:
        assert order.created_at.tzinfo is not None
        assert MONDAY <= order.created_at < MONDAY + timedelta(days=5)
        assert order.sample in POOL[order.sample.category]


def test_lifts_only_where_there_are_lifts_and_owner_is_applied() -> None:
    orders = _plan(days=20)
    lifts = [o for o in orders if o.sample.category in LIFT_CATEGORIES]
    assert lifts and {o.building for o in lifts} <= {"9", "10"}
    assert len({o.building for o in orders}) == 16
    for order in orders:
        assert order.owner == _owner(order.sample.category, order.building)
    assert any(o.owner == "urban_management" for o in orders)


def test_more_orders_by_day_than_by_night() -> None:
    hours = [o.created_at.astimezone(SH).hour for o in _plan(days=20)]
    assert sum(8 <= h < 12 for h in hours) > 5 * sum(h < 5 for h in hours)


def test_a_pool_without_mix_categories_is_refused() -> None:
    with pytest.raises(BenchError, match="no held-out sentence"):
        plan_orders(days=1, per_day=5, seed=1, pool={"not_a_category": [_sample("x")]},
                    buildings=["1"], lift_buildings=["1"], owner_of=_owner)


# ---------------------------------------------------------------- the classifier's view


def test_ranking_follows_the_model_and_the_routed_category_heads_it() -> None:
    labels = ["report_water_leak", "report_heating", "greet"]
    routed, ranking, urgency, reason = category_view(
        labels, [0.6, 0.3, 0.1], "卫生间的水管在滴水", config=CONFIG,
        default_urgency=URGENCY.__getitem__)
    assert routed == "water_leak"
    assert [name for name, _ in ranking] == ["water_leak", "heating"]
    assert ranking[0][1] == pytest.approx(0.6 / 0.9, abs=1e-3)
    assert (urgency, reason) == ("P2", None)


def test_a_safety_rule_overrules_the_model_and_makes_it_p1() -> None:
    labels = ["report_water_leak", "report_elevator_trapped", "greet"]
    routed, ranking, urgency, reason = category_view(
        labels, [0.7, 0.2, 0.1], "救命 我被困在电梯里出不来了", config=CONFIG,
        default_urgency=URGENCY.__getitem__)
    assert routed == "elevator_trapped"
    assert ranking[0][0] == "elevator_trapped" and ranking[1][0] == "water_leak"
    assert urgency == "P1" and reason and reason.startswith("生命安全")


# ---------------------------------------------------------------- office hours and the relay


@pytest.mark.parametrize(
    ("start", "hours", "expected"),
    [
        (_local(0, 10), 2, _local(0, 12)),  # inside one morning
        (_local(0, 7), 1, _local(0, 9, 30)),  # waits for the office to open
        (_local(0, 17), 1, _local(1, 9)),  # half an hour today, half tomorrow
        (_local(4, 17), 1, _local(7, 9)),  # Friday evening -> Monday
        (_local(5, 10), 0.5, _local(7, 9)),  # Saturday -> Monday
        (_local(0, 8, 30), 9, _local(0, 17, 30)),  # a whole office day ends at closing
        (_local(0, 20), 0, _local(1, 8, 30)),  # zero hours still wait for the office
    ],
)
def test_working_hours_skip_nights_and_weekends(start: datetime, hours: float,
                                                expected: datetime) -> None:
    assert add_working_hours(start, hours) == expected


def test_working_hours_keep_the_zone_and_refuse_bad_input() -> None:
    at = add_working_hours(_local(0, 10).astimezone(UTC), 1)
    assert at.tzinfo == UTC and at == _local(0, 11)
    with pytest.raises(ValueError, match="aware"):
        add_working_hours(datetime(2026, 11, 30, 10), 1)
    with pytest.raises(ValueError, match=">= 0"):
        add_working_hours(_local(0, 10), -1)


def test_relay_paths_are_cut_short_where_an_office_owns_the_order() -> None:
    assert len(relay_path("residents_committee", "P3")) - 1 == 2
    assert len(relay_path("property", "P2")) - 1 == 3
    assert relay_path("utilities_heating", "P2") == (
        "front_desk", "residents_committee", "property", "utilities_heating_head", "worker")
    assert relay_path("elevator_maintenance", "P1") == (
        "front_desk", "elevator_maintenance", "worker")


class _Fixed(random.Random):
    """A generator whose every draw is the same fraction."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_relay_detours_add_one_hop_each_and_office_time() -> None:
    start = _local(0, 9)
    straight = relay_order(department="utilities_heating", urgency="P2", created_at=start,
                           rng=_Fixed(0.99))
    detoured = relay_order(department="utilities_heating", urgency="P2", created_at=start,
                           rng=_Fixed(0.0))
    assert straight[0] == 4 and detoured[0] == 8
    # uniform(0.5, 4) at .99 is 3.965 office hours a hand-off, 15.86 in all: 8.5 on Monday
    # from 09:00, the remaining 7.36 on Tuesday from 08:30, ending at 15:51:36.
    assert start + timedelta(minutes=straight[1]) == pytest.approx(
        _local(1, 15, 51) + timedelta(seconds=36), abs=timedelta(seconds=1))
    assert detoured[1] == pytest.approx(240)  # eight half-hour hand-offs, Monday 09:00-13:00
    quick = relay_order(department="elevator_maintenance", urgency="P1", created_at=start,
                        rng=_Fixed(0.5))
    assert quick[0] == 2 and quick[1] < 30  # phoned straight, minutes not office hours


# ---------------------------------------------------------------- shifts, stats, verdicts


def _staff(*shifts: Shift) -> Staff:
    return Staff(id="x1", name="员工", department="property", role="worker", skills=(),
                 shifts=shifts, capacity=3, phone="13800000000")


def test_next_on_shift_finds_the_next_start_or_none() -> None:
    weekdays = _staff(Shift(days=(0, 1, 2, 3, 4), start=time(8, 30), end=time(17, 30)))
    assert next_on_shift(weekdays, _local(0, 10)) == _local(0, 10)
    assert next_on_shift(weekdays, _local(0, 18, 7)) == _local(1, 8, 30)
    assert next_on_shift(weekdays, _local(5, 9)) == _local(7, 8, 30)
    assert next_on_shift(_staff(), _local(0, 10)) is None


def test_stats_verdict_and_spread() -> None:
    assert stats([1.0, 2.0, 3.0, 4.0]) == {"mean": 2.5, "p50": 2.5, "p95": 3.85, "max": 4.0}
    assert stats([]) == {"mean": None, "p50": None, "p95": None, "max": None}
    assert verdict(1.15, 1.15, higher_is_better=False) == "pass"
    assert verdict(1.2, 1.15, higher_is_better=False) == "miss"
    assert verdict(499.0, 500, higher_is_better=True) == "miss"
    assert verdict(None, 500, higher_is_better=True) == "n/a"
    assert spread({"a": 4, "b": 2}, ["a", "b", "c"]) == {
        "people": 3, "max": 4, "min": 0, "stdev": pytest.approx(1.633, abs=1e-3), "idle": 1}
    assert spread({}, [])["max"] is None


def test_target_rows_judge_each_run_and_compare_with_the_relay() -> None:
    def run(mean: float, p95: float) -> dict[str, Any]:
        return {"summary": {"count": 10, "hops": {"mean": mean, "p95": p95},
                            "sla": {"resolve": {"rate": 0.96}}},
                "decision_ms": {"p50": 0.1, "p95": 0.2}}

    report = {
        "runs": {"learning": run(1.1, 2.0), "no_learning": run(1.3, 3.0)},
        "relay": {"orders": 10, "hops": {"mean": 4.4, "p95": 6.0},
                  "share_with_a_wrong_office": 0.5,
                  "minutes_to_dispatch": {"p50": 600.0, "p95": 3000.0}},
        "throughput": [{"commit_every": 1, "orders_per_second": 420.0}],
    }
    rows = {r["metric"]: r for r in target_rows(report)}
    mean = rows["hops mean"]
    assert mean["verdicts"] == {"learning": "pass", "no_learning": "miss"}
    assert mean["relay"] == 4.4 and mean["engine_over_relay"] == 0.25
    assert rows["hops p95"]["verdicts"] == {"learning": "pass", "no_learning": "miss"}
    assert rows["SLA resolve met"]["verdicts"]["learning"] == "pass"
    assert rows["SLA first_response met"]["verdicts"]["learning"] == "—"  # not measured
    assert rows["plan_dispatch ms p95"]["verdicts"]["learning"] == "pass"
    assert rows["orders"]["engine_over_relay"] is None
    speed = rows["orders/s created+dispatched+committed, commit every 1"]
    assert speed["verdicts"] == {"learning": "miss"}
