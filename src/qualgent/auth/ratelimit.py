"""Rate limits with the ``limits`` library: in memory, or in Redis so that processes share them.

A moving window: at most N requests in any one-second span, so a burst cannot straddle two fixed
windows and get 2N through.

In memory we use the library's synchronous storage: its asyncio memory storage starts an expiry task
with a thread-pool hop on nearly every call, which cost more than the rest of a status request. The
synchronous one keeps the same moving windows and expires keys from a timer thread; a call is a few
microseconds of dictionary work, fine to make from the event loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond, WindowStats
from limits import strategies as sync_strategies
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import MemoryStorage


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_seconds))
        return headers


class _Limiter:
    """The moving-window limiter, in Redis (async) or in memory (sync, see the module's note)."""

    def __init__(self, redis_url: str | None) -> None:
        self.storage: Any
        if redis_url:
            uri = redis_url if redis_url.startswith("async+") else "async+" + redis_url
            self.storage = RedisStorage(uri, implementation="redispy")
            self._async: MovingWindowRateLimiter | None = MovingWindowRateLimiter(self.storage)
        else:
            self.storage = MemoryStorage()
            self._async = None
            self._sync = sync_strategies.MovingWindowRateLimiter(self.storage)

    async def hit(self, item: RateLimitItem, key: str) -> bool:
        if self._async is not None:
            return await self._async.hit(item, key)
        return self._sync.hit(item, key)

    async def test(self, item: RateLimitItem, key: str) -> bool:
        if self._async is not None:
            return await self._async.test(item, key)
        return self._sync.test(item, key)

    async def get_window_stats(self, item: RateLimitItem, key: str) -> WindowStats:
        if self._async is not None:
            return await self._async.get_window_stats(item, key)
        return self._sync.get_window_stats(item, key)

    async def check(self) -> bool:
        if self._async is not None:
            return bool(await self.storage.check())
        return bool(self.storage.check())

    async def reset(self) -> None:
        if self._async is not None:
            await self.storage.reset()
        else:
            self.storage.reset()


class RateLimiter:
    def __init__(self, redis_url: str | None, auth_failures_per_minute: int) -> None:
        self._limiter = _Limiter(redis_url)
        self._auth_failures = RateLimitItemPerMinute(auth_failures_per_minute, namespace="qg-authfail")
        self._items: dict[int, RateLimitItemPerSecond] = {}

    def _item(self, per_second: int) -> RateLimitItemPerSecond:
        item = self._items.get(per_second)
        if item is None:
            item = self._items[per_second] = RateLimitItemPerSecond(per_second, namespace="qg-key")
        return item

    async def hit_key(self, key_id: str, per_second: int) -> Verdict:
        item = self._item(per_second)
        allowed = await self._limiter.hit(item, key_id)
        stats = await self._limiter.get_window_stats(item, key_id)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return Verdict(allowed, per_second, stats.remaining, reset if not allowed else max(reset, 1))

    async def auth_failures_exceeded(self, address: str) -> Verdict | None:
        """A verdict to answer with when this address has failed to authenticate too often."""
        if await self._limiter.test(self._auth_failures, address):
            return None
        stats = await self._limiter.get_window_stats(self._auth_failures, address)
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        return Verdict(False, self._auth_failures.amount, 0, reset)

    async def record_auth_failure(self, address: str) -> None:
        await self._limiter.hit(self._auth_failures, address)

    async def check(self) -> bool:
        return await self._limiter.check()

    async def reset(self) -> None:
        await self._limiter.reset()
