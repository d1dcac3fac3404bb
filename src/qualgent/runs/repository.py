from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, func, select
from sqlalchemy.orm import contains_eager

from qualgent.db.models import TestRun
from qualgent.db.repository import OrgScopedRepository
from qualgent.ids import has_shape

COMPLETED = ("passed", "failed")


class RunRepository(OrgScopedRepository[TestRun]):
    model = TestRun
    id_prefix = "run"

    def _detailed(self) -> Select[tuple[TestRun]]:
        # One query: the run with the test case, app and user it shows.
        return (
            self.scoped()
            .join(TestRun.test_case)
            .join(TestRun.app)
            .join(TestRun.user)
            .options(contains_eager(TestRun.test_case), contains_eager(TestRun.app), contains_eager(TestRun.user))
        )

    async def get_detailed(self, run_id: str) -> TestRun | None:
        if not has_shape(run_id, "run"):
            return None
        result: TestRun | None = await self.session.scalar(self._detailed().where(TestRun.id == run_id))
        return result

    async def page(
        self,
        limit: int,
        before: str | None,
        *,
        status: str | None = None,
        test_case_id: str | None = None,
        app_id: str | None = None,
        ids: list[str] | None = None,
    ) -> Sequence[TestRun]:
        stmt = self._detailed().order_by(TestRun.id.desc()).limit(limit)
        if before:
            stmt = stmt.where(TestRun.id < before)
        if status:
            stmt = stmt.where(TestRun.status == status)
        if test_case_id:
            stmt = stmt.where(TestRun.test_case_id == test_case_id)
        if app_id:
            stmt = stmt.where(TestRun.app_id == app_id)
        if ids is not None:
            stmt = stmt.where(TestRun.id.in_(ids))
        return (await self.session.scalars(stmt)).unique().all()

    async def latest_completed(self, test_case_ids: Sequence[str]) -> dict[str, TestRun]:
        """Each test case's most recently finished passed-or-failed run."""
        if not test_case_ids:
            return {}
        ranked = (
            self.scoped(
                TestRun.id,
                func.row_number()
                .over(
                    partition_by=TestRun.test_case_id,
                    order_by=(TestRun.finished_at.desc(), TestRun.id.desc()),
                )
                .label("rn"),
            )
            .where(TestRun.test_case_id.in_(test_case_ids), TestRun.status.in_(COMPLETED))
            .subquery()
        )
        stmt = self._detailed().where(TestRun.id.in_(select(ranked.c.id).where(ranked.c.rn == 1)))
        runs = (await self.session.scalars(stmt)).unique().all()
        return {run.test_case_id: run for run in runs}

    async def add_all(self, runs: list[TestRun]) -> None:
        for run in runs:
            if run.organization_id != self.organization_id:
                raise ValueError("run belongs to another organisation")
        self.session.add_all(runs)
        await self.session.flush()
