"""The values ``GET /metrics`` reads from the database at each scrape: the same whichever process
answers, so they need no multiprocess bookkeeping. Each is one aggregate over an index."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.models import Agent, Device, Organization, TestRun, WebhookDelivery


async def queue(session: AsyncSession) -> list[Any]:
    """(organization_id, platform, queued runs, oldest queued_at) of organisations with a queue."""
    stmt = (
        select(TestRun.organization_id, TestRun.device_platform, func.count(), func.min(TestRun.queued_at))
        .where(TestRun.status == "queued")
        .group_by(TestRun.organization_id, TestRun.device_platform)
    )
    return list((await session.execute(stmt)).all())


async def running(session: AsyncSession) -> list[Any]:
    """(organization_id, running runs, its cap or NULL for the server's default) of organisations with
    runs executing."""
    stmt = select(Organization.id, Organization.running_runs, Organization.max_parallel_runs).where(
        Organization.running_runs > 0
    )
    return list((await session.execute(stmt)).all())


async def devices(session: AsyncSession) -> list[Any]:
    """(agent name, agent id, online devices, busy devices) of every agent."""
    busy = and_(Device.online.is_(True), Device.current_run_id.is_not(None))
    stmt = (
        select(
            Agent.name,
            Agent.id,
            func.count(Device.id).filter(Device.online.is_(True)),
            func.count(Device.id).filter(busy),
        )
        .join(Device, Device.agent_id == Agent.id)
        .group_by(Agent.id, Agent.name)
    )
    return list((await session.execute(stmt)).all())


async def pending_deliveries(session: AsyncSession) -> int:
    stmt = select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.status == "pending")
    return int(await session.scalar(stmt) or 0)
