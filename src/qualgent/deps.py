"""Annotated dependencies, so routes read as plain signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.auth.principal import Principal
from qualgent.auth.service import authenticate
from qualgent.db.dialect import SerializedWriteSession
from qualgent.db.session import forget_rollback_work, rolled_back
from qualgent.lenient_json import authenticated_before, authenticates
from qualgent.state import AppState

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_state(request: Request) -> AppState:
    # async: FastAPI runs plain-def dependencies in a thread pool, a hop that costs more than this.
    return app_state(request)


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.qg
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns, rolled back when it raises."""
    state = app_state(request)
    factory = state.read_sessions if request.method in SAFE_METHODS else state.write_sessions
    session = factory()
    # A session that never touched the database holds nothing; committing and closing it would still
    # cost a trip through SQLAlchemy's greenlet bridge, so only sessions in a transaction do.
    try:
        yield session
        if session.in_transaction():
            await session.commit()
        forget_rollback_work(session)
    except BaseException:
        if session.in_transaction():
            await session.rollback()
        await rolled_back(session)
        raise
    finally:
        if session.in_transaction():
            await session.close()
        if isinstance(session, SerializedWriteSession):
            session.release_write_lock()


# scope="function": the transaction ends before the response is sent, so a client never sees a
# success for something that did not commit.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


@authenticates
async def get_principal(request: Request) -> Principal:
    principal: Principal | None = authenticated_before(request)
    if principal is not None:
        return principal
    return await authenticate(request, app_state(request))


PrincipalDep = Annotated[Principal, Depends(get_principal)]
