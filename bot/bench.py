"""Benchmarks: NLU speed and accuracy, turn latency through the hub and straight to Rasa,
training time, memory and start-up, each figure next to its target.

Everything runs on loopback, on a fresh SQLite file in a temp dir, in loops bounded by
time and count. Target misses are reported, not fatal; main() returns 1 only when a
measurement could not be taken or the stored work orders disagree with the conversations.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from routing.metrics import percentile as routing_percentile

ROOT = Path(__file__).resolve().parent.parent
HELDOUT = ROOT / "tests" / "nlu" / "heldout.yml"

TARGET_MACRO_F1 = 0.95
TARGET_TURN_P95_MS = 150.0
TARGET_TRAIN_S = 180.0
TARGET_STARTUP_S = 60.0

WARMUP_PARSES = 5
REQUEST_TIMEOUT_S = 30.0
TRAIN_TIMEOUT_S = 420.0
TICKET_NUMBER = re.compile(r"GD\d{8}-\d{4}")
CPU_COLUMNS = ("rasa", "actions", "hub", "client")

_DIGITS = "零一二三四五六七八九"
# In-home categories: problem → address → visiting time → yes.
FOUR_TURN_OPENERS = {"water_leak": "我家卫生间漏水了", "heating": "我家暖气不热",
                     "power_outage": "我家停电了"}
SCRIPT_CATEGORIES = ("water_leak", "heating", "power_outage", "elevator_fault")


@dataclass(frozen=True)
class Level:
    """One load run: stop starting conversations after duration_s or max_conversations."""

    target: str  # "hub" or "direct Rasa"
    concurrency: int
    duration_s: float = 20.0
    max_conversations: int = 200
    think_s: float = 0.0  # pause between a reply and the resident's next message

    @property
    def label(self) -> str:
        return self.target + (f", {self.think_s:g} s think time" if self.think_s else "")


# Back-to-back turns measure capacity; the paced run shows 20 people typing at a human pace.
RUNS: tuple[Level, ...] = (
    Level("hub", 1, max_conversations=40), Level("direct Rasa", 1, max_conversations=40),
    Level("hub", 20), Level("direct Rasa", 20), Level("hub", 20, think_s=5.0),
)


# ---------------------------------------------------------------- pure helpers

def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0-100) of a non-empty sample, as routing.metrics does."""
    if not values:
        raise ValueError("percentile of no values: measure at least one sample first")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    return float(routing_percentile(values, q))


def latency_summary(samples_ms: Sequence[float], *, wall_s: float | None = None) -> dict[str, Any]:
    """Summarise latencies in ms: count, mean, p50, p95, p99, max and, given wall time, rate."""
    if not samples_ms:
        return {"count": 0}
    summary: dict[str, Any] = {"count": len(samples_ms),
                               "mean_ms": round(sum(samples_ms) / len(samples_ms), 2)}
    for q in (50, 95, 99):
        summary[f"p{q}_ms"] = round(percentile(samples_ms, q), 2)
    summary["max_ms"] = round(max(samples_ms), 2)
    if wall_s:
        summary["per_s"] = round(len(samples_ms) / wall_s, 2)
    return summary


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """Return numerator/denominator rounded, or None when either is missing or zero."""
    return round(numerator / denominator, 2) if numerator and denominator else None


def verdict(value: float | None, target: float, *, at_least: bool = False) -> str:
    """Mark a figure against its target: 'pass', 'miss', or 'n/a' when it was not measured."""
    if value is None:
        return "n/a"
    return "pass" if (value >= target if at_least else value <= target) else "miss"


def spoken_number(n: int) -> str:
    """Say 1..99 the way a resident types it in Chinese: 3 → 三, 12 → 十二, 20 → 二十."""
    if not 1 <= n <= 99:
        raise ValueError(f"spoken_number handles 1..99, got {n}")
    tens, ones = divmod(n, 10)
    head = "" if tens == 0 else ("十" if tens == 1 else _DIGITS[tens] + "十")
    return head + (_DIGITS[ones] if ones else "")


def spoken_digits(number: int) -> str:
    """Say a room number digit by digit: 501 → 五零一."""
    return "".join(_DIGITS[int(d)] for d in str(number))


@dataclass(frozen=True)
class Script:
    """One simulated resident's conversation that should end in a work order."""

    sender: str
    category: str
    turns: tuple[str, ...]
    building: int
    unit: int
    room: int | None


def make_script(index: int, *, sender_prefix: str) -> Script:
    """Build the index-th resident's conversation; buildings, units, rooms and categories vary."""
    category = SCRIPT_CATEGORIES[index % len(SCRIPT_CATEGORIES)]
    building, unit = 1 + (index * 7) % 16, 1 + (index // 2) % 2
    room = 100 * (1 + (index * 5) % 6) + 1 + (index // 4) % 2
    sender = f"{sender_prefix}{index:06d}"
    where = f"{spoken_number(building)}号楼{spoken_number(unit)}单元"
    if category == "elevator_fault":
        return Script(sender, category, (f"{where}电梯坏了", "对"), building, unit, None)
    turns = (FOUR_TURN_OPENERS[category], where + spoken_digits(room), "明天上午", "对")
    return Script(sender, category, turns, building, unit, room)


def parse_proc_status(text: str) -> dict[str, float | None]:
    """Pick VmRSS and VmHWM (peak) out of a /proc/<pid>/status text, in MB."""
    values: dict[str, float | None] = {"rss_mb": None, "hwm_mb": None}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM") and rest.split():
            values["rss_mb" if key == "VmRSS" else "hwm_mb"] = round(int(rest.split()[0]) / 1024, 1)
    return values


def parse_proc_cpu(stat: str, *, ticks_per_s: int) -> float:
    """Return user + system CPU seconds from a /proc/<pid>/stat line."""
    # The command name may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


def overhead_rows(load: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Compare the hub with direct Rasa at each concurrency: latency and throughput ratios."""
    rows = []
    for concurrency in sorted({run["concurrency"] for run in load}):
        hub, direct = ({}, {})
        for run in load:
            if run["concurrency"] == concurrency and run["path"] in ("hub", "direct Rasa"):
                (hub if run["path"] == "hub" else direct).update(run["turns"])
        if "mean_ms" not in hub or "mean_ms" not in direct:
            continue
        # Turn latencies are bimodal (short and long turns), so the mean compares more stably.
        rows.append({"concurrency": concurrency,
                     "mean_ratio": ratio(hub.get("mean_ms"), direct.get("mean_ms")),
                     "p50_ratio": ratio(hub.get("p50_ms"), direct.get("p50_ms")),
                     "p95_ratio": ratio(hub.get("p95_ms"), direct.get("p95_ms")),
                     "throughput_ratio": ratio(hub.get("per_s"), direct.get("per_s")),
                     "mean_overhead_ms": round(hub["mean_ms"] - direct["mean_ms"], 2)})
    return rows


def _cell(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def target_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """List every targeted figure with its value, target and pass/miss."""
    rows: list[dict[str, str]] = []

    def add(figure: str, value: float | None, shown: str, target: str, result: str) -> None:
        rows.append({"figure": figure, "value": shown if value is not None else "—",
                     "target": target, "result": result})

    f1 = report.get("nlu", {}).get("macro_f1")
    add("NLU held-out macro-F1", f1, _cell(f1, "", 4), f"≥ {TARGET_MACRO_F1}",
        verdict(f1, TARGET_MACRO_F1, at_least=True))
    load = report.get("load", [])
    for run in load:
        if run["path"].startswith("hub") and run["concurrency"] == 20:
            p95 = run["turns"].get("p95_ms")
            add(f"turn p95 via {run['path']}, 20 concurrent", p95, _cell(p95, " ms"),
                f"≤ {TARGET_TURN_P95_MS:.0f} ms", verdict(p95, TARGET_TURN_P95_MS))
    if load:
        written = sum(run["tickets_written"] for run in load)
        confirmed = sum(run["confirmed"] for run in load)
        errors = sum(run["errors"] for run in load)
        same = errors == 0 and all(run["tickets_written"] == run["confirmed"] for run in load)
        add("tickets written = conversations reaching 对 (every run)", 1.0,
            f"{written} / {confirmed}, {errors} errors", "equal, 0 errors",
            "pass" if same else "miss")
    seconds = report.get("training", {}).get("seconds")
    add("model training (--force)", seconds, _cell(seconds, " s"), f"≤ {TARGET_TRAIN_S:.0f} s",
        verdict(seconds, TARGET_TRAIN_S))
    ready = report.get("startup", {}).get("ready_s")
    add("stack start-up to all healthy", ready, _cell(ready, " s"), f"≤ {TARGET_STARTUP_S:.0f} s",
        verdict(ready, TARGET_STARTUP_S))
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    """Render the short human report from the JSON report."""
    host = report.get("host", {})
    marks = {"pass": "✅ pass", "miss": "❌ miss"}
    lines = [f"# Linli benchmark — {report.get('finished_at', '')}", "",
             f"{host.get('cpus')} CPUs, Python {host.get('python')}, Rasa {host.get('rasa')}, "
             f"model `{report.get('model', '?')}`; the load client shares the machine.", "",
             "| figure | value | target | result |", "|---|---|---|---|"]
    lines += [f"| {r['figure']} | {r['value']} | {r['target']} "
              f"| {marks.get(r['result'], r['result'])} |" for r in report.get("targets", [])]
    nlu = report.get("nlu", {})
    if "parse" in nlu:
        p = nlu["parse"]
        lines += ["", f"**NLU** (in-process, {nlu['examples']} held-out examples): accuracy "
                  f"{nlu['accuracy']:.4f}, macro-F1 {nlu['macro_f1']:.4f}, category macro-F1 "
                  f"{nlu['category_macro_f1']:.4f}; parse p50 {_cell(p.get('p50_ms'), ' ms', 2)}, "
                  f"p95 {_cell(p.get('p95_ms'), ' ms', 2)}, "
                  f"mean {_cell(p.get('mean_ms'), ' ms', 2)}."]
    load = report.get("load", [])
    if load:
        lines += ["", "**Turns** (message in → reply out; CPU ms per turn for "
                  + "/".join(CPU_COLUMNS) + "):", "",
                  "| path | conc. | convs | turns | turns/s | p50 | p95 | p99 | max | errors "
                  "| reached 对 / tickets | CPU ms/turn |", "|---" * 12 + "|"]
        for run in load:
            s, cpu = run["turns"], run.get("cpu_ms_per_turn", {})
            lines.append(
                f"| {run['path']} | {run['concurrency']} | {run['conversations']} "
                f"| {s.get('count', 0)} "
                f"| {_cell(s.get('per_s'))} | " + " | ".join(
                    _cell(s.get(k), " ms") for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))
                + f" | {run['errors']} | {run['confirmed']} / {run['tickets_written']} | "
                + "/".join(_cell(cpu.get(c), "", 0) for c in CPU_COLUMNS) + " |")
        lines.append("")
        lines += [f"Hub vs direct Rasa at {r['concurrency']} concurrent: mean ×{r['mean_ratio']} "
                  f"({r['mean_overhead_ms']:+.1f} ms), p50 ×{r['p50_ratio']}, "
                  f"p95 ×{r['p95_ratio']}, throughput ×{r['throughput_ratio']}."
                  for r in report.get("overhead", [])]
    if report.get("memory"):
        lines += ["", "**Memory** (VmRSS / peak VmHWM): " + ", ".join(
            f"{m['process']} {_cell(m.get('rss_mb'), '', 0)} / {_cell(m.get('hwm_mb'), ' MB', 0)}"
            for m in report["memory"]) + "."]
    startup, training = report.get("startup", {}), report.get("training", {})
    if startup.get("ready_s"):
        per_service = startup.get("per_service_s", {})
        warm = startup.get("warm_up_max_ms", {})
        text = f"**Start-up** (model already trained, fresh DB): {startup['ready_s']:.1f} s"
        if per_service:
            text += " — " + ", ".join(f"{k} {v:.1f} s" for k, v in per_service.items())
        if warm:
            text += ". Slowest warm-up turn right after: " + ", ".join(
                f"{k} {v:.0f} ms" for k, v in warm.items())
        lines += ["", text + "."]
    if report.get("model_trained_before_bench_s"):
        lines += ["", f"The model was retrained before the bench (training inputs changed): "
                  f"{report['model_trained_before_bench_s']:.1f} s, not counted above."]
    if training.get("seconds"):
        lines += ["", f"**Training** `rasa train --force`: {training['seconds']:.1f} s "
                  "(--force skips the fingerprint run, so the .rasa/ cache is not reused)."]
    for name in ("load_error", "startup", "nlu", "training"):
        if report.get(name, {}).get("error"):
            lines += ["", f"**{name.removesuffix('_error')} failed:** {report[name]['error']}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- measurements (I/O)

def process_memory(pid: int) -> dict[str, float | None]:
    """Read VmRSS and VmHWM of one process, in MB (None if it is gone)."""
    try:
        return parse_proc_status(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return {"rss_mb": None, "hwm_mb": None}


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """Read the CPU seconds each named process has used so far."""
    ticks, used = os.sysconf("SC_CLK_TCK"), {}
    for name, pid in pids.items():
        try:
            used[name] = parse_proc_cpu(Path(f"/proc/{pid}/stat").read_text(), ticks_per_s=ticks)
        except OSError:
            continue
    return used


@dataclass
class LoadRun:
    """What one load run observed."""

    path: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    conversations: int = 0
    confirmed: int = 0
    numbered: int = 0
    errors: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0

    def entry(self, *, tickets_written: int, cpu_s: dict[str, float]) -> dict[str, Any]:
        turns = max(1, len(self.latencies_ms))
        return {"path": self.path, "concurrency": self.concurrency,
                "conversations": self.conversations,
                "turns": latency_summary(self.latencies_ms, wall_s=self.wall_s),
                "wall_s": round(self.wall_s, 2), "errors": self.errors, "confirmed": self.confirmed,
                "replies_with_ticket_number": self.numbered, "tickets_written": tickets_written,
                "cpu_ms_per_turn": {k: round(1000 * v / turns, 1) for k, v in cpu_s.items()},
                "failures": self.failures}


Send = Callable[[Any, Script, str], Awaitable[list[str]]]


async def drive(send: Send, *, level: Level, sender_prefix: str) -> LoadRun:
    """Run scripted residents, level.concurrency at a time, until time or count runs out."""
    import aiohttp

    run = LoadRun(path=level.label, concurrency=level.concurrency)
    next_index = 0
    started = time.perf_counter()
    deadline = started + level.duration_s

    async def resident(session: aiohttp.ClientSession, number: int) -> None:
        nonlocal next_index
        # Paced residents arrive spread over one think time, not all in the same instant.
        await asyncio.sleep(level.think_s * number / level.concurrency)
        while time.perf_counter() < deadline and next_index < level.max_conversations:
            script = make_script(next_index, sender_prefix=sender_prefix)
            next_index += 1
            run.conversations += 1
            replies: list[str] = []
            for number, text in enumerate(script.turns):
                if number and level.think_s:
                    await asyncio.sleep(level.think_s)
                began = time.perf_counter()
                try:
                    replies = await send(session, script, text)
                except Exception as exc:  # a failed turn ends this resident's conversation
                    run.errors += 1
                    run.failures.append({"sender": script.sender, "turn": text, "error": repr(exc)})
                    break
                run.latencies_ms.append(1000 * (time.perf_counter() - began))
                if text == "对":
                    run.confirmed += 1
            if any(TICKET_NUMBER.search(r) for r in replies):
                run.numbered += 1
            else:
                run.failures.append({"sender": script.sender, "turns": list(script.turns),
                                     "last_replies": replies})
            del run.failures[5:]  # a few examples are enough to debug from

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=level.concurrency + 2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(resident(session, n) for n in range(level.concurrency)))
    run.wall_s = time.perf_counter() - started
    return run


def hub_sender(base_url: str) -> Send:
    """Send a turn to the hub's message API as an SMS resident."""

    async def send(session: Any, script: Script, text: str) -> list[str]:
        body = {"channel": "sms", "sender": script.sender, "text": text}
        async with session.post(base_url + "/api/messages", json=body) as response:
            if response.status != 200:
                raise RuntimeError(f"hub answered HTTP {response.status}")
            return (await response.json())["replies"]

    return send


def rasa_sender(base_url: str) -> Send:
    """Send a turn straight to Rasa's REST webhook with the metadata the hub would add."""

    async def send(session: Any, script: Script, text: str) -> list[str]:
        body = {"sender": f"direct-{script.sender}", "message": text,
                "metadata": {"channel": "sms", "phone": script.sender}}
        async with session.post(base_url + "/webhooks/rest/webhook", json=body) as response:
            if response.status != 200:
                raise RuntimeError(f"Rasa answered HTTP {response.status}")
            return [item["text"] for item in await response.json() if item.get("text")]

    return send


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(stack: Any, *, timeout_s: float, started: float) -> dict[str, float]:
    """Poll every health URL; return seconds from start until each one answered."""
    pending, ready = dict(stack.health_urls()), {}
    while pending:
        for name in list(pending):
            if stack.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited with code {stack.processes[name].returncode}")
            try:
                with urllib.request.urlopen(pending[name], timeout=2) as response:
                    if response.status == 200:
                        ready[name] = round(time.monotonic() - started, 2)
                        del pending[name]
            except (urllib.error.URLError, OSError):
                pass
        if pending and time.monotonic() - started > timeout_s:
            raise TimeoutError(f"not ready after {timeout_s:.0f} s: {', '.join(pending)}")
        time.sleep(0.2 if pending else 0)
    return ready


def bench_stack(report: dict[str, Any], work: Path, model: Path) -> None:
    """Start the stack on a fresh database, time start-up, load it, read memory, stop it."""
    from sqlalchemy import func, select

    from bot.db import make_engine
    from bot.migrate import upgrade
    from bot.models import Ticket
    from bot.runner import Ports, Stack

    database_url = f"sqlite:///{work / 'linli.db'}"
    upgrade(database_url)
    ports = Ports(hub=_free_port(), rasa=_free_port(), actions=_free_port())
    stack = Stack(model=model, ports=ports, env={"DATABASE_URL": database_url},
                  log_dir=work / "logs")
    engine = make_engine(database_url)

    def tickets() -> int:
        with engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(Ticket)).scalar_one()

    started = time.monotonic()
    stack.start()
    try:
        try:
            per_service = _wait_ready(stack, timeout_s=240, started=started)
        except Exception:
            report["logs"] = {log.name: log.read_text(errors="replace")[-3000:]
                              for log in sorted((work / "logs").glob("*.log"))}
            raise
        report["startup"] = {"ready_s": round(time.monotonic() - started, 2),
                             "per_service_s": per_service}
        senders = {"hub": hub_sender(f"http://127.0.0.1:{ports.hub}"),
                   "direct Rasa": rasa_sender(f"http://127.0.0.1:{ports.rasa}")}
        # Warm both paths: the first turns pay for Rasa's lazy imports; shown, not measured.
        for target, prefix in (("hub", "13800"), ("direct Rasa", "13900")):
            warm = asyncio.run(drive(senders[target], level=Level(target, 2, 60.0, 4),
                                     sender_prefix=prefix))
            report["startup"].setdefault("warm_up_max_ms", {})[target] = round(
                max(warm.latencies_ms, default=0.0), 1)
        pids = {**stack.pids(), "client": os.getpid()}
        report["load"] = []
        for index, level in enumerate(RUNS):
            before, cpu_before = tickets(), cpu_seconds(pids)
            # Distinct 11-digit phone numbers per run, so no two runs share a conversation.
            run = asyncio.run(drive(senders[level.target], level=level,
                                    sender_prefix=f"13{index + 1}{level.concurrency:02d}"))
            cpu_used = {k: v - cpu_before[k]
                        for k, v in cpu_seconds(pids).items() if k in cpu_before}
            report["load"].append(run.entry(tickets_written=tickets() - before, cpu_s=cpu_used))
            print(f"bench: {level.label} ×{level.concurrency}: {run.conversations} conversations, "
                  f"{len(run.latencies_ms)} turns in {run.wall_s:.1f} s", flush=True)
        report["overhead"] = overhead_rows(report["load"])
        report["memory"] = [{"process": name, "pid": pid, **process_memory(pid)}
                            for name, pid in {**stack.pids(), "bench client": os.getpid()}.items()]
    finally:
        stack.stop()
        engine.dispose()


def bench_nlu(report: dict[str, Any], model: Path) -> None:
    """Time in-process parses of the held-out set, then score it."""
    import structlog

    from bot.evaluation import evaluate, load_examples
    from bot.nluservice import load_agent

    # Rasa logs every parse at debug level through structlog; keep the bench's output readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    agent = load_agent(model)
    examples = load_examples(HELDOUT)

    async def timed() -> list[float]:
        for text, _ in examples[:WARMUP_PARSES]:
            await agent.parse_message(text)
        samples = []
        for text, _ in examples:
            began = time.perf_counter()
            await agent.parse_message(text)
            samples.append(1000 * (time.perf_counter() - began))
        return samples

    samples = asyncio.run(timed())
    scored = evaluate(agent, examples)
    report["nlu"] = {"examples": len(examples), "parse": latency_summary(samples),
                     **{k: scored[k] for k in ("accuracy", "macro_f1", "category_macro_f1")},
                     "top_confusions": scored["top_confusions"][:5]}
    report.setdefault("memory", []).append(
        {"process": "bench with agent", "pid": os.getpid(), **process_memory(os.getpid())})


def bench_training(report: dict[str, Any], work: Path) -> None:
    """Train a model from scratch into a temp dir with --force and time it."""
    out, log = work / "train-out", work / "train.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "rasa", "train", "--config", "config.yml",
               "--domain", "domain", "--data", "data", "--out", str(out), "--force"]
    started = time.perf_counter()
    with log.open("wb") as output:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                              timeout=TRAIN_TIMEOUT_S, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"rasa train exited {done.returncode}: "
                           f"{log.read_text(errors='replace')[-1500:]}")
    size = sum(model.stat().st_size for model in out.glob("*.tar.gz"))
    report["training"] = {"seconds": round(seconds, 1), "forced": True,
                          "model_mb": round(size / 2**20, 2)}


def main(out_dir: str) -> int:
    """Run every benchmark, write bench.json and bench.md into out_dir, print the Markdown."""
    from importlib.metadata import version

    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "rasa": version("rasa"), "platform": platform.platform()},
    }
    from bot.training import ensure_model

    # One model for the stack and the in-process parses, trained first if the inputs changed.
    model, trained_s = ensure_model()
    report["model"] = model.name
    report["model_trained_before_bench_s"] = trained_s
    failed = False
    work = Path(tempfile.mkdtemp(prefix="linli-bench-"))
    try:
        # The stack runs alone first, so the in-process agent and training do not disturb it.
        for name, step in (("load_error", lambda: bench_stack(report, work, model)),
                           ("nlu", lambda: bench_nlu(report, model)),
                           ("training", lambda: bench_training(report, work))):
            try:
                step()
            except Exception as exc:  # record and go on: one broken part must not hide the rest
                failed = True
                report.setdefault(name, {})["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["targets"] = target_rows(report)
    failed = failed or any(r["result"] == "miss" and r["figure"].startswith("tickets")
                           for r in report["targets"])
    markdown = render_markdown(report)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, ensure_ascii=False, indent=2),
                                    encoding="utf-8")
    (out / "bench.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 1 if failed else 0


def run_and_report(name: str, report: dict[str, Any], out_dir: str | Path,
                   run: Callable[[dict[str, Any], Path, Path], None],
                   problems: Callable[[dict[str, Any]], list[str]],
                   render: Callable[[dict[str, Any]], str]) -> int:
    """Run one stack benchmark in a temp dir; write <name>.json and .md; 1 on problems.

    `run(report, work_dir, model)` fills the report; an exception is recorded in it (the
    report says what broke) instead of losing the figures gathered so far.
    """
    from bot.training import ensure_model

    work = Path(tempfile.mkdtemp(prefix=f"linli-{name}-"))
    try:
        model, trained_s = ensure_model()
        report["model"], report["model_trained_before_bench_s"] = model.name, trained_s
        run(report, work, model)
    except Exception as exc:  # noqa: BLE001 - recorded; problems() turns it into exit 1
        report["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if "host" in report and "loadavg_start" in report["host"]:
        report["host"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["problems"] = problems(report)
    markdown = render(report)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, ensure_ascii=False, indent=2),
                                      encoding="utf-8")
    (out / f"{name}.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 1 if report["problems"] else 0
