"""Conversation hub: store every inbound message first, then let the bot or a person answer."""
from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bot.app import App
from bot.conversations import (
    find_or_create_resident,
    record_inbound,
    record_outbound,
)
from bot.db import session_scope
from bot.models import Conversation
from bot.texts import text as domain_text

log = logging.getLogger(__name__)

# The NLU sees at most this much of a message; the whole message is always stored.
NLU_MAX_CHARS = 500
# Stored messages are capped so a hostile client cannot fill the disk with one request.
STORE_MAX_CHARS = 20_000
_CONTROL = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u200b-\u200f\u2028-\u202e\ufeff]")


@dataclass(frozen=True)
class Inbound:
    """One message from a resident, already verified and normalised by its channel."""

    channel: str
    sender_key: str
    text: str
    provider_message_id: str | None = None
    phone: str | None = None
    wechat_openid: str | None = None
    payload: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """What the hub did with an inbound message."""

    replies: list[str]
    conversation_id: int
    state: str
    duplicate: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def clean_text(raw: str) -> str:
    """Drop control and invisible characters and surrounding blanks; keep everything else."""
    cleaned = _CONTROL.sub(" ", unicodedata.normalize("NFC", raw))
    return re.sub(r"[ \t\r\n]+", " ", cleaned).strip()


class RasaUnavailable(RuntimeError):
    """The Rasa server did not answer; the message is stored and the resident told to retry."""


class RasaClient:
    """Talk to the Rasa server over its REST channel, carrying the resident's metadata."""

    def __init__(self, base_url: str, *, timeout_s: float = 15.0) -> None:
        self._url = base_url.rstrip("/") + "/webhooks/rest/webhook"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, *, sender: str, message: str, metadata: dict[str, Any]) -> list[str]:
        """Send one turn and return the bot's text replies."""
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
        return [item["text"] for item in body if item.get("text")]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class Hub:
    """Decide who answers a resident: the Rasa bot, or the agents' queue after a handoff."""

    def __init__(self, app: App, rasa: RasaClient) -> None:
        self._app = app
        self._rasa = rasa

    async def handle(self, inbound: Inbound) -> Outcome:
        """Store the message, then answer it; a repeat of a stored message is not answered again."""
        cleaned = clean_text(inbound.text)[:STORE_MAX_CHARS]
        stored = await asyncio.to_thread(self._store_inbound, inbound, cleaned)
        conversation_id, state, duplicate, resident_id = stored
        if duplicate:
            return Outcome([], conversation_id, state, duplicate=True)

        # Emoji or punctuation alone still go to the bot, which asks politely; nothing at all
        # is answered here.
        if not cleaned and not inbound.payload:
            return await self._answer(conversation_id, [domain_text("utter_empty_message")])
        if state in ("queued", "agent"):
            return await self._answer(conversation_id, [domain_text("utter_queued_ack")])

        metadata = {
            "channel": inbound.channel,
            "conversation_id": conversation_id,
            "resident_id": resident_id,
            "phone": inbound.phone,
        }
        try:
            replies = await self._rasa.send(
                sender=f"conv-{conversation_id}",
                message=cleaned[:NLU_MAX_CHARS],
                metadata=metadata,
            )
        except RasaUnavailable as exc:
            log.warning("rasa unavailable for conversation %s: %s", conversation_id, exc)
            hotline = self._app.community.hotline
            return await self._answer(
                conversation_id, [domain_text("utter_service_busy", hotline=hotline)]
            )
        if not replies:
            # Rasa answered nothing (an action failed): the resident must never hear silence.
            replies = [domain_text("utter_default")]
        return await self._answer(conversation_id, replies)

    async def close(self) -> None:
        await self._rasa.close()

    def _store_inbound(self, inbound: Inbound, cleaned: str) -> tuple[int, str, bool, int | None]:
        now = self._app.clock()
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
            return conversation.id, conversation.state, duplicate, conversation.resident_id

    async def _answer(self, conversation_id: int, replies: list[str]) -> Outcome:
        state = await asyncio.to_thread(self._store_outbound, conversation_id, replies)
        return Outcome(replies, conversation_id, state)

    def _store_outbound(self, conversation_id: int, replies: list[str]) -> str:
        now = self._app.clock()
        with session_scope(self._app.sessions) as session:
            conversation = session.get(Conversation, conversation_id)
            assert conversation is not None
            for reply in replies:
                record_outbound(session, conversation=conversation, text=reply, now=now)
            return conversation.state
