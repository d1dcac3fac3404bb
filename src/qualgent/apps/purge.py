"""The clean-up: content of deleted apps past retention, unreferenced blobs, abandoned and crashed uploads,
and the videos, device logs and screenshots of runs finished longer than the run retention ago.

Runs periodically in every server process (``Purger``) and on demand (``qualgent admin purge``). Every
step is safe to run concurrently with itself and with uploads: rows are released with conditional
statements, and a partial file is removed only when no process holds its lock (``flock`` locks die with
their process, so a SIGKILLed upload's file is unlocked at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qualgent.apps.repository import PurgeRepository
from qualgent.config import Settings
from qualgent.db.base import utcnow
from qualgent.events import repository as events_repository
from qualgent.periodic import PeriodicTask
from qualgent.runs.repository import RunRetentionRepository
from qualgent.storage.base import Storage, remove_if_unlocked
from qualgent.uploads.repository import ExpiredUploadRepository

log = logging.getLogger("qualgent.purge")

BATCH = 500
# A tus data file without a database row: its creation request may not have committed yet.
ORPHAN_GRACE_SECONDS = 3600.0


@dataclass
class PurgeReport:
    apps_released: int = 0
    blobs_deleted: int = 0
    uploads_expired: int = 0
    files_removed: int = 0
    runs_cleared: int = 0
    run_files_deleted: int = 0
    events_deleted: int = 0

    def __str__(self) -> str:
        return (
            f"{self.apps_released} deleted apps released, {self.blobs_deleted} stored objects deleted, "
            f"{self.uploads_expired} expired uploads removed, {self.files_removed} partial files removed, "
            f"{self.runs_cleared} finished runs' artifacts and screenshots deleted "
            f"({self.run_files_deleted} stored objects), {self.events_deleted} old run events deleted"
        )

    def __bool__(self) -> bool:
        return any(vars(self).values())


async def purge(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    storage: Storage,
    now: datetime | None = None,
) -> PurgeReport:
    now = now or utcnow()
    report = PurgeReport()
    await _release_deleted_apps(sessions, storage, now - timedelta(days=settings.app_retention_days), report)
    await _delete_unreferenced_blobs(sessions, storage, report)
    await _expire_uploads(settings, sessions, now, report)
    report.files_removed += await asyncio.to_thread(_remove_dead_staging, settings, storage)
    await _clear_old_runs(sessions, storage, now - timedelta(days=settings.run_retention_days), report)
    async with sessions() as session:
        # The live event stream's log (events/): what a stream resumed with Last-Event-ID can still replay.
        report.events_deleted += await events_repository.delete_before(
            session, now - timedelta(hours=settings.events_retention_hours)
        )
        await session.commit()
    return report


async def _release_deleted_apps(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, cutoff: datetime, report: PurgeReport
) -> None:
    while True:
        own_objects: list[str] = []
        async with sessions() as session:
            repo = PurgeRepository(session)
            apps = await repo.deleted_apps_before(cutoff, BATCH)
            for app in apps:
                blob_key = await repo.release(app)
                if blob_key is not None:
                    report.apps_released += 1
                    if blob_key != app.storage_key:
                        # Stored before content addressing, under its own key.
                        own_objects.append(app.storage_key)
            await session.commit()
        for key in own_objects:
            await storage.delete(key)
        if len(apps) < BATCH:
            return


async def _delete_unreferenced_blobs(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, report: PurgeReport
) -> None:
    while True:
        async with sessions() as session:
            repo = PurgeRepository(session)
            blobs = await repo.unreferenced_blobs(BATCH)
            for organization_id, sha256, key in blobs:
                if await repo.drop_blob(organization_id, sha256):
                    # Deleted before the row's deletion commits: an upload of the same bytes meanwhile
                    # waits on the row, finds it gone and stores its own copy under its own key.
                    await storage.delete(key)
                    report.blobs_deleted += 1
            await session.commit()
        if len(blobs) < BATCH:
            return


async def _expire_uploads(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], now: datetime, report: PurgeReport
) -> None:
    while True:
        async with sessions() as session:
            repo = ExpiredUploadRepository(session)
            expired = await repo.expired(now, BATCH)
            for upload_id in expired:
                if await repo.delete_if_expired(upload_id, now):
                    report.uploads_expired += 1
                    with contextlib.suppress(FileNotFoundError):
                        (settings.tus_dir / f"{upload_id}.part").unlink()
            # Finished uploads' status rows are kept a retention period, then dropped (their apps stay).
            await repo.delete(await repo.finished_before(now - timedelta(days=settings.app_retention_days), BATCH))
            await session.commit()
        if len(expired) < BATCH:
            break
    # Data files whose row is gone (a crash between creating the file and committing the row).
    if settings.tus_dir.is_dir():
        files = {p.stem: p for p in settings.tus_dir.glob("upload_*.part")}
        async with sessions() as session:
            known = await ExpiredUploadRepository(session).existing(list(files))
        for upload_id, path in files.items():
            if upload_id not in known and await asyncio.to_thread(remove_if_unlocked, path, ORPHAN_GRACE_SECONDS):
                report.files_removed += 1


async def _clear_old_runs(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, cutoff: datetime, report: PurgeReport
) -> None:
    """Runs finished before ``cutoff`` lose their videos, device logs and screenshots (the runs, their
    steps and the steps' log lines stay). The rows go first; the objects once that has committed."""
    while True:
        async with sessions() as session:
            repo = RunRetentionRepository(session)
            run_ids = await repo.runs_with_files_before(cutoff, BATCH)
            keys = await repo.release(run_ids)
            await session.commit()
        for key in keys:
            try:
                await storage.delete(key)
            except Exception:
                # Nothing refers to it any more: a later purge cannot find it; say which.
                log.warning("purge: could not delete %s of an old run from the store", key, exc_info=True)
                continue
            report.run_files_deleted += 1
        report.runs_cleared += len(run_ids)
        if len(run_ids) < BATCH:
            return


def _remove_dead_staging(settings: Settings, storage: Storage) -> int:
    """Staging files of single-request uploads whose process died (SIGKILL, power loss), and the store's
    own leftovers (S3 multipart uploads never completed) older than the upload expiry."""
    return storage.cleanup_stale(settings.upload_expiry_seconds)


class Purger(PeriodicTask):
    """Runs ``purge`` every ``purge_interval`` seconds in the background."""

    log = log

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], storage: Storage) -> None:
        self.settings = settings
        self.sessions = sessions
        self.storage = storage
        self.interval = settings.purge_interval

    async def run_once(self) -> PurgeReport:
        report = await purge(self.settings, self.sessions, self.storage)
        if report:
            log.info("purge: %s", report)
        return report
