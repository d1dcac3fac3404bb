from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, update

from qualgent.db.models import IdempotencyKey
from qualgent.db.repository import OrgScopedRepository


class IdempotencyRepository(OrgScopedRepository[IdempotencyKey]):
    model = IdempotencyKey
    id_prefix = ""

    async def get(self, key: str) -> IdempotencyKey | None:
        row: IdempotencyKey | None = await self.session.scalar(
            self.scoped().where(IdempotencyKey.key == key).execution_options(populate_existing=True)
        )
        return row

    async def insert(self, key: str, fingerprint: str) -> None:
        """Claim the key; the primary key (organisation, key) makes a concurrent claim fail (or, on
        PostgreSQL, wait for the first transaction and then fail)."""
        self.session.add(IdempotencyKey(organization_id=self.organization_id, key=key, fingerprint=fingerprint))
        await self.session.flush()

    async def record(self, key: str, status_code: int, body: str) -> None:
        await self.session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.organization_id == self.organization_id, IdempotencyKey.key == key)
            .values(status_code=status_code, response_body=body)
        )

    async def delete_expired(self, key: str, before: datetime) -> None:
        await self.session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.organization_id == self.organization_id,
                IdempotencyKey.key == key,
                IdempotencyKey.created_at < before,
            )
        )

    async def purge_expired(self, before: datetime) -> None:
        """Forget this organisation's keys older than ``before`` (kept 24 hours)."""
        await self.session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.organization_id == self.organization_id, IdempotencyKey.created_at < before
            )
        )
