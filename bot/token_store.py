"""WeChat's access token in Redis, shared by every hub process of one Official Account.

WeChat revokes the previous token whenever a new one is fetched, so two processes that
each fetch their own keep knocking each other's token out. Here exactly one process
fetches at a time (a short SET NX lock); the others wait for the token it stores. The
in-process cache (channels.wechat.InProcessAccessTokenCache) is the embedded default.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from datetime import timedelta

from redis import asyncio as aioredis

from channels.wechat import TokenFetcher, TokenFetchError, fetch_usable

LOCK_TTL = timedelta(seconds=15)
WAIT_STEP_S = 0.05
# Release the lock only if it is still ours (it may have expired and been taken over).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisAccessTokenCache:
    """AccessTokenCache kept under one Redis key per app id, refreshed under a lock."""

    def __init__(self, redis_url: str, *, app_id: str, fetcher: TokenFetcher,
                 margin: timedelta = timedelta(minutes=5), prefix: str = "linli:wechat") -> None:
        self._redis = aioredis.from_url(redis_url, decode_responses=True)
        self._fetcher = fetcher
        self._margin = margin
        self._key = f"{prefix}:token:{app_id}"
        self._lock_key = f"{prefix}:token-lock:{app_id}"

    async def get(self) -> str:
        """Return the shared token, fetching one if there is none."""
        token = await self._redis.get(self._key)
        return token if token else await self.refresh(stale=None, only_if_missing=True)

    async def refresh(self, *, stale: str | None = None, only_if_missing: bool = False) -> str:
        """Fetch a new token unless another process already replaced `stale`."""
        deadline = time.monotonic() + LOCK_TTL.total_seconds()
        mine = secrets.token_hex(8)
        while True:
            current = await self._redis.get(self._key)
            if current and (only_if_missing or (stale is not None and current != stale)):
                return current
            if await self._redis.set(self._lock_key, mine, nx=True,
                                     px=int(LOCK_TTL.total_seconds() * 1000)):
                try:
                    # Another process may have stored a fresh token just before our lock.
                    current = await self._redis.get(self._key)
                    if current and (only_if_missing or (stale is not None and current != stale)):
                        return current
                    return await self._fetch()
                finally:
                    await self._redis.eval(_RELEASE, 1, self._lock_key, mine)
            if time.monotonic() > deadline:
                raise TokenFetchError("another process holds the token lock and stored nothing")
            await asyncio.sleep(WAIT_STEP_S)
            only_if_missing = only_if_missing or stale is None

    async def _fetch(self) -> str:
        token, usable = await fetch_usable(self._fetcher, self._margin)
        await self._redis.set(self._key, token, px=int(usable.total_seconds() * 1000))
        return token

    async def forget(self) -> None:
        """Drop the stored token (tests, or after rotating the app secret)."""
        await self._redis.delete(self._key)

    async def close(self) -> None:
        await self._redis.close()
