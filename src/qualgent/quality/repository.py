"""What test cases' runs say about them: recent results, builds, durations (every query of quality/)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select

from qualgent.db.models import AppFile, TestRun
from qualgent.db.repository import OrgScopedRepository
from qualgent.ids import has_shape

FINISHED = ("passed", "failed", "cancelled")


def decided() -> Any:
    """A run that says something about its test: passed, or failed as `test` (infrastructure failures,
    timeouts and cancellations say nothing about the test and never count as flakiness)."""
    return or_(TestRun.status == "passed", and_(TestRun.status == "failed", TestRun.failure_kind == "test"))


class QualityRepository(OrgScopedRepository[TestRun]):
    model = TestRun
    id_prefix = "run"

    async def recent_results(self, test_case_ids: Sequence[str], per_test_case: int) -> list[Any]:
        """Each test case's latest ``per_test_case`` decided runs, newest first (by end): result, build,
        device kind and timings."""
        if not test_case_ids:
            return []
        ranked = (
            self.scoped_view(
                TestRun.test_case_id,
                TestRun.status,
                TestRun.test_retries_used,
                TestRun.device_name,
                TestRun.device_platform,
                TestRun.device_os_version,
                TestRun.started_at,
                TestRun.finished_at,
                TestRun.id,
                func.row_number()
                .over(partition_by=TestRun.test_case_id, order_by=(TestRun.finished_at.desc(), TestRun.id.desc()))
                .label("rn"),
            )
            .where(TestRun.test_case_id.in_(list(test_case_ids)), decided(), TestRun.finished_at.is_not(None))
            .subquery()
        )
        stmt = select(ranked).where(ranked.c.rn <= per_test_case).order_by(ranked.c.test_case_id, ranked.c.rn)
        return await self.read_all(stmt)

    async def same_build_conflicts(self, test_case_ids: Sequence[str], since: datetime) -> dict[str, Any]:
        """Test cases that, since ``since``, passed and failed (as `test`) on one build (SHA-256) on one
        kind of device, or passed on a test retry: test case → (sha256, device name) of one such build."""
        if not test_case_ids:
            return {}
        passed = func.max(case((TestRun.status == "passed", 1), else_=0))
        failed = func.max(case((TestRun.status == "failed", 1), else_=0))
        retried_pass = func.max(case((and_(TestRun.status == "passed", TestRun.test_retries_used > 0), 1), else_=0))
        stmt = (
            self.scoped_view(TestRun.test_case_id, AppFile.sha256, TestRun.device_name, passed, failed, retried_pass)
            .join(AppFile, AppFile.id == TestRun.app_id)
            .where(TestRun.test_case_id.in_(list(test_case_ids)), decided(), TestRun.finished_at >= since)
            .group_by(
                TestRun.test_case_id,
                AppFile.sha256,
                TestRun.device_name,
                TestRun.device_platform,
                TestRun.device_os_version,
            )
            .having(or_(and_(passed == 1, failed == 1), retried_pass == 1))
        )
        found: dict[str, Any] = {}
        for row in await self.read_all(stmt):
            found.setdefault(row[0], row)
        return found

    async def history(self, test_case_id: str, limit: int, before: str | None) -> list[Any]:
        """The test case's finished runs, newest first (by ID, as lists page), with their app's version and
        SHA-256 and their number of attempts."""
        if not has_shape(test_case_id, "tc"):
            return []
        stmt = (
            self.scoped_view(
                TestRun.id,
                TestRun.status,
                TestRun.failure_kind,
                TestRun.failure_message,
                TestRun.failure_step,
                TestRun.device_name,
                TestRun.device_platform,
                TestRun.device_os_version,
                TestRun.device_orientation,
                TestRun.attempt,
                TestRun.test_retries,
                TestRun.test_retries_used,
                TestRun.quarantined,
                TestRun.batch_id,
                TestRun.created_at,
                TestRun.started_at,
                TestRun.finished_at,
                TestRun.app_id,
                AppFile.app_name,
                AppFile.version.label("app_version"),
                AppFile.sha256.label("app_sha256"),
            )
            .join(AppFile, AppFile.id == TestRun.app_id)
            .where(TestRun.test_case_id == test_case_id, TestRun.status.in_(FINISHED))
            .order_by(TestRun.id.desc())
            .limit(limit)
        )
        if before:
            stmt = stmt.where(TestRun.id < before)
        return await self.read_all(stmt)

    async def results_since(self, test_case_id: str, since: datetime, limit: int) -> list[Any]:
        """The test case's latest ``limit`` decided runs that finished since ``since``, newest first:
        (status, test retries used)."""
        stmt = (
            self.scoped_view(TestRun.status, TestRun.test_retries_used)
            .where(TestRun.test_case_id == test_case_id, decided(), TestRun.finished_at >= since)
            .order_by(TestRun.finished_at.desc(), TestRun.id.desc())
            .limit(limit)
        )
        return await self.read_all(stmt)
