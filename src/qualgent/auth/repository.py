"""Queries on API keys. Resolution is by hash and is not organisation-scoped: it finds the organisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.auth.principal import Principal
from qualgent.db.base import utcnow
from qualgent.db.dialect import Reader, prepared
from qualgent.db.models import ApiKey, User

# Key resolution is the one lookup not scoped by organisation: it is how the organisation is found.
_RESOLVE = prepared(
    select(ApiKey.id, ApiKey.organization_id, ApiKey.scopes, ApiKey.rate_limit, User.id, User.name, User.email)
    .join(User, User.id == ApiKey.user_id)
    .where(ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None))
)


def principal_from_row(row: Any, default_rate_limit: int) -> Principal | None:
    if row is None:
        return None
    key_id, org_id, scopes, rate_limit, user_id, user_name, user_email = row
    return Principal(
        organization_id=org_id,
        user_id=user_id,
        user_name=user_name,
        user_email=user_email,
        key_id=key_id,
        scopes=frozenset(scopes.split()),
        rate_limit=rate_limit or default_rate_limit,
    )


async def resolve_fast(reader: Reader, key_hash: str, default_rate_limit: int) -> Principal | None:
    """Resolve a key through the fast reader, outside any transaction."""
    return principal_from_row(await reader.one(_RESOLVE, {"key_hash": key_hash}), default_rate_limit)


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def resolve(self, key_hash: str, default_rate_limit: int) -> Principal | None:
        row = (await self.session.execute(_RESOLVE, {"key_hash": key_hash})).first()
        return principal_from_row(row, default_rate_limit)

    async def touch(self, key_id: str) -> None:
        await self.session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))

    async def add(self, key: ApiKey) -> ApiKey:
        self.session.add(key)
        await self.session.flush()
        return key

    async def list_for_organization(self, organization_id: str) -> Sequence[ApiKey]:
        stmt = select(ApiKey).where(ApiKey.organization_id == organization_id).order_by(ApiKey.id)
        return (await self.session.scalars(stmt)).all()

    async def get(self, key_id: str) -> ApiKey | None:
        return await self.session.get(ApiKey, key_id)

    async def get_in_organization(self, organization_id: str, key_id: str) -> ApiKey | None:
        stmt = select(ApiKey).where(ApiKey.id == key_id, ApiKey.organization_id == organization_id)
        return await self.session.scalar(stmt)
