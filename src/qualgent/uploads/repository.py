from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.base import utcnow
from qualgent.db.models import ResumableUpload
from qualgent.db.repository import OrgScopedRepository


class UploadRepository(OrgScopedRepository[ResumableUpload]):
    model = ResumableUpload
    id_prefix = "upload"

    async def advance(self, upload_id: str, old: int, new: int, expires_at: datetime) -> bool:
        """Move the offset from ``old`` to ``new``; False when it was not at ``old`` any more."""
        result = await self.session.execute(
            update(ResumableUpload)
            .where(
                ResumableUpload.organization_id == self.organization_id,
                ResumableUpload.id == upload_id,
                ResumableUpload.offset == old,
            )
            .values(offset=new, expires_at=expires_at, updated_at=utcnow())
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def remove(self, upload_id: str) -> None:
        await self.session.execute(
            delete(ResumableUpload).where(
                ResumableUpload.organization_id == self.organization_id, ResumableUpload.id == upload_id
            )
        )


class ExpiredUploadRepository:
    """The clean-up's queries over every organisation's unfinished uploads (a server task, not a request)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def expired(self, now: datetime, limit: int) -> list[str]:
        rows = await self.session.scalars(
            select(ResumableUpload.id)
            .where(ResumableUpload.expires_at < now, ResumableUpload.app_id.is_(None))
            .order_by(ResumableUpload.expires_at)
            .limit(limit)
        )
        return list(rows.all())

    async def delete_if_expired(self, upload_id: str, now: datetime) -> bool:
        result = await self.session.execute(
            delete(ResumableUpload).where(
                ResumableUpload.id == upload_id, ResumableUpload.expires_at < now, ResumableUpload.app_id.is_(None)
            )
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def existing(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        rows = await self.session.scalars(select(ResumableUpload.id).where(ResumableUpload.id.in_(ids)))
        return set(rows.all())

    async def finished_before(self, cutoff: datetime, limit: int) -> list[str]:
        """Finished uploads whose status is no longer needed (their app exists on its own)."""
        rows = await self.session.scalars(
            select(ResumableUpload.id)
            .where(ResumableUpload.app_id.is_not(None), ResumableUpload.expires_at < cutoff)
            .limit(limit)
        )
        return list(rows.all())

    async def delete(self, ids: list[str]) -> None:
        if ids:
            await self.session.execute(delete(ResumableUpload).where(ResumableUpload.id.in_(ids)))
