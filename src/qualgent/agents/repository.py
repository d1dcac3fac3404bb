"""Agents and their devices. Not organisation-scoped: devices serve every organisation's runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cache
from typing import Any

from sqlalchemy import Table, bindparam, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.base import utcnow
from qualgent.db.dialect import Reader, insert_ignoring_duplicates, upsert
from qualgent.db.models import (
    Agent,
    AppFile,
    Device,
    DeviceMatch,
    RunArtifact,
    RunStep,
    Secret,
    TestCase,
    TestCaseFile,
    TestRun,
)
from qualgent.db.session import execute_prebuilt


class AgentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_token_hash(self, token_hash: str) -> Agent | None:
        result: Agent | None = await self.session.scalar(
            select(Agent).where(Agent.token_hash == token_hash, Agent.revoked_at.is_(None))
        )
        return result

    async def add_steps(self, reports: Sequence[tuple[str, int, Sequence[dict[str, Any]]]]) -> None:
        """Step results, each of (run id, attempt, steps), in one statement; a step already recorded
        (a repeated report) is skipped."""
        now = utcnow()
        rows = [
            {
                "run_id": run_id,
                "attempt": attempt,
                "index": step["index"],
                "description": step["description"],
                "status": step["status"],
                "message": step["message"],
                "logs": [line[:2000] for line in step["logs"]],
                "duration_ms": step["duration_ms"],
                "screenshot_key": None,
                "parent": step.get("parent"),
                "depth": step.get("depth", 0),
                "created_at": now,
            }
            for run_id, attempt, steps in reports
            for step in steps
        ]
        if not rows:
            return
        dialect = self.session.get_bind().dialect.name
        await execute_prebuilt(self.session, _insert_steps_statement(dialect), rows)

    async def run_details(self, run_ids: Sequence[str]) -> dict[str, Any]:
        """Run id → its row of ``_RUN_DETAILS`` (what an agent needs to run it), for claimed runs."""
        rows = (await execute_prebuilt(self.session, _run_details_statement(), {"run_ids": list(run_ids)})).all()
        return {row.run_id: row for row in rows}

    async def files_of(self, test_case_ids: Sequence[str]) -> list[Any]:
        """(test_case_id, path, sha256, size) of these test cases' files, for claimed runs."""
        params = {"test_case_ids": list(test_case_ids)}
        return list((await execute_prebuilt(self.session, _files_statement(), params)).all())

    async def secrets_of(self, organization_ids: Sequence[str]) -> list[Any]:
        """(organization_id, name, ciphertext) of these organisations' secrets, for claimed runs."""
        params = {"organization_ids": list(organization_ids)}
        return list((await execute_prebuilt(self.session, _secrets_statement(), params)).all())

    async def run_file(self, run_id: str, path: str) -> bytes | None:
        """A file of the test case of a run (the caller has checked that the run is the agent's)."""
        content: bytes | None = await self.session.scalar(
            select(TestCaseFile.content)
            .join(TestRun, TestRun.test_case_id == TestCaseFile.test_case_id)
            .where(TestRun.id == run_id, TestCaseFile.path == path)
        )
        return content

    async def holder(self, run_id: str) -> Any | None:
        """(organization_id, status, attempt, agent_id) of a run: who holds it now, for a check made
        before an upload is received (outside the request's transaction)."""
        row = (
            await self.session.execute(
                select(TestRun.organization_id, TestRun.status, TestRun.attempt, TestRun.agent_id).where(
                    TestRun.id == run_id
                )
            )
        ).first()
        return row

    async def put_artifact(self, values: dict[str, Any]) -> None:
        """Record an attempt's artifact; one of the same name (a repeated upload) is replaced."""
        dialect = self.session.get_bind().dialect.name
        await execute_prebuilt(self.session, _upsert_artifact_statement(dialect), values)

    async def get(self, agent_id: str) -> Agent | None:
        return await self.session.get(Agent, agent_id)

    async def embedded(self) -> Agent | None:
        result: Agent | None = await self.session.scalar(select(Agent).where(Agent.embedded.is_(True)).limit(1))
        return result

    async def add(self, agent: Agent) -> Agent:
        self.session.add(agent)
        await self.session.flush()
        return agent

    async def all_agents(self) -> Sequence[Agent]:
        return (await self.session.scalars(select(Agent).order_by(Agent.id))).all()

    async def devices_of(self, agent_id: str) -> Sequence[Device]:
        return (await self.session.scalars(select(Device).where(Device.agent_id == agent_id))).all()

    async def add_device(self, device: Device) -> None:
        self.session.add(device)
        await self.session.flush()

    async def seen(self, agent_id: str) -> None:
        """The agent is alive: its row says when, and its devices that were marked offline are online.

        Only offline devices are written: rewriting all of them would lock every device of the agent,
        inside transactions that also hold a run (a heartbeat), against reports and claims that take
        those devices after the organisation's row.
        """
        now = utcnow()
        await self.session.execute(update(Agent).where(Agent.id == agent_id).values(last_seen_at=now))
        await self.session.execute(
            update(Device)
            .where(Device.agent_id == agent_id, Device.online.is_(False))
            .values(online=True, last_seen_at=now)
        )

    async def free_devices(self, agent_id: str, device_ids: Sequence[str]) -> list[Any]:
        """The agent's devices among ``device_ids`` that run nothing, once per target each fits:
        (id, name, platform, os_version, target_id). A device that fits no target is not listed."""
        params = {"agent_id": agent_id, "device_ids": list(device_ids)}
        return list((await execute_prebuilt(self.session, _free_devices_statement(), params)).all())

    @staticmethod
    async def free_devices_fast(reader: Reader, agent_id: str, device_ids: Sequence[str]) -> list[Any]:
        """``free_devices`` through the fast reader, outside any transaction."""
        return await reader.all(_free_devices_statement(), {"agent_id": agent_id, "device_ids": list(device_ids)})

    async def availability(self) -> dict[tuple[str, str, str], tuple[int, int]]:
        """(name, platform, os_version) → (online devices, of which free)."""
        stmt = (
            select(
                Device.name,
                Device.platform,
                Device.os_version,
                func.count(),
                func.count().filter(Device.current_run_id.is_(None)),
            )
            .where(Device.online.is_(True))
            .group_by(Device.name, Device.platform, Device.os_version)
        )
        rows: list[Any] = list((await self.session.execute(stmt)).all())
        return {(r[0], r[1], r[2]): (int(r[3]), int(r[4])) for r in rows}


async def mark_silent_agents_offline(session: AsyncSession, after_seconds: float) -> None:
    cutoff = utcnow() - timedelta(seconds=after_seconds)
    silent = select(Agent.id).where(Agent.last_seen_at < cutoff)
    await session.execute(
        update(Device).where(Device.online.is_(True), Device.agent_id.in_(silent)).values(online=False)
    )


# The claim path's statements, built once with bind parameters (see db/session.execute_prebuilt).


@cache
def _free_devices_statement() -> Any:
    return (
        select(Device.id, Device.name, Device.platform, Device.os_version, DeviceMatch.target_id)
        .join(DeviceMatch, DeviceMatch.device_id == Device.id)
        .where(
            Device.agent_id == bindparam("agent_id"),
            Device.id.in_(bindparam("device_ids", expanding=True)),
            Device.current_run_id.is_(None),
        )
    )


@cache
def _run_details_statement() -> Any:
    return (
        select(
            TestRun.id.label("run_id"),
            TestRun.timeout_seconds,
            TestRun.env,
            TestRun.record_video,
            TestRun.test_case_id,
            TestRun.queued_at,
            TestCase.flow,
            TestCase.name.label("test_case_name"),
            # Whether the claim needs more reads (files, secrets): most runs need neither, and a probe of
            # the primary key's index costs less than a statement of its own.
            exists().where(TestCaseFile.test_case_id == TestRun.test_case_id).label("has_files"),
            exists().where(Secret.organization_id == TestRun.organization_id).label("has_secrets"),
            # Named as on AppFile, so that the row serves apps.service.app_link as the app.
            AppFile.id,
            AppFile.organization_id,
            AppFile.sha256,
            AppFile.os,
            AppFile.file_size,
            AppFile.package_metadata.label("package_metadata"),
            AppFile.storage_key,
            AppFile.original_name,
            AppFile.file_type,
        )
        .join(TestCase, TestCase.id == TestRun.test_case_id)
        .join(AppFile, AppFile.id == TestRun.app_id)
        .where(TestRun.id.in_(bindparam("run_ids", expanding=True)))
    )


@cache
def _files_statement() -> Any:
    return (
        select(TestCaseFile.test_case_id, TestCaseFile.path, TestCaseFile.sha256, TestCaseFile.size)
        .where(TestCaseFile.test_case_id.in_(bindparam("test_case_ids", expanding=True)))
        .order_by(TestCaseFile.test_case_id, TestCaseFile.path)
    )


@cache
def _secrets_statement() -> Any:
    return select(Secret.organization_id, Secret.name, Secret.ciphertext).where(
        Secret.organization_id.in_(bindparam("organization_ids", expanding=True))
    )


@cache
def _insert_steps_statement(dialect: str) -> Any:
    table = RunStep.__table__
    assert isinstance(table, Table)
    return insert_ignoring_duplicates(dialect, table)


@cache
def _upsert_artifact_statement(dialect: str) -> Any:
    table = RunArtifact.__table__
    assert isinstance(table, Table)
    return upsert(
        dialect,
        table,
        ["run_id", "attempt", "name"],
        ["kind", "content_type", "size", "storage_key", "step_index", "created_at"],
    )
