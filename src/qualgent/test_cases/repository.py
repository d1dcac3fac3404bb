from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, delete, insert, update
from sqlalchemy.orm import contains_eager

from qualgent.db.base import utcnow
from qualgent.db.models import TestCase, TestCaseFile
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

    async def get_for_update(self, test_case_id: str) -> TestCase | None:
        """The test case, its row locked until the transaction ends (PostgreSQL; SQLite's writers are
        serialised already): two changes of its files cannot interleave their reads and writes."""
        if not has_shape(test_case_id, "tc"):
            return None
        result: TestCase | None = await self.session.scalar(
            self.scoped().where(TestCase.id == test_case_id).with_for_update()
        )
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

    # ------------------------------------------------------------------------------------ files
    # Every read joins the test case through ``scoped()``: a file is reachable only through a live test
    # case of this organisation. Writes take a test case already read through ``scoped()``.

    def _files(self, test_case_id: str, *columns: Any) -> Select[Any]:
        return (
            self.scoped(*columns)
            .join(TestCaseFile, TestCaseFile.test_case_id == TestCase.id)
            .where(TestCase.id == test_case_id)
        )

    async def files(self, test_case_id: str) -> list[Any]:
        """(path, size, sha256) of the test case's files, sorted by path."""
        if not has_shape(test_case_id, "tc"):
            return []
        stmt = self._files(test_case_id, TestCaseFile.path, TestCaseFile.size, TestCaseFile.sha256)
        return list((await self.session.execute(stmt.order_by(TestCaseFile.path))).all())

    async def file_contents(self, test_case_id: str) -> dict[str, bytes]:
        """Path → bytes of every file of the test case (to check a new flow against them)."""
        if not has_shape(test_case_id, "tc"):
            return {}
        rows = await self.session.execute(self._files(test_case_id, TestCaseFile.path, TestCaseFile.content))
        return {row.path: row.content for row in rows}

    async def file(self, test_case_id: str, path: str) -> bytes | None:
        if not has_shape(test_case_id, "tc"):
            return None
        stmt = self._files(test_case_id, TestCaseFile.content).where(TestCaseFile.path == path)
        content: bytes | None = await self.session.scalar(stmt)
        return content

    async def replace_files(self, case: TestCase, files: list[tuple[str, bytes, str]]) -> None:
        """Make ``files`` (path, content, sha256) the test case's whole set. Unchanged files (same path and
        SHA-256) are not rewritten: a bundle's large media usually stays while a flow changes."""
        if case.organization_id != self.organization_id:
            raise ValueError("test case belongs to another organisation")
        stored = {row.path: row.sha256 for row in await self.files(case.id)}
        wanted = {path: (content, sha256) for path, content, sha256 in files}
        gone = [path for path in stored if path not in wanted]
        if gone:
            await self.session.execute(
                delete(TestCaseFile).where(TestCaseFile.test_case_id == case.id, TestCaseFile.path.in_(gone))
            )
        now = utcnow()
        for path, (content, sha256) in wanted.items():
            if path in stored and stored[path] != sha256:
                await self.session.execute(
                    update(TestCaseFile)
                    .where(TestCaseFile.test_case_id == case.id, TestCaseFile.path == path)
                    .values(content=content, size=len(content), sha256=sha256, updated_at=now)
                )
        new = [
            {
                "test_case_id": case.id,
                "path": path,
                "content": content,
                "size": len(content),
                "sha256": sha256,
                "created_at": now,
                "updated_at": now,
            }
            for path, (content, sha256) in wanted.items()
            if path not in stored
        ]
        if new:
            await self.session.execute(insert(TestCaseFile), new)
