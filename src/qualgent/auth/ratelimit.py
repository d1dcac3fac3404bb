"""Rate limits with the ``limits`` library: in memory, or in Redis so that processes share them.

A moving window: at most N requests in any one-second span, so a burst cannot straddle two fixed
windows and get 2N through.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter


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


def make_storage(redis_url: str | None) -> Storage:
    if redis_url:
        uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
        return RedisStorage(uri, implementation="redispy")
    return MemoryStorage()


class RateLimiter:
    def __init__(self, storage: Storage, auth_failures_per_minute: int) -> None:
        self.storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
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
        return bool(await self.storage.check())

    async def reset(self) -> None:
        await self.storage.reset()
