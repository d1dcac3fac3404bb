"""Idempotency keys: a POST (run, run-all, upload) sent again with the same ``Idempotency-Key`` within
24 hours gets the first response back and does nothing new; the same key with another request is 422.

Within the request's own transaction the key is claimed first (an INSERT in a savepoint), then the work
is done and the response recorded on the row, then everything commits together. So:
- a concurrent repeat's INSERT conflicts (on PostgreSQL it waits for the first transaction, then
  conflicts) and it answers the stored response: never a second queueing;
- a request that fails rolls its claim back with everything else: errors are not stored, and a retry
  with the same key runs afresh (the failed request changed nothing).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Response
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.auth.principal import Principal
from qualgent.db.base import utcnow
from qualgent.errors import BadRequest, Conflict, Unprocessable
from qualgent.idempotency.repository import IdempotencyRepository
from qualgent.openapi import errors

Out = TypeVar("Out", bound=BaseModel)
HEADER = "Idempotency-Key"
TTL = timedelta(hours=24)
# Printable ASCII without spaces, as the IETF draft and Stripe's keys: UUIDs and the like.
PATTERN = r"^[\x21-\x7e]{1,255}$"
_VALID = re.compile(PATTERN)


def _header(
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="Any unique string (1-255 printable ASCII characters without spaces, e.g. a UUID). "
            "A repeat within 24 hours returns the first response and queues nothing new; a key of another "
            "shape is 400 `invalid_idempotency_key`.",
            # Documented, not enforced by FastAPI: a bad key is our own 400, not a validation 422.
            json_schema_extra={"pattern": PATTERN, "minLength": 1, "maxLength": 255},
        ),
    ] = None,
) -> str | None:
    if idempotency_key is None:
        return None
    if not _VALID.fullmatch(idempotency_key):
        raise BadRequest(
            f"{HEADER} must be 1 to 255 printable ASCII characters without spaces.",
            code="invalid_idempotency_key",
        )
    return idempotency_key


IdempotencyKeyDep = Annotated[str | None, Depends(_header)]
# ``responses=`` of the routes that take the key: a repeat while the first is still at work.
RESPONSES = errors((409, f"A request with this {HEADER} is still in progress (`idempotency_key_in_use`)."))


def fingerprint(method: str, path: str, body_digest: str) -> str:
    return hashlib.sha256(f"{method.upper()} {path} {body_digest}".encode()).hexdigest()


def digest(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


@dataclass
class Replay:
    status_code: int
    body: str

    def response(self) -> Response:
        return Response(
            self.body,
            status_code=self.status_code,
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )


async def claim(session: AsyncSession, principal: Principal, key: str, request_fingerprint: str) -> Replay | None:
    """Claim ``key`` in this transaction, or return the stored first response of an earlier request."""
    repo = IdempotencyRepository(session, principal.organization_id)
    for _ in range(3):
        try:
            async with session.begin_nested():
                await repo.insert(key, request_fingerprint)
            # Keys live 24 hours: each new claim forgets the organisation's expired ones (indexed).
            await repo.purge_expired(utcnow() - TTL)
            return None
        except IntegrityError:
            pass
        existing = await repo.get(key)
        if existing is None:
            continue  # expired and removed between our INSERT and this read: claim it again
        if existing.created_at < utcnow() - TTL:
            async with session.begin_nested():
                await repo.delete_expired(key, utcnow() - TTL)
            continue
        if existing.fingerprint != request_fingerprint:
            raise Unprocessable(
                f"{HEADER} {key!r} was already used for a different request; use a new key for a new request.",
                code="idempotency_key_reused",
            )
        if existing.status_code is None or existing.response_body is None:  # pragma: no cover - never committed
            raise Conflict(f"A request with {HEADER} {key!r} is still in progress.", code="idempotency_key_in_use")
        return Replay(existing.status_code, existing.response_body)
    raise Conflict(f"A request with {HEADER} {key!r} is still in progress.", code="idempotency_key_in_use")


async def record(session: AsyncSession, principal: Principal, key: str, status_code: int, body: str) -> None:
    await IdempotencyRepository(session, principal.organization_id).record(key, status_code, body)


async def once(
    session: AsyncSession,
    principal: Principal,
    key: str | None,
    request_fingerprint: str,
    produce: Callable[[], Awaitable[Out]],
) -> Out | Response:
    """``produce()`` the response, at most once per key: the route's whole idempotent behaviour."""
    if key is None:
        return await produce()
    replay = await claim(session, principal, key, request_fingerprint)
    if replay is not None:
        return replay.response()
    out = await produce()
    await record(session, principal, key, 200, out.model_dump_json())
    return out
