"""The console benchmark's pure parts: /proc parsing, markers, fan-out and latency arithmetic,
what counts as a failed run, and the report. No stack: the I/O is exercised by running
`python -m bot bench-console`."""
from __future__ import annotations

import asyncio
import time

import pytest

from bot.bench_console import paced
from bot.bench_console_report import (
    Phase,
    cpu_ticks,
    error_blocks,
    fanout,
    interleave,
    phase_entry,
    probe_text,
    problems,
    render_markdown,
    reply_text,
    status_kb,
    token_of,
    versus,
)

STATUS = """Name:\tpython
Umask:\t0022
State:\tS (sleeping)
VmPeak:\t 1203480 kB
VmHWM:\t  141220 kB
VmRSS:\t  120832 kB
Threads:\t7
voluntary_ctxt_switches:\t1234
"""
# A command name with a space and a parenthesis must not shift the fields.
STAT = ("4242 (python -m bot) serve) S 1 4242 4242 0 -1 4194560 2882 0 0 0 "
        "351 87 0 0 20 0 7 0 5000 1203480000 30208 18446744073709551615")


def test_status_gives_the_kb_figures_only():
    figures = status_kb(STATUS)
    assert figures["VmRSS"] == 120832 and figures["VmHWM"] == 141220
    assert "Threads" not in figures and "State" not in figures
    assert status_kb("") == {}


def test_cpu_ticks_are_user_plus_system_after_the_command_name():
    assert cpu_ticks(STAT) == 351 + 87


def test_markers_survive_the_texts_they_ride_in():
    assert token_of(reply_text("r17")) == "r17"
    assert token_of(probe_text("f3")) == "f3"
    assert token_of("已为您转人工客服，预计3分钟内回复。") is None
    assert token_of(reply_text("r1")) != token_of(reply_text("r10"))


def test_interleave_spreads_both_channels_and_keeps_everyone():
    web, sms = ["w0", "w1"], ["s0", "s1", "s2"]
    merged = interleave(web, sms)
    assert sorted(merged) == sorted(web + sms)
    assert [x for x in merged if x[0] == "w"] == web and [x for x in merged if x[0] == "s"] == sms
    assert merged[:2] in (["w0", "s0"], ["s0", "w0"])  # not all web first
    assert interleave([], ["s0"]) == ["s0"] and interleave(["w0"], []) == ["w0"]


def test_fanout_counts_the_slowest_socket_and_every_missing_delivery():
    probes = {"f0": 100.0, "f1": 200.0}
    agents = [{"f0": 100.010, "f1": 200.005}, {"f0": 100.030}, {"f0": 100.020, "f1": 200.050}]
    slowest, each, missing = fanout(probes, agents)
    assert slowest == pytest.approx([30.0])  # f1 missed one socket: no "slowest" for it
    assert sorted(each) == pytest.approx([5.0, 10.0, 20.0, 30.0, 50.0])
    assert missing == 1
    assert fanout({}, agents) == ([], [], 0)


def test_phase_entry_splits_channels_and_counts_lost_replies():
    phase = Phase(sent={"r0": ("web", 10.0), "r1": ("sms", 10.0), "r2": ("sms", 11.0),
                        "r3": ("web", 12.0)},
                  received={"r0": 10.012, "r1": 10.040, "r2": 11.020},
                  post_ms=[8.0, 9.0, 10.0, 11.0], probes={"f0": 5.0}, agents=[{"f0": 5.004}],
                  wall_s=2.0)
    entry = phase_entry(phase)
    assert entry["reply"]["web"]["count"] == 1 and entry["reply"]["web"]["max_ms"] == 12.0
    assert entry["reply"]["sms"]["count"] == 2 and entry["reply"]["sms"]["max_ms"] == 40.0
    assert entry["reply"]["all"]["count"] == 3 and entry["reply"]["all"]["per_s"] == 1.5
    assert entry["replies_sent"] == 4 and entry["replies_lost"] == 1
    assert entry["lost_examples"] == ["r3"]
    assert entry["fanout_slowest"]["p50_ms"] == 4.0 and entry["fanout_missing"] == 0


def test_versus_is_loaded_over_idle_and_blank_when_unmeasured():
    assert versus({"p50_ms": 30.0, "p95_ms": 90.0}, {"p50_ms": 15.0, "p95_ms": 30.0}) == {
        "p50": 2.0, "p95": 3.0}
    assert versus({"p50_ms": 30.0}, {"count": 0}) == {"p50": None, "p95": None}


def _report(**changes):
    clean = phase_entry(Phase(sent={"i0": ("web", 1.0)}, received={"i0": 1.02},
                              probes={"j0": 1.0}, agents=[{"j0": 1.01}]))
    loaded = phase_entry(Phase(sent={"r0": ("web", 1.0), "r1": ("sms", 1.0)},
                               received={"r0": 1.05, "r1": 1.2}, post_ms=[20.0, 25.0],
                               probes={"f0": 2.0}, agents=[{"f0": 2.03}, {"f0": 2.04}]))
    report = {"finished_at": "2026-11-29T03:00:00+00:00",
              "host": {"cpus": 2, "loadavg_start": [1.0, 1.0, 1.0]},
              "setup": {"agents": 2, "conversations": 2, "web": 1, "replies": 2, "rate": 10.0,
                        "probes": 1, "probe_rate": 2.0},
              "baseline": clean, "loaded": loaded,
              "handoff": {"via_bot": 2, "queued_directly": 0, "queued": 2},
              "api": {"queue": {"count": 3, "p50_ms": 41.0, "p95_ms": 60.0, "max_ms": 61.0}},
              "memory": {"steps": {"idle": 80.1, "+ all claimed": 130.5}, "peak_mb": 140.2},
              "cpu": {"load_s": 3.1, "load_wall_s": 31.0, "load_share": 0.1},
              "errors": {"count": 0, "examples": []}}
    report.update(changes)
    return report


def test_a_clean_run_has_no_problems():
    assert problems(_report()) == []


@pytest.mark.parametrize("change, expected", [
    ({"error": "TimeoutError: not ready"}, "measurement failed"),
    ({"errors": {"count": 2, "examples": ["POST /x: HTTP 500"]}}, "2 failed requests"),
    ({"handoff": {"via_bot": 1, "queued_directly": 0, "queued": 1}}, "only 1 of 2"),
    ({"agent_reply_events_missing": 3}, "3 reply events missing"),
])
def test_errors_losses_and_a_short_queue_are_problems(change, expected):
    found = problems(_report(**change))
    assert len(found) == 1 and expected in found[0]


def test_a_lost_reply_is_a_problem():
    report = _report()
    report["loaded"] = phase_entry(Phase(sent={"r0": ("sms", 1.0)}, received={}))
    assert any("1 of 1 replies never reached" in p for p in problems(report))


def test_markdown_puts_loaded_next_to_idle_with_the_ratio():
    report = _report()
    report["problems"] = problems(report)
    text = render_markdown(report)
    row = next(line for line in text.splitlines() if line.startswith("| reply → web-chat"))
    # loaded 50 ms against 20 ms idle
    assert row.split(" | ")[2:4] == ["50 ms", "50 ms"] and "20 ms" in row and "×2.50" in row
    sms = next(line for line in text.splitlines() if "sandbox Twilio" in line)
    assert "200 ms" in sms and "| — |" in sms  # no idle SMS figure: a dash, not a ratio
    assert "| GET queue (2 waiting), 10 at once | 3 | 41 ms | 60 ms | 61 ms |" in text
    assert "idle 80.1 MB" in text and "peak 140.2 MB" in text and "Problem" not in text
    broken = _report(error="RuntimeError: hub exited")
    broken["problems"] = problems(broken)
    assert "**Problem:** measurement failed: RuntimeError: hub exited" in render_markdown(broken)


def test_markdown_of_a_run_that_never_started_still_renders():
    text = render_markdown({"error": "boom", "problems": ["measurement failed: boom"]})
    assert "reply → web-chat socket | 0 | — |" in text and "measurement failed" in text


def test_paced_starts_jobs_at_a_steady_rate_without_waiting_for_them():
    started: list[float] = []

    async def job(_k: int) -> None:
        started.append(time.monotonic())
        await asyncio.sleep(0.2)  # slower than the pace: must not hold the next one back

    began = time.monotonic()
    asyncio.run(paced(5, 50.0, job))
    gaps = [b - a for a, b in zip(started, started[1:], strict=False)]
    assert len(started) == 5 and all(0.01 < gap < 0.1 for gap in gaps)
    assert time.monotonic() - began < 0.5


def test_error_blocks_keep_each_error_with_its_traceback_and_nothing_else():
    log = "\n".join([
        "2026-11-29 02:45:00,297 twilio.http_client INFO Accept : application/json",
        "2026-11-29 02:45:00,300 aiohttp.server ERROR Error handling request",
        "Traceback (most recent call last):",
        '  File "bot/console/agent.py", line 90, in _run',
        "sqlalchemy.exc.TimeoutError: QueuePool limit of size 5 overflow 10 reached",
        "2026-11-29 02:45:00,301 twilio.http_client INFO Response Status Code: 201",
        "  a continuation of an INFO entry",
        "2026-11-29 02:45:01,000 bot.outbox CRITICAL gave up",
    ])
    blocks = error_blocks(log)
    assert len(blocks) == 2
    assert blocks[0].splitlines()[0].endswith("Error handling request")
    assert blocks[0].splitlines()[-1].startswith("sqlalchemy.exc.TimeoutError")
    assert "INFO" not in "".join(blocks) and blocks[1].endswith("gave up")
    assert error_blocks("") == []


def test_markdown_names_the_exceptions_the_hub_logged():
    report = _report(errors={"count": 1, "examples": ["GET /console/api/agent/queue: HTTP 500"]},
                     hub_errors=["2026-11-29 02:47:22,725 aiohttp.server ERROR Error handling\n"
                                 "Traceback (most recent call last):\n"
                                 "sqlite3.OperationalError: database is locked\n"
                                 "The above exception was the direct cause of the following "
                                 "exception:"])
    report["problems"] = problems(report)
    text = render_markdown(report)
    assert "**Hub log:** `sqlite3.OperationalError: database is locked`" in text
    assert "The above" not in text and "**Problem:** 1 failed requests" in text
