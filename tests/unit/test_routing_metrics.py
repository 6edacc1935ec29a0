"""Dispatch metrics computed on hand-made order records, checked against hand arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from routing.metrics import GROUPINGS, QUEUE_KEY, UNKNOWN_KEY, OrderRecord, percentile, summarize

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)


def _at(minutes: float | None) -> datetime | None:
    return None if minutes is None else T0 + timedelta(minutes=minutes)


def _record(number: str, *, category: str = "water_leak", channel: str = "wechat",
            grid: str | None = "grid1", hops: int = 1, first_lead: str = "property",
            final_owner: str | None = "property", dispatch: float | None = 2,
            response: float | None = 10, resolve: float | None = 120,
            assignees: tuple[str, ...] = ("wy02",), sla: dict | None = None) -> OrderRecord:
    return OrderRecord(number=number, category=category, channel=channel, grid=grid,
                       created_at=T0, urgency="P2", hops=hops, first_lead=first_lead,
                       final_owner=final_owner, dispatched_at=_at(dispatch),
                       first_response_at=_at(response), resolved_at=_at(resolve),
                       assignees=assignees,
                       sla_met=sla if sla is not None else {"first_response": True})


RECORDS = (
    _record("GD1", hops=1, dispatch=1, response=10, resolve=60, assignees=("wy02",),
            sla={"first_response": True, "resolve": True}),
    _record("GD2", hops=2, dispatch=3, response=40, resolve=600, channel="sms",
            first_lead="property", final_owner="utilities_water", assignees=("wy02", "gs01"),
            sla={"first_response": False, "resolve": True}),
    _record("GD3", category="parking", hops=1, dispatch=2, response=20, resolve=None,
            grid=None, final_owner=None, assignees=("wy08", "wg11"),
            sla={"first_response": True}),
    _record("GD4", category="other", hops=3, dispatch=4, response=None, resolve=None,
            first_lead="residents_committee", final_owner="street_office", assignees=(),
            channel="voice", grid="grid2", sla={}),
)


def test_overall_summary_by_hand() -> None:
    summary = summarize(RECORDS)
    assert summary["count"] == 4
    assert summary["hops"]["mean"] == pytest.approx(7 / 4)
    assert summary["hops"]["p95"] == pytest.approx(2.85)  # 2 + 0.85 * (3 - 2)
    assert summary["first_time_right"] == pytest.approx(0.5)
    assert summary["minutes_to_dispatch"] == {
        "mean": pytest.approx(2.5), "p50": pytest.approx(2.5), "p95": pytest.approx(3.85)}
    assert summary["minutes_to_first_response"] == {
        "mean": pytest.approx(70 / 3), "p50": pytest.approx(20), "p95": pytest.approx(38)}
    assert summary["minutes_to_resolution"]["mean"] == pytest.approx(330)
    assert summary["minutes_to_resolution"]["p50"] == pytest.approx(330)
    assert summary["sla"] == {
        "first_response": {"orders": 3, "met": 2, "rate": pytest.approx(2 / 3)},
        "resolve": {"orders": 2, "met": 2, "rate": 1.0},
    }
    # wy02 holds 2 orders, gs01, wy08 and wg11 one each
    assert summary["load"] == {"workers": 4, "max": 2, "min": 1,
                               "stdev": pytest.approx(0.4330127)}


def test_group_by_department_uses_the_final_owner_else_the_first_lead() -> None:
    result = summarize(RECORDS, by="department")
    assert result["by"] == "department"
    assert result["overall"]["count"] == 4
    groups = result["groups"]
    assert list(groups) == ["property", "street_office", "utilities_water"]
    assert [groups[k]["count"] for k in groups] == [2, 1, 1]  # GD3 is open: its first lead
    assert groups["property"]["first_time_right"] == 1.0
    assert groups["street_office"]["first_time_right"] == 0.0


def test_group_by_worker_counts_an_order_for_each_of_its_people() -> None:
    groups = summarize(RECORDS, by="worker")["groups"]
    assert {k: g["count"] for k, g in groups.items()} == {
        "gs01": 1, "wg11": 1, "wy02": 2, "wy08": 1, QUEUE_KEY: 1}
    assert groups["wy02"]["hops"]["mean"] == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("grid", {"grid1": 2, "grid2": 1, UNKNOWN_KEY: 1}),
        ("category", {"water_leak": 2, "parking": 1, "other": 1}),
        ("channel", {"wechat": 2, "sms": 1, "voice": 1}),
    ],
)
def test_other_groupings(by: str, expected: dict[str, int]) -> None:
    groups = summarize(RECORDS, by=by)["groups"]
    assert {k: g["count"] for k, g in groups.items()} == expected
    assert list(groups) == sorted(groups)


@pytest.mark.parametrize("by", [g for g in GROUPINGS if g != "worker"])
def test_groupings_other_than_worker_partition_the_orders(by: str) -> None:
    result = summarize(RECORDS, by=by)
    assert sum(g["count"] for g in result["groups"].values()) == len(RECORDS)
    assert result["overall"] == summarize(RECORDS)


def test_unknown_grouping_is_refused() -> None:
    with pytest.raises(ValueError, match="'building'.*department, grid, worker"):
        summarize(RECORDS, by="building")


def test_empty_input_gives_nones_not_errors() -> None:
    summary = summarize([])
    assert summary["count"] == 0
    assert summary["hops"] == {"mean": None, "p95": None}
    assert summary["first_time_right"] is None
    assert summary["minutes_to_resolution"] == {"mean": None, "p50": None, "p95": None}
    assert summary["sla"] == {}
    assert summary["load"] == {"workers": 0, "max": None, "min": None, "stdev": None}
    assert summarize([], by="grid")["groups"] == {}


def test_undispatched_orders_do_not_count_against_first_time_right() -> None:
    summary = summarize([_record("A", hops=0, dispatch=None), _record("B", hops=1)])
    assert summary["first_time_right"] == 1.0
    assert summary["hops"]["mean"] == 1.0
    assert summary["minutes_to_dispatch"]["mean"] == 2.0


def test_even_load_has_zero_spread() -> None:
    records = [_record(f"N{i}", assignees=(f"w{i % 4}",)) for i in range(12)]
    assert summarize(records)["load"] == {"workers": 4, "max": 3, "min": 3, "stdev": 0.0}


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([7.0], 95, 7.0),
        ([1, 2, 3, 4], 50, 2.5),
        ([4, 1, 3, 2], 50, 2.5),
        ([10, 20, 30, 40, 50], 0, 10),
        ([10, 20, 30, 40, 50], 100, 50),
        ([10, 20, 30, 40, 50], 95, 48),
    ],
)
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == (None if expected is None else pytest.approx(expected))
