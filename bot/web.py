"""The hub's HTTP face: web chat (websockets), the message API and the ticket API.

Served with aiohttp: its websocket server works on Python 3.11, where the one in
Sanic 21.12 (Rasa's pin) fails on every receive.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from bot import sandbox
from bot.app import App, build_app
from bot.console import agent as console_agent
from bot.console import auth as console_auth
from bot.console import callbacks as console_callbacks
from bot.console import staff as console_staff
from bot.console_bus import ConsoleBus
from bot.db import session_scope
from bot.dispatch import work_orders_view
from bot.hub import Hub, Inbound, RasaClient
from bot.metrics import service_metrics
from bot.models import CHANNELS
from bot.outbox import Offline, Outbox, Sender
from bot.scheduler import make_scheduler
from bot.senders.twilio_sms import TwilioSmsSender
from bot.senders.wechat import WeChatSender
from bot.ticket_view import ticket_as_dict
from bot.tickets import get_ticket_by_number
from bot.webhooks import sms as sms_hooks
from bot.webhooks import voice as voice_hooks
from bot.webhooks import wechat as wechat_hooks
from bot.webkeys import APP, BUS, CHATS, HUB, OUTBOX, SCHEDULER
from routing.metrics import GROUPINGS

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MAX_TEXT_CHARS = 20_000
_SENDER = re.compile(r"^[A-Za-z0-9_.:+-]{1,64}$")


class BadRequest(ValueError):
    """The request is malformed; the message says what a correct one looks like."""


def parse_message_request(body: Any) -> Inbound:
    """Validate a POST /api/messages body into an Inbound message."""
    if not isinstance(body, dict):
        raise BadRequest('send a JSON object: {"channel": "sms", "sender": "13800000000", "text": "..."}')
    channel = body.get("channel", "web")
    sender = body.get("sender")
    text = body.get("text", "")
    message_id = body.get("message_id")
    if channel not in CHANNELS:
        raise BadRequest(f"channel must be one of {', '.join(CHANNELS)}")
    if not isinstance(sender, str) or not _SENDER.match(sender):
        raise BadRequest("sender must be 1-64 letters, digits or _.:+-")
    if not isinstance(text, str):
        raise BadRequest("text must be a string")
    if len(text) > MAX_TEXT_CHARS:
        raise BadRequest(f"text is longer than {MAX_TEXT_CHARS} characters")
    if message_id is not None and (not isinstance(message_id, str) or len(message_id) > 128):
        raise BadRequest("message_id must be a string of at most 128 characters")
    phone = sender if channel in ("sms", "voice") else None
    return Inbound(
        channel=channel, sender_key=sender, text=text, provider_message_id=message_id, phone=phone
    )


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status,
                             dumps=lambda value: json.dumps(value, ensure_ascii=False))


class WebChats:
    """The open web-chat sockets per resident, so the outbox can push updates into them."""

    channel = "web"

    def __init__(self) -> None:
        self._sockets: dict[str, set[web.WebSocketResponse]] = {}

    def add(self, address: str, ws: web.WebSocketResponse) -> None:
        self._sockets.setdefault(address, set()).add(ws)

    def remove(self, address: str, ws: web.WebSocketResponse) -> None:
        self._sockets.get(address, set()).discard(ws)
        if not self._sockets.get(address):
            self._sockets.pop(address, None)

    async def push(self, address: str, frame: dict[str, Any]) -> bool:
        """Send a transient frame (e.g. "an agent is typing"); False if nobody is connected."""
        sockets = [ws for ws in self._sockets.get(address, ()) if not ws.closed]
        text = json.dumps(frame, ensure_ascii=False)
        for ws in sockets:
            await ws.send_str(text)
        return bool(sockets)

    async def send(self, address: str, text: str) -> str | None:
        """The outbox's web-chat sender: Offline until the resident opens the chat again."""
        if not await self.push(address, {"type": "update", "text": text}):
            raise Offline("web chat not open")
        return None


def _senders(app: App, chats: WebChats) -> dict[str, Sender]:
    senders: dict[str, Sender] = {"web": chats}
    settings = app.settings
    if settings.wechat is not None:
        senders["wechat"] = WeChatSender(settings.wechat, sessions=app.sessions, clock=app.clock,
                                         redis_url=settings.redis_url or None)
    if settings.twilio is not None:
        senders["sms"] = TwilioSmsSender(settings.twilio, sessions=app.sessions)
    return senders


def _outbox_poll_s() -> float:
    try:
        return max(float(os.environ.get("LINLI_OUTBOX_POLL_S", "1.0")), 0.05)
    except ValueError:
        return 1.0


def create_web_app(app: App | None = None, *, with_scheduler: bool = True,
                   with_outbox: bool = True) -> web.Application:
    """Build the aiohttp application around one hub, its outbox and the SLA scheduler."""
    server = web.Application(client_max_size=1_000_000)
    current = app or build_app()
    server[APP] = current
    chats = WebChats()
    server[CHATS] = chats
    server[BUS] = ConsoleBus()

    async def start(server: web.Application) -> None:
        server[HUB] = Hub(current, RasaClient(current.settings.rasa_url), server[BUS])
        server[OUTBOX] = Outbox(current.sessions, _senders(current, chats), clock=current.clock,
                                poll_s=_outbox_poll_s())
        if with_outbox:
            server[OUTBOX].start()
        if with_scheduler:
            # SLA reminders and escalations run here, from the persistent job store.
            server[SCHEDULER] = make_scheduler(current.settings.database_url)
            server[SCHEDULER].start()

    async def stop(server: web.Application) -> None:
        # Replies the bot finished after WeChat's 5 s go to the outbox before it stops.
        await wechat_hooks.drain()
        await server[HUB].close()
        await server[OUTBOX].stop()
        if with_scheduler:
            server[SCHEDULER].shutdown(wait=False)

    async def chat_page(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "chat.html",
                                headers={"Content-Type": "text/html; charset=utf-8"})

    async def health(_request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def post_message(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"null")
            inbound = parse_message_request(body)
        except (ValueError, UnicodeDecodeError) as exc:
            message = str(exc) if isinstance(exc, BadRequest) else "the body must be UTF-8 JSON"
            return _json({"error": message}, status=400)
        outcome = await request.app[HUB].handle(inbound)
        return _json({
            "replies": outcome.replies,
            "conversation_id": outcome.conversation_id,
            "state": outcome.state,
            "duplicate": outcome.duplicate,
        })

    async def get_ticket(request: web.Request) -> web.Response:
        number = request.match_info["number"]
        current = request.app[APP]
        with session_scope(current.sessions) as session:
            ticket = get_ticket_by_number(session, number=number)
            if ticket is None:
                return _json(
                    {"error": f"no work order {number!r}; numbers look like GD20261128-0007"},
                    status=404,
                )
            body = ticket_as_dict(ticket, catalogue=current.catalogue)
            orders = work_orders_view(ticket, roster=current.roster, catalogue=current.catalogue)
            body["hops"] = orders["hops"]
            body["work_orders"] = orders["orders"]
            return _json(body)

    async def get_metrics(request: web.Request) -> web.Response:
        by = request.query.get("by") or None
        if by is not None and by not in GROUPINGS:
            return _json({"error": f"by must be one of {', '.join(GROUPINGS)}"}, status=400)
        current = request.app[APP]
        with session_scope(current.sessions) as session:
            report = service_metrics(session, catalogue=current.catalogue,
                                     roster=current.roster, now=current.clock(), by=by)
        return _json(json.loads(json.dumps(report, default=str)))

    async def chat_socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=256_000, heartbeat=30)
        await ws.prepare(request)
        sid = request.query.get("sid", "")
        if not _SENDER.match(sid):
            await ws.send_str(json.dumps({"type": "error", "text": "缺少会话编号，请刷新页面。"},
                                         ensure_ascii=False))
            await ws.close()
            return ws
        address = f"web-{sid}"
        chats.add(address, ws)
        # Updates that waited for this resident to come back go out now.
        asyncio.get_running_loop().create_task(request.app[OUTBOX].run_once(address))
        try:
            await _chat(request, ws, address)
        finally:
            chats.remove(address, ws)
        return ws

    async def _chat(request: web.Request, ws: web.WebSocketResponse, address: str) -> None:
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(frame.data)
                text = data.get("text", "") if isinstance(data, dict) else ""
                if not isinstance(text, str):
                    raise ValueError("text must be a string")
            except ValueError:
                text = frame.data  # a plain-text frame is still the resident's words
            outcome = await request.app[HUB].handle(
                Inbound(channel="web", sender_key=address, text=text[:MAX_TEXT_CHARS])
            )
            for reply, message in zip(outcome.replies, outcome.messages, strict=False):
                frame = {"type": "bot", "text": reply}
                if message.choices:
                    frame["buttons"] = [choice.title for choice in message.choices]
                await ws.send_str(json.dumps(frame, ensure_ascii=False))

    server.on_startup.append(start)
    server.on_cleanup.append(stop)
    server.add_routes([
        web.get("/", chat_page),
        web.get("/health", health),
        web.post("/api/messages", post_message),
        web.get("/api/tickets/{number}", get_ticket),
        web.get("/api/metrics", get_metrics),
        web.get("/ws", chat_socket),
    ])
    server.add_routes(console_auth.routes() + console_agent.routes() + console_staff.routes()
                      + console_callbacks.routes())
    settings = current.settings
    if settings.wechat is not None:
        server.add_routes(wechat_hooks.routes())
    if settings.twilio is not None:
        server.add_routes(sms_hooks.routes())
        server.add_routes(voice_hooks.routes())
    if os.environ.get("LINLI_SANDBOX") == "1":
        server.add_routes(sandbox.routes())
    for line in settings.channel_report():
        log.info("channel %s", line)
    return server


def serve(host: str, port: int) -> None:
    """Run the hub web server in this process."""
    web.run_app(create_web_app(), host=host, port=port, access_log=None, print=None)
