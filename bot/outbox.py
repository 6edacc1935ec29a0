"""The outbox: every message owed to a resident outside a live reply, stored then delivered.

A status update is written in the same transaction as the change it reports; the
`Outbox` worker in the hub process delivers it through the resident's channel and
retries with back-off while a provider is down. Nothing is dropped: a message that
cannot be delivered at all ends `failed`, with the reason, for agents to see.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.db import session_scope
from bot.models import OUTBOX_CHANNELS, OUTBOX_KINDS, OutboxMessage, Resident

log = logging.getLogger(__name__)


class SendError(Exception):
    """Base of the errors a Sender raises; the message is stored as last_error."""


class RetryLater(SendError):
    """A passing failure (timeout, HTTP 5xx, rate limit): try again after a back-off."""


class Undeliverable(SendError):
    """This message can never go out this way (bad address, opted out, channel off)."""


class WindowClosed(Undeliverable):
    """WeChat's customer-service window is closed: the message falls back to SMS."""


class Sender(Protocol):
    """Delivers one text to one address on one channel; returns the provider's message id."""

    channel: str

    async def send(self, address: str, text: str) -> str | None: ...


def enqueue(
    session: Session,
    *,
    channel: str,
    address: str,
    text: str,
    kind: str,
    now: datetime,
    resident_id: int | None = None,
    conversation_id: int | None = None,
    ticket_id: int | None = None,
    dedupe_key: str | None = None,
) -> OutboxMessage | None:
    """Store a message to deliver; None if one with the same dedupe_key already exists."""
    if channel not in OUTBOX_CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(OUTBOX_CHANNELS)}, got {channel!r}")
    if kind not in OUTBOX_KINDS:
        raise ValueError(f"kind must be one of {', '.join(OUTBOX_KINDS)}, got {kind!r}")
    if not address or not text.strip():
        raise ValueError("an outbox message needs an address and a text")
    message = OutboxMessage(
        channel=channel, address=address, text=text, kind=kind, status="pending", attempts=0,
        next_attempt_at=now, created_at=now, resident_id=resident_id,
        conversation_id=conversation_id, ticket_id=ticket_id, dedupe_key=dedupe_key,
    )
    try:
        with session.begin_nested():
            session.add(message)
    except IntegrityError:
        if dedupe_key is None:
            raise
        return None
    return message


# --- delivery -----------------------------------------------------------------------------

# Back-off after a failed attempt: 5 s, 10 s, 20 s ... capped at 15 minutes; never given up.
BACKOFF_FIRST_S = 5.0
BACKOFF_MAX_S = 900.0
# While one worker sends a message, others leave it alone for this long.
LEASE_S = 120.0
# A web-chat resident who is not connected is tried again this often (or on reconnect).
OFFLINE_RETRY_S = 60.0


class Offline(RetryLater):
    """The resident's web chat is not open; deliver when it is (no attempt counted)."""


def backoff(attempts: int) -> timedelta:
    """Return the wait before the next try after `attempts` failed ones."""
    return timedelta(seconds=min(BACKOFF_FIRST_S * 2 ** max(attempts - 1, 0), BACKOFF_MAX_S))


@dataclass(frozen=True)
class _Due:
    id: int
    channel: str
    address: str
    text: str
    resident_id: int | None
    attempts: int


class Outbox:
    """Deliver stored outbox messages from the hub process, retrying until they go out."""

    def __init__(self, sessions: sessionmaker, senders: dict[str, Sender], *,
                 clock: Callable[[], datetime], poll_s: float = 1.0, batch: int = 20) -> None:
        self._sessions = sessions
        self._senders = senders
        self._clock = clock
        self._poll_s = poll_s
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sender in self._senders.values():
            close = getattr(sender, "close", None)
            if close is not None:
                await close()

    def kick(self) -> None:
        """Look for due messages now instead of at the next poll."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # noqa: BLE001 - the worker must outlive any one bad message
                log.exception("outbox pass failed; trying again at the next poll")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)
            self._wake.clear()

    async def run_once(self, address: str | None = None) -> int:
        """Try every message that is due now (or every pending one for `address`)."""
        due = await asyncio.to_thread(self._claim, address)
        for message in due:
            await self._deliver(message)
        return len(due)

    def _claim(self, address: str | None) -> list[_Due]:
        now = self._clock()
        with session_scope(self._sessions) as session:
            query = select(OutboxMessage).where(OutboxMessage.status == "pending")
            if address is None:
                query = query.where(OutboxMessage.next_attempt_at <= now)
            else:
                query = query.where(OutboxMessage.address == address)
            rows = session.execute(
                query.order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(self._batch)
            ).scalars().all()
            claimed: list[_Due] = []
            for row in rows:
                # Claim by moving next_attempt_at: a second worker's UPDATE then matches nothing.
                taken = session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == row.id, OutboxMessage.status == "pending",
                           OutboxMessage.next_attempt_at == row.next_attempt_at)
                    .values(next_attempt_at=now + timedelta(seconds=LEASE_S))
                    .execution_options(synchronize_session=False)
                ).rowcount
                if taken:
                    claimed.append(_Due(row.id, row.channel, row.address, row.text,
                                        row.resident_id, row.attempts))
            return claimed

    async def _deliver(self, message: _Due) -> None:
        sender = self._senders.get(message.channel)
        try:
            if sender is None:
                raise Undeliverable(f"the {message.channel} channel is off on this installation")
            provider_id = await sender.send(message.address, message.text)
        except Offline as exc:
            await asyncio.to_thread(self._later, message, str(exc), count=False)
        except WindowClosed as exc:
            await asyncio.to_thread(self._fall_back, message, str(exc))
        except Undeliverable as exc:
            await asyncio.to_thread(self._fail, message, str(exc))
        except Exception as exc:  # noqa: BLE001 - RetryLater and anything unforeseen: retry
            log.warning("outbox %s via %s failed (%s); will retry", message.id, message.channel,
                        exc)
            await asyncio.to_thread(self._later, message, str(exc) or type(exc).__name__,
                                    count=True)
        else:
            await asyncio.to_thread(self._sent, message, provider_id)

    def _update(self, message_id: int, **values: Any) -> None:
        with session_scope(self._sessions) as session:
            row = session.get(OutboxMessage, message_id)
            assert row is not None
            for key, value in values.items():
                setattr(row, key, value)

    def _sent(self, message: _Due, provider_id: str | None) -> None:
        now = self._clock()
        self._update(message.id, status="sent", sent_at=now, attempts=message.attempts + 1,
                     provider_message_id=provider_id)

    def _later(self, message: _Due, error: str, *, count: bool) -> None:
        attempts = message.attempts + 1 if count else message.attempts
        wait = backoff(attempts) if count else timedelta(seconds=OFFLINE_RETRY_S)
        self._update(message.id, attempts=attempts, last_error=error[:255],
                     next_attempt_at=self._clock() + wait)

    def _fail(self, message: _Due, error: str) -> None:
        log.warning("outbox %s via %s cannot be delivered: %s", message.id, message.channel,
                    error)
        self._update(message.id, status="failed", attempts=message.attempts + 1,
                     last_error=error[:255])

    def _fall_back(self, message: _Due, error: str) -> None:
        """WeChat's window is closed: send the same text by SMS if the resident has a phone."""
        with session_scope(self._sessions) as session:
            row = session.get(OutboxMessage, message.id)
            resident = session.get(Resident, row.resident_id) if row and row.resident_id else None
            assert row is not None
            if resident is None or not resident.phone or "sms" not in self._senders:
                row.status, row.last_error = "failed", f"{error}; no phone for SMS"[:255]
                return
            row.channel, row.address, row.attempts = "sms", resident.phone, 0
            row.next_attempt_at = self._clock()
            row.last_error = f"{error}; sent by SMS instead"[:255]
        self.kick()
