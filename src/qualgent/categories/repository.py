from __future__ import annotations

from collections.abc import Sequence

from qualgent.db.models import Category
from qualgent.db.repository import OrgScopedRepository


class CategoryRepository(OrgScopedRepository[Category]):
    model = Category
    id_prefix = "cat"

    async def page(self, limit: int, after: str | None) -> Sequence[Category]:
        stmt = self.scoped().order_by(Category.id).limit(limit)
        if after:
            stmt = stmt.where(Category.id > after)
        return (await self.session.scalars(stmt)).all()

    async def by_name(self, name: str) -> Category | None:
        result: Category | None = await self.session.scalar(self.scoped().where(Category.name == name))
        return result

    async def delete(self, category: Category) -> None:
        await self.session.delete(category)
        await self.session.flush()
