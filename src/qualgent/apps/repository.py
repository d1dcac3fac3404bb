from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.base import utcnow
from qualgent.db.models import AppFile, Blob
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


class BlobRepository(OrgScopedRepository[Blob]):
    """Content-addressed objects of one organisation, with the count of app records using each."""

    model = Blob
    id_prefix = ""

    async def acquire(self, sha256: str, key: str, size: int) -> tuple[str, bool]:
        """One more reference to the content ``sha256``: the key it lives under, and whether this call
        created the blob (so the caller's freshly stored object is the one kept)."""
        existing = await self._increment(sha256)
        if existing is not None:
            return existing, False
        try:
            # A savepoint: when a concurrent identical upload inserted first, only this insert is undone.
            async with self.session.begin_nested():
                self.session.add(
                    Blob(organization_id=self.organization_id, sha256=sha256, storage_key=key, size=size, ref_count=1)
                )
        except IntegrityError:
            existing = await self._increment(sha256)
            if existing is None:
                raise
            return existing, False
        return key, True

    async def release(self, sha256: str) -> None:
        """One reference fewer (the purge removes a blob, and its object, once none is left)."""
        await self.session.execute(
            update(Blob)
            .where(Blob.organization_id == self.organization_id, Blob.sha256 == sha256)
            .values(ref_count=Blob.ref_count - 1, updated_at=utcnow())
        )

    async def _increment(self, sha256: str) -> str | None:
        key: str | None = await self.session.scalar(
            update(Blob)
            .where(Blob.organization_id == self.organization_id, Blob.sha256 == sha256)
            .values(ref_count=Blob.ref_count + 1, updated_at=utcnow())
            .returning(Blob.storage_key)
        )
        return key


@dataclass(frozen=True)
class PurgeableApp:
    id: str
    organization_id: str
    sha256: str
    storage_key: str


class PurgeRepository:
    """The clean-up's queries. They span organisations on purpose: the purge is a server task, not a
    request, and touches only rows it releases (it never returns tenant data to anyone)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def deleted_apps_before(self, cutoff: datetime, limit: int) -> list[PurgeableApp]:
        rows = await self.session.execute(
            select(AppFile.id, AppFile.organization_id, AppFile.sha256, AppFile.storage_key)
            .where(AppFile.deleted_at.is_not(None), AppFile.deleted_at < cutoff, AppFile.purged_at.is_(None))
            .order_by(AppFile.id)
            .limit(limit)
        )
        return [PurgeableApp(*row) for row in rows.all()]

    async def release(self, app: PurgeableApp) -> str | None:
        """Mark the app purged and drop its reference; the blob's key when the app's own object differs
        from it (apps stored before content addressing), so the caller deletes that object too."""
        marked = await self.session.execute(
            update(AppFile).where(AppFile.id == app.id, AppFile.purged_at.is_(None)).values(purged_at=utcnow())
        )
        if marked.rowcount != 1:  # type: ignore[attr-defined]
            return None
        blob_key: str | None = await self.session.scalar(
            update(Blob)
            .where(Blob.organization_id == app.organization_id, Blob.sha256 == app.sha256)
            .values(ref_count=Blob.ref_count - 1, updated_at=utcnow())
            .returning(Blob.storage_key)
        )
        return blob_key

    async def unreferenced_blobs(self, limit: int) -> list[tuple[str, str, str]]:
        rows = await self.session.execute(
            select(Blob.organization_id, Blob.sha256, Blob.storage_key).where(Blob.ref_count <= 0).limit(limit)
        )
        return [(org, sha, key) for org, sha, key in rows.all()]

    async def drop_blob(self, organization_id: str, sha256: str) -> bool:
        """Delete the blob row if it is still unreferenced (an upload may have taken it again)."""
        result = await self.session.execute(
            delete(Blob).where(Blob.organization_id == organization_id, Blob.sha256 == sha256, Blob.ref_count <= 0)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]
