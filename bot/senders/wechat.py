"""Deliver outbox messages through WeChat's customer-service API, inside the service window.

WeChat accepts customer-service messages only within 48 h of the follower's last message
and at most 5 per message (channels.wechat.ServiceWindow). The window is kept in the
`WeChatWindow` table so that every process sees the same count; a closed window is
reported as `WindowClosed` without calling WeChat, and the outbox falls back to SMS.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.db import session_scope
from bot.models import WeChatWindow
from bot.outbox import RetryLater, Undeliverable, WindowClosed
from bot.settings import WeChatSettings
from bot.token_store import RedisAccessTokenCache
from channels.wechat import (
    AccessTokenCache,
    FetchedToken,
    InProcessAccessTokenCache,
    ServiceWindow,
    TokenFetchError,
    api_error_kind,
    customer_service_payload,
    parse_token_response,
)

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0
# errcodes that no retry can fix: a wrong openid, and a follower who unfollowed (SMS may).
INVALID_OPENID = 40003
NOT_FOLLOWING = 43004


def record_window_inbound(session: Session, *, openid: str, at: datetime) -> None:
    """Open a fresh service window for a follower's message (not for menu clicks or events)."""
    row = session.get(WeChatWindow, openid)
    if row is None:
        try:
            with session.begin_nested():
                session.add(WeChatWindow(openid=openid, last_inbound_at=at, sent_since_inbound=0))
            return
        except IntegrityError:
            # Another message from the same follower created the row in between.
            row = session.get(WeChatWindow, openid)
            if row is None:
                raise
    window = ServiceWindow(row.last_inbound_at, row.sent_since_inbound)
    window.record_inbound(at)
    row.last_inbound_at, row.sent_since_inbound = window.last_inbound_at, window.sent_since_inbound


class WeChatSender:
    """Send one text to one follower (address = openid); raises bot.outbox's SendErrors."""

    channel = "wechat"

    def __init__(self, settings: WeChatSettings, *, sessions: sessionmaker,
                 clock: Callable[[], datetime], timeout_s: float = SEND_TIMEOUT_S,
                 tokens: AccessTokenCache | None = None, redis_url: str | None = None) -> None:
        self._settings = settings
        self._base = settings.api_base.rstrip("/")
        self._sessions = sessions
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._http: aiohttp.ClientSession | None = None
        # Exactly one fetcher per app id: WeChat revokes the old token on every fetch. With
        # several hub processes the token lives in Redis; alone, in this process.
        if tokens is None and redis_url:
            tokens = RedisAccessTokenCache(redis_url, app_id=settings.app_id,
                                           fetcher=self._fetch_token)
        self.tokens: AccessTokenCache = tokens or InProcessAccessTokenCache(
            fetcher=self._fetch_token, clock=clock)

    async def send(self, address: str, text: str) -> None:
        """Deliver `text` to the follower `address` now, or raise why it cannot go."""
        try:
            payload = customer_service_payload(address, text)
        except ValueError as exc:
            raise Undeliverable(str(exc)) from exc
        if not await asyncio.to_thread(self._window_open, address):
            raise WindowClosed("WeChat service window closed (48 h / 5 messages); send by SMS")
        token = await self._token(self.tokens.get)
        body = await self._post(token, payload)
        if api_error_kind(body) == "token":
            # Revoked or expired early (another fetcher?): one fresh token, one more try.
            stale = token
            token = await self._token(lambda: self.tokens.refresh(stale=stale))
            body = await self._post(token, payload)
        kind = api_error_kind(body)
        if kind == "ok":
            await asyncio.to_thread(self._count_sent, address)
            return None
        described = f"WeChat errcode {body.get('errcode')}: {str(body.get('errmsg', ''))[:120]}"
        if kind == "window" or body.get("errcode") == NOT_FOLLOWING:
            raise WindowClosed(described)
        if body.get("errcode") == INVALID_OPENID:
            raise Undeliverable(described)
        raise RetryLater(described)

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._http is not None:
            await self._http.close()
            self._http = None
        if isinstance(self.tokens, RedisAccessTokenCache):
            await self.tokens.close()

    # --- WeChat API -----------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self._http

    async def _token(self, obtain: Callable[[], Awaitable[str]]) -> str:
        try:
            return await obtain()
        except TokenFetchError as exc:
            raise RetryLater(f"no WeChat access token: {exc}") from exc
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            # Own wording: aiohttp's messages may quote the URL, which carries the secret.
            raise RetryLater(f"WeChat token request failed: {type(exc).__name__}") from exc

    async def _fetch_token(self) -> FetchedToken:
        params = {"grant_type": "client_credential", "appid": self._settings.app_id,
                  "secret": self._settings.app_secret.reveal()}
        async with self._client().get(f"{self._base}/cgi-bin/token", params=params) as response:
            if response.status != 200:
                raise TokenFetchError(f"token endpoint answered HTTP {response.status}")
            body = await response.json(content_type=None)
        if not isinstance(body, dict):
            raise TokenFetchError("token endpoint answered something other than a JSON object")
        return parse_token_response(body)

    async def _post(self, token: str, payload: dict[str, Any]) -> dict[str, Any]:
        # Raw UTF-8: WeChat shows \\uXXXX escapes literally instead of the Chinese text.
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        url = f"{self._base}/cgi-bin/message/custom/send"
        try:
            async with self._client().post(url, params={"access_token": token}, data=data,
                                           headers={"Content-Type": "application/json"}) as resp:
                status = resp.status
                raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RetryLater(f"WeChat send failed: {type(exc).__name__}") from exc
        if status >= 500 or status == 429:
            raise RetryLater(f"WeChat answered HTTP {status}")
        if status >= 400:
            raise Undeliverable(f"WeChat refused the request with HTTP {status}")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise RetryLater("WeChat answered something other than JSON") from exc
        if not isinstance(body, dict):
            raise RetryLater("WeChat answered something other than a JSON object")
        return body

    # --- service window -------------------------------------------------------------------

    def _window_open(self, openid: str) -> bool:
        with session_scope(self._sessions) as session:
            row = session.get(WeChatWindow, openid)
            if row is None:
                return False
            window = ServiceWindow(row.last_inbound_at, row.sent_since_inbound)
            return window.can_send(self._clock())

    def _count_sent(self, openid: str) -> None:
        # The message is out: a failure here must not make the outbox send it twice.
        try:
            with session_scope(self._sessions) as session:
                row = session.get(WeChatWindow, openid)
                if row is not None:
                    row.sent_since_inbound += 1
        except Exception:  # noqa: BLE001
            log.exception("sent to a WeChat follower but could not count it in the window")
