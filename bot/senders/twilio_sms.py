"""Send outbox texts as SMS through Twilio's Messages API, with twilio's own client.

The client is synchronous (requests), so each send runs in a worker thread. Errors
are sorted into the two kinds the outbox understands: try again later (Twilio down,
rate limited, network trouble) or never (unsubscribed, not a phone number, refused).
"""
from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import requests
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from bot.conversations import InvalidPhone, normalize_phone
from bot.db import session_scope
from bot.models import SmsOptOut
from bot.outbox import RetryLater, Undeliverable
from bot.settings import TwilioSettings
from channels.twilio_sms import fit_segments

log = logging.getLogger(__name__)

TWILIO_API = "https://api.twilio.com"
TIMEOUT_S = 15.0
# Twilio error codes (https://www.twilio.com/docs/api/errors) that name the recipient.
UNSUBSCRIBED = 21610
INVALID_NUMBERS = frozenset({21211, 21614})
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class BaseUrlHttpClient(TwilioHttpClient):
    """TwilioHttpClient that sends to another base URL: a regional proxy, or a test fake."""

    def __init__(self, api_base: str, *, timeout: float = TIMEOUT_S) -> None:
        super().__init__(timeout=timeout)
        self.api_base = api_base.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if url.startswith(TWILIO_API):
            url = self.api_base + url[len(TWILIO_API):]
        return super().request(method, url, *args, **kwargs)


def e164(address: str) -> str:
    """Return a stored phone as Twilio wants it: 13800000000 -> +8613800000000.

    Numbers already starting with + pass unchanged; a landline 057188001234 loses its
    trunk 0 (+8657188001234).
    """
    compact = re.sub(r"[\s\-()（）]", "", address)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if compact.startswith("+"):
        if _E164.fullmatch(compact):
            return compact
        raise Undeliverable(f"{_mask(address)} is not an international number")
    try:
        digits = normalize_phone(compact)
    except InvalidPhone as exc:
        raise Undeliverable(f"{_mask(address)} is not a phone number SMS can reach") from exc
    return "+86" + (digits[1:] if digits.startswith("0") else digits)


def _mask(address: str) -> str:
    # Phone numbers are personal data: logs and stored errors keep only the last four digits.
    return "*" * max(0, len(address) - 4) + address[-4:]


def opt_out_key(address: str) -> str:
    """Return the key the hub stores an opt-out under: the normalized digits if Chinese."""
    try:
        return normalize_phone(address)
    except InvalidPhone:
        return address.strip()


class TwilioSmsSender:
    """The outbox's Sender for channel "sms"."""

    channel = "sms"

    def __init__(self, settings: TwilioSettings, sessions: sessionmaker,
                 *, client: Client | None = None) -> None:
        self._settings = settings
        self._sessions = sessions
        self._client = client or Client(
            settings.account_sid,
            settings.auth_token.reveal(),
            http_client=BaseUrlHttpClient(settings.api_base),
            # Our settings, not the process environment, decide region and edge (a stray
            # TWILIO_EDGE would send requests past api_base).
            environment={"TWILIO_ACCOUNT_SID": settings.account_sid},
        )

    async def send(self, address: str, text: str) -> str:
        """Send text (split into bodies of two segments at most); return the first SID."""
        to = e164(address)
        if await asyncio.to_thread(self._opted_out, address):
            raise Undeliverable(f"{_mask(address)} sent 退订 and receives no SMS")
        bodies = fit_segments(text, max_segments=2)
        if not bodies:
            raise Undeliverable("the text is empty")
        sids = [await asyncio.to_thread(self._create, to, body) for body in bodies]
        return sids[0]

    async def close(self) -> None:
        """Release the pooled HTTP connections; the outbox calls this when it stops."""
        session = getattr(self._client.http_client, "session", None)
        if session is not None:
            session.close()

    def _opted_out(self, address: str) -> bool:
        keys = {opt_out_key(address), address.strip()}
        with session_scope(self._sessions) as session:
            found = session.execute(
                select(SmsOptOut.phone).where(SmsOptOut.phone.in_(keys)).limit(1)
            ).first()
        return found is not None

    def _create(self, to: str, body: str) -> str:
        try:
            message = self._client.messages.create(
                to=to, from_=self._settings.from_number, body=body
            )
        except TwilioRestException as exc:
            raise classify(exc, to) from exc
        except requests.RequestException as exc:
            raise RetryLater(f"Twilio unreachable: {type(exc).__name__}") from exc
        except (TwilioException, ValueError) as exc:
            # An answer that is not Twilio's JSON: a proxy error page, most likely.
            raise RetryLater(f"Twilio answered something unreadable: {exc}") from exc
        if not message.sid:
            raise RetryLater("Twilio accepted the message but returned no SID")
        return message.sid


def classify(exc: TwilioRestException, to: str) -> RetryLater | Undeliverable:
    """Turn Twilio's error into the outbox's: passing trouble, or this number never works."""
    where = _mask(to)
    if exc.status >= 500 or exc.status == 429:
        return RetryLater(f"Twilio HTTP {exc.status} (code {exc.code})")
    if exc.code == UNSUBSCRIBED:
        return Undeliverable(f"{where} unsubscribed from this number at the carrier (21610)")
    if exc.code in INVALID_NUMBERS:
        return Undeliverable(f"{where} is not a number Twilio can text (code {exc.code})")
    return Undeliverable(f"Twilio refused the message: HTTP {exc.status}, code {exc.code}")
