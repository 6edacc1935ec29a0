"""Console benchmark: one hub serving 50 agents and 500 live conversations.

Agents are signed in over HTTP and keep the console websocket open; residents hand off
with 转人工 through the bot, some on the web chat websocket and the rest by SMS through the
message API; agents claim ten each. Under that load it measures agent reply → resident
channel adapter (the web-chat socket receives the text; the sandbox Twilio receives the
SMS), a resident's message → all agent sockets, the queue API with everyone waiting, and
the hub's memory and CPU. The same reply with one agent and one conversation is the idle
baseline. main() returns 1 if a reply or event was lost or any request failed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bot.bench import latency_summary, run_and_report
from bot.bench_console_report import (
    Phase,
    cpu_ticks,
    error_blocks,
    interleave,
    phase_entry,
    probe_text,
    problems,
    render_markdown,
    reply_text,
    status_kb,
    token_of,
)

ROOT = Path(__file__).resolve().parent.parent
HTTP_TIMEOUT_S = 60.0
DELIVERY_WAIT_S = 20.0
HANDOFF_CONCURRENCY = 12
QUEUE_ONE_BY_ONE = 20  # GET queue one at a time, before the 10-at-once reads
SMS_PREFIX, BASELINE_PHONE = "1371", "13719990001"
T = TypeVar("T")


# ---------------------------------------------------------------- the hub process (I/O)

def _proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def rss_mb(pid: int, figure: str = "VmRSS") -> float | None:
    try:
        return round(status_kb(_proc(pid, "status"))[figure] / 1024, 1)
    except (OSError, KeyError):
        return None


def cpu_s(pid: int) -> float:
    return cpu_ticks(_proc(pid, "stat")) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- on the wire (I/O)

class Listener:
    """A websocket the bench reads: notes when each marked text first arrives."""

    def __init__(self, ws: Any, arrivals: dict[str, float]) -> None:
        self.ws, self.arrivals = ws, arrivals
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            now = time.time()
            try:
                event = json.loads(frame.data)
            except (TypeError, ValueError):
                continue
            token = token_of(str(event.get("text", "")))
            if token is not None:
                self.arrivals.setdefault(token, now)


@dataclass
class Agent:
    username: str
    password: str
    headers: dict[str, str] = field(default_factory=dict)
    listener: Listener | None = None
    seen: dict[str, float] = field(default_factory=dict)


@dataclass
class Resident:
    channel: str  # web or sms
    key: str  # sid for web, phone for sms
    conversation_id: int = 0
    listener: Listener | None = None

    @property
    def sender_key(self) -> str:
        return f"web-{self.key}" if self.channel == "web" else self.key


class Bench:
    """One benchmark run against a started stack."""

    def __init__(self, http: Any, base: str, sessions: Any, hub_pid: int) -> None:
        self.http, self.base, self.sessions, self.hub_pid = http, base, sessions, hub_pid
        self.errors: list[str] = []
        self.error_count = 0
        self.web_received: dict[str, float] = {}
        self.sms_received: dict[str, float] = {}
        self.peak_mb = 0.0

    def error(self, what: str) -> None:
        self.error_count += 1
        if len(self.errors) < 8:
            self.errors.append(what[:300])

    async def call(self, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[Any, float]:
        """One HTTP request; (JSON body or None on failure, ms)."""
        began = time.perf_counter()
        try:
            async with self.http.request(method, self.base + path, json=body, headers=headers,
                                         timeout=_timeout(HTTP_TIMEOUT_S)) as response:
                raw = await response.read()
            ms = 1000 * (time.perf_counter() - began)
            if response.status != 200:
                self.error(f"{method} {path}: HTTP {response.status} {raw[:160]!r}")
                return None, ms
            return json.loads(raw), ms
        except Exception as exc:  # noqa: BLE001 - counted, and the run goes on
            self.error(f"{method} {path}: {type(exc).__name__}: {exc}")
            return None, 1000 * (time.perf_counter() - began)

    async def sign_in(self, agent: Agent) -> None:
        """Log in over HTTP like the login page: keep the cookie and the CSRF token."""
        async with self.http.post(self.base + "/console/api/login", timeout=_timeout(60),
                                  json={"username": agent.username,
                                        "password": agent.password}) as response:
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(f"login {agent.username}: HTTP {response.status} {body}")
            token = response.cookies["linli_session"].value
        agent.headers = {"Cookie": f"linli_session={token}", "X-CSRF-Token": body["csrf_token"]}

    async def connect(self, agent: Agent) -> None:
        """Open the agent's console websocket, as the console page does."""
        ws = await self.http.ws_connect(self.base.replace("http", "ws", 1) + "/console/ws",
                                        headers={"Cookie": agent.headers["Cookie"]})
        agent.listener = Listener(ws, agent.seen)

    async def hand_off(self, resident: Resident) -> float | None:
        """The resident says 转人工; return the turn's ms if the bot queued them."""
        began = time.perf_counter()
        if resident.channel == "sms":
            body, ms = await self.call("POST", "/api/messages", {
                "channel": "sms", "sender": resident.key, "text": "转人工"})
            if body is not None:
                resident.conversation_id = body["conversation_id"]
            return ms if body is not None and body["state"] == "queued" else None
        try:
            ws = await self.http.ws_connect(self.base.replace("http", "ws", 1)
                                            + f"/ws?sid={resident.key}")
            await ws.send_str(json.dumps({"text": "转人工"}, ensure_ascii=False))
            frame = await ws.receive_json(timeout=HTTP_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            self.error(f"web resident {resident.key}: {type(exc).__name__}: {exc}")
            return None
        ms = 1000 * (time.perf_counter() - began)
        resident.listener = Listener(ws, self.web_received)
        return ms if "人工" in str(frame.get("text", "")) else None

    async def reply(self, phase: Phase, agent: Agent, resident: Resident, token: str) -> None:
        phase.sent[token] = (resident.channel, time.time())
        body, ms = await self.call(
            "POST", f"/console/api/agent/conversations/{resident.conversation_id}/reply",
            {"text": reply_text(token)}, agent.headers)
        if body is None:
            del phase.sent[token]  # an error, counted as such; not a lost delivery
        else:
            phase.post_ms.append(ms)

    async def probe(self, phase: Phase, resident: Resident, token: str) -> None:
        phase.probes[token] = time.time()
        if resident.channel == "sms":
            body, _ = await self.call("POST", "/api/messages", {
                "channel": "sms", "sender": resident.key, "text": probe_text(token)})
            ok = body is not None
        else:
            assert resident.listener is not None
            try:
                await resident.listener.ws.send_str(json.dumps({"text": probe_text(token)},
                                                               ensure_ascii=False))
                ok = True
            except Exception as exc:  # noqa: BLE001
                self.error(f"probe {token}: {type(exc).__name__}: {exc}")
                ok = False
        if not ok:
            del phase.probes[token]

    async def poll_sms(self, stop: asyncio.Event) -> None:
        """Read what the sandbox Twilio received; its own timestamp is the arrival."""
        after = 0
        while not stop.is_set():
            items, _ = await self.call("GET", f"/sandbox/messages?after={after}")
            for item in items or ():
                after = max(after, item["id"])
                token = token_of(item["text"])
                if token is not None:
                    self.sms_received.setdefault(
                        token, datetime.fromisoformat(item["at"]).timestamp())
            await asyncio.sleep(0.1)

    async def sample_memory(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb(self.hub_pid) or 0.0)
            await asyncio.sleep(0.25)

    def received(self) -> dict[str, float]:
        return {**self.web_received, **self.sms_received}

    async def settle(self, phase: Phase, *, timeout_s: float = DELIVERY_WAIT_S) -> None:
        """Wait until every reply and resident message arrived, or time is up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.received()
            if all(t in got for t in phase.sent) and all(
                    t in seen for seen in phase.agents for t in phase.probes):
                break
            await asyncio.sleep(0.05)
        phase.received = {t: at for t, at in self.received().items() if t in phase.sent}


def _timeout(total: float | None) -> Any:
    import aiohttp

    return aiohttp.ClientTimeout(total=total, sock_connect=30)


async def paced(count: int, rate: float, job: Callable[[int], Awaitable[None]]) -> None:
    """Start job(0..count-1) at a steady rate, without waiting for the previous ones."""
    began, tasks = time.monotonic(), []
    for k in range(count):
        delay = began + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.get_running_loop().create_task(job(k)))
    await asyncio.gather(*tasks)


# ---------------------------------------------------------------- the database (I/O)

def create_agents(sessions: Any, count: int) -> list[Agent]:
    """Add the agents' accounts straight to the database (scrypt: ~50 ms each)."""
    from bot.accounts import create_account
    from bot.db import session_scope

    agents = [Agent(f"bench-agent-{i + 1:02d}", secrets.token_urlsafe(12)) for i in range(count)]
    with session_scope(sessions) as session:
        for number, agent in enumerate(agents, 1):
            create_account(session, username=agent.username, password=agent.password,
                           role="agent", display_name=f"测速客服{number:02d}",
                           now=datetime.now(UTC))
    return agents


def enqueue_rest(sessions: Any, residents: Sequence[Resident]) -> int:
    """Find each resident's conversation; queue directly any the bot did not; return how many."""
    from sqlalchemy import select

    from bot import handoff
    from bot.db import session_scope
    from bot.models import Conversation

    by_key = {(r.channel, r.sender_key): r for r in residents}
    directly = 0
    with session_scope(sessions) as session:
        rows = session.execute(select(Conversation).where(
            Conversation.sender_key.in_([key for _, key in by_key]),
            Conversation.state != "closed")).scalars().all()
        for conversation in rows:
            resident = by_key.get((conversation.channel, conversation.sender_key))
            if resident is None:
                continue
            resident.conversation_id = conversation.id
            if conversation.state == "bot":
                handoff.queue(session, conversation=conversation, reason="asked",
                              now=datetime.now(UTC))
                directly += 1
    return directly


# ---------------------------------------------------------------- the run

async def _limited(limit: int, jobs: Sequence[Awaitable[T]]) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(job: Awaitable[T]) -> T:
        async with gate:
            return await job

    return await asyncio.gather(*(one(job) for job in jobs))


async def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.003)


async def idle_baseline(bench: Bench, agent: Agent, count: int) -> dict[str, Any]:
    """One agent socket, one web and one SMS conversation: replies and messages one by one."""
    pair = [Resident("web", "bench-idle"), Resident("sms", BASELINE_PHONE)]
    for resident in pair:
        if await bench.hand_off(resident) is None:
            bench.error(f"idle {resident.channel} resident was not queued by the bot")
    await asyncio.to_thread(enqueue_rest, bench.sessions, pair)
    base = "/console/api/agent/conversations/"
    for resident in pair:
        await bench.call("POST", f"{base}{resident.conversation_id}/claim", {}, agent.headers)
    phase, warm = Phase(agents=[agent.seen]), Phase()
    for k in range(-4, count):  # the first of each channel pay for lazy imports: not counted
        token = f"i{k}" if k >= 0 else f"w{-k}"
        await bench.reply(phase if k >= 0 else warm, agent, pair[k % 2], token)
        await _until(lambda t=token: t in bench.received())
        await asyncio.sleep(0.05)
    for k in range(max(count // 2, 1)):
        token = f"j{k}"
        await bench.probe(phase, pair[k % 2], token)
        await _until(lambda t=token: t in agent.seen)
        await asyncio.sleep(0.05)
    await bench.settle(phase, timeout_s=5)
    for resident in pair:  # the idle pair leaves the loaded run alone
        await bench.call("POST", f"{base}{resident.conversation_id}/return", {}, agent.headers)
    return phase_entry(phase)


async def crowd(bench: Bench, agents: list[Agent], args: argparse.Namespace,
                steps: dict[str, float | None],
                ) -> tuple[list[Resident], list[float | None], int]:
    """Sign the other agents in, open their sockets, and have every resident ask for a person."""
    hub = bench.hub_pid
    await _limited(4, [bench.sign_in(agent) for agent in agents[1:]])
    steps[f"{len(agents)} sign-ins"] = rss_mb(hub)
    await asyncio.gather(*(bench.connect(agent) for agent in agents[1:]))
    steps[f"+ {len(agents)} console sockets"] = rss_mb(hub)
    web = [Resident("web", f"bench-w{i:04d}") for i in range(args.web)]
    sms = [Resident("sms", f"{SMS_PREFIX}{i:07d}") for i in range(args.conversations - args.web)]
    residents = interleave(web, sms)
    turns = await _limited(HANDOFF_CONCURRENCY, [bench.hand_off(r) for r in residents])
    directly = await asyncio.to_thread(enqueue_rest, bench.sessions, residents)
    for resident in residents:
        if not resident.conversation_id:
            bench.error(f"{resident.channel} resident {resident.key} has no conversation")
    residents = [r for r in residents if r.conversation_id]
    steps[f"+ {len(residents)} conversations queued"] = rss_mb(hub)
    print(f"bench-console: {len(residents)} conversations, {directly} queued directly",
          flush=True)
    return residents, turns, directly


async def read_and_claim(bench: Bench, agents: list[Agent], residents: list[Resident],
                         reads: int, handoff: dict[str, int]) -> dict[str, list[float]]:
    """GET the full queue (one at a time, then 10 at once); each agent claims its share."""
    timings: dict[str, list[float]] = {"queue_one": [], "queue": [], "claim": []}
    wanted = {r.conversation_id for r in residents}

    async def read_queue(k: int, into: str) -> None:
        body, ms = await bench.call("GET", "/console/api/agent/queue",
                                    headers=agents[k % len(agents)].headers)
        if body is not None:
            timings[into].append(ms)
            handoff["queued"] = len(wanted & {row["id"] for row in body["conversations"]})

    await _limited(1, [read_queue(k, "queue_one") for k in range(QUEUE_ONE_BY_ONE)])
    await _limited(10, [read_queue(k, "queue") for k in range(reads)])

    async def claim_all(index: int) -> None:
        for resident in residents[index::len(agents)]:
            body, ms = await bench.call(
                "POST", f"/console/api/agent/conversations/{resident.conversation_id}/claim",
                {}, agents[index].headers)
            if body is not None:
                timings["claim"].append(ms)

    await asyncio.gather(*(claim_all(i) for i in range(len(agents))))
    return timings


async def loaded_run(bench: Bench, agents: list[Agent], residents: list[Resident],
                     args: argparse.Namespace) -> Phase:
    """Replies and resident messages at steady rates, all at once; resident i is agent i % n's."""
    load = Phase(agents=[agent.seen for agent in agents])

    async def one_reply(k: int) -> None:
        number = k % len(residents)
        await bench.reply(load, agents[number % len(agents)], residents[number], f"r{k}")

    async def one_probe(k: int) -> None:
        await bench.probe(load, residents[-1 - k % len(residents)], f"f{k}")

    began = time.monotonic()
    await asyncio.gather(paced(args.replies, args.rate, one_reply),
                         paced(args.probes, args.probe_rate, one_probe))
    load.wall_s = time.monotonic() - began
    await bench.settle(load)
    return load


async def _phases(bench: Bench, args: argparse.Namespace, report: dict[str, Any],
                  pids: dict[str, int]) -> None:
    hub = bench.hub_pid
    cpu_start, memory = cpu_s(hub), report.setdefault("memory", {})
    steps = memory["steps"] = {"idle": rss_mb(hub)}
    agents = await asyncio.to_thread(create_agents, bench.sessions, args.agents)
    await bench.sign_in(agents[0])
    await bench.connect(agents[0])
    report["baseline"] = await idle_baseline(bench, agents[0], args.baseline)
    print("bench-console: idle baseline done", flush=True)

    cpu_setup = cpu_s(hub)
    residents, turns, directly = await crowd(bench, agents, args, steps)
    handoff = report["handoff"] = {"via_bot": sum(t is not None for t in turns),
                                   "queued_directly": directly, "queued": 0}
    timings = await read_and_claim(bench, agents, residents, args.queue_reads, handoff)
    await asyncio.sleep(2)
    steps["+ queue reads, all claimed"] = memory["connected_mb"] = rss_mb(hub)
    print("bench-console: claimed; loaded run starts", flush=True)

    cpu_load, began, client = cpu_s(hub), time.monotonic(), time.process_time()
    load = await loaded_run(bench, agents, residents, args)
    wall, cpu_end = time.monotonic() - began, cpu_s(hub)
    report["loaded"] = phase_entry(load)
    report["client_cpu_s"] = round(time.process_time() - client, 1)
    report["agent_reply_events_missing"] = sum(
        token not in agent.seen for agent in agents for token in load.sent)
    report["api"] = {**{name: latency_summary(ms) for name, ms in timings.items()},
                     "handoff_turn": latency_summary([t for t in turns if t is not None])}
    report["cpu"] = {"setup_s": round(cpu_load - cpu_setup, 1),
                     "load_s": round(cpu_end - cpu_load, 1), "load_wall_s": round(wall, 1),
                     "load_share": round((cpu_end - cpu_load) / wall, 2),
                     "total_s": round(cpu_end - cpu_start, 1)}
    memory.update(peak_sampled_mb=bench.peak_mb, peak_mb=rss_mb(hub, "VmHWM"),
                  rasa_mb=rss_mb(pids["rasa"]), actions_mb=rss_mb(pids["actions"]))
    for who, listener in [(a.username, a.listener) for a in agents] + [
            (r.key, r.listener) for r in residents if r.channel == "web"]:
        if listener is None or listener.task.done():
            bench.error(f"{who}: websocket closed during the run")


async def drive(base: str, sessions: Any, pids: dict[str, int], args: argparse.Namespace,
                report: dict[str, Any]) -> None:
    """Run every phase against the started stack; errors are counted into the report."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=_timeout(None),
                                     cookie_jar=aiohttp.DummyCookieJar()) as http:
        bench = Bench(http, base, sessions, pids["hub"])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        background = [loop.create_task(bench.poll_sms(stop)),
                      loop.create_task(bench.sample_memory(stop))]
        try:
            await _phases(bench, args, report, pids)
        finally:
            stop.set()
            await asyncio.gather(*background, return_exceptions=True)
            report["errors"] = {"count": bench.error_count, "examples": bench.errors}


def bench(report: dict[str, Any], work: Path, model: Path, args: argparse.Namespace) -> None:
    """Start the stack with sandbox providers on a fresh database, measure, stop."""
    from bot.db import make_engine, make_session_factory
    from bot.runner import sandbox_stack

    with sandbox_stack(work, model, report) as running:
        engine = make_engine(running.database_url)
        try:
            asyncio.run(drive(running.base_url, make_session_factory(engine),
                              running.stack.pids(), args, report))
        finally:
            engine.dispose()
            if report.get("errors", {}).get("count"):  # what the hub said about them
                report["hub_errors"] = error_blocks(
                    (work / "logs" / "hub.log").read_text(errors="replace"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot bench-console",
        description="Agent console under load: reply → resident latency, fan-out to agent "
                    "sockets, queue API, hub memory and CPU, against an idle baseline.")
    add = parser.add_argument
    add("--agents", type=int, default=50, help="agents signed in on the console (default 50)")
    add("--conversations", type=int, default=500, help="live conversations (default 500)")
    add("--web", type=int, default=200,
        help="of those, residents on the web-chat websocket; the rest SMS (default 200)")
    add("--replies", type=int, default=300, help="agent replies in the loaded run (default 300)")
    add("--rate", type=float, default=10.0, help="replies per second (default 10)")
    add("--probes", type=int, default=60, help="resident messages in the loaded run (default 60)")
    add("--probe-rate", type=float, default=2.0, help="resident messages per second (default 2)")
    add("--queue-reads", type=int, default=100, help="GET queue requests (default 100)")
    add("--baseline", type=int, default=40, help="idle replies, one at a time (default 40)")
    add("--out", default=str(ROOT / "var" / "bench"), help="report directory (default var/bench)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, write bench-console.json and .md into --out, print the Markdown."""
    parser = _parser()
    args = parser.parse_args(list(argv or []))
    if (min(args.agents, args.conversations, args.replies, args.probes, args.queue_reads,
            args.baseline) < 1 or not 0 <= args.web <= args.conversations
            or min(args.rate, args.probe_rate) <= 0):
        parser.error("counts must be at least 1, rates positive, --web at most --conversations")

    load_start = [round(x, 2) for x in os.getloadavg()]
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "platform": platform.platform(), "loadavg_start": load_start},
        "setup": {k: getattr(args, k) for k in ("agents", "conversations", "web", "replies",
                                                "rate", "probes", "probe_rate", "queue_reads",
                                                "baseline")}}
    return run_and_report("bench-console", report, args.out,
                          lambda rep, work, model: bench(rep, work, model, args),
                          problems, render_markdown)
