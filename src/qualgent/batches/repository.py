"""Batches: the runs one run / run-all request queued (every query of batches/)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import update

from qualgent.db.base import utcnow
from qualgent.db.models import Batch
from qualgent.db.repository import OrgScopedRepository


class BatchRepository(OrgScopedRepository[Batch]):
    model = Batch
    id_prefix = "batch"

    async def earlier_in_group(self, group_key: str, before: str) -> list[str]:
        """IDs of the group's batches made before ``before`` (IDs sort by creation)."""
        stmt = self.scoped(Batch.id).where(Batch.group_key == group_key, Batch.id < before).order_by(Batch.id)
        return list((await self.session.scalars(stmt)).all())

    async def mark_superseded(self, batch_ids: Sequence[str], by: str) -> None:
        if not batch_ids:
            return
        await self.session.execute(
            update(Batch)
            .where(Batch.organization_id == self.organization_id, Batch.id.in_(list(batch_ids)))
            .where(Batch.superseded_by.is_(None))
            .values(superseded_by=by, updated_at=utcnow())
        )
