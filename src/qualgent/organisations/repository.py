"""Organisations and users: administrative queries, used by the CLI and the first start."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.models import Organization, User


class OrganisationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def count(self) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(Organization)) or 0)

    async def get(self, organization_id: str) -> Organization | None:
        return await self.session.get(Organization, organization_id)

    async def list(self) -> list[Organization]:
        return list((await self.session.scalars(select(Organization).order_by(Organization.id))).all())

    async def add(self, obj: Organization | User) -> None:
        self.session.add(obj)
        await self.session.flush()

    async def get_user(self, user_id: str) -> User | None:
        return await self.session.get(User, user_id)

    async def user_by_email(self, email: str) -> User | None:
        return await self.session.scalar(select(User).where(User.email == email))

    async def first_user(self, organization_id: str) -> User | None:
        stmt = select(User).where(User.organization_id == organization_id).order_by(User.id).limit(1)
        return await self.session.scalar(stmt)
