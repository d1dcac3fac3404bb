"""Engine and session factory. Database-specific connection set-up lives in ``dialect.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from qualgent.db.dialect import configure_engine


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
            raise


def on_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run ``callback`` once this session's transaction commits; dropped if it rolls back.

    Side effects that must not happen for work that is rolled back (waking agents, forgetting cached
    keys) go through here.
    """

    def fire(_session: Session) -> None:
        callback()

    event.listen(session.sync_session, "after_commit", fire, once=True)


async def execute_prebuilt(session: AsyncSession, stmt: Any, params: Any) -> Any:
    """Run a statement built once with bind parameters (``functools.cache``) in the session's
    transaction, at Core level.

    The statements every run passes through are built this way and reused as the same object, so
    SQLAlchemy neither builds the expression again nor computes its cache key nor re-matches its
    result columns to the cached compilation, which together cost several times the statement itself.
    """
    connection = await session.connection()
    return await connection.execute(stmt, params)
