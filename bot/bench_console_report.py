"""The console benchmark's pure half: parsing /proc, counting, comparing, reporting."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bot.bench import latency_summary, ratio

TOKEN = re.compile(r"#([a-z]\d+)")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Timeout)\b.*: ")
T = TypeVar("T")


def status_kb(text: str) -> dict[str, int]:
    """Parse /proc/<pid>/status into its kB figures, e.g. {"VmRSS": 81234, "VmHWM": ...}."""
    figures = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            figures[name] = int(parts[0])
    return figures


def cpu_ticks(stat: str) -> int:
    """Return utime + stime from /proc/<pid>/stat; the command name may hold ) and spaces."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def token_of(text: str) -> str | None:
    """Return the bench's marker in a text (#r12 → "r12"), if any."""
    found = TOKEN.search(text)
    return found.group(1) if found else None


def error_blocks(log: str, *, limit: int = 4) -> list[str]:
    """The first few ERROR entries of a log, each with its traceback."""
    blocks: list[list[str]] = []
    inside = False
    for line in log.splitlines():
        entry = line[:4].isdigit()  # log entries start with the date; tracebacks do not
        if entry:
            inside = " ERROR " in line or " CRITICAL " in line
            if inside:
                blocks.append([])
        if inside and len(blocks[-1]) < 60:
            blocks[-1].append(line)
    return ["\n".join(block) for block in blocks[:limit]]


def reply_text(token: str) -> str:
    return f"您好，我是人工客服，正在为您处理，请稍候。#{token}"


def probe_text(token: str) -> str:
    return f"请问师傅大概几点能到？#{token}"


def interleave(first: Sequence[T], second: Sequence[T]) -> list[T]:
    """Merge two lists evenly, keeping each one's order (2 web + 3 SMS → w s w s s)."""
    keyed = [((i + 0.5) / len(first), 0, x) for i, x in enumerate(first)]
    keyed += [((i + 0.5) / len(second), 1, x) for i, x in enumerate(second)]
    return [x for *_, x in sorted(keyed, key=lambda k: k[:2])]


@dataclass
class Phase:
    """What the idle baseline or the loaded run observed; times are epoch seconds."""

    sent: dict[str, tuple[str, float]] = field(default_factory=dict)  # token → channel, at
    received: dict[str, float] = field(default_factory=dict)  # token → resident got it
    post_ms: list[float] = field(default_factory=list)  # the agent's POST …/reply
    probes: dict[str, float] = field(default_factory=dict)  # resident wrote token at
    agents: list[dict[str, float]] = field(default_factory=list)  # per socket: token → at
    wall_s: float = 0.0


def fanout(probes: dict[str, float],
           agents: Sequence[dict[str, float]]) -> tuple[list[float], list[float], int]:
    """Per probe, the slowest agent socket (ms); every delivery (ms); deliveries missing."""
    slowest, each, missing = [], [], 0
    for token, at in probes.items():
        got = [1000 * (seen[token] - at) for seen in agents if token in seen]
        missing += len(agents) - len(got)
        each += got
        if len(got) == len(agents) and got:
            slowest.append(max(got))
    return slowest, each, missing


def phase_entry(phase: Phase) -> dict[str, Any]:
    """Summarise a phase: reply latency per channel and overall, losses, fan-out."""
    by_channel: dict[str, list[float]] = {}
    lost = []
    for token, (channel, at) in phase.sent.items():
        if token in phase.received:
            by_channel.setdefault(channel, []).append(1000 * (phase.received[token] - at))
        else:
            lost.append(token)
    every = [ms for values in by_channel.values() for ms in values]
    slowest, each, missing = fanout(phase.probes, phase.agents)
    return {"reply": {"all": latency_summary(every, wall_s=phase.wall_s or None),
                      **{ch: latency_summary(v) for ch, v in sorted(by_channel.items())}},
            "reply_post": latency_summary(phase.post_ms), "replies_sent": len(phase.sent),
            "replies_lost": len(lost), "lost_examples": lost[:8],
            "fanout_sockets": len(phase.agents), "fanout_probes": len(phase.probes),
            "fanout_slowest": latency_summary(slowest), "fanout_each": latency_summary(each),
            "fanout_missing": missing}


def versus(loaded: dict[str, Any], idle: dict[str, Any]) -> dict[str, float | None]:
    """Loaded/idle ratios of p50 and p95 for two latency summaries."""
    return {q: ratio(loaded.get(f"{q}_ms"), idle.get(f"{q}_ms")) for q in ("p50", "p95")}


def problems(report: dict[str, Any]) -> list[str]:
    """What makes the run fail: a crash, errors, lost replies or events, a short queue."""
    found = [f"measurement failed: {report['error']}"] if report.get("error") else []
    errors = report.get("errors", {})
    if errors.get("count"):
        found.append(f"{errors['count']} failed requests or sockets, e.g. "
                     f"{errors.get('examples', [])[:3]}")
    for name in ("baseline", "loaded"):
        phase = report.get(name)
        if phase and (phase["replies_lost"] or phase["fanout_missing"]):
            found.append(f"{name}: {phase['replies_lost']} of {phase['replies_sent']} replies "
                         f"never reached the resident, {phase['fanout_missing']} resident "
                         f"messages missing on agent sockets")
    setup = report.get("setup", {})
    handoff = report.get("handoff")
    if handoff and handoff["queued"] != setup.get("conversations"):
        found.append(f"only {handoff['queued']} of {setup.get('conversations')} conversations "
                     f"were queued")
    if report.get("agent_reply_events_missing"):
        found.append(f"{report['agent_reply_events_missing']} reply events missing on agent "
                     f"sockets")
    return found


def _ms(summary: dict[str, Any] | None, q: str) -> str:
    value = (summary or {}).get(f"{q}_ms")
    return "—" if value is None else f"{value:.0f} ms"


def _x(value: float | None) -> str:
    return "—" if value is None else f"×{value:.2f}"


def render_markdown(report: dict[str, Any]) -> str:
    """Render the human report from the JSON report."""
    setup, host = report.get("setup", {}), report.get("host", {})
    idle, load = report.get("baseline") or {}, report.get("loaded") or {}
    lines = [f"# Linli agent console — {report.get('finished_at', '')}", "",
             f"{host.get('cpus')} CPUs (load average {host.get('loadavg_start')} at start, "
             f"{host.get('loadavg_end')} at end; other processes may share the box, and so "
             f"does this client, {report.get('client_cpu_s', '?')} CPU s in the loaded run). "
             f"{setup.get('agents')} agents on the console websocket, "
             f"{setup.get('conversations')} conversations ({setup.get('web')} on the web-chat "
             f"websocket, the rest SMS), {setup.get('replies')} replies at "
             f"{setup.get('rate')}/s, {setup.get('probes')} resident messages at "
             f"{setup.get('probe_rate')}/s. Idle: 1 agent socket, 1 web and 1 SMS "
             f"conversation.", "",
             "| measure | n | p50 | p95 | max | idle p50 | idle p95 | p50 ×idle | p95 ×idle |",
             "|---" * 9 + "|"]
    rows = [("reply → web-chat socket", ("reply", "web")),
            ("reply → sandbox Twilio (SMS)", ("reply", "sms")),
            ("reply → resident, all", ("reply", "all")),
            ("POST …/reply answered", ("reply_post",)),
            ("resident → all agent sockets (slowest)", ("fanout_slowest",)),
            ("resident → one agent socket", ("fanout_each",))]
    for label, path in rows:
        now, before = load, idle
        for key in path:
            now, before = (now or {}).get(key) or {}, (before or {}).get(key) or {}
        ratios = versus(now, before)
        lines.append(f"| {label} | {now.get('count', 0)} | {_ms(now, 'p50')} "
                     f"| {_ms(now, 'p95')} | {_ms(now, 'max')} | {_ms(before, 'p50')} "
                     f"| {_ms(before, 'p95')} | {_x(ratios['p50'])} | {_x(ratios['p95'])} |")
    waiting = setup.get("conversations")
    for label, key in ((f"GET queue ({waiting} waiting), one at a time", "queue_one"),
                       (f"GET queue ({waiting} waiting), 10 at once", "queue"),
                       ("POST claim", "claim"), ("转人工 turn (bot queues)", "handoff_turn")):
        summary = report.get("api", {}).get(key) or {}
        lines.append(f"| {label} | {summary.get('count', 0)} | {_ms(summary, 'p50')} "
                     f"| {_ms(summary, 'p95')} | {_ms(summary, 'max')} | | | | |")
    memory, cpu, handoff = report.get("memory", {}), report.get("cpu", {}), report.get("handoff")
    steps = " → ".join(f"{k} {v} MB" for k, v in memory.get("steps", {}).items())
    lines += ["", f"**Hub memory (RSS):** {steps or '—'}; peak {memory.get('peak_mb')} MB "
              f"(VmHWM; sampled every 0.25 s: {memory.get('peak_sampled_mb')} MB). "
              f"Rasa {memory.get('rasa_mb')} MB, action server {memory.get('actions_mb')} MB.",
              "", f"**Hub CPU:** {cpu.get('load_s')} s over the {cpu.get('load_wall_s')} s "
              f"loaded run ({cpu.get('load_share')} of one core); setup (sign-ins, hand-offs, "
              f"queue reads, claims) {cpu.get('setup_s')} s; whole run {cpu.get('total_s')} s."]
    if handoff:
        lines += ["", f"**Hand-offs:** {handoff['via_bot']} conversations queued by the bot "
                  f"(转人工), {handoff['queued_directly']} queued directly in the database; "
                  f"{handoff['queued']} in the queue."]
    lines += ["", f"**Lost:** {load.get('replies_lost', '—')} replies, "
              f"{load.get('fanout_missing', '—')} agent-socket deliveries; errors "
              f"{report.get('errors', {}).get('count', 0)}."]
    lines += [f"\n**Problem:** {problem}" for problem in report.get("problems", [])]
    causes = dict.fromkeys(line[:160] for block in report.get("hub_errors", [])
                           for line in block.splitlines() if _EXCEPTION.match(line))
    if causes:
        lines += ["", "**Hub log:** " + "; ".join(f"`{line}`" for line in list(causes)[:3])]
    return "\n".join(lines) + "\n"


