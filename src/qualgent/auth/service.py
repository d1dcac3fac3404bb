"""Authentication and rate limiting of one request: the only place a caller becomes a Principal."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import NoReturn

from fastapi import Request

from qualgent.auth.keys import hash_key, looks_like_key
from qualgent.auth.principal import Principal
from qualgent.auth.repository import ApiKeyRepository, resolve_fast
from qualgent.errors import Forbidden, QualgentError, RateLimited, Unauthorized
from qualgent.state import AppState

log = logging.getLogger("qualgent.auth")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# last_used_at is written at most this often per key and process: a write per request would cost more
# than the request.
_TOUCH_EVERY = 60.0
_touched: dict[str, float] = {}
_PRINCIPAL_CACHE_SIZE = 10_000
_principals: dict[str, tuple[Principal, float]] = {}
_background: set[asyncio.Task[None]] = set()


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def refuse_failed(request: Request, state: AppState, error: QualgentError) -> NoReturn:
    """Answer a failed authentication with ``error``, or 429 once the client's address has failed too
    often in the last minute; the failure is counted either way. Only failures come here: a valid key,
    token or signature is never refused because of others' failures from the same address."""
    verdict = await state.limiter.auth_failure(client_address(request))
    if not verdict.allowed:
        raise RateLimited(
            "Too many failed authentications from this address; wait and retry with valid credentials.",
            headers=verdict.headers(),
        )
    raise error


async def authenticate(request: Request, state: AppState) -> Principal:
    raw = request.headers.get("x-api-key", "")
    principal = None
    if raw and looks_like_key(raw):
        principal = await _resolve(state, hash_key(raw))
    if principal is None:
        if not raw:
            await refuse_failed(
                request,
                state,
                Unauthorized(
                    "Missing API key: send it in the X-Api-Key header (create one with `qualgent admin create-key`).",
                    code="missing_api_key",
                ),
            )
        await refuse_failed(request, state, Unauthorized("Invalid or revoked API key.", code="invalid_api_key"))

    limiter = state.limiter
    verdict = await limiter.hit_key(principal.key_id, principal.rate_limit)
    request.scope.setdefault("state", {})["rate_limit_headers"] = verdict.headers()
    if not verdict.allowed:
        raise RateLimited(
            f"Rate limit of {verdict.limit} requests per second exceeded; retry after the "
            "Retry-After header's seconds.",
            headers=verdict.headers(),
        )
    if request.method not in SAFE_METHODS and not principal.can("write"):
        raise Forbidden("This API key is read-only; use a key with the write scope.", code="insufficient_scope")

    _touch_later(state, principal.key_id)
    return principal


async def _resolve(state: AppState, key_hash: str) -> Principal | None:
    """The key's principal, from a short-lived per-process cache or the database.

    Caching for a couple of seconds takes the key lookup off nearly every request; the price is that a
    revoked key may keep working for up to ``auth_cache_seconds`` on processes that saw it just before.
    Only valid keys are cached, so a new key works at once.
    """
    ttl = state.settings.auth_cache_seconds
    now = time.monotonic()
    cached = _principals.get(key_hash)
    if cached is not None and cached[1] > now:
        return cached[0]
    principal = await resolve_fast(state.reader, key_hash, state.settings.default_rate_limit)
    if principal is not None and ttl > 0:
        if len(_principals) >= _PRINCIPAL_CACHE_SIZE:
            _principals.clear()
        _principals[key_hash] = (principal, now + ttl)
    else:
        _principals.pop(key_hash, None)
    return principal


def forget_cached_keys() -> None:
    """Drop every cached principal (after a revocation in this process)."""
    _principals.clear()


def _touch_later(state: AppState, key_id: str) -> None:
    now = time.monotonic()
    if now - _touched.get(key_id, 0.0) < _TOUCH_EVERY:
        return
    _touched[key_id] = now

    async def touch() -> None:
        try:
            async with state.write_sessions() as session:
                await ApiKeyRepository(session).touch(key_id)
                await session.commit()
        except Exception as exc:
            # Bookkeeping only: the next request past the interval tries again.
            _touched.pop(key_id, None)
            log.warning("last use of key %s not recorded (%s)", key_id, exc.__class__.__name__)

    task = asyncio.get_running_loop().create_task(touch())
    _background.add(task)
    task.add_done_callback(_background.discard)
