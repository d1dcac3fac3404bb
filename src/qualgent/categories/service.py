from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.categories.repository import CategoryRepository
from qualgent.categories.schemas import CategoryIn, CategoryPatch
from qualgent.db.models import Category
from qualgent.errors import NotFound, Unprocessable
from qualgent.ids import new_id


def _repo(session: AsyncSession, organization_id: str) -> CategoryRepository:
    return CategoryRepository(session, organization_id)


async def _get(repo: CategoryRepository, category_id: str) -> Category:
    category = await repo.get(category_id)
    if category is None:
        raise NotFound(f"No category {category_id}.")
    return category


async def _ensure_unique(repo: CategoryRepository, name: str, except_id: str | None = None) -> None:
    existing = await repo.by_name(name)
    if existing is not None and existing.id != except_id:
        raise Unprocessable(
            f"A category named {name!r} already exists ({existing.id}).",
            code="duplicate_name",
            details=[{"field": "name", "issue": "already exists"}],
        )


async def create(session: AsyncSession, organization_id: str, body: CategoryIn) -> Category:
    repo = _repo(session, organization_id)
    name = body.name.strip()
    await _ensure_unique(repo, name)
    return await repo.add(
        Category(id=new_id("cat"), organization_id=organization_id, name=name, description=body.description)
    )


async def update(session: AsyncSession, organization_id: str, category_id: str, body: CategoryPatch) -> Category:
    repo = _repo(session, organization_id)
    category = await _get(repo, category_id)
    if body.name is not None:
        name = body.name.strip()
        await _ensure_unique(repo, name, except_id=category.id)
        category.name = name
    if body.description is not None:
        category.description = body.description
    await session.flush()
    return category


async def delete(session: AsyncSession, organization_id: str, category_id: str) -> None:
    """Delete a category; its test cases stay, with no category."""
    repo = _repo(session, organization_id)
    await repo.delete(await _get(repo, category_id))
