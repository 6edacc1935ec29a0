"""WeChat's access token shared through the Redis at 127.0.0.1:6379 (skipped if it is down).

Two caches stand for two hub processes of one Official Account: between them WeChat
must see exactly one fetch per refresh, or each fetch would revoke the other's token.
"""
from __future__ import annotations

import asyncio
import os
import secrets

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.token_store import RedisAccessTokenCache
from channels.wechat import FetchedToken, TokenFetchError

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("LINLI_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def prefix() -> str:
    try:
        Redis.from_url(REDIS_URL).ping()
    except RedisConnectionError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL} ({exc}); start it or set "
                    f"LINLI_TEST_REDIS_URL")
    name = f"linli-test-{secrets.token_hex(4)}"
    yield name
    client = Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{name}:*"):
        client.delete(key)


class WeChatTokens:
    """Counts fetches; each one issues a new token, as WeChat does."""

    def __init__(self, *, delay_s: float = 0.05, expires_in: int = 7200) -> None:
        self.fetches = 0
        self.delay_s = delay_s
        self.expires_in = expires_in

    async def __call__(self) -> FetchedToken:
        self.fetches += 1
        number = self.fetches
        await asyncio.sleep(self.delay_s)
        return FetchedToken(f"token-{number}", self.expires_in)


def _pair(prefix: str, wechat: WeChatTokens) -> tuple[RedisAccessTokenCache, ...]:
    return tuple(RedisAccessTokenCache(REDIS_URL, app_id="wx1", fetcher=wechat, prefix=prefix)
                 for _ in range(2))


def test_two_processes_asking_at_once_cause_one_fetch(prefix: str) -> None:
    wechat = WeChatTokens(delay_s=0.2)

    async def run() -> list[str]:
        first, second = _pair(prefix, wechat)
        try:
            return list(await asyncio.gather(*(cache.get() for cache in (first, second)
                                               for _ in range(5))))
        finally:
            await first.close()
            await second.close()

    assert asyncio.run(run()) == ["token-1"] * 10
    assert wechat.fetches == 1


def test_a_rejected_token_is_refreshed_once_for_everybody(prefix: str) -> None:
    wechat = WeChatTokens()

    async def run() -> tuple[str, str, str]:
        first, second = _pair(prefix, wechat)
        try:
            old = await first.get()
            # Both processes saw WeChat reject the same token (errcode 40001) at once.
            renewed = await asyncio.gather(first.refresh(stale=old), second.refresh(stale=old))
            return old, *renewed
        finally:
            await first.close()
            await second.close()

    assert asyncio.run(run()) == ("token-1", "token-2", "token-2")
    assert wechat.fetches == 2


def test_the_token_expires_a_margin_before_wechat_says(prefix: str) -> None:
    wechat = WeChatTokens(expires_in=7200)

    async def run() -> int:
        cache = RedisAccessTokenCache(REDIS_URL, app_id="wx1", fetcher=wechat, prefix=prefix)
        try:
            await cache.get()
            return await cache._redis.pttl(f"{prefix}:token:wx1")
        finally:
            await cache.close()

    ttl_ms = asyncio.run(run())
    assert 6_890_000 < ttl_ms <= 6_900_000  # 7200 s less the 5-minute margin


def test_a_failed_fetch_stores_nothing_and_frees_the_lock(prefix: str) -> None:
    calls = 0

    async def failing() -> FetchedToken:
        nonlocal calls
        calls += 1
        raise TokenFetchError("WeChat errcode 40013: invalid appid")

    async def run() -> None:
        cache = RedisAccessTokenCache(REDIS_URL, app_id="wx1", fetcher=failing, prefix=prefix)
        try:
            for _ in range(2):
                with pytest.raises(TokenFetchError):
                    await cache.get()
        finally:
            await cache.close()

    asyncio.run(run())
    assert calls == 2  # the second try was not blocked by a leftover lock
    assert Redis.from_url(REDIS_URL).get(f"{prefix}:token:wx1") is None
