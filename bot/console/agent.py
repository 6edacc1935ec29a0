"""The agents' console: the live queue, one conversation, replies into the resident's channel.

Pages and JSON under /console/agent and /console/api/agent/…; the websocket /console/ws
streams every console event (a resident wrote, a conversation was queued, claimed,
answered, passed on or given back) so every open console updates at once. The database
work lives in bot.console.agent_service; this module is HTTP, delivery and events.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import logging
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web
from sqlalchemy.orm import Session

from bot.audit import audit
from bot.console import agent_service as service
from bot.console.auth import current, error, json_response, page, read_json, require
from bot.db import read_scope, session_scope
from bot.outbox import enqueue
from bot.rasa_tracker import report_slots
from bot.ticket_view import mask_phone
from bot.webkeys import APP, BUS, CHATS, OUTBOX, SCHEDULER

log = logging.getLogger(__name__)

ROLES = service.AGENT_ROLES
CANNED = Path(__file__).resolve().parent / "canned.yml"
TRACKER_TIMEOUT_S = 2.0
# An open console socket checks its session this often; an expired one is closed (4401).
SESSION_RECHECK_S = 60.0
T = TypeVar("T")


@lru_cache(maxsize=1)
def canned_replies() -> list[dict[str, str]]:
    """The short polite replies an agent can insert with one click."""
    raw = yaml.safe_load(CANNED.read_text(encoding="utf-8")) or {}
    return [{"title": str(item["title"]), "text": str(item["text"])}
            for item in raw.get("replies", [])]


def _conversation_id(request: web.Request) -> int:
    raw = request.match_info.get("id", "")
    if not raw.isdigit() or len(raw) > 9:
        raise _http(service.Refused(404, "找不到这个会话，可能链接有误。", action="lookup"))
    return int(raw)


def _http(refusal: service.Refused) -> web.HTTPException:
    code = {"code": refusal.extra["code"]} if "code" in refusal.extra else {}
    return error(refusal.status, refusal.message, **code)


async def _run(request: web.Request, who: Any, work: Callable[[Session, datetime], T]) -> T:
    """Do `work` in one transaction off the event loop; audit a refusal on its own."""
    app = request.app[APP]

    def job() -> T:
        try:
            with session_scope(app.sessions) as session:
                return work(session, app.clock())
        except service.Refused as refusal:
            with session_scope(app.sessions) as session:
                detail = {k: v for k, v in refusal.extra.items() if k != "code"}
                audit(session, who=who, action=f"{refusal.action}_refused"[:32],
                      now=app.clock(), conversation_id=refusal.conversation_id,
                      status=refusal.status, message=refusal.message, **detail)
            raise

    try:
        return await asyncio.to_thread(job)
    except service.Refused as refusal:
        raise _http(refusal) from None


def _publish(request: web.Request, event: dict[str, Any]) -> None:
    request.app[BUS].publish(event)


async def _send(request: web.Request, delivery: service.Delivery) -> tuple[str, str | None]:
    """Get a stored reply moving; return how it went out and a warning for the agent."""
    if delivery.outbox_id is not None:
        request.app[OUTBOX].kick()
        return delivery.conversation.channel, None
    via, warning = await _speak(request.app, delivery)
    if via is not None:
        return via, warning
    if delivery.sms_fallback is None:
        return "none", warning or "来电已挂断，对方号码未显示，无法发短信，请记下后续回访。"
    app = request.app[APP]

    def fallback() -> None:
        with session_scope(app.sessions) as session:
            enqueue(session, channel="sms", address=delivery.sms_fallback or "",
                    text=delivery.text, kind="reply", now=app.clock(),
                    conversation_id=delivery.conversation.id,
                    resident_id=delivery.conversation.resident_id)

    await asyncio.to_thread(fallback)
    request.app[OUTBOX].kick()
    return "sms", (warning + "已改发短信。") if warning else None


def _bridge() -> Any | None:
    """The hotline bridge (bot.console.voice_bridge), if this installation has it."""
    try:
        return importlib.import_module("bot.console.voice_bridge")
    except ImportError:
        return None


async def _speak(server: web.Application,
                 delivery: service.Delivery) -> tuple[str | None, str | None]:
    """Speak the text into the live call (or let the bridge text it); None: not sent."""
    bridge = _bridge()
    if bridge is None:
        return None, None
    try:
        result = bridge.speak(server, delivery.conversation, delivery.text)
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:  # noqa: BLE001 - the resident must still get the words, by SMS
        log.warning("voice bridge failed for conversation %s: %s", delivery.conversation.id,
                    exc)
        return None, getattr(exc, "chinese", None) or "电话里没能念出来。"
    if result is False:
        return None, None
    return ("voice" if result in (True, None, "spoken") else str(result)), None


async def _report_slots(rasa_url: str, conversation_id: int | None) -> dict[str, Any]:
    return await report_slots(rasa_url, conversation_id, timeout_s=TRACKER_TIMEOUT_S)


def _merge_slots(draft: dict[str, Any], slots: dict[str, Any], mine: bool) -> bool:
    names = {"report_category": "category", "report_building": "building",
             "report_unit": "unit", "report_room": "room", "report_description": "description",
             "report_phone": "contact_phone", "report_urgency": "urgency"}
    used = False
    for slot, key in names.items():
        value = slots.get(slot)
        if isinstance(value, str | int) and str(value).strip():
            value = str(value).strip()
            draft[key] = value if key != "contact_phone" or mine else mask_phone(value)
            used = True
    return used


def _ranking(slots: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    ranking = []
    for item in slots.get("report_ranking") or ():
        with contextlib.suppress(TypeError, ValueError, IndexError):
            ranking.append((str(item[0]), float(item[1])))
    return tuple(ranking)


# --- handlers ------------------------------------------------------------------------------


async def options(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    app = request.app[APP]
    return json_response({
        "categories": [{"id": c.id, "name": c.name} for c in app.catalogue.categories],
        "urgencies": [{"id": s.urgency, "label": s.label} for s in app.catalogue.slas],
        "canned": [{"title": r["title"], "text": r["text"].replace("{name}", who.display_name)}
                   for r in canned_replies()],
    })


async def _read(request: web.Request, work: Callable[[Session, datetime], T]) -> T:
    """Do read-only `work` off the event loop without taking the database's write lock."""
    app = request.app[APP]

    def job() -> T:
        with read_scope(app.sessions) as session:
            return work(session, app.clock())

    return await asyncio.to_thread(job)


async def queue(request: web.Request) -> web.Response:
    await require(request, *ROLES)
    rows = await _read(request, lambda s, now: service.queue_rows(s, now=now))
    return json_response({"conversations": rows})


async def mine(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    rows = await _read(request, lambda s, now: service.my_rows(s, who=who, now=now))
    return json_response({"conversations": rows})


async def colleagues(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    rows = await _run(request, who, lambda s, now: service.colleagues(s, who=who, now=now))
    return json_response({"agents": rows})


async def conversation(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    conversation_id = _conversation_id(request)
    app = request.app[APP]
    body, slots = await asyncio.gather(
        _run(request, who, lambda s, now: service.detail(
            s, conversation_id=conversation_id, who=who, now=now, catalogue=app.catalogue)),
        _report_slots(app.settings.rasa_url, conversation_id))
    body["draft_from_bot"] = _merge_slots(body["draft"], slots, body["conversation"]["mine"])
    return json_response(body)


async def claim(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    conversation_id = _conversation_id(request)
    result = await _run(request, who, lambda s, now: service.claim(
        s, conversation_id=conversation_id, who=who, now=now))
    _publish(request, {"type": "claimed", "conversation_id": conversation_id,
                       "agent": who.display_name, "agent_id": who.account_id})
    return json_response({"ok": True, **result})


async def reply(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    conversation_id = _conversation_id(request)
    body = await read_json(request)
    text = body.get("text") if isinstance(body.get("text"), str) else ""
    delivery = await _run(request, who, lambda s, now: service.reply(
        s, conversation_id=conversation_id, who=who, text=text, now=now))
    via, warning = await _send(request, delivery)
    _publish(request, {"type": "reply", "conversation_id": conversation_id,
                       "agent": who.display_name, "agent_id": who.account_id,
                       "message_id": delivery.message_id, "text": delivery.text,
                       "at": delivery.at, "via": via})
    return json_response({"ok": True, "message_id": delivery.message_id, "at": delivery.at,
                          "via": via, "warning": warning})


async def typing(request: web.Request) -> web.Response:
    """Show "XX正在输入…" on the resident's web chat; other channels have no such thing."""
    who = await require(request, *ROLES)
    conversation_id = _conversation_id(request)
    app = request.app[APP]

    def owned() -> tuple[str, str]:
        # Read-only and frequent: checked, not audited.
        with session_scope(app.sessions) as session:
            found = service.require_owner(session, conversation_id=conversation_id, who=who,
                                          action="typing")
            return found.channel, found.sender_key

    try:
        channel, address = await asyncio.to_thread(owned)
    except service.Refused as refusal:
        raise _http(refusal) from None
    sent = False
    if channel == "web":
        sent = await request.app[CHATS].push(address, {"type": "typing",
                                                       "name": who.display_name})
    return json_response({"sent": sent})


async def transfer(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    conversation_id = _conversation_id(request)
    body = await read_json(request)
    result = await _run(request, who, lambda s, now: service.transfer(
        s, conversation_id=conversation_id, who=who, to=body.get("to"), now=now))
    _publish(request, {"type": "transferred", "conversation_id": conversation_id,
                       "agent": who.display_name, "agent_id": who.account_id, **result})
    return json_response({"ok": True, **result})


async def return_to_bot(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    conversation_id = _conversation_id(request)
    delivery = await _run(request, who, lambda s, now: service.return_to_bot(
        s, conversation_id=conversation_id, who=who, now=now))
    via, warning = await _send(request, delivery)
    _publish(request, {"type": "returned", "conversation_id": conversation_id,
                       "agent": who.display_name, "agent_id": who.account_id,
                       "message_id": delivery.message_id, "text": delivery.text,
                       "at": delivery.at})
    return json_response({"ok": True, "via": via, "warning": warning})


async def dispatch_draft(request: web.Request) -> web.Response:
    who = await require(request, *ROLES)
    conversation_id = _conversation_id(request)
    body = await read_json(request)
    app = request.app[APP]
    ranking = _ranking(await _report_slots(app.settings.rasa_url, conversation_id))
    ticket, delivery = await _run(request, who, lambda s, now: service.dispatch_draft(
        s, conversation_id=conversation_id, who=who, body=body, now=now,
        catalogue=app.catalogue, community=app.community, roster=app.roster, ranking=ranking))
    scheduler = request.app.get(SCHEDULER)
    if scheduler is not None:
        await asyncio.to_thread(_schedule_sla, scheduler, app, ticket["number"])
    via, warning = await _send(request, delivery)
    _publish(request, {"type": "dispatched", "conversation_id": conversation_id,
                       "agent": who.display_name, "agent_id": who.account_id,
                       "number": ticket["number"], "message_id": delivery.message_id,
                       "text": delivery.text, "at": delivery.at})
    return json_response({"ok": True, "number": ticket["number"], "ticket": ticket, "via": via,
                          "warning": warning})


async def call_transfer(request: web.Request) -> web.Response:
    """Put a live hotline call through to the agent's own phone."""
    who = await require(request, *ROLES)
    conversation_id = _conversation_id(request)
    phone = await _run(request, who, lambda s, now: service.call_transfer_phone(
        s, conversation_id=conversation_id, who=who, now=now))
    bridge = _bridge()
    if bridge is None:
        raise _http(service.Refused(409, "电话转接还没有开通。", action="call_transfer"))
    try:
        transferred = await bridge.transfer_call(request.app, conversation_id, phone)
    except Exception as exc:  # noqa: BLE001 - VoiceBridgeError carries the words for the agent
        log.warning("call transfer failed for conversation %s: %s", conversation_id, exc)
        message = getattr(exc, "chinese", None) or "转接没有成功，请稍后再试。"
        raise _http(service.Refused(409, message, action="call_transfer")) from None
    if not transferred:
        raise _http(service.Refused(409, "来电已挂断，无法转接。", action="call_transfer"))
    return json_response({"ok": True})


def _schedule_sla(scheduler: Any, app: Any, number: str) -> None:
    from bot.scheduler import schedule_sla
    from bot.tickets import get_ticket_by_number

    with session_scope(app.sessions) as session:
        ticket = get_ticket_by_number(session, number=number)
        if ticket is not None:
            schedule_sla(scheduler, ticket=ticket, catalogue=app.catalogue, now=app.clock())


async def console_socket(request: web.Request) -> web.WebSocketResponse:
    """Stream every console event to a signed-in agent; 4401 tells the page to sign in.

    Events carry residents' words, so only the roles that work conversations get them;
    department staff see orders, not chats.
    """
    who = await current(request)
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    if who is None:
        await ws.close(code=4401, message="登录已过期".encode())
        return ws
    if not who.can(*ROLES):
        await ws.close(code=4403, message="没有权限".encode())
        return ws
    bus = request.app[BUS]
    events = bus.subscribe()
    loop = asyncio.get_running_loop()
    reader = loop.create_task(_drain(ws))
    waiting: asyncio.Future[Any] | None = None
    try:
        await ws.send_str(json.dumps({"type": "ready"}))
        while not ws.closed:
            if waiting is None:
                waiting = loop.create_task(events.get())
            done, _ = await asyncio.wait({waiting, reader}, timeout=SESSION_RECHECK_S,
                                         return_when=asyncio.FIRST_COMPLETED)
            if waiting not in done:
                if reader in done:
                    break
                if await current(request) is None:
                    await ws.close(code=4401, message="登录已过期".encode())
                continue
            event, waiting = waiting.result(), None
            if event is None:  # fell too far behind: the page reconnects and reloads
                await ws.close(code=1012, message=b"reconnect")
                break
            await ws.send_str(json.dumps(event, ensure_ascii=False, default=str))
    except ConnectionResetError:
        pass  # the page went away mid-send
    finally:
        bus.unsubscribe(events)
        for task in (waiting, reader):
            if task is not None and not task.done():
                task.cancel()
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    async for _frame in ws:
        pass  # the console only listens; reading notices when the page goes away


def routes() -> list[web.RouteDef]:
    base = "/console/api/agent"
    one = base + "/conversations/{id}"
    return [
        web.get("/console/agent", page("agent.html")),
        web.get("/console/ws", console_socket),
        web.get(base + "/options", options),
        web.get(base + "/queue", queue),
        web.get(base + "/mine", mine),
        web.get(base + "/agents", colleagues),
        web.get(one, conversation),
        web.post(one + "/claim", claim),
        web.post(one + "/reply", reply),
        web.post(one + "/typing", typing),
        web.post(one + "/transfer", transfer),
        web.post(one + "/return", return_to_bot),
        web.post(one + "/dispatch", dispatch_draft),
        web.post(one + "/call-transfer", call_transfer),
    ]
