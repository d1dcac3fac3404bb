"""Every query of run events. The poller reads every organisation's new events (one query per tick for
all of a process's streams); a stream's replay after ``Last-Event-ID`` reads its own organisation's."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, literal_column, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.dialect import Reader
from qualgent.db.models import RunEvent


def _table() -> Table:
    table = RunEvent.__table__
    assert isinstance(table, Table)
    return table


EVENTS = _table()
_COLUMNS = (
    EVENTS.c.id,
    EVENTS.c.organization_id,
    EVENTS.c.run_id,
    EVENTS.c.batch_id,
    EVENTS.c.type,
    EVENTS.c.status,
    EVENTS.c.attempt,
    EVENTS.c.failure_kind,
    EVENTS.c.created_at,
)


@dataclass
class Event:
    id: int
    organization_id: str
    run_id: str
    batch_id: str | None
    type: str
    status: str
    attempt: int
    failure_kind: str | None
    created_at: datetime
    frame: bytes = field(default=b"", repr=False)  # the SSE frame, made once for every stream

    @classmethod
    def of(cls, row: Any) -> Event:
        return cls(*row[:9])


@dataclass(frozen=True)
class Snapshot:
    """PostgreSQL's view of transactions when a poll read the events: every transaction with an ID
    below ``xmin`` had ended; those from ``xmax`` on had not begun."""

    xmin: int
    xmax: int

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        xmin, xmax, _ = text.split(":", 2)
        return cls(int(xmin), int(xmax))


@cache
def _head_statement() -> Any:
    return select(func.coalesce(func.max(EVENTS.c.id), 0))


@cache
def _poll_statement(postgresql: bool, late: int) -> Any:
    """Events after the cursor (and ``late`` earlier IDs the poller still looks for), in ID order; on
    PostgreSQL with the statement's snapshot in the same row set, so that what the poll saw and which
    transactions had ended are one moment (a row even when there are no events)."""
    wanted: Any = EVENTS.c.id > bindparam("cursor")
    if late:
        wanted = or_(wanted, EVENTS.c.id.in_([bindparam(f"late{i}") for i in range(late)]))
    events = select(*_COLUMNS).where(wanted).order_by(EVENTS.c.id).limit(bindparam("limit"))
    if not postgresql:
        return events
    inner = events.lateral("e")
    snapshot: Any = literal_column("pg_current_snapshot()::text").label("snapshot")
    one = select(literal_column("1").label("one")).subquery("one")
    return (
        select(*[inner.c[c.key] for c in _COLUMNS], snapshot)
        .select_from(one.outerjoin(inner, true()))
        .order_by(inner.c.id)
    )


async def head(reader: Reader) -> int:
    """The newest event's ID (0 when there is none)."""
    row = await reader.one(_head_statement(), {})
    return int(row[0]) if row is not None else 0


async def poll(
    reader: Reader, cursor: int, late: Collection[int] = (), limit: int = 1000
) -> tuple[list[Event], Snapshot | None]:
    """Events after ``cursor`` or among ``late``, every organisation's, in ID order; and on PostgreSQL
    the snapshot they were read in."""
    late = sorted(late)
    params: dict[str, Any] = {"cursor": cursor, "limit": limit}
    params.update({f"late{i}": value for i, value in enumerate(late)})
    rows = await reader.all(_poll_statement(not reader.is_sqlite, len(late)), params)
    if reader.is_sqlite:
        return [Event.of(row) for row in rows], None
    snapshot = Snapshot.parse(rows[0][-1]) if rows else None
    return [Event.of(row) for row in rows if row[0] is not None], snapshot


async def replay(
    reader: Reader,
    organization_id: str,
    after: int,
    upto: int,
    *,
    run_ids: Collection[str] | None = None,
    batch_id: str | None = None,
    statuses: Collection[str] | None = None,
    limit: int = 500,
) -> list[Event]:
    """An organisation's events after ``after`` up to ``upto``, as a stream's filters select them: what
    a client that resumes with ``Last-Event-ID`` missed."""
    stmt = select(*_COLUMNS).where(
        EVENTS.c.organization_id == organization_id, EVENTS.c.id > after, EVENTS.c.id <= upto
    )
    if run_ids is not None:
        stmt = stmt.where(EVENTS.c.run_id.in_(sorted(run_ids)))
    if batch_id is not None:
        stmt = stmt.where(EVENTS.c.batch_id == batch_id)
    if statuses is not None:
        stmt = stmt.where(EVENTS.c.status.in_(sorted(statuses)))
    rows = await reader.all(stmt.order_by(EVENTS.c.id).limit(limit), {})
    return [Event.of(row) for row in rows]


async def delete_before(session: AsyncSession, cutoff: datetime) -> int:
    """Events older than ``cutoff`` (the purge): a stream resumed from before then replays from the oldest
    event kept."""
    result = await session.execute(delete(RunEvent).where(RunEvent.created_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
