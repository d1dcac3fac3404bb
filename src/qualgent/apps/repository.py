from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import update

from qualgent.db.base import utcnow
from qualgent.db.models import AppFile
from qualgent.db.repository import OrgScopedRepository


class AppRepository(OrgScopedRepository[AppFile]):
    model = AppFile
    id_prefix = "file"
    soft_delete = True

    async def page(self, limit: int, before: str | None) -> Sequence[AppFile]:
        stmt = self.scoped().order_by(AppFile.id.desc()).limit(limit)
        if before:
            stmt = stmt.where(AppFile.id < before)
        return (await self.session.scalars(stmt)).all()

    async def latest(self, os: str | None = None) -> AppFile | None:
        stmt = self.scoped().order_by(AppFile.id.desc()).limit(1)
        if os:
            stmt = stmt.where(AppFile.os == os)
        result: AppFile | None = await self.session.scalar(stmt)
        return result

    async def soft_delete_many(self, ids: list[str]) -> None:
        await self.session.execute(
            update(AppFile)
            .where(AppFile.organization_id == self.organization_id, AppFile.id.in_(ids))
            .values(deleted_at=utcnow())
        )

    async def remove(self, app: AppFile) -> None:
        """Delete a row outright: only for an upload of this transaction that is being dropped."""
        await self.session.delete(app)
        await self.session.flush()
