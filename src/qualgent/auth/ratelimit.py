"""Rate limits: a moving window, in Redis with the ``limits`` library so that processes share it, or in
this process's memory.

A moving window: at most N requests in any one-second span, so a burst cannot straddle two fixed
windows and get 2N through.

In memory we keep the windows ourselves (``MemoryWindows``) rather than use the library's memory
storage: its asyncio storage hops to a thread pool on nearly every call, and its synchronous one
counts a window by walking every entry in it (a key allowed thousands of requests a second walks
thousands per request) and starts a timer thread every 10 ms to expire entries. Both cost more than
the rest of a status request. A deque of timestamps per key does the same job in constant time.

When Redis cannot be reached, limits fall back to this process's memory (each process then allows the
whole limit: N processes allow N times it) with one warning per outage; a check every second in the
background notices Redis coming back, and limits are shared again, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond, WindowStats
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError

log = logging.getLogger("qualgent.ratelimit")

# Seconds a Redis command may take (connecting included) before Redis counts as unreachable: a limit
# check must never hold a request up for long.
REDIS_TIMEOUT = 0.5
# Seconds between checks of an unreachable Redis, in the background.
REDIS_PROBE_EVERY = 1.0
_REDIS_ERRORS = (StorageError, RedisError, OSError)


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
    """The moving-window limiter, in Redis (async, ``limits``) or in memory (see the module's note);
    with Redis, in memory too while Redis cannot be reached."""

    def __init__(self, redis_url: str | None) -> None:
        self.storage: Any = None
        self._async: MovingWindowRateLimiter | None = None
        self._memory = MemoryWindows()
        self._redis_url = redis_url
        self._down_since: float | None = None  # monotonic time Redis was found unreachable
        self._next_probe = 0.0
        self._probe: asyncio.Task[None] | None = None
        if redis_url:
            uri = redis_url if redis_url.startswith("async+") else "async+" + redis_url
            self.storage = RedisStorage(
                uri,
                implementation="redispy",
                wrap_exceptions=True,
                socket_connect_timeout=REDIS_TIMEOUT,
                socket_timeout=REDIS_TIMEOUT,
            )
            self._async = MovingWindowRateLimiter(self.storage)

    @property
    def redis(self) -> str | None:
        """None without Redis; "ok", or "unreachable" while limits are kept per process."""
        if self._async is None:
            return None
        return "ok" if self._down_since is None else "unreachable"

    def _shared(self) -> MovingWindowRateLimiter | None:
        """The Redis limiter while Redis answers; None (use memory) while it does not, starting a
        background check of it once a second."""
        if self._down_since is None:
            return self._async
        now = time.monotonic()
        if now >= self._next_probe and (self._probe is None or self._probe.done()):
            self._next_probe = now + REDIS_PROBE_EVERY
            self._probe = asyncio.get_running_loop().create_task(self._ping())
        return None

    def _unreachable(self, error: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._next_probe = self._down_since + REDIS_PROBE_EVERY
            log.warning(
                "Redis is unreachable (%s); rate limits are kept per process until it is back",
                str(error) or type(error).__name__,
            )

    def _reachable(self) -> None:
        if self._down_since is not None:
            log.warning(
                "Redis is reachable again after %.0f s; rate limits are shared again",
                time.monotonic() - self._down_since,
            )
            self._down_since = None

    async def _ping(self) -> None:
        """Whether Redis answers now; notes it either way."""
        if await self.storage.check():  # a PING; False on any error
            if self._down_since is not None:
                # The pool's other connections are to the Redis that went away: each would fail once
                # more (and count as a new outage). Nothing else uses them meanwhile: drop them all.
                client = self._client()
                if client is not None:
                    with contextlib.suppress(*_REDIS_ERRORS):
                        await client.connection_pool.disconnect()
            self._reachable()
        else:
            self._unreachable(ConnectionError("no answer to PING"))

    async def hit(self, item: RateLimitItem, key: str) -> tuple[bool, WindowStats]:
        """Count a hit when the window has room; whether it had, and the window after it."""
        shared = self._shared()
        if shared is not None:
            try:
                allowed = await shared.hit(item, key)
                return allowed, await shared.get_window_stats(item, key)
            except _REDIS_ERRORS as error:
                self._unreachable(error)
        stats = self._memory.hit(item.key_for(key), item.amount, item.get_expiry())
        return stats.remaining >= 0, WindowStats(stats.reset_time, max(0, stats.remaining))

    async def peek(self, item: RateLimitItem, key: str) -> WindowStats:
        shared = self._shared()
        if shared is not None:
            try:
                return await shared.get_window_stats(item, key)
            except _REDIS_ERRORS as error:
                self._unreachable(error)
        return self._memory.peek(item.key_for(key), item.amount, item.get_expiry())

    async def check(self) -> str | None:
        """Ask Redis now (for /readyz): None without Redis, else "ok" or "unreachable"."""
        if self._async is None:
            return None
        await self._ping()
        return self.redis

    async def reset(self) -> None:
        self._memory.reset()
        if self._async is not None:
            await self.storage.reset()

    def _client(self) -> Any:
        """The redis-py client under the ``limits`` storage, which has no close of its own."""
        return getattr(getattr(self.storage, "bridge", None), "storage", None)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        client = self._client()
        if client is not None:
            with contextlib.suppress(*_REDIS_ERRORS):
                await client.aclose()


# A sign-in checks a password with Argon2 (tens of milliseconds of CPU): one address may make this many
# times the per-account limit of attempts a minute, over every email together.
SIGN_IN_ADDRESS_FACTOR = 10


class RateLimiter:
    def __init__(self, redis_url: str | None, auth_failures_per_minute: int) -> None:
        self._limiter = _Limiter(redis_url)
        self._auth_failures = RateLimitItemPerMinute(auth_failures_per_minute, namespace="qg-authfail")
        self._sign_ins = RateLimitItemPerMinute(auth_failures_per_minute, namespace="qg-signin")
        self._sign_ins_per_address = RateLimitItemPerMinute(
            auth_failures_per_minute * SIGN_IN_ADDRESS_FACTOR, namespace="qg-signin-addr"
        )
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

    async def _minute_hit(self, item: RateLimitItem, key: str) -> Verdict:
        allowed, stats = await self._limiter.hit(item, key)
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        return Verdict(allowed, item.amount, stats.remaining, reset)

    async def auth_failure(self, address: str) -> Verdict:
        """Count a failed authentication (a missing, unknown or revoked key or token, a bad link
        signature) from ``address``, in one atomic step; not allowed once the address has failed more
        than the limit in the last minute (answer 429 rather than 401). Valid credentials never come
        here, so others' failures never lock them out."""
        return await self._minute_hit(self._auth_failures, address)

    async def sign_in_attempt(self, address: str, email: str) -> Verdict:
        """Count a dashboard sign-in attempt before its password is checked (atomically, so concurrent
        attempts cannot all pass a check made before any was counted): the limit per minute applies per
        address and email, and ``SIGN_IN_ADDRESS_FACTOR`` times it per address. Not allowed: answer 429
        without checking the password."""
        verdict = await self._minute_hit(self._sign_ins, f"{address}|{email.strip().lower()}")
        if not verdict.allowed:
            return verdict
        return await self._minute_hit(self._sign_ins_per_address, address)

    @property
    def redis(self) -> str | None:
        """None without Redis; "ok", or "unreachable" while limits are kept per process."""
        return self._limiter.redis

    async def check(self) -> str | None:
        """Ask Redis now: None without Redis, else "ok" or "unreachable"."""
        return await self._limiter.check()

    async def close(self) -> None:
        await self._limiter.close()

    async def reset(self) -> None:
        await self._limiter.reset()
