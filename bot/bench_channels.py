"""Channel webhook benchmark: what WeChat, Twilio SMS and Twilio voice cost on top of the hub.

Residents report repairs concurrently through signed provider requests (wechatpy's
WeChatCrypto, twilio's RequestValidator) over real HTTP, then the same conversations go
through the hub's plain POST /api/messages as the baseline, so the report can say how
much the provider layer (signatures, encryption, XML, TwiML) adds. For WeChat it also
counts the turns answered inside the 5-second passive window and those that fell back
to `success` and reached the resident later through the customer-service API.

The stack runs on loopback with the hub's own sandbox playing the providers' APIs, on a
fresh SQLite database in a temp dir. main() returns 1 when the stack could not be
measured, a turn failed or lacked a Chinese answer, or stored tickets disagree with the
work-order numbers residents received; latencies are reported, not judged.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from wechatpy.crypto import WeChatCrypto

from bot.bench import (
    TICKET_NUMBER,
    latency_summary,
    make_script,
    ratio,
    run_and_report,
    spoken_number,
)
from bot.provider_requests import (
    local_url,
    read_wechat_reply,
    signed_form,
    sms_params,
    sms_replies,
    voice_params,
    voice_turn,
    wechat_push,
)

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_BASE_URL = "https://linli-bench.example.test"  # what the "providers" sign
WECHAT_WINDOW_S = 5.0  # WeChat drops a passive reply that takes longer
REQUEST_TIMEOUT_S = 30.0
LATE_REPLY_WAIT_S = 30.0
VOICE_READ_BACK = "请您记一下"  # channels.twilio_voice.TICKET_INTRO: the order exists
CHANNELS = ("baseline", "wechat", "sms", "voice")
PATHS = {"baseline": "POST /api/messages (sms)", "wechat": "POST /webhooks/wechat (safe mode)",
         "sms": "POST /twilio/sms", "voice": "POST /twilio/voice/*"}
# 11-digit phones: prefix + 6 digits. The warm-up uses its own, so it is never counted.
PREFIXES = {"baseline": "13500", "wechat": "13510", "sms": "13520", "voice": "13530"}
_CJK = re.compile(r"[\u4e00-\u9fff]")
_msg_ids = itertools.count(int(time.time()) * 1000)


class UnexpectedQuestion(ValueError):
    """The bot said something the scripted resident has no answer for."""


# ---------------------------------------------------------------- residents (pure)

@dataclass(frozen=True)
class Plan:
    """One resident's repair report: who writes, the problem, and how they answer."""

    address: str  # phone, or WeChat openid
    phone: str
    opener: str
    location: str
    unit: int
    room: int | None


def make_plan(index: int, channel: str, *, prefix: str | None = None) -> Plan:
    """Build the index-th resident of a channel; index i reports the same thing everywhere."""
    script = make_script(index, sender_prefix=prefix or PREFIXES[channel])
    where = f"{spoken_number(script.building)}号楼{spoken_number(script.unit)}单元"
    # An elevator opener already says where; in-home problems give building, unit and room.
    location = where if script.room is None else script.turns[1]
    address = (f"oBench{(prefix or PREFIXES[channel])}x{index:06d}" if channel == "wechat"
               else script.sender)
    return Plan(address, script.sender, script.turns[0], location, script.unit, script.room)


def next_message(plan: Plan, said: str) -> str:
    """Answer what the bot just asked, as this resident would; raise if it makes no sense."""
    if "回复1" in said or "请按一" in said:
        return "1"
    if "对吗" in said:
        return "对"
    if "哪里坏了" in said or "什么问题" in said:
        return plan.opener
    if "几号楼" in said:
        return plan.location
    if "几单元" in said:
        return f"{spoken_number(plan.unit)}单元"
    if "门牌" in said and plan.room is not None:
        return str(plan.room)
    if "电话" in said:
        return plan.phone
    if "什么时候" in said or "大概时间" in said:
        return "明天上午"
    raise UnexpectedQuestion(said[:200])


def is_done(said: str) -> bool:
    """Return whether a reply carries a work-order number (written, or read back by phone)."""
    return bool(TICKET_NUMBER.search(said)) or VOICE_READ_BACK in said


def has_chinese(texts: Sequence[str]) -> bool:
    """Return whether an answer has Chinese text in it, not just markup or 'success'."""
    return any(_CJK.search(text) for text in texts)


# ---------------------------------------------------------------- aggregation (pure)

@dataclass
class ChannelRun:
    """What one channel's pass observed."""

    channel: str
    residents: int = 0
    attempts: int = 0  # requests sent as resident turns
    latencies_ms: list[float] = field(default_factory=list)  # answered turns only
    errors: int = 0  # no HTTP 200 or an answer that does not parse
    unanswered: int = 0  # HTTP 200 but no Chinese text reached the resident
    reports_done: int = 0  # residents who received a work-order number
    passive: int = 0  # WeChat: reply came back in the HTTP response
    passive_in_window: int = 0  # ... within WeChat's 5 s
    fallbacks: int = 0  # WeChat: answered `success`, reply queued for the outbox
    late_ms: list[float] = field(default_factory=list)  # push sent → customer-service message
    status_ms: list[float] = field(default_factory=list)  # voice status callbacks (not turns)
    failures: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0

    def fail(self, kind: str, plan: Plan, detail: str) -> None:
        if len(self.failures) < 8:  # a few examples are enough to debug from
            self.failures.append({"kind": kind, "resident": plan.address, "detail": detail[:300]})


def channel_entry(run: ChannelRun, *, baseline: dict[str, Any] | None = None,
                  tickets: dict[str, int] | None = None) -> dict[str, Any]:
    """Summarise one pass; with the baseline's turn summary, add the overhead ratios."""
    turns = latency_summary(run.latencies_ms, wall_s=run.wall_s)
    entry: dict[str, Any] = {
        "channel": run.channel, "path": PATHS.get(run.channel, run.channel),
        "residents": run.residents, "requests": run.attempts, "turns": turns,
        "wall_s": round(run.wall_s, 2), "errors": run.errors, "unanswered": run.unanswered,
        "reports_done": run.reports_done, "tickets_stored": dict(tickets or {}),
        "failures": run.failures}
    if baseline is not None:
        entry["vs_baseline"] = {q: ratio(turns.get(f"{q}_ms"), baseline.get(f"{q}_ms"))
                                for q in ("p50", "p95")}
    if run.status_ms:
        entry["status_callbacks"] = latency_summary(run.status_ms)
    if run.channel == "wechat":
        share = round(run.passive_in_window / run.attempts, 4) if run.attempts else None
        entry["wechat"] = {"pushes": run.attempts, "passive": run.passive,
                           "passive_within_5s": run.passive_in_window, "share_within_5s": share,
                           "fallback_success": run.fallbacks,
                           "fallback_delivered": len(run.late_ms),
                           "late_delivery": latency_summary(run.late_ms)}
    return entry


def problems(report: dict[str, Any]) -> list[str]:
    """List what makes the run untrustworthy: failed turns, missing or extra tickets."""
    found = [f"measurement failed: {report['error']}"] if report.get("error") else []
    for entry in report.get("channels", []):
        name, stored = entry["channel"], sum(entry["tickets_stored"].values())
        if entry["errors"] or entry["unanswered"]:
            found.append(f"{name}: {entry['errors']} errors, {entry['unanswered']} turns "
                         f"without a Chinese answer")
        if stored != entry["reports_done"] or entry["reports_done"] != entry["residents"]:
            found.append(f"{name}: {entry['residents']} residents, {entry['reports_done']} got "
                         f"a work-order number, {stored} tickets stored")
    return found


def _ms(value: Any) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def _x(value: Any) -> str:
    return "—" if value is None else f"×{value:.2f}"


def render_markdown(report: dict[str, Any]) -> str:
    """Render the short human report from the JSON report."""
    host, setup = report.get("host", {}), report.get("setup", {})
    think = setup.get("think_s") or 0
    lines = [f"# Linli channel webhooks — {report.get('finished_at', '')}", "",
             f"{host.get('cpus')} CPUs, model `{report.get('model', '?')}`; "
             f"{setup.get('residents')} concurrent residents per channel × "
             f"{setup.get('rounds')} rounds (channels interleaved), "
             + (f"{think:g} s between turns" if think else "turns back to back")
             + f", at most {setup.get('max_turns')} messages per report. Latency: request "
             "sent → whole response body received, over loopback; the client shares the box.",
             "", "| channel | path | turns | turns/s | p50 | p95 | max | errors | no Chinese "
             "answer | numbers / tickets | p50 vs base | p95 vs base |", "|---" * 12 + "|"]
    for entry in report.get("channels", []):
        turns, versus = entry["turns"], entry.get("vs_baseline", {})
        lines.append(
            f"| {entry['channel']} | {entry['path']} | {turns.get('count', 0)} "
            f"| {turns.get('per_s', '—')} | {_ms(turns.get('p50_ms'))} "
            f"| {_ms(turns.get('p95_ms'))} | {_ms(turns.get('max_ms'))} | {entry['errors']} "
            f"| {entry['unanswered']} | {entry['reports_done']} / "
            f"{sum(entry['tickets_stored'].values())} | {_x(versus.get('p50'))} "
            f"| {_x(versus.get('p95'))} |")
    lines += ["", "Voice turns include the greeting and the menu key press, which the hotline "
              "answers without asking the bot."]
    for entry in report.get("channels", []):
        wechat = entry.get("wechat")
        if wechat and wechat["pushes"]:
            late = wechat["late_delivery"]
            lines += ["", f"**WeChat 5-second window:** {wechat['passive_within_5s']} of "
                      f"{wechat['pushes']} pushes ({100 * wechat['share_within_5s']:.1f} %) "
                      f"answered passively within 5 s; {wechat['fallback_success']} answered "
                      f"`success` after the hub's {setup.get('passive_reply_s')} s budget and "
                      f"went to the outbox, {wechat['fallback_delivered']} of them reached the "
                      f"resident via the customer-service API"
                      + (f" (push → delivery p50 {_ms(late.get('p50_ms'))}, max "
                         f"{_ms(late.get('max_ms'))})." if late.get("count") else ".")]
    if report.get("tickets_by_channel"):
        lines += ["", "**Tickets stored per channel**, whole run with warm-up (DB; the "
                  "baseline's are `sms`): "
                  + ", ".join(f"{k} {v}" for k, v in sorted(report["tickets_by_channel"].items()))
                  + f". WeChat replies that went through the outbox: "
                  f"{report.get('wechat_outbox_replies') or 'none'}."]
    for problem in report.get("problems", []):
        lines += ["", f"**Problem:** {problem}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- residents on the wire (I/O)

class TurnError(RuntimeError):
    """The hub did not answer a turn the way the provider expects."""


class Talk:
    """One resident's conversation on one channel; every timed request goes through _post.

    `creds` are the sandbox credentials the stack runs with, keyed by their variable names.
    """

    def __init__(self, session: Any, base: str, creds: dict[str, str], run: ChannelRun,
                 plan: Plan) -> None:
        self.session, self.base, self.creds, self.run, self.plan = (
            session, base, creds, run, plan)

    async def _post(self, url: str, *, data: bytes, headers: dict[str, str],
                    turn: bool = True) -> tuple[str, float]:
        self.run.attempts += turn
        began = time.perf_counter()
        async with self.session.post(url, data=data, headers=headers) as response:
            body = await response.read()
        ms = 1000 * (time.perf_counter() - began)
        if response.status != 200:
            raise TurnError(f"HTTP {response.status}: {body[:200]!r}")
        (self.run.latencies_ms if turn else self.run.status_ms).append(ms)
        return body.decode("utf-8", "replace"), ms

    async def _twilio(self, public_url: str, params: dict[str, str], turn: bool = True) -> str:
        headers, body = signed_form(self.creds["TWILIO_AUTH_TOKEN"], public_url, params)
        answer, _ = await self._post(local_url(self.base, public_url), data=body,
                                     headers=headers, turn=turn)
        return answer

    def _ids(self) -> dict[str, str]:
        return {"account_sid": self.creds["TWILIO_ACCOUNT_SID"], "phone": self.plan.phone,
                "to": self.creds["TWILIO_FROM_NUMBER"]}

    async def open(self) -> list[str] | None:  # a call rings first; messages just start
        return None

    async def say(self, text: str) -> list[str]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class BaselineTalk(Talk):
    async def say(self, text: str) -> list[str]:
        body = json.dumps({"channel": "sms", "sender": self.plan.phone, "text": text})
        answer, _ = await self._post(self.base + "/api/messages", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        return list(json.loads(answer)["replies"])


class SmsTalk(Talk):
    async def say(self, text: str) -> list[str]:
        params = sms_params(**self._ids(), text=text, sid="SM" + secrets.token_hex(16))
        return sms_replies(await self._twilio(PUBLIC_BASE_URL + "/twilio/sms", params))


class VoiceTalk(Talk):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.call_sid, self.action = "CA" + secrets.token_hex(16), None
        self.began = time.monotonic()

    async def _call(self, url: str, turn: bool = True, **extra: str) -> list[str]:
        params = voice_params(**self._ids(), call_sid=self.call_sid, **extra)
        spoken, self.action = voice_turn(await self._twilio(url, params, turn))
        return [spoken] if spoken else []

    async def open(self) -> list[str] | None:
        return await self._call(PUBLIC_BASE_URL + "/twilio/voice", CallStatus="ringing")

    async def say(self, text: str) -> list[str]:
        if not self.action:
            raise TurnError("the hotline stopped listening before the report was done")
        heard = ({"Digits": text} if re.fullmatch(r"[0-9*#]", text)
                 else {"SpeechResult": text, "Confidence": "0.92"})
        return await self._call(self.action, **heard)

    async def close(self) -> None:
        await self._call(PUBLIC_BASE_URL + "/twilio/voice/status", turn=False,
                         CallStatus="completed",
                         CallDuration=str(int(time.monotonic() - self.began)))


class WeChatTalk(Talk):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.crypto = WeChatCrypto(*(self.creds[f"WECHAT_{name}"]
                                     for name in ("TOKEN", "AES_KEY", "APP_ID")))
        self.seen = 0  # last sandbox message id this follower has read

    async def say(self, text: str) -> list[str]:
        now, nonce = int(time.time()), str(secrets.randbelow(10**10))
        query, body = wechat_push(self.crypto, token=self.creds["WECHAT_TOKEN"],
                                  openid=self.plan.address, text=text, msg_id=next(_msg_ids),
                                  now=now, nonce=nonce)
        began = time.perf_counter()
        answer, ms = await self._post(f"{self.base}/webhooks/wechat?{urlencode(query)}",
                                      data=body, headers={"Content-Type": "text/xml"})
        try:
            reply = read_wechat_reply(self.crypto, answer, openid=self.plan.address)
        except Exception as exc:  # a reply WeChat could not read is a failed turn
            raise TurnError(f"unreadable passive reply: {exc!r}") from exc
        if reply is not None:
            self.run.passive += 1
            self.run.passive_in_window += ms <= 1000 * WECHAT_WINDOW_S
            return [reply]
        self.run.fallbacks += 1
        texts, first = await self._customer_service_messages()
        if texts:
            self.run.late_ms.append(1000 * (first - began))
        return texts

    async def _customer_service_messages(self) -> tuple[list[str], float]:
        """Wait for what the outbox sent through the sandbox's customer-service API."""
        deadline, texts, first = time.monotonic() + LATE_REPLY_WAIT_S, [], 0.0
        while time.monotonic() < deadline:
            query = urlencode({"to": self.plan.address, "after": self.seen})
            async with self.session.get(f"{self.base}/sandbox/messages?{query}") as response:
                items = await response.json() if response.status == 200 else []
            if items and not texts:
                first = time.perf_counter()
            elif texts and not items:
                return texts, first  # nothing more for one poll: the whole answer is in
            texts += [item["text"] for item in items]
            self.seen = max([self.seen, *(item["id"] for item in items)])
            await asyncio.sleep(0.25)
        return texts, first


TALKS: dict[str, type[Talk]] = {"baseline": BaselineTalk, "sms": SmsTalk, "voice": VoiceTalk,
                                "wechat": WeChatTalk}


async def converse(talk: Talk, *, max_turns: int, think_s: float) -> None:
    """Report one repair, answering the bot until a work-order number comes back."""
    run, plan = talk.run, talk.plan
    run.residents += 1
    try:
        opened = await talk.open()
        said = None if opened is None else "\n".join(opened)
        if opened is not None and not has_chinese(opened):
            run.unanswered += 1
            return run.fail("no Chinese answer", plan, said or "")
        for number in range(max_turns):
            text = plan.opener if said is None else next_message(plan, said)
            if number and think_s:
                await asyncio.sleep(think_s)
            replies = await talk.say(text)
            said = "\n".join(replies)
            if not has_chinese(replies):
                run.unanswered += 1
                return run.fail("no Chinese answer", plan, f"{text} → {said!r}")
            if is_done(said):
                run.reports_done += 1
                return None
        run.fail("no work order", plan, f"after {max_turns} messages: {said}")
    except UnexpectedQuestion as exc:
        run.fail("unexpected question", plan, str(exc))
    except Exception as exc:  # noqa: BLE001 - a broken turn ends this resident, not the bench
        run.errors += 1
        run.fail("error", plan, repr(exc))
    finally:
        try:
            await talk.close()
        except Exception as exc:  # noqa: BLE001
            run.errors += 1
            run.fail("status callback", plan, repr(exc))
    return None


async def drive(session: Any, base: str, creds: dict[str, str], run: ChannelRun, *,
                residents: range, max_turns: int, think_s: float,
                prefix: str | None = None) -> None:
    """Run these residents of one channel at once, adding what they observe to `run`."""

    async def one(index: int) -> None:
        # Paced residents arrive spread over one think time, not all in the same instant.
        await asyncio.sleep(think_s * (index - residents.start) / len(residents))
        plan = make_plan(index, run.channel, prefix=prefix)
        await converse(TALKS[run.channel](session, base, creds, run, plan),
                       max_turns=max_turns, think_s=think_s)

    began = time.perf_counter()
    await asyncio.gather(*(one(index) for index in residents))
    run.wall_s += time.perf_counter() - began


# ---------------------------------------------------------------- the stack and the report

def _counts(engine: Any, addresses: list[str] | None = None) -> dict[str, int]:
    """Count tickets per channel: of these senders' conversations, or all of them."""
    from sqlalchemy import func, select

    from bot.models import Conversation, Ticket

    query = select(Ticket.channel, func.count()).group_by(Ticket.channel)
    if addresses is not None:
        query = query.join(Conversation, Ticket.conversation_id == Conversation.id).where(
            Conversation.sender_key.in_(addresses))
    with engine.connect() as connection:
        return dict(connection.execute(query).all())


def _outbox_replies(engine: Any) -> dict[str, int]:
    """Count the WeChat replies that went through the outbox, per delivery status."""
    from sqlalchemy import func, select

    from bot.models import OutboxMessage

    query = (select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
             .where(OutboxMessage.channel == "wechat", OutboxMessage.kind == "reply"))
    with engine.connect() as connection:
        return dict(connection.execute(query).all())


async def _all_channels(base: str, creds: dict[str, str],
                        args: argparse.Namespace) -> dict[str, ChannelRun]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=2 * args.residents + 8)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        # Unmeasured residents first: the first turns of each path pay for lazy imports.
        for number, channel in enumerate(CHANNELS):
            await drive(session, base, creds, ChannelRun(channel), prefix=f"1359{number}",
                        residents=range(min(args.residents, 4)), max_turns=args.turns,
                        think_s=0)
        runs = {channel: ChannelRun(channel) for channel in CHANNELS}
        for number in range(args.rounds):
            # Each round starts with another channel, so none always follows a cold start.
            for channel in CHANNELS[number % 4:] + CHANNELS[:number % 4]:
                residents = range(number * args.residents, (number + 1) * args.residents)
                await drive(session, base, creds, runs[channel], residents=residents,
                            max_turns=args.turns, think_s=args.think)
            print(f"bench-channels: round {number + 1}/{args.rounds}: " + ", ".join(
                f"{run.channel} {len(run.latencies_ms)} turns/{run.errors} errors"
                for run in runs.values()), flush=True)
        return runs


def bench(report: dict[str, Any], work: Path, model: Path, args: argparse.Namespace) -> None:
    """Start the stack with sandbox providers on a fresh database, run every channel, stop."""
    from bot.db import make_engine
    from bot.runner import sandbox_stack
    from bot.webhooks.wechat import passive_reply_seconds

    extra = {"PUBLIC_BASE_URL": PUBLIC_BASE_URL, "TWILIO_TRANSFER_NUMBER": "",
             "LINLI_OUTBOX_POLL_S": "0.2"}
    with sandbox_stack(work, model, report, extra) as running:
        report["setup"]["passive_reply_s"] = passive_reply_seconds({**os.environ,
                                                                     **running.env})
        values = {k: v for k, v in running.env.items()
                  if k.startswith(("WECHAT_", "TWILIO_"))}
        engine = make_engine(running.database_url)
        runs = asyncio.run(_all_channels(running.base_url, values, args))
        entries: list[dict[str, Any]] = []
        for run in runs.values():
            addresses = [make_plan(i, run.channel).address
                         for i in range(args.rounds * args.residents)]
            baseline = entries[0]["turns"] if entries else None
            entries.append(channel_entry(run, baseline=baseline,
                                         tickets=_counts(engine, addresses)))
        report["channels"] = entries
        report["tickets_by_channel"] = _counts(engine)
        report["wechat_outbox_replies"] = _outbox_replies(engine)
        engine.dispose()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot bench-channels",
        description="Webhook latency per channel (WeChat, SMS, voice) against the hub's "
                    "plain message API, with concurrent residents reporting repairs.")
    parser.add_argument("--residents", type=int, default=20,
                        help="concurrent residents per channel (default 20)")
    parser.add_argument("--turns", type=int, default=6,
                        help="most messages a resident sends to get a work order (default 6)")
    parser.add_argument("--rounds", type=int, default=8,
                        help="rounds of fresh residents per channel, channels interleaved; a "
                             "multiple of 4 starts every channel first equally often (default 8)")
    parser.add_argument("--think", type=float, default=0.0,
                        help="seconds a resident pauses between turns (default 0: back to back)")
    parser.add_argument("--out", default=str(ROOT / "var" / "bench"),
                        help="report directory (default var/bench)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, write bench-channels.json and .md into --out, print the Markdown."""
    args = _parser().parse_args(list(argv or []))
    if min(args.residents, args.turns, args.rounds) < 1 or args.think < 0:
        _parser().error("--residents, --turns and --rounds must be at least 1, --think >= 0")

    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "platform": platform.platform()},
        "setup": {"residents": args.residents, "rounds": args.rounds, "max_turns": args.turns,
                  "think_s": args.think,
                  "public_base_url": PUBLIC_BASE_URL}}
    return run_and_report("bench-channels", report, args.out,
                          lambda rep, work, model: bench(rep, work, model, args),
                          problems, render_markdown)
