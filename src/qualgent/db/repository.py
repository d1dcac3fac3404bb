"""The single point where organisation scoping is enforced.

Every repository of tenant data derives from ``OrgScopedRepository``. Its ``scoped()`` statement (ORM,
in the request's transaction) and ``scoped_view()`` statement (Core, for the fast ``Reader``) are where
every read starts, so no route or service filters by organisation itself.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Self, TypeVar

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.base import Base
from qualgent.db.dialect import Reader
from qualgent.ids import has_shape

M = TypeVar("M", bound=Base)

ORG_PARAM = "scope_organization_id"


class OrgScopedRepository(Generic[M]):
    model: ClassVar[type[Any]]
    id_prefix: ClassVar[str]
    # Models with soft deletion hide deleted rows from every read.
    soft_delete: ClassVar[bool] = False

    def __init__(self, session: AsyncSession | None, organization_id: str, reader: Reader | None = None) -> None:
        self._session = session
        self.organization_id = organization_id
        self._reader = reader

    @classmethod
    def for_reads(cls, reader: Reader, organization_id: str) -> Self:
        """A repository for fast reads only (``read_all`` and what is built on it): no session at all."""
        return cls(None, organization_id, reader)

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError(f"{type(self).__name__} was opened for fast reads only")
        return self._session

    def scoped(self, *columns: Any) -> Select[Any]:
        stmt = select(*columns) if columns else select(self.model)
        if columns:
            stmt = stmt.select_from(self.model)
        stmt = stmt.where(self.model.organization_id == self.organization_id)
        if self.soft_delete:
            stmt = stmt.where(self.model.deleted_at.is_(None))
        return stmt

    @classmethod
    def scoped_view(cls, *columns: Any) -> Select[Any]:
        """A Core statement over ``columns`` scoped by a bind parameter, to build once and reuse."""
        stmt = select(*columns).select_from(cls.model).where(cls.model.organization_id == bindparam(ORG_PARAM))
        if cls.soft_delete:
            stmt = stmt.where(cls.model.deleted_at.is_(None))
        return stmt

    async def read_all(self, stmt: Any, **params: Any) -> list[Any]:
        """Run a ``scoped_view`` statement through the fast reader (or the session when there is none)."""
        params[ORG_PARAM] = self.organization_id
        if self._reader is not None:
            return await self._reader.all(stmt, params)
        return list((await self.session.execute(stmt, params)).all())

    async def get(self, id_: str) -> M | None:
        if not has_shape(id_, self.id_prefix):
            return None
        result: M | None = await self.session.scalar(self.scoped().where(self.model.id == id_))
        return result

    async def get_many(self, ids: list[str]) -> dict[str, M]:
        wanted = [i for i in ids if has_shape(i, self.id_prefix)]
        if not wanted:
            return {}
        rows = await self.session.scalars(self.scoped().where(self.model.id.in_(wanted)))
        return {row.id: row for row in rows}

    async def add(self, obj: M) -> M:
        if getattr(obj, "organization_id", None) != self.organization_id:
            raise ValueError("object belongs to another organisation")
        self.session.add(obj)
        await self.session.flush()
        return obj
