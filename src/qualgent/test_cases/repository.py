from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import contains_eager

from qualgent.db.models import TestCase
from qualgent.db.repository import OrgScopedRepository
from qualgent.ids import has_shape


class TestCaseRepository(OrgScopedRepository[TestCase]):
    __test__ = False  # not a pytest class
    model = TestCase
    id_prefix = "tc"
    soft_delete = True

    def _with_category(self) -> Select[Any]:
        return self.scoped().outerjoin(TestCase.category).options(contains_eager(TestCase.category))

    async def get_with_category(self, test_case_id: str) -> TestCase | None:
        if not has_shape(test_case_id, "tc"):
            return None
        result: TestCase | None = await self.session.scalar(self._with_category().where(TestCase.id == test_case_id))
        return result

    async def page(self, limit: int, after: str | None, category_id: str | None) -> Sequence[TestCase]:
        if category_id is not None and not has_shape(category_id, "cat"):
            return []  # no category has that ID (and PostgreSQL refuses some strings, e.g. with NUL)
        stmt = self._with_category().order_by(TestCase.id).limit(limit)
        if after:
            stmt = stmt.where(TestCase.id > after)
        if category_id is not None:
            stmt = stmt.where(TestCase.category_id == category_id)
        return list((await self.session.scalars(stmt)).all())

    async def active(self, category_id: str | None) -> Sequence[TestCase]:
        stmt = self.scoped().where(TestCase.status == "active").order_by(TestCase.id)
        if category_id is not None:
            stmt = stmt.where(TestCase.category_id == category_id)
        return list((await self.session.scalars(stmt)).all())
