"""The benchmark's pure helpers: percentiles, summaries, verdicts, scripts and /proc parsing."""
from __future__ import annotations

import pytest

from bot.bench import (
    TARGET_TURN_P95_MS,
    latency_summary,
    make_script,
    overhead_rows,
    parse_proc_cpu,
    parse_proc_status,
    percentile,
    ratio,
    render_markdown,
    spoken_digits,
    spoken_number,
    target_rows,
    verdict,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1, 2, 3, 4], 50, 2.5),
        ([4, 1, 3, 2], 50, 2.5),  # order of the samples does not matter
        ([10, 20, 30, 40, 50], 0, 10),
        ([10, 20, 30, 40, 50], 100, 50),
        ([10, 20, 30, 40, 50], 25, 20),
        ([10, 20, 30, 40, 50], 95, 48),
        (list(range(1, 101)), 99, 99.01),
        ([7.5], 95, 7.5),
    ],
)
def test_percentile_interpolates_between_closest_ranks(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_refuses_no_samples_and_bad_q():
    with pytest.raises(ValueError, match="at least one"):
        percentile([], 50)
    with pytest.raises(ValueError, match="0..100"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match="0..100"):
        percentile([1.0], -1)


def test_latency_summary_reports_rate_only_with_wall_time():
    summary = latency_summary([100.0, 200.0, 300.0, 400.0], wall_s=2.0)
    assert summary == {"count": 4, "mean_ms": 250.0, "p50_ms": 250.0, "p95_ms": 385.0,
                       "p99_ms": 397.0, "max_ms": 400.0, "per_s": 2.0}
    assert "per_s" not in latency_summary([5.0])
    assert latency_summary([]) == {"count": 0}


def test_ratio_and_verdict():
    assert ratio(150.0, 100.0) == 1.5
    assert ratio(None, 100.0) is None and ratio(1.0, 0.0) is None
    assert verdict(150.0, TARGET_TURN_P95_MS) == "pass"
    assert verdict(150.1, TARGET_TURN_P95_MS) == "miss"
    assert verdict(0.96, 0.95, at_least=True) == "pass"
    assert verdict(0.94, 0.95, at_least=True) == "miss"
    assert verdict(None, 1.0) == "n/a"


@pytest.mark.parametrize(("n", "spoken"), [(1, "一"), (10, "十"), (12, "十二"), (16, "十六"),
                                           (20, "二十"), (35, "三十五")])
def test_spoken_number(n, spoken):
    assert spoken_number(n) == spoken


def test_spoken_number_range_and_digits():
    with pytest.raises(ValueError):
        spoken_number(0)
    assert spoken_digits(501) == "五零一"


def test_scripts_vary_and_end_in_a_yes():
    scripts = [make_script(i, sender_prefix="13900") for i in range(64)]
    assert len({s.sender for s in scripts}) == 64
    assert all(len(s.sender) == 11 and s.sender.isdigit() for s in scripts)
    assert {s.category for s in scripts} == {"water_leak", "heating", "power_outage",
                                             "elevator_fault"}
    assert {s.building for s in scripts} == set(range(1, 17))
    assert {s.unit for s in scripts} == {1, 2}
    rooms = {s.room for s in scripts if s.room is not None}
    assert min(rooms) >= 101 and max(rooms) <= 602 and len({r // 100 for r in rooms}) == 6
    for script in scripts:
        assert script.turns[-1] == "对"
        if script.category == "elevator_fault":
            assert len(script.turns) == 2 and "电梯" in script.turns[0]
        else:
            assert len(script.turns) == 4 and spoken_digits(script.room) in script.turns[1]


def test_first_script_is_the_leak_conversation():
    script = make_script(0, sender_prefix="13900")
    assert script.turns == ("我家卫生间漏水了", "一号楼一单元一零一", "明天上午", "对")


def test_proc_parsing():
    status = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t4\n"
    assert parse_proc_status(status) == {"rss_mb": 100.0, "hwm_mb": 200.0}
    assert parse_proc_status("Name:\tzombie\n") == {"rss_mb": None, "hwm_mb": None}
    # utime is the 14th and stime the 15th field; the name may contain ") (".
    stat = "42 (we ird) (x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 99 0 0"
    assert parse_proc_cpu(stat, ticks_per_s=100) == pytest.approx(3.0)


def _run(path: str, concurrency: int, p50: float, p95: float, per_s: float,
         *, confirmed: int = 10, written: int = 10, errors: int = 0) -> dict:
    return {"path": path, "concurrency": concurrency, "conversations": confirmed,
            "turns": {"count": 30, "mean_ms": p50 * 1.25, "p50_ms": p50, "p95_ms": p95, "p99_ms": p95, "max_ms": p95,
                      "per_s": per_s},
            "errors": errors, "confirmed": confirmed, "tickets_written": written,
            "cpu_ms_per_turn": {"rasa": 80.0}}


def test_overhead_compares_hub_with_direct_rasa_per_level():
    rows = overhead_rows([_run("hub", 20, 120.0, 300.0, 8.0),
                          _run("direct Rasa", 20, 100.0, 200.0, 10.0),
                          _run("hub, 2 s think time", 20, 50.0, 60.0, 3.0)])
    assert rows == [{"concurrency": 20, "mean_ratio": 1.2, "p50_ratio": 1.2, "p95_ratio": 1.5,
                     "throughput_ratio": 0.8, "mean_overhead_ms": 25.0}]


def test_targets_mark_misses_and_ticket_mismatches():
    report = {"nlu": {"macro_f1": 0.97},
              "load": [_run("hub", 20, 100.0, 400.0, 8.0, confirmed=12, written=11),
                       _run("hub", 1, 100.0, 120.0, 8.0)],
              "training": {"seconds": 90.0}, "startup": {"ready_s": 75.0}}
    results = {row["figure"]: row["result"] for row in target_rows(report)}
    assert results["NLU held-out macro-F1"] == "pass"
    assert results["turn p95 via hub, 20 concurrent"] == "miss"
    assert results["tickets written = conversations reaching 对 (every run)"] == "miss"
    assert results["model training (--force)"] == "pass"
    assert results["stack start-up to all healthy"] == "miss"
    markdown = render_markdown({**report, "targets": target_rows(report),
                                "overhead": overhead_rows(report["load"]),
                                "memory": [{"process": "rasa", "rss_mb": 690.4, "hwm_mb": 700.0}]})
    assert "❌ miss" in markdown and "✅ pass" in markdown and "400.0 ms" in markdown
    assert "rasa 690 / 700 MB" in markdown


def test_ticket_check_passes_only_when_every_run_matches():
    matching = [_run("hub", 1, 100.0, 120.0, 8.0), _run("direct Rasa", 1, 90.0, 110.0, 9.0)]
    rows = {r["figure"]: r for r in target_rows({"load": matching})}
    row = rows["tickets written = conversations reaching 对 (every run)"]
    assert row["result"] == "pass" and row["value"] == "20 / 20, 0 errors"
    failing = matching + [_run("hub", 20, 100.0, 120.0, 8.0, errors=1)]
    rows = {r["figure"]: r for r in target_rows({"load": failing})}
    assert rows["tickets written = conversations reaching 对 (every run)"]["result"] == "miss"


def test_targets_not_measured_are_not_passed():
    rows = target_rows({"training": {"error": "boom"}})
    assert {row["result"] for row in rows} == {"n/a"}
