"""Signing people in and out of the dashboard, and finding who a page request is from.

The cookie holds a random token signed with itsdangerous (so a tampered or foreign cookie is refused
before any query) and the database holds only the token's SHA-256, with an expiry and a revocation
time: signing out ends the session on the server too. Each session has its own CSRF token, which every
form of the dashboard sends back; the sign-in form, which has no session yet, uses a double-submit
cookie instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

import anyio.to_thread
from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.auth.passwords import verify_password
from qualgent.auth.principal import Principal
from qualgent.auth.service import client_address
from qualgent.db.base import utcnow
from qualgent.db.models import WebSession
from qualgent.errors import Forbidden, RateLimited, Unauthorized
from qualgent.ids import new_id
from qualgent.organisations.repository import OrganisationRepository
from qualgent.state import AppState
from qualgent.web.repository import WebSessionRepository

SESSION_COOKIE = "qg_session"
SIGN_IN_CSRF_COOKIE = "qg_signin_csrf"
_SALT = "qualgent.web-session"


@dataclass(frozen=True, slots=True)
class WebUser:
    """A signed-in person: the same Principal an API key gives, plus the session's CSRF token."""

    principal: Principal
    csrf_token: str
    session_id: str


def _serializer(state: AppState) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(state.signing_key, salt=_SALT)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_from_cookie(request: Request, state: AppState) -> str | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw or len(raw) > 500:
        return None
    try:
        token = _serializer(state).loads(raw, max_age=int(state.settings.session_hours * 3600))
    except BadSignature:
        return None
    return token if isinstance(token, str) else None


async def current_user(request: Request, session: AsyncSession, state: AppState) -> WebUser | None:
    token = _token_from_cookie(request, state)
    if token is None:
        return None
    row = await WebSessionRepository(session).resolve(_hash(token), utcnow())
    if row is None:
        return None
    principal = Principal(
        organization_id=row.organization_id,
        user_id=row.user_id,
        user_name=row.user_name,
        user_email=row.user_email,
        # A person signed in acts with every scope of their organisation; runs they queue name no key.
        key_id="",
        scopes=frozenset({"read", "write"}),
        rate_limit=state.settings.default_rate_limit,
    )
    return WebUser(principal, row.csrf_token, row.id)


async def sign_in(request: Request, session: AsyncSession, state: AppState, email: str, password: str) -> str:
    """Check the credentials and open a session; returns the cookie value. Every attempt is counted
    before its password is checked (auth/ratelimit.sign_in_attempt): past the limit, 429 without
    Argon2's work, whether or not the password is right."""
    verdict = await state.limiter.sign_in_attempt(client_address(request), email)
    if not verdict.allowed:
        raise RateLimited("Too many sign-in attempts; wait a minute and retry.", headers=verdict.headers())
    user = await OrganisationRepository(session).user_by_email(email.strip().lower())
    if user is None:
        # Emails are stored as given; try the exact spelling too before giving up.
        user = await OrganisationRepository(session).user_by_email(email.strip())
    # Argon2 takes tens of milliseconds of CPU by design: off the event loop, so API requests keep flowing.
    verified = await anyio.to_thread.run_sync(verify_password, user.password_hash if user else None, password)
    if not verified or user is None:
        raise Unauthorized("Wrong email or password.", code="invalid_credentials")
    token = secrets.token_urlsafe(32)
    sessions = WebSessionRepository(session)
    await sessions.delete_ended(user.id, utcnow())
    await sessions.add(
        WebSession(
            id=new_id("sess"),
            organization_id=user.organization_id,
            user_id=user.id,
            token_hash=_hash(token),
            csrf_token=secrets.token_urlsafe(32),
            expires_at=utcnow() + timedelta(hours=state.settings.session_hours),
        )
    )
    return _serializer(state).dumps(token)


async def sign_out(request: Request, session: AsyncSession, state: AppState) -> None:
    token = _token_from_cookie(request, state)
    if token is not None:
        await WebSessionRepository(session).revoke(_hash(token))


def set_session_cookie(response: Response, state: AppState, value: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=int(state.settings.session_hours * 3600),
        httponly=True,
        samesite="lax",
        secure=state.settings.secure_cookies,
        path="/",
    )


def clear_session_cookie(response: Response, state: AppState) -> None:
    response.delete_cookie(
        SESSION_COOKIE, httponly=True, samesite="lax", secure=state.settings.secure_cookies, path="/"
    )


def check_csrf(expected: str, sent: str | None) -> None:
    if not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise Forbidden("The form's security token is missing or stale; reload the page and retry.", code="csrf_failed")


def sign_in_csrf(request: Request) -> str:
    """The sign-in form's token: the one already in the browser's cookie, else a new one."""
    existing = request.cookies.get(SIGN_IN_CSRF_COOKIE, "")
    return existing if 20 <= len(existing) <= 100 else secrets.token_urlsafe(32)


def set_sign_in_csrf_cookie(response: Response, state: AppState, token: str) -> None:
    response.set_cookie(
        SIGN_IN_CSRF_COOKIE, token, httponly=True, samesite="lax", secure=state.settings.secure_cookies, path="/sign-in"
    )
