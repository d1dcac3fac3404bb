"""The only place a run changes state. Every change checks the current state in its WHERE clause,
so two actors racing on one run cannot both win; the loser sees ``None`` and reports a conflict."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.base import utcnow
from qualgent.db.models import TestRun

TERMINAL = frozenset({"passed", "failed", "cancelled"})


async def cancel(session: AsyncSession, organization_id: str, run_id: str) -> str | None:
    """Cancel a run: a queued one at once; a running one is flagged for its agent to stop.

    Returns the run's status after the call, or None when the run was already terminal.
    """
    now = utcnow()
    queued = await session.execute(
        update(TestRun)
        .where(TestRun.id == run_id, TestRun.organization_id == organization_id, TestRun.status == "queued")
        .values(status="cancelled", progress=100, finished_at=now, updated_at=now)
        .returning(TestRun.id)
    )
    if queued.first() is not None:
        return "cancelled"
    running = await session.execute(
        update(TestRun)
        .where(TestRun.id == run_id, TestRun.organization_id == organization_id, TestRun.status == "running")
        .values(cancel_requested=True, updated_at=now)
        .returning(TestRun.id)
    )
    if running.first() is not None:
        return "running"
    return None
