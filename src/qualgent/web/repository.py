"""Queries on dashboard sessions. Resolution is by token hash: it is how the organisation is found,
like API-key resolution, so it is the one lookup here that is not organisation-scoped."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.base import utcnow
from qualgent.db.models import User, WebSession


class WebSessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, web_session: WebSession) -> WebSession:
        self.session.add(web_session)
        await self.session.flush()
        return web_session

    async def resolve(self, token_hash: str, now: datetime) -> Any | None:
        """The live session with this token, with its user's name and email, or None."""
        stmt = (
            select(
                WebSession.id,
                WebSession.organization_id,
                WebSession.user_id,
                WebSession.csrf_token,
                User.name.label("user_name"),
                User.email.label("user_email"),
            )
            .join(User, User.id == WebSession.user_id)
            .where(
                WebSession.token_hash == token_hash,
                WebSession.revoked_at.is_(None),
                WebSession.expires_at > now,
                # A user moved to another organisation keeps no session of the old one.
                User.organization_id == WebSession.organization_id,
            )
        )
        return (await self.session.execute(stmt)).first()

    async def revoke(self, token_hash: str) -> None:
        await self.session.execute(
            update(WebSession)
            .where(WebSession.token_hash == token_hash, WebSession.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )

    async def revoke_all_for_user(self, user_id: str) -> None:
        await self.session.execute(
            update(WebSession)
            .where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )

    async def delete_ended(self, user_id: str, now: datetime) -> None:
        """Forget a user's sessions that expired or were signed out (done at each sign-in, so a user's rows
        stay as few as their open sessions)."""
        await self.session.execute(
            delete(WebSession).where(
                WebSession.user_id == user_id, or_(WebSession.expires_at <= now, WebSession.revoked_at.is_not(None))
            )
        )
