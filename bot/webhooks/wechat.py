"""WeChat Official Account webhook: verify, store, and answer within WeChat's 5 seconds.

WeChat waits 5 s for the HTTP answer and then retries the push, three times in all. The
bot usually answers in well under a second, so its reply goes back passively in the
response. When it is slower, the handler answers SUCCESS (which ends WeChat's retries)
and the reply goes out later through the customer-service API, via the outbox.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Mapping

from aiohttp import web

from bot.app import App
from bot.conversations import find_or_create_resident, record_inbound, record_outbound
from bot.db import session_scope
from bot.hub import Outcome
from bot.models import Conversation
from bot.outbox import enqueue
from bot.senders.wechat import record_window_inbound
from bot.texts import text as domain_text
from bot.webkeys import APP, HUB, OUTBOX
from channels.wechat import (
    MAX_BODY_BYTES,
    SUCCESS,
    InvalidSignature,
    MalformedMessage,
    WeChatInbound,
    make_crypto,
    parse_message,
    render_text_reply,
    verify_url,
)

log = logging.getLogger(__name__)

PATH = "/webhooks/wechat"
# WeChat gives up after 5 s; leave a second for the network and the encryption.
PASSIVE_REPLY_S = 4.0
PASSIVE_REPLY_ENV = "WECHAT_PASSIVE_REPLY_S"
# Late replies still running; held here so the event loop cannot drop them.
_PENDING: set[asyncio.Future[None]] = set()


def passive_reply_seconds(environ: Mapping[str, str] = os.environ) -> float:
    """Return how long to wait for the bot before answering SUCCESS and replying later."""
    raw = environ.get(PASSIVE_REPLY_ENV, "").strip()
    if not raw:
        return PASSIVE_REPLY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 4.5:
        log.warning("%s=%r is not a number of seconds in (0, 4.5]; using %.1f",
                    PASSIVE_REPLY_ENV, raw, PASSIVE_REPLY_S)
        return PASSIVE_REPLY_S
    return value


def _plain(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/plain")


class _Webhook:
    """The two handlers, sharing the passive-reply budget and the late replies in flight."""

    def __init__(self, passive_s: float) -> None:
        self.passive_s = passive_s

    async def verify(self, request: web.Request) -> web.Response:
        """Answer the console's server-URL check with the echostr it sent."""
        settings = request.app[APP].settings.wechat
        if settings is None:
            return _plain("WeChat is not configured", 404)
        query = request.query
        try:
            echostr = verify_url(token=settings.token.reveal(), signature=query.get("signature"),
                                 timestamp=query.get("timestamp"), nonce=query.get("nonce"),
                                 echostr=query.get("echostr"))
        except InvalidSignature:
            log.warning("wechat URL check refused: not signed with our token")
            return _plain("forbidden", 403)
        return _plain(echostr)

    async def receive(self, request: web.Request) -> web.Response:
        """Handle one push; any unexpected failure answers SUCCESS, never HTTP 500."""
        try:
            return await self._receive(request)
        except Exception:  # noqa: BLE001 - a 500 makes WeChat retry and show an error page
            log.exception("wechat push failed; answered success")
            return _plain(SUCCESS)

    async def _receive(self, request: web.Request) -> web.Response:
        app = request.app[APP]
        settings = app.settings.wechat
        if settings is None:
            return _plain("WeChat is not configured", 404)
        body = await _read_capped(request)
        if body is None:
            log.warning("wechat push refused: body larger than %d bytes", MAX_BODY_BYTES)
            refused = _plain("body too large", 400)
            refused.force_close()  # the unread rest of the body must not become a request
            return refused
        query = request.query
        aes_key = settings.aes_key.reveal() or None
        # Compatibility mode sends plaintext pushes to a safe-mode account; they are
        # accepted only with a valid plaintext signature (parse_message checks it).
        encrypted = aes_key is not None and (
            query.get("encrypt_type", "").lower() == "aes" or "msg_signature" in query)
        try:
            parsed = parse_message(
                body, token=settings.token.reveal(), app_id=settings.app_id,
                aes_key=aes_key if encrypted else None, signature=query.get("signature"),
                msg_signature=query.get("msg_signature"), timestamp=query.get("timestamp"),
                nonce=query.get("nonce"), now=app.clock(),
            )
        except InvalidSignature as exc:
            log.warning("wechat push refused (403): %s", exc)
            return _plain("forbidden", 403)
        except MalformedMessage as exc:
            log.warning("wechat push refused (400): %s", exc)
            return _plain("bad request", 400)

        if parsed.for_hub:
            return await self._via_hub(request, parsed)
        if parsed.reply_hint is not None:
            return await self._hint(app, parsed, query.get("nonce", ""))
        return _plain(SUCCESS)  # unsubscribe and events nobody addressed to us

    async def _via_hub(self, request: web.Request, parsed: WeChatInbound) -> web.Response:
        server = request.app
        task = asyncio.ensure_future(server[HUB].handle(parsed.inbound))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.passive_s)
        except asyncio.CancelledError:
            self._reply_later(server, parsed, task)  # WeChat hung up; the reply still goes
            raise
        if task not in done:
            self._reply_later(server, parsed, task)
            return _plain(SUCCESS)
        outcome = task.result()
        replies = [reply for reply in outcome.replies if reply.strip()]
        if outcome.duplicate or not replies:
            # A retry of a push already answered (or still being answered): one answer only.
            return _plain(SUCCESS)
        return self._passive(server[APP], parsed, "\n".join(replies),
                             request.query.get("nonce", ""))

    async def _hint(self, app: App, parsed: WeChatInbound, nonce: str) -> web.Response:
        try:
            hint = domain_text(parsed.reply_hint or "")
        except KeyError:
            log.error("domain response %s is missing; add it to domain/", parsed.reply_hint)
            hint = None
        duplicate = await asyncio.to_thread(_store_hint, app, parsed, hint)
        if duplicate or hint is None:
            return _plain(SUCCESS)
        return self._passive(app, parsed, hint, nonce)

    def _passive(self, app: App, parsed: WeChatInbound, text: str, nonce: str) -> web.Response:
        settings = app.settings.wechat
        assert settings is not None
        crypto = None
        if parsed.encrypted:
            crypto = make_crypto(token=settings.token.reveal(),
                                 aes_key=settings.aes_key.reveal(), app_id=settings.app_id)
        xml = render_text_reply(to_user=parsed.openid, from_user=parsed.account, text=text,
                                now=app.clock(), crypto=crypto, nonce=nonce)
        return web.Response(text=xml, content_type="application/xml")

    def _reply_later(self, server: web.Application, parsed: WeChatInbound,
                     task: asyncio.Future[Outcome]) -> None:
        follow = asyncio.ensure_future(_deliver_late(server, parsed, task))
        _PENDING.add(follow)
        follow.add_done_callback(_PENDING.discard)


async def _read_capped(request: web.Request) -> bytes | None:
    """Return the body, or None as soon as it is known to exceed MAX_BODY_BYTES."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return None
    body = bytearray()
    while True:
        chunk = await request.content.read(MAX_BODY_BYTES + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None


async def _deliver_late(server: web.Application, parsed: WeChatInbound,
                        task: asyncio.Future[Outcome]) -> None:
    """Queue the bot's replies for the customer-service API once the bot has answered."""
    try:
        outcome = await task
        if outcome.duplicate or not any(reply.strip() for reply in outcome.replies):
            return
        await asyncio.to_thread(_enqueue_replies, server[APP], parsed, outcome)
        outbox = server.get(OUTBOX)
        if outbox is not None:
            outbox.kick()
    except Exception:  # noqa: BLE001 - nothing above this task would see the error
        log.exception("late WeChat reply to %s could not be queued", parsed.openid)


def _enqueue_replies(app: App, parsed: WeChatInbound, outcome: Outcome) -> None:
    now = app.clock()
    # Keyed by the push: a second late delivery of the same push queues nothing twice.
    push = hashlib.sha256((parsed.inbound.provider_message_id or "").encode()).hexdigest()[:32]
    with session_scope(app.sessions) as session:
        for index, reply in enumerate(outcome.replies):
            if not reply.strip():
                continue
            enqueue(session, channel="wechat", address=parsed.openid, text=reply, kind="reply",
                    now=now, conversation_id=outcome.conversation_id,
                    resident_id=outcome.resident_id,
                    dedupe_key=f"wechat-reply:{push}:{index}")


def _store_hint(app: App, parsed: WeChatInbound, hint: str | None) -> bool:
    """Store a push the bot does not see, and the hint answering it; True for a repeat."""
    now = app.clock()
    inbound = parsed.inbound
    with session_scope(app.sessions) as session:
        resident = find_or_create_resident(session, now=now, wechat_openid=parsed.openid)
        message, duplicate = record_inbound(
            session, channel=inbound.channel, sender_key=inbound.sender_key, text=inbound.text,
            now=now, provider_message_id=inbound.provider_message_id, payload=inbound.payload,
            resident=resident)
        if duplicate:
            return True
        if parsed.msg_type != "event":
            # A message (even one we cannot read) opens WeChat's 48-hour window; events do not.
            record_window_inbound(session, openid=parsed.openid, at=now)
        if hint is not None:
            conversation = session.get(Conversation, message.conversation_id)
            assert conversation is not None
            record_outbound(session, conversation=conversation, text=hint, now=now)
        return False


async def drain(timeout_s: float = 10.0) -> None:
    """Let late replies still waiting for the bot reach the outbox before shutdown."""
    if _PENDING:
        await asyncio.wait(set(_PENDING), timeout=timeout_s)


def routes() -> list[web.RouteDef]:
    """Return the GET (URL check) and POST (pushes) routes of /webhooks/wechat."""
    webhook = _Webhook(passive_reply_seconds())
    return [web.get(PATH, webhook.verify, allow_head=False), web.post(PATH, webhook.receive)]
