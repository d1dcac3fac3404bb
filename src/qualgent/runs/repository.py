from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Select, and_, bindparam, case, delete, func, or_, select, union, update
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.dialect import prepared
from qualgent.db.models import (
    AppFile,
    Device,
    DeviceMatch,
    DeviceTarget,
    Organization,
    RunArtifact,
    RunAttempt,
    RunStep,
    TestCase,
    TestRun,
    User,
)
from qualgent.db.repository import ORG_PARAM, OrgScopedRepository
from qualgent.devices.repository import serves
from qualgent.ids import has_shape

COMPLETED = ("passed", "failed")
# Queued runs' ETAs: the median of this many of the organisation's latest passed runs, kept this long.
DURATION_SAMPLE = 50
DURATION_CACHE_SECONDS = 60.0
_durations: dict[str, tuple[float | None, float]] = {}

# What a run shows: the run's columns with its test case, app and user. Reads return these rows.
VIEW_COLUMNS = (
    TestRun.id,
    TestRun.status,
    TestRun.priority_rank,
    TestRun.priority,
    TestRun.progress,
    TestRun.device_name,
    TestRun.device_platform,
    TestRun.device_os_version,
    TestRun.device_orientation,
    TestRun.attempt,
    TestRun.failure_kind,
    TestRun.failure_message,
    TestRun.failure_step,
    TestRun.created_at,
    TestRun.started_at,
    TestRun.finished_at,
    TestRun.test_case_id,
    TestCase.name.label("test_case_name"),
    TestRun.app_id,
    AppFile.app_name,
    AppFile.version.label("app_version"),
    TestRun.user_id,
    User.name.label("user_name"),
    User.email.label("user_email"),
    TestRun.queue_order,
    TestRun.target_id,
    # A late-bound run's target: what it shows while queued, and its `device_selector`.
    DeviceTarget.label.label("target_label"),
    DeviceTarget.selector.label("target_selector"),
    TestRun.test_retries,
    TestRun.test_retries_used,
    TestRun.quarantined,
    TestRun.batch_id,
)


class RunRepository(OrgScopedRepository[TestRun]):
    model = TestRun
    id_prefix = "run"

    @classmethod
    @cache
    def _view(cls) -> Select[Any]:
        return (
            cls.scoped_view(*VIEW_COLUMNS)
            .join(TestCase, TestCase.id == TestRun.test_case_id)
            .join(AppFile, AppFile.id == TestRun.app_id)
            .join(User, User.id == TestRun.user_id)
            .join(DeviceTarget, DeviceTarget.id == TestRun.target_id)
        )

    @classmethod
    @cache
    def _view_by_id(cls) -> Select[Any]:
        return prepared(cls._view().where(TestRun.id == bindparam("run_id")))

    async def view(self, run_id: str) -> Any | None:
        if not has_shape(run_id, "run"):
            return None
        rows = await self.read_all(self._view_by_id(), run_id=run_id)
        return rows[0] if rows else None

    @classmethod
    @cache
    def _page_statement(
        cls, before: bool, status: bool, test_case: bool, app: bool, ids: bool, device: bool, batch: bool = False
    ) -> Select[Any]:
        """A page of the view with the filters that are set, bound as parameters: one statement per
        combination, built once (a list polled by a CI pipeline costs a lookup, not a new statement
        that SQLAlchemy must key and match to its cached compilation)."""
        stmt = cls._view().order_by(TestRun.id.desc()).limit(bindparam("limit"))
        if before:
            stmt = stmt.where(TestRun.id < bindparam("before"))
        if status:
            stmt = stmt.where(TestRun.status == bindparam("status"))
        if test_case:
            stmt = stmt.where(TestRun.test_case_id == bindparam("test_case_id"))
        if app:
            stmt = stmt.where(TestRun.app_id == bindparam("app_id"))
        if ids:
            stmt = stmt.where(TestRun.id.in_(bindparam("ids", expanding=True)))
        if device:
            stmt = stmt.where(TestRun.device_name == bindparam("device_name"))
        if batch:
            stmt = stmt.where(TestRun.batch_id == bindparam("batch_id"))
        # The fast reader's direct driver path takes fixed statements only (no expanding lists).
        return stmt if ids else prepared(stmt)

    async def view_page(
        self,
        limit: int,
        before: str | None,
        *,
        status: str | None = None,
        test_case_id: str | None = None,
        app_id: str | None = None,
        ids: list[str] | None = None,
        device_name: str | None = None,
        batch_id: str | None = None,
    ) -> Sequence[Any]:
        if ids is not None and not ids:
            return []
        stmt = self._page_statement(
            bool(before),
            bool(status),
            bool(test_case_id),
            bool(app_id),
            ids is not None,
            bool(device_name),
            bool(batch_id),
        )
        params = {
            "limit": limit,
            "before": before,
            "status": status,
            "test_case_id": test_case_id,
            "app_id": app_id,
            "ids": ids,
            "device_name": device_name,
            "batch_id": batch_id,
        }
        return await self.read_all(stmt, **{k: v for k, v in params.items() if v is not None})

    async def latest_completed(self, test_case_ids: Sequence[str]) -> dict[str, Any]:
        """Each test case's most recently finished passed-or-failed run."""
        if not test_case_ids:
            return {}
        ranked = (
            self.scoped_view(
                TestRun.id,
                func.row_number()
                .over(partition_by=TestRun.test_case_id, order_by=(TestRun.finished_at.desc(), TestRun.id.desc()))
                .label("rn"),
            )
            .where(TestRun.test_case_id.in_(test_case_ids), TestRun.status.in_(COMPLETED))
            .subquery()
        )
        stmt = self._view().where(TestRun.id.in_(select(ranked.c.id).where(ranked.c.rn == 1)))
        return {row.test_case_id: row for row in await self.read_all(stmt)}

    @classmethod
    @cache
    def _queue_statements(cls) -> tuple[Any, Any, Any]:
        """queue_info's three reads, built once with bind parameters (prepared on the fast reader)."""
        ahead = cls.scoped_view(func.count()).where(
            TestRun.status == "queued",
            or_(
                TestRun.priority_rank > bindparam("rank"),
                and_(
                    TestRun.priority_rank == bindparam("rank"),
                    or_(
                        TestRun.queue_order < bindparam("order"),
                        and_(TestRun.queue_order == bindparam("order"), TestRun.id < bindparam("run_id")),
                    ),
                ),
            ),
        )
        org = select(
            Organization.running_runs, func.coalesce(Organization.max_parallel_runs, bindparam("default_cap"))
        ).where(Organization.id == bindparam(ORG_PARAM))
        # Online devices that fit the run's target, and how many of them run something.
        fits = (
            select(func.count(), func.count(Device.current_run_id))
            .select_from(DeviceMatch)
            .join(Device, Device.id == DeviceMatch.device_id)
            .where(
                DeviceMatch.target_id == bindparam("target_id"),
                Device.online.is_(True),
                serves(bindparam(ORG_PARAM)),
            )
        )
        return prepared(ahead), prepared(org), prepared(fits)

    @staticmethod
    def _reason(online: int, busy: int) -> str:
        if online == 0:
            return "no_device"
        return "devices_busy" if busy >= online else "scheduling"

    @classmethod
    @cache
    def _durations_statement(cls) -> Any:
        return prepared(
            cls.scoped_view(TestRun.started_at, TestRun.finished_at)
            .where(TestRun.status == "passed", TestRun.started_at.is_not(None), TestRun.finished_at.is_not(None))
            .order_by(TestRun.id.desc())
            .limit(DURATION_SAMPLE)
        )

    async def typical_duration(self) -> float | None:
        """The median duration of the organisation's latest passed runs (None without any), kept per process
        for DURATION_CACHE_SECONDS: queued runs' ETAs read it on the status route."""
        now = time.monotonic()
        cached = _durations.get(self.organization_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        rows = await self.read_all(self._durations_statement())
        seconds = sorted(max(0.0, (end - start).total_seconds()) for start, end in rows)
        median = statistics.median(seconds) if seconds else None
        if len(_durations) >= 10_000:
            _durations.clear()
        _durations[self.organization_id] = (median, now + DURATION_CACHE_SECONDS)
        return median

    @staticmethod
    def _eta(reason: str, position: int, slots: int, typical: float | None) -> int | None:
        """Seconds until a queued run starts, roughly: the runs ahead of it go ``slots`` at a time, each
        taking the typical duration, and a busy slot is half way through on average."""
        if typical is None or reason == "no_device" or slots <= 0:
            return None
        waiting = 0.0 if reason == "scheduling" else typical / 2
        return round((position - 1) / slots * typical + waiting)

    async def queue_info(self, run: Any, default_cap: int) -> tuple[str, int, int | None]:
        """(reason, position, ETA in seconds) for a queued run: what it waits for, its place in the claim
        order and about when it starts."""
        ahead, org_stmt, fits = self._queue_statements()
        counted = await self.read_all(ahead, rank=run.priority_rank, order=run.queue_order, run_id=run.id)
        position = int(counted[0][0]) + 1
        running, cap = (await self.read_all(org_stmt, default_cap=default_cap))[0]
        if running >= cap:
            reason, slots = "concurrency_cap", int(cap)
        else:
            online, busy = (await self.read_all(fits, target_id=run.target_id))[0]
            reason, slots = self._reason(int(online), int(busy)), min(int(cap), int(online))
        return reason, position, self._eta(reason, position, slots, await self.typical_duration())

    async def queue_infos(self, runs: Sequence[Any], default_cap: int) -> dict[str, tuple[str, int, int | None]]:
        """``queue_info`` for the queued runs among ``runs`` (a page of a list), in three statements:
        positions from one pass over the organisation's queue, reasons once per target."""
        queued = [run for run in runs if run.status == "queued"]
        if not queued:
            return {}
        ranked = (
            self.scoped_view(
                TestRun.id,
                func.row_number()
                .over(order_by=(TestRun.priority_rank.desc(), TestRun.queue_order, TestRun.id))
                .label("position"),
            )
            .where(TestRun.status == "queued")
            .subquery()
        )
        wanted = [run.id for run in queued]
        positions = {
            run_id: int(position)
            for run_id, position in await self.read_all(
                select(ranked.c.id, ranked.c.position).where(ranked.c.id.in_(wanted))
            )
        }
        _ahead, org_stmt, _fits = self._queue_statements()
        running, cap = (await self.read_all(org_stmt, default_cap=default_cap))[0]
        targets = sorted({run.target_id for run in queued})
        counts = {
            target_id: (int(online), int(busy))
            for target_id, online, busy in await self.read_all(
                select(DeviceMatch.target_id, func.count(), func.count(Device.current_run_id))
                .join(Device, Device.id == DeviceMatch.device_id)
                .where(DeviceMatch.target_id.in_(targets), Device.online.is_(True), serves(self.organization_id))
                .group_by(DeviceMatch.target_id)
            )
        }
        reasons = {
            target: "concurrency_cap" if running >= cap else self._reason(*counts.get(target, (0, 0)))
            for target in targets
        }
        typical = await self.typical_duration()
        # A run that left the queue between the page and this read has no position: it is left out.
        return {
            run.id: (
                reasons[run.target_id],
                positions[run.id],
                self._eta(
                    reasons[run.target_id],
                    positions[run.id],
                    min(int(cap), counts.get(run.target_id, (0, 0))[0]),
                    typical,
                ),
            )
            for run in queued
            if run.id in positions
        }

    async def recent_durations(
        self, test_case_ids: Sequence[str], platform: str, per_test_case: int = 10
    ) -> dict[str, list[float]]:
        """Seconds each of these test cases' latest ``per_test_case`` passed runs on ``platform`` (as runs
        store it: Android | iOS) took, newest first."""
        if not test_case_ids:
            return {}
        ranked = (
            self.scoped_view(
                TestRun.test_case_id,
                TestRun.started_at,
                TestRun.finished_at,
                func.row_number()
                .over(partition_by=TestRun.test_case_id, order_by=(TestRun.finished_at.desc(), TestRun.id.desc()))
                .label("rn"),
            )
            .where(
                TestRun.test_case_id.in_(list(test_case_ids)),
                TestRun.status == "passed",
                TestRun.device_platform == platform,
                TestRun.started_at.is_not(None),
                TestRun.finished_at.is_not(None),
            )
            .subquery()
        )
        stmt = select(ranked.c.test_case_id, ranked.c.started_at, ranked.c.finished_at).where(
            ranked.c.rn <= per_test_case
        )
        out: dict[str, list[float]] = {}
        for test_case_id, started_at, finished_at in await self.read_all(stmt):
            out.setdefault(test_case_id, []).append(max(0.0, (finished_at - started_at).total_seconds()))
        return out

    async def batch_counts(self, batch_id: str) -> list[Any]:
        """A batch's runs counted by (status, failure kind, quarantined, passed-after-a-retry), with the
        test retries they used and their latest end."""
        retried = case((TestRun.test_retries_used > 0, 1), else_=0)
        stmt = (
            self.scoped_view(
                TestRun.status,
                TestRun.failure_kind,
                TestRun.quarantined,
                retried.label("retried"),
                func.count().label("runs"),
                func.sum(TestRun.test_retries_used).label("retries_used"),
                func.max(TestRun.finished_at).label("finished_at"),
            )
            .where(TestRun.batch_id == batch_id)
            .group_by(TestRun.status, TestRun.failure_kind, TestRun.quarantined, retried)
        )
        return await self.read_all(stmt)

    async def attempts(self, run_id: str) -> list[Any]:
        stmt = (
            self.scoped_view(RunAttempt)
            .join(RunAttempt, RunAttempt.run_id == TestRun.id)
            .where(TestRun.id == run_id)
            .order_by(RunAttempt.number)
        )
        return await self.read_all(stmt)

    async def steps(self, run_id: str, attempt: int) -> list[Any]:
        stmt = (
            self.scoped_view(RunStep)
            .join(RunStep, RunStep.run_id == TestRun.id)
            .where(TestRun.id == run_id, RunStep.attempt == attempt)
            .order_by(RunStep.index)
        )
        return await self.read_all(stmt)

    async def artifacts(self, run_id: str, attempt: int | None = None) -> list[Any]:
        """The run's videos and device logs (of one attempt, or of all): by attempt, videos first."""
        stmt = (
            self.scoped_view(RunArtifact)
            .join(RunArtifact, RunArtifact.run_id == TestRun.id)
            .where(TestRun.id == run_id)
            .order_by(RunArtifact.attempt, RunArtifact.kind.desc(), RunArtifact.name)
        )
        if attempt is not None:
            stmt = stmt.where(RunArtifact.attempt == attempt)
        return await self.read_all(stmt)

    async def artifact(self, run_id: str, attempt: int, name: str) -> Any | None:
        if not has_shape(run_id, "run"):
            return None
        stmt = (
            self.scoped_view(RunArtifact)
            .join(RunArtifact, RunArtifact.run_id == TestRun.id)
            .where(TestRun.id == run_id, RunArtifact.attempt == attempt, RunArtifact.name == name)
        )
        rows = await self.read_all(stmt)
        return rows[0] if rows else None

    async def add_all(self, runs: list[TestRun]) -> None:
        for run in runs:
            if run.organization_id != self.organization_id:
                raise ValueError("run belongs to another organisation")
        self.session.add_all(runs)
        await self.session.flush()


class RunRetentionRepository:
    """The retention purge's queries. They span organisations on purpose: the purge is a server task,
    not a request, and only releases files of runs past the retention (it returns no tenant data)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def runs_with_files_before(self, cutoff: datetime, limit: int) -> list[str]:
        """Runs finished before ``cutoff`` that still have artifacts or screenshots."""
        with_artifacts = (
            select(RunArtifact.run_id)
            .join(TestRun, TestRun.id == RunArtifact.run_id)
            .where(TestRun.finished_at < cutoff)
        )
        with_screenshots = (
            select(RunStep.run_id)
            .join(TestRun, TestRun.id == RunStep.run_id)
            .where(RunStep.screenshot_key.is_not(None), TestRun.finished_at < cutoff)
        )
        found = union(with_artifacts, with_screenshots).subquery()
        rows = await self.session.execute(select(found.c.run_id).order_by(found.c.run_id).limit(limit))
        return [row[0] for row in rows]

    async def release(self, run_ids: Sequence[str]) -> list[str]:
        """Forget the runs' artifacts and their steps' screenshots; the storage keys to delete once this
        commits. Each row goes to one caller only (DELETE … RETURNING; locked reads), however many purge."""
        if not run_ids:
            return []
        artifacts = await self.session.execute(
            delete(RunArtifact).where(RunArtifact.run_id.in_(run_ids)).returning(RunArtifact.storage_key)
        )
        keys = [row[0] for row in artifacts]
        # RETURNING gives the new (NULL) value of an update: the keys are read first, the rows locked
        # (FOR UPDATE on PostgreSQL; SQLite's write transaction holds the whole database already), so a
        # concurrent purge waits and then finds these screenshots gone.
        with_screenshots = (RunStep.run_id.in_(run_ids), RunStep.screenshot_key.is_not(None))
        screenshots = await self.session.scalars(
            select(RunStep.screenshot_key).where(*with_screenshots).with_for_update()
        )
        keys += [key for key in screenshots if key]
        await self.session.execute(update(RunStep).where(*with_screenshots).values(screenshot_key=None))
        return keys
