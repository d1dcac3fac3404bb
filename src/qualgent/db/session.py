"""Engine and session factory. Database-specific connection set-up lives in ``dialect.py``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from qualgent.db.dialect import configure_engine

log = logging.getLogger("qualgent.db")
_ON_ROLLBACK = "qualgent.on_rollback"


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    kwargs: dict[str, object] = {}
    if url.startswith("postgresql"):
        kwargs = {"pool_size": pool_size, "max_overflow": pool_size, "pool_pre_ping": False}
    engine = create_async_engine(url, **kwargs)
    configure_engine(engine)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on error. Services only flush."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            await rolled_back(session)
            raise
        forget_rollback_work(session)


def on_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run ``callback`` once this session's transaction commits; dropped if it rolls back.

    Side effects that must not happen for work that is rolled back (waking agents, forgetting cached
    keys) go through here.
    """

    def fire(_session: Session) -> None:
        callback()

    event.listen(session.sync_session, "after_commit", fire, once=True)


def on_rollback(session: AsyncSession, work: Callable[[], Awaitable[object]]) -> None:
    """Run ``work`` if this session's transaction rolls back instead of committing: undo a side effect
    made outside the database for it (an object stored for a row that would not exist). Carried out by
    ``transaction`` and by the request's session (``deps.get_session``) after their rollback."""
    session.info.setdefault(_ON_ROLLBACK, []).append(work)


async def rolled_back(session: AsyncSession) -> None:
    """Carry out the ``on_rollback`` work of a transaction that rolled back; failures are logged only."""
    for work in session.info.pop(_ON_ROLLBACK, ()):
        try:
            await work()
        except Exception:
            log.warning("undoing a side effect of a rolled-back transaction failed", exc_info=True)


def forget_rollback_work(session: AsyncSession) -> None:
    """The transaction committed: its ``on_rollback`` work is not needed."""
    session.info.pop(_ON_ROLLBACK, None)


async def execute_prebuilt(session: AsyncSession, stmt: Any, params: Any) -> Any:
    """Run a statement built once with bind parameters (``functools.cache``) in the session's
    transaction, at Core level.

    The statements every run passes through are built this way and reused as the same object, so
    SQLAlchemy neither builds the expression again nor computes its cache key nor re-matches its
    result columns to the cached compilation, which together cost several times the statement itself.
    """
    connection = await session.connection()
    return await connection.execute(stmt, params)
