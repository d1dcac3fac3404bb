"""Every query of webhooks: endpoints and their deliveries (organisation-scoped), the outbox that run
changes write to, and the delivery worker's claims and results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    DateTime,
    String,
    Table,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.base import UTCDateTime, utcnow
from qualgent.db.dialect import insert_ignoring_duplicates
from qualgent.db.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from qualgent.db.repository import OrgScopedRepository
from qualgent.db.session import execute_prebuilt, on_commit
from qualgent.ids import has_shape


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


ENDPOINTS, EVENTS, DELIVERIES = _table(WebhookEndpoint), _table(WebhookEvent), _table(WebhookDelivery)


class EndpointRepository(OrgScopedRepository[WebhookEndpoint]):
    model = WebhookEndpoint
    id_prefix = "whk"

    async def list(self) -> list[WebhookEndpoint]:
        return list(await self.session.scalars(self.scoped().order_by(WebhookEndpoint.id)))

    async def count(self) -> int:
        return int(await self.session.scalar(self.scoped(func.count())) or 0)

    async def remove(self, endpoint: WebhookEndpoint) -> None:
        await self.session.delete(endpoint)
        await self.session.flush()


class DeliveryRepository(OrgScopedRepository[WebhookDelivery]):
    model = WebhookDelivery
    id_prefix = "msg"

    async def page(self, endpoint_id: str, limit: int, before: str | None) -> list[WebhookDelivery]:
        """An endpoint's deliveries, newest first."""
        stmt = self.scoped().where(WebhookDelivery.endpoint_id == endpoint_id)
        if before is not None:
            stmt = stmt.where(WebhookDelivery.id < before)
        return list(await self.session.scalars(stmt.order_by(WebhookDelivery.id.desc()).limit(limit)))

    async def of_endpoint(self, endpoint_id: str, delivery_id: str) -> WebhookDelivery | None:
        if not has_shape(delivery_id, self.id_prefix):
            return None
        stmt = self.scoped().where(WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id)
        found: WebhookDelivery | None = await self.session.scalar(stmt)
        return found


# ------------------------------------------------------------------------------------------ the outbox


@cache
def _record_statement(dialect: str) -> Any:
    """An event row, only when the run's organisation has an enabled endpoint: one statement either way,
    so a run of an organisation without webhooks costs a lookup on an index, and no row."""
    has_endpoint = exists(
        select(ENDPOINTS.c.id).where(ENDPOINTS.c.organization_id == bindparam("ev_org"), ENDPOINTS.c.enabled.is_(True))
    )
    values: list[Any] = [
        bindparam("ev_org", type_=String),
        bindparam("ev_type", type_=String),
        bindparam("ev_run", type_=String),
        bindparam("ev_now", type_=UTCDateTime()),
    ]
    if dialect != "sqlite":
        # PostgreSQL cannot type a bare parameter in a SELECT list. (SQLite must not cast: a date cast
        # to its DATETIME affinity becomes a number.)
        types: list[Any] = [String, String, String, DateTime(timezone=True)]
        values = [cast(v, t) for v, t in zip(values, types, strict=True)]
    row = select(*values).where(has_endpoint)
    return insert(EVENTS).from_select(["organization_id", "type", "run_id", "created_at"], row)


# The delivery workers of this process (webhooks/worker.py), woken when an event commits.
wakers: set[Callable[[], None]] = set()


def _wake_workers() -> None:
    for wake in list(wakers):
        wake()


async def record_events(session: AsyncSession, event_type: str, runs: Sequence[tuple[str, str]]) -> None:
    """Write ``event_type`` for each (organisation, run) to the outbox, in the caller's transaction: the
    event exists if and only if the change that caused it commits. Once it commits, this process's
    delivery worker is woken (other processes' find it at their next look)."""
    if not runs:
        return
    now = utcnow()
    params = [{"ev_org": org, "ev_type": event_type, "ev_run": run, "ev_now": now} for org, run in runs]
    result = await execute_prebuilt(session, _record_statement(session.get_bind().dialect.name), params)
    if result.rowcount != 0 and wakers:  # -1: not known (some drivers' executemany)
        on_commit(session, _wake_workers)


async def has_events(session: AsyncSession) -> bool:
    return (await session.scalar(select(EVENTS.c.id).limit(1))) is not None


async def has_due(session: AsyncSession, now: datetime) -> bool:
    """Whether a pending delivery of an enabled endpoint is due."""
    stmt = (
        select(DELIVERIES.c.id)
        .join(ENDPOINTS, ENDPOINTS.c.id == DELIVERIES.c.endpoint_id)
        .where(DELIVERIES.c.status == "pending", DELIVERIES.c.next_attempt_at <= now, ENDPOINTS.c.enabled.is_(True))
    )
    return (await session.scalar(stmt.limit(1))) is not None


async def take_events(session: AsyncSession, limit: int) -> list[Any]:
    """The oldest events of the outbox, locked (PostgreSQL: others skip them) until this transaction
    deletes them; (id, organization_id, type, run_id, created_at)."""
    stmt = select(EVENTS).order_by(EVENTS.c.id).limit(limit).with_for_update(skip_locked=True)
    return list((await session.execute(stmt)).all())


async def delete_events(session: AsyncSession, ids: Sequence[int]) -> None:
    if ids:
        await session.execute(delete(EVENTS).where(EVENTS.c.id.in_(list(ids))))


async def enabled_endpoints(session: AsyncSession, organization_ids: Sequence[str]) -> list[Any]:
    """(id, organization_id, kind, events) of the enabled endpoints of these organisations."""
    stmt = select(ENDPOINTS.c.id, ENDPOINTS.c.organization_id, ENDPOINTS.c.kind, ENDPOINTS.c.events).where(
        ENDPOINTS.c.organization_id.in_(list(organization_ids)), ENDPOINTS.c.enabled.is_(True)
    )
    return list((await session.execute(stmt)).all())


async def add_deliveries(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """New deliveries; one whose (endpoint, dedupe_key) exists already is skipped."""
    if rows:
        stmt = insert_ignoring_duplicates(session.get_bind().dialect.name, DELIVERIES)
        await session.execute(stmt, list(rows))


# ------------------------------------------------------------------------------------------ deliveries


async def claim_due(session: AsyncSession, now: datetime, lease_until: datetime, limit: int) -> list[Any]:
    """Pending deliveries of enabled endpoints whose time has come, taken by this worker: their next
    attempt is moved to ``lease_until``, so another worker (or this one after a crash) takes them again
    only if no result is recorded by then. Rows: the delivery with its endpoint's kind and secret."""
    due = (
        select(DELIVERIES.c.id)
        .join(ENDPOINTS, ENDPOINTS.c.id == DELIVERIES.c.endpoint_id)
        .where(
            DELIVERIES.c.status == "pending",
            DELIVERIES.c.next_attempt_at <= now,
            ENDPOINTS.c.enabled.is_(True),
        )
        .order_by(DELIVERIES.c.next_attempt_at)
        .limit(limit)
        .with_for_update(of=DELIVERIES, skip_locked=True)
    )
    ids = [row[0] for row in (await session.execute(due)).all()]
    if not ids:
        return []
    taken = await session.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id.in_(ids), DELIVERIES.c.status == "pending", DELIVERIES.c.next_attempt_at <= now)
        .values(next_attempt_at=lease_until)
        .returning(DELIVERIES.c.id)
    )
    taken_ids = [row[0] for row in taken.all()]
    if not taken_ids:
        return []
    stmt = (
        select(
            DELIVERIES.c.id,
            DELIVERIES.c.organization_id,
            DELIVERIES.c.endpoint_id,
            DELIVERIES.c.event_type,
            DELIVERIES.c.payload,
            DELIVERIES.c.attempts,
            DELIVERIES.c.retry_until,
            ENDPOINTS.c.kind,
            ENDPOINTS.c.url,
            ENDPOINTS.c.secret_ciphertext,
        )
        .join(ENDPOINTS, ENDPOINTS.c.id == DELIVERIES.c.endpoint_id)
        .where(DELIVERIES.c.id.in_(taken_ids))
    )
    return list((await session.execute(stmt)).all())


async def record_attempt(
    session: AsyncSession,
    delivery_id: str,
    *,
    status: str,
    next_attempt_at: datetime | None,
    at: datetime,
    response_status: int | None,
    duration_ms: int,
    error: str | None,
) -> None:
    await session.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id == delivery_id, DELIVERIES.c.status == "pending")
        .values(
            status=status,
            attempts=DELIVERIES.c.attempts + 1,
            next_attempt_at=next_attempt_at,
            last_attempt_at=at,
            response_status=response_status,
            duration_ms=duration_ms,
            error=error,
            updated_at=at,
        )
    )


async def endpoint_succeeded(session: AsyncSession, endpoint_id: str) -> None:
    await session.execute(
        update(ENDPOINTS)
        .where(ENDPOINTS.c.id == endpoint_id, ENDPOINTS.c.failing_since.is_not(None))
        .values(failing_since=None)
    )


async def endpoint_failed(session: AsyncSession, endpoint_id: str, now: datetime) -> datetime | None:
    """Note a failure; returns since when the endpoint has been failing (None if it is gone)."""
    await session.execute(
        update(ENDPOINTS)
        .where(ENDPOINTS.c.id == endpoint_id, ENDPOINTS.c.failing_since.is_(None))
        .values(failing_since=now)
    )
    since: datetime | None = await session.scalar(
        select(ENDPOINTS.c.failing_since).where(ENDPOINTS.c.id == endpoint_id)
    )
    return since


async def disable_endpoint(session: AsyncSession, endpoint_id: str, reason: str, now: datetime) -> bool:
    result = await session.execute(
        update(ENDPOINTS)
        .where(ENDPOINTS.c.id == endpoint_id, ENDPOINTS.c.enabled.is_(True))
        .values(enabled=False, disabled_reason=reason, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
