"""Rate limits: a moving window, in Redis with the ``limits`` library so that processes share it, or in
this process's memory.

A moving window: at most N requests in any one-second span, so a burst cannot straddle two fixed
windows and get 2N through.

In memory we keep the windows ourselves (``MemoryWindows``) rather than use the library's memory
storage: its asyncio storage hops to a thread pool on nearly every call, and its synchronous one
counts a window by walking every entry in it (a key allowed thousands of requests a second walks
thousands per request) and starts a timer thread every 10 ms to expire entries. Both cost more than
the rest of a status request. A deque of timestamps per key does the same job in constant time.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond, WindowStats
from limits.aio.storage import RedisStorage
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


class MemoryWindows:
    """Moving windows in this process: per key, the times of the hits still inside the window.

    A hit drops the times that left the window (from the old end of the deque), then is allowed when
    fewer than ``limit`` remain. Keys whose window emptied are swept out now and then.
    """

    _SWEEP_EVERY = 10_000

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._calls = 0

    def _window(self, key: str, seconds: float, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
        start = now - seconds
        while hits and hits[0] <= start:
            hits.popleft()
        return hits

    def hit(self, key: str, limit: int, seconds: float) -> WindowStats:
        """Count a hit if the window has room; the stats say whether it had (remaining > -1)."""
        now = time.time()
        self._calls += 1
        if self._calls % self._SWEEP_EVERY == 0:
            self._sweep(now)
        hits = self._window(key, seconds, now)
        allowed = len(hits) < limit
        if allowed:
            hits.append(now)
        reset = (hits[0] if hits else now) + seconds
        return WindowStats(reset, limit - len(hits) if allowed else -1)

    def peek(self, key: str, limit: int, seconds: float) -> WindowStats:
        now = time.time()
        hits = self._window(key, seconds, now)
        return WindowStats((hits[0] if hits else now) + seconds, limit - len(hits))

    def _sweep(self, now: float) -> None:
        # Windows are at most a minute long here; a key not hit for longer holds nothing.
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] < now - 3600]:
            del self._hits[key]

    def reset(self) -> None:
        self._hits.clear()


class _Limiter:
    """The moving-window limiter, in Redis (async, ``limits``) or in memory (see the module's note)."""

    def __init__(self, redis_url: str | None) -> None:
        self.storage: Any = None
        self._async: MovingWindowRateLimiter | None = None
        self._memory = MemoryWindows()
        if redis_url:
            uri = redis_url if redis_url.startswith("async+") else "async+" + redis_url
            self.storage = RedisStorage(uri, implementation="redispy")
            self._async = MovingWindowRateLimiter(self.storage)

    async def hit(self, item: RateLimitItem, key: str) -> tuple[bool, WindowStats]:
        """Count a hit when the window has room; whether it had, and the window after it."""
        if self._async is None:
            stats = self._memory.hit(item.key_for(key), item.amount, item.get_expiry())
            return stats.remaining >= 0, WindowStats(stats.reset_time, max(0, stats.remaining))
        allowed = await self._async.hit(item, key)
        return allowed, await self._async.get_window_stats(item, key)

    async def peek(self, item: RateLimitItem, key: str) -> WindowStats:
        if self._async is None:
            return self._memory.peek(item.key_for(key), item.amount, item.get_expiry())
        return await self._async.get_window_stats(item, key)

    async def check(self) -> bool:
        if self._async is None:
            return True
        return bool(await self.storage.check())

    async def reset(self) -> None:
        if self._async is None:
            self._memory.reset()
        else:
            await self.storage.reset()


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
        allowed, stats = await self._limiter.hit(item, key_id)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return Verdict(allowed, per_second, stats.remaining, reset if not allowed else max(reset, 1))

    async def auth_failures_exceeded(self, address: str) -> Verdict | None:
        """A verdict to answer with when this address has failed to authenticate too often."""
        stats = await self._limiter.peek(self._auth_failures, address)
        if stats.remaining > 0:
            return None
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        return Verdict(False, self._auth_failures.amount, 0, reset)

    async def record_auth_failure(self, address: str) -> None:
        await self._limiter.hit(self._auth_failures, address)

    async def check(self) -> bool:
        return await self._limiter.check()

    async def reset(self) -> None:
        await self._limiter.reset()
