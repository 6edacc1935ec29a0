"""The hub's HTTP face: web chat (websockets), the message API and the ticket API."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from sanic import Request, Sanic, response
from sanic.response import HTTPResponse

from bot.app import App, build_app
from bot.db import session_scope
from bot.hub import Hub, Inbound, RasaClient
from bot.models import CHANNELS
from bot.tickets import get_ticket_by_number, ticket_as_dict

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


def create_web_app(app: App | None = None, *, name: str = "linli") -> Sanic:
    """Build the Sanic application around one hub."""
    web = Sanic(name)
    web.config.REQUEST_MAX_SIZE = 1_000_000
    web.config.WEBSOCKET_MAX_SIZE = 256_000
    web.config.FALLBACK_ERROR_FORMAT = "json"
    state: dict[str, Any] = {}

    @web.listener("before_server_start")
    async def start(_web: Sanic, _loop: Any) -> None:
        state["app"] = app or build_app()
        state["hub"] = Hub(state["app"], RasaClient(state["app"].settings.rasa_url))

    @web.listener("after_server_stop")
    async def stop(_web: Sanic, _loop: Any) -> None:
        await state["hub"].close()

    @web.get("/")
    async def chat_page(_request: Request) -> HTTPResponse:
        return await response.file(STATIC / "chat.html", mime_type="text/html; charset=utf-8")

    @web.get("/health")
    async def health(_request: Request) -> HTTPResponse:
        return response.json({"status": "ok"})

    @web.post("/api/messages")
    async def post_message(request: Request) -> HTTPResponse:
        try:
            body = json.loads(request.body or b"null")
            inbound = parse_message_request(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return response.json({"error": str(exc) if isinstance(exc, BadRequest) else
                                  "the body must be UTF-8 JSON"}, status=400)
        outcome = await state["hub"].handle(inbound)
        return response.json({
            "replies": outcome.replies,
            "conversation_id": outcome.conversation_id,
            "state": outcome.state,
            "duplicate": outcome.duplicate,
        })

    @web.get("/api/tickets/<number>")
    async def get_ticket(_request: Request, number: str) -> HTTPResponse:
        current: App = state["app"]
        with session_scope(current.sessions) as session:
            ticket = get_ticket_by_number(session, number=number)
            if ticket is None:
                return response.json(
                    {"error": f"no work order {number!r}; numbers look like GD20261128-0007"},
                    status=404,
                )
            return response.json(ticket_as_dict(ticket), ensure_ascii=False)

    @web.websocket("/ws")
    async def chat_socket(request: Request, ws: Any) -> None:
        sid = request.args.get("sid", "")
        if not _SENDER.match(sid):
            await ws.send(json.dumps({"type": "error", "text": "缺少会话编号，请刷新页面。"},
                                     ensure_ascii=False))
            return
        while True:
            frame = await ws.recv()
            if frame is None:
                return
            try:
                data = json.loads(frame)
                text = data.get("text", "") if isinstance(data, dict) else ""
                if not isinstance(text, str):
                    raise ValueError
            except (ValueError, TypeError):
                text = frame if isinstance(frame, str) else ""
            outcome = await state["hub"].handle(
                Inbound(channel="web", sender_key=f"web-{sid}", text=text[:MAX_TEXT_CHARS])
            )
            for reply in outcome.replies:
                await ws.send(json.dumps({"type": "bot", "text": reply}, ensure_ascii=False))

    return web


def serve(host: str, port: int) -> None:
    """Run the hub web server in this process."""
    create_web_app().run(host=host, port=port, access_log=False, workers=1)
