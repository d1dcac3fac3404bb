"""What the application holds for its lifetime: settings, database, limiter, storage, devices."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from qualgent.apps.purge import Purger
from qualgent.auth.ratelimit import RateLimiter
from qualgent.config import Settings
from qualgent.db.dialect import Reader, write_sessionmaker
from qualgent.db.session import make_engine, make_sessionmaker
from qualgent.devices.catalogue import Catalogue, load_catalogue
from qualgent.events.hub import EventHub
from qualgent.runs.scheduler import Reaper, Wakeup
from qualgent.secrets.crypto import derive_key
from qualgent.storage.base import Storage
from qualgent.storage.local import LocalStorage

if TYPE_CHECKING:
    from qualgent.webhooks.worker import WebhookWorker


def make_storage(settings: Settings) -> Storage:
    if settings.storage_url and settings.storage_url.startswith("s3://"):
        from qualgent.storage.s3 import S3Storage

        return S3Storage(
            settings.storage_url,
            settings.tmp_dir,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            part_size=settings.s3_part_size,
        )
    if settings.storage_url and not settings.storage_url.startswith(("file:", "local")):
        raise ValueError(f"QUALGENT_STORAGE_URL must be s3://bucket/prefix or unset, not {settings.storage_url!r}")
    return LocalStorage(settings.apps_dir, settings.tmp_dir)


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    read_sessions: async_sessionmaker[AsyncSession]
    write_sessions: async_sessionmaker[AsyncSession]
    reader: Reader
    # The live event stream's poller and fan-out (events/hub.py).
    events: EventHub
    limiter: RateLimiter
    storage: Storage
    devices: Catalogue
    signing_key: bytes
    # AES-256 key of organisation secrets, derived from the same server secret (secrets/crypto.py).
    secrets_key: bytes
    wakeup: Wakeup
    reaper: Reaper
    claim_lock: asyncio.Lock
    purger: Purger
    # Delivers webhooks (issue 15); built with the state it reads.
    webhooks: WebhookWorker | None = None

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        settings.secure_data_dir()
        engine = make_engine(settings.resolved_database_url)
        wakeup = Wakeup()
        write_sessions = write_sessionmaker(engine)
        storage = make_storage(settings)
        reader = Reader(settings.resolved_database_url)
        from qualgent.webhooks.worker import WebhookWorker  # it builds payloads with services that import this

        state = cls(
            settings=settings,
            engine=engine,
            read_sessions=make_sessionmaker(engine),
            write_sessions=write_sessions,
            reader=reader,
            events=EventHub(settings, reader),
            limiter=RateLimiter(settings.redis_url, settings.auth_failure_limit),
            storage=storage,
            devices=load_catalogue(settings.devices_file),
            signing_key=settings.resolved_secret_key().encode(),
            secrets_key=derive_key(settings.resolved_secret_key()),
            wakeup=wakeup,
            reaper=Reaper(settings, write_sessions, wakeup.wake),
            claim_lock=asyncio.Lock(),
            purger=Purger(settings, write_sessions, storage),
        )
        state.webhooks = WebhookWorker(state)
        return state

    async def close(self) -> None:
        await self.reaper.stop()
        await self.purger.stop()
        if self.webhooks is not None:
            await self.webhooks.stop()
        await self.storage.close()
        await self.events.close()
        await self.reader.close()
        await self.limiter.close()
        await self.engine.dispose()
