"""Conversation hub: store every inbound message first, then let the bot or a person answer.

Every channel hands the hub one `Inbound`. Before the bot sees a word the hub has stored
it (a provider retry is recognised and not answered twice), and it takes care of what is
the same on every channel: SMS opt-out, photos as evidence, answers to numbered choices
("1" for the first button), satisfaction ratings, phone linking, the WeChat service
window. Replies come back rendered for the channel the resident used.
"""
from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import evidence, linking
from bot.app import App
from bot.console_bus import ConsoleBus
from bot.conversations import find_or_create_resident, record_inbound, record_outbound
from bot.db import session_scope
from bot.handoff import queue
from bot.inbound import Inbound
from bot.models import Conversation, SmsOptOut, Ticket
from bot.senders.wechat import record_window_inbound
from bot.texts import text as domain_text
from bot.tickets import RatingNotAllowed, rate_ticket
from channels.menus import numbered_menu, read_menu_choice, spoken_menu
from channels.twilio_sms import is_start, is_stop
from nlu.distress import detect_distress

log = logging.getLogger(__name__)

# The NLU sees at most this much of a message; the whole message is always stored.
NLU_MAX_CHARS = 500
# Stored messages are capped so a hostile client cannot fill the disk with one request.
STORE_MAX_CHARS = 20_000
# Control and invisible characters; U+200D stays, it joins emoji such as 👨‍👩‍👧.
_CONTROL = re.compile(
    r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u200b\u200c\u200e\u200f"
    r"\u2028-\u202e\ufeff]"
)
# A choice payload the hub acts on itself instead of passing to Rasa: rate:<ticket id>:<1-5>.
_RATE = re.compile(r"^rate:(\d+):([1-5])$")

__all__ = ["Choice", "Hub", "Inbound", "Outcome", "RasaClient", "RasaUnavailable", "Reply",
           "clean_text", "render_reply"]


@dataclass(frozen=True)
class Choice:
    """One option the bot offers: what the resident sees, and what the bot receives."""

    title: str
    payload: str


@dataclass(frozen=True)
class Reply:
    """One bot message; channels without buttons show its choices as a numbered menu."""

    text: str
    choices: tuple[Choice, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What the hub did with an inbound message."""

    replies: list[str]  # rendered for the channel the message came in on
    conversation_id: int
    state: str
    duplicate: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    messages: list[Reply] = field(default_factory=list)
    ticket_number: str | None = None  # a work order created during this turn
    resident_id: int | None = None


def clean_text(raw: str) -> str:
    """Drop control and invisible characters and surrounding blanks; keep everything else."""
    cleaned = _CONTROL.sub(" ", unicodedata.normalize("NFC", raw))
    return re.sub(r"[ \t\r\n]+", " ", cleaned).strip()


def render_reply(reply: Reply, channel: str) -> str:
    """Render a reply for a channel: buttons on web chat, 回复1… by text, 请按一 by phone."""
    if not reply.choices:
        return reply.text
    titles = [choice.title for choice in reply.choices]
    if channel == "voice":
        return reply.text + spoken_menu(titles)
    if channel == "web":
        return reply.text
    return numbered_menu(reply.text, titles)


class RasaUnavailable(RuntimeError):
    """The Rasa server did not answer; the message is stored and the resident told to retry."""


class RasaClient:
    """Talk to the Rasa server over its REST channel, carrying the resident's metadata."""

    def __init__(self, base_url: str, *, timeout_s: float = 15.0) -> None:
        self._url = base_url.rstrip("/") + "/webhooks/rest/webhook"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, *, sender: str, message: str, metadata: dict[str, Any]) -> list[Reply]:
        """Send one turn and return the bot's replies with any buttons it offered."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        payload = {"sender": sender, "message": message, "metadata": metadata}
        try:
            async with self._session.post(self._url, json=payload) as response:
                if response.status != 200:
                    raise RasaUnavailable(f"Rasa answered HTTP {response.status}")
                body = await response.json()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RasaUnavailable(str(exc) or type(exc).__name__) from exc
        return [_reply_of(item) for item in body if item.get("text")]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _reply_of(item: dict[str, Any]) -> Reply:
    choices = tuple(
        Choice(str(button["title"]), str(button["payload"]))
        for button in item.get("buttons") or ()
        if isinstance(button, dict) and button.get("title") and button.get("payload")
    )
    return Reply(item["text"], choices)


@dataclass(frozen=True)
class _Stored:
    conversation_id: int
    state: str
    duplicate: bool
    resident_id: int | None
    photos: int  # photos this message carried, now stored as evidence


@dataclass(frozen=True)
class _Before:
    """What the hub decided before asking the bot: a reply of its own, or the bot's input."""

    replies: list[Reply] | None
    message: str = ""


class Hub:
    """Decide who answers a resident: the Rasa bot, or the agents' queue after a handoff."""

    def __init__(self, app: App, rasa: RasaClient, bus: ConsoleBus | None = None) -> None:
        self._app = app
        self._rasa = rasa
        self._sms_available = app.settings.twilio is not None
        self._bus = bus or ConsoleBus()

    async def handle(self, inbound: Inbound) -> Outcome:
        """Store the message, then answer it; a repeat of a stored message is not answered again."""
        started = self._app.clock()
        cleaned = clean_text(inbound.text)[:STORE_MAX_CHARS]
        stored = await asyncio.to_thread(self._store_inbound, inbound, cleaned, started)
        if stored.duplicate:
            return Outcome([], stored.conversation_id, stored.state, duplicate=True,
                           resident_id=stored.resident_id)
        if stored.state in ("queued", "agent"):
            # The agents see what a waiting resident adds, as they add it.
            self._bus.publish({"type": "message", "conversation_id": stored.conversation_id,
                               "direction": "in", "channel": inbound.channel,
                               "text": cleaned, "at": started.isoformat(),
                               "state": stored.state})
        before = await asyncio.to_thread(self._before_bot, inbound, cleaned, stored)
        if before.replies is not None:
            return await self._answer(inbound, stored, before.replies, started)

        metadata = {
            "channel": inbound.channel,
            "conversation_id": stored.conversation_id,
            "resident_id": stored.resident_id,
            "phone": inbound.phone,
        }
        try:
            replies = await self._rasa.send(
                sender=f"conv-{stored.conversation_id}",
                message=before.message[:NLU_MAX_CHARS],
                metadata=metadata,
            )
        except RasaUnavailable as exc:
            log.warning("rasa unavailable for conversation %s: %s", stored.conversation_id, exc)
            hotline = self._app.community.hotline
            busy = Reply(domain_text("utter_service_busy", hotline=hotline))
            return await self._answer(inbound, stored, [busy], started)
        if not replies:
            # Rasa answered nothing (an action failed): the resident must never hear silence.
            replies = [Reply(domain_text("utter_default"))]
        replies += await asyncio.to_thread(self._escalate, stored.conversation_id, cleaned)
        return await self._answer(inbound, stored, replies, started)

    async def close(self) -> None:
        await self._rasa.close()

    # --- before the bot -------------------------------------------------------------------

    def _store_inbound(self, inbound: Inbound, cleaned: str, now: datetime) -> _Stored:
        with session_scope(self._app.sessions) as session:
            resident = None
            if inbound.phone or inbound.wechat_openid:
                resident = find_or_create_resident(
                    session, now=now, phone=inbound.phone, wechat_openid=inbound.wechat_openid
                )
            message, duplicate = record_inbound(
                session,
                channel=inbound.channel,
                sender_key=inbound.sender_key,
                text=cleaned,
                now=now,
                provider_message_id=inbound.provider_message_id,
                payload=inbound.payload,
                resident=resident,
            )
            conversation = session.get(Conversation, message.conversation_id)
            assert conversation is not None
            photos = 0
            if not duplicate:
                photos = evidence.store_photos(session, message=message, payload=inbound.payload,
                                               now=now)
                if inbound.channel == "wechat" and not (inbound.payload or {}).get("event"):
                    record_window_inbound(session, openid=inbound.sender_key, at=now)
            return _Stored(conversation.id, conversation.state, duplicate,
                           conversation.resident_id, photos)

    def _before_bot(self, inbound: Inbound, cleaned: str, stored: _Stored) -> _Before:
        now = self._app.clock()
        with session_scope(self._app.sessions) as session:
            conversation = session.get(Conversation, stored.conversation_id)
            assert conversation is not None
            if inbound.channel == "sms" and inbound.phone:
                opt = _sms_keyword(session, inbound.phone, cleaned, now)
                if opt is not None:
                    return _Before([Reply(domain_text(opt))])
            offered = conversation.pending_choices or []
            conversation.pending_choices = None
            if stored.photos and not cleaned:
                return _Before([Reply(evidence.acknowledge(session, conversation, now=now))])
            if conversation.state == "queued":
                if detect_distress(cleaned) is not None:
                    # Upset while waiting: move up the queue (bot.handoff.queue only raises).
                    queue(session, conversation=conversation, reason="distress", now=now)
                return _Before([Reply(domain_text("utter_queued_ack"))])
            if conversation.state == "agent":
                return _Before([])  # a person is answering; the bot stays quiet
            payload = _chosen(offered, cleaned)
            if payload is not None and (rated := _RATE.match(payload)):
                return _Before([_rate(session, int(rated.group(1)), int(rated.group(2)), now)])
            reply = linking.handle(session, resident_id=stored.resident_id,
                                   channel=inbound.channel, text=cleaned, now=now,
                                   sms_available=self._sms_available,
                                   hotline=self._app.community.hotline)
            if reply is not None:
                return _Before([Reply(reply)])
            if payload is not None:
                return _Before(None, payload)
            if not cleaned:
                # Emoji or punctuation alone still go to the bot, which asks politely; nothing
                # at all (an empty SMS, a blank line) is answered here.
                return _Before([Reply(domain_text("utter_empty_message"))])
            return _Before(None, cleaned)

    def _escalate(self, conversation_id: int, text: str) -> list[Reply]:
        """Anger or distress: queue the resident for a person while the bot still answers."""
        if detect_distress(text) is None:
            return []
        with session_scope(self._app.sessions) as session:
            conversation = session.get(Conversation, conversation_id)
            if conversation is None or conversation.state in ("agent", "closed"):
                return []
            was = conversation.state
            minutes = queue(session, conversation=conversation, reason="distress",
                            now=self._app.clock())
        if was != "bot":
            return []  # an action queued it this turn and has already said how long
        return [Reply(domain_text("utter_handoff_distress", wait=f"{minutes}分钟"))]

    # --- after -----------------------------------------------------------------------------

    async def _answer(self, inbound: Inbound, stored: _Stored, replies: list[Reply],
                      started: datetime) -> Outcome:
        rendered = [render_reply(reply, inbound.channel) for reply in replies]
        state, number = await asyncio.to_thread(
            self._store_outbound, stored.conversation_id, replies, rendered, started)
        if state == "queued" and stored.state == "bot":
            self._bus.publish({"type": "queued", "conversation_id": stored.conversation_id,
                               "channel": inbound.channel})
        return Outcome(rendered, stored.conversation_id, state, messages=replies,
                       ticket_number=number, resident_id=stored.resident_id)

    def _store_outbound(self, conversation_id: int, replies: list[Reply], rendered: list[str],
                        started: datetime) -> tuple[str, str | None]:
        now = self._app.clock()
        with session_scope(self._app.sessions) as session:
            conversation = session.get(Conversation, conversation_id)
            assert conversation is not None
            for reply, text in zip(replies, rendered, strict=True):
                payload = ({"choices": [c.title for c in reply.choices]} if reply.choices
                           else None)
                record_outbound(session, conversation=conversation, text=text, now=now,
                                payload=payload)
            offered = next((reply.choices for reply in reversed(replies) if reply.choices), ())
            conversation.pending_choices = (
                [{"title": c.title, "payload": c.payload} for c in offered] or None)
            ticket = session.execute(
                select(Ticket).where(Ticket.conversation_id == conversation_id,
                                     Ticket.created_at >= started)
                .order_by(Ticket.id.desc()).limit(1)
            ).scalar_one_or_none()
            if ticket is not None:
                # Photos and a shared location sent before the order existed belong to it.
                evidence.attach_to_new_ticket(session, ticket=ticket, conversation=conversation,
                                              now=now)
            return conversation.state, ticket.number if ticket is not None else None


def _chosen(offered: list[dict[str, str]], text: str) -> str | None:
    """Return the payload of the offered choice the resident picked ("1", "确认"), if any."""
    if not offered or not text or len(offered) > 9:
        return None
    index = read_menu_choice(text, len(offered), options=[c["title"] for c in offered])
    return offered[index - 1]["payload"] if index else None


def _sms_keyword(session: Session, phone: str, text: str, now: datetime) -> str | None:
    """Honour 退订/STOP and 订阅/START; return the response to send, or None."""
    if is_stop(text):
        if session.get(SmsOptOut, phone) is None:
            session.add(SmsOptOut(phone=phone, opted_out_at=now))
        return "utter_sms_opted_out"
    if is_start(text):
        opted_out = session.get(SmsOptOut, phone)
        if opted_out is not None:
            session.delete(opted_out)
            return "utter_sms_opted_in"
    return None


def _rate(session: Session, ticket_id: int, score: int, now: datetime) -> Reply:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        return Reply(domain_text("utter_default"))
    try:
        with session.begin_nested():
            rate_ticket(session, ticket=ticket, score=score, actor="resident", now=now)
    except RatingNotAllowed:
        return Reply(domain_text("utter_rating_not_open", number=ticket.number))
    if score <= 2:
        return Reply(domain_text("utter_rating_sorry"))
    return Reply(domain_text("utter_rating_thanks"))

