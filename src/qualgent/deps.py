"""Annotated dependencies, so routes read as plain signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.auth.principal import Principal
from qualgent.auth.service import authenticate
from qualgent.state import AppState

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.qg
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns, rolled back when it raises."""
    state = get_state(request)
    factory = state.read_sessions if request.method in SAFE_METHODS else state.write_sessions
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": the transaction ends before the response is sent, so a client never sees a
# success for something that did not commit.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_principal(request: Request) -> Principal:
    return await authenticate(request, get_state(request))


PrincipalDep = Annotated[Principal, Depends(get_principal)]
