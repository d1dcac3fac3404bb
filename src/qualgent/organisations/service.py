"""Administration: organisations, users and API keys (the CLI's ``admin`` commands use these)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.auth.keys import SCOPES, display_prefix, generate_key, hash_key
from qualgent.auth.passwords import hash_password, password_problem
from qualgent.auth.repository import ApiKeyRepository
from qualgent.auth.service import forget_cached_keys
from qualgent.db.base import utcnow
from qualgent.db.models import ApiKey, Organization, User
from qualgent.db.session import on_commit
from qualgent.errors import NotFound, Unprocessable
from qualgent.ids import new_id
from qualgent.organisations.repository import OrganisationRepository
from qualgent.organisations.schemas import OrganizationSettings, OrganizationSettingsPatch
from qualgent.web.repository import WebSessionRepository


@dataclass(frozen=True)
class NewKey:
    """A key as created: ``secret`` exists only here and is never stored."""

    id: str
    secret: str
    organization_id: str
    user_id: str
    scopes: str


async def create_organization(session: AsyncSession, name: str, max_parallel_runs: int | None = None) -> Organization:
    org = Organization(id=new_id("org"), name=name, max_parallel_runs=max_parallel_runs)
    await OrganisationRepository(session).add(org)
    return org


async def create_user(session: AsyncSession, organization_id: str, name: str, email: str) -> User:
    repo = OrganisationRepository(session)
    if await repo.get(organization_id) is None:
        raise NotFound(f"No organisation {organization_id}.")
    if await repo.user_by_email(email) is not None:
        raise Unprocessable(f"A user with email {email} already exists.", code="duplicate_email")
    user = User(id=new_id("user"), organization_id=organization_id, name=name, email=email)
    await repo.add(user)
    return user


def _normalise_scopes(scopes: str | list[str]) -> str:
    items = scopes.replace(",", " ").split() if isinstance(scopes, str) else scopes
    bad = [s for s in items if s not in SCOPES]
    if bad or not items:
        raise Unprocessable(f"Scopes must be among {', '.join(SCOPES)}; got {', '.join(items) or 'none'}.")
    if "write" in items and "read" not in items:
        items = [*items, "read"]
    return " ".join(s for s in SCOPES if s in items)


async def create_key(
    session: AsyncSession,
    user_id: str,
    *,
    name: str = "",
    scopes: str | list[str] = "read write",
    rate_limit: int | None = None,
) -> NewKey:
    user = await OrganisationRepository(session).get_user(user_id)
    if user is None:
        raise NotFound(f"No user {user_id}.")
    if rate_limit is not None and rate_limit < 1:
        raise Unprocessable("A rate limit is at least 1 request per second.")
    secret = generate_key()
    key = ApiKey(
        id=new_id("key"),
        organization_id=user.organization_id,
        user_id=user.id,
        name=name,
        prefix=display_prefix(secret),
        key_hash=hash_key(secret),
        scopes=_normalise_scopes(scopes),
        rate_limit=rate_limit,
    )
    await ApiKeyRepository(session).add(key)
    return NewKey(key.id, secret, key.organization_id, key.user_id, key.scopes)


async def list_keys(session: AsyncSession, organization_id: str) -> list[ApiKey]:
    return list(await ApiKeyRepository(session).list_for_organization(organization_id))


async def revoke_key(session: AsyncSession, key_id: str) -> ApiKey:
    key = await ApiKeyRepository(session).get(key_id)
    if key is None:
        raise NotFound(f"No API key {key_id}.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    await session.flush()
    on_commit(session, forget_cached_keys)
    return key


async def revoke_key_of_organization(session: AsyncSession, organization_id: str, key_id: str) -> ApiKey:
    """Revoke a key of this organisation (the dashboard); another organisation's key is not found."""
    key = await ApiKeyRepository(session).get_in_organization(organization_id, key_id)
    if key is None:
        raise NotFound(f"No API key {key_id}.")
    return await revoke_key(session, key.id)


async def set_password(session: AsyncSession, email: str, password: str) -> User:
    """Set a user's dashboard password (Argon2id) and end their open dashboard sessions."""
    problem = password_problem(password)
    if problem:
        raise Unprocessable(problem, code="weak_password")
    user = await OrganisationRepository(session).user_by_email(email)
    if user is None:
        raise NotFound(f"No user with email {email}.")
    user.password_hash = hash_password(password)
    await session.flush()
    await WebSessionRepository(session).revoke_all_for_user(user.id)
    return user


async def set_key_rate_limit(session: AsyncSession, key_id: str, per_second: int | None) -> ApiKey:
    key = await ApiKeyRepository(session).get(key_id)
    if key is None:
        raise NotFound(f"No API key {key_id}.")
    if per_second is not None and per_second < 1:
        raise Unprocessable("A rate limit is at least 1 request per second.")
    key.rate_limit = per_second
    await session.flush()
    on_commit(session, forget_cached_keys)
    return key


async def set_parallel_runs(session: AsyncSession, organization_id: str, cap: int | None) -> Organization:
    org = await OrganisationRepository(session).get(organization_id)
    if org is None:
        raise NotFound(f"No organisation {organization_id}.")
    if cap is not None and cap < 1:
        raise Unprocessable("The parallel-run cap is at least 1.")
    org.max_parallel_runs = cap
    await session.flush()
    return org


async def settings_of(session: AsyncSession, organization_id: str, default_cap: int) -> OrganizationSettings:
    org = await OrganisationRepository(session).get(organization_id)
    if org is None:
        raise NotFound(f"No organisation {organization_id}.")
    return OrganizationSettings(
        default_retries=org.default_test_retries,
        auto_quarantine=org.auto_quarantine,
        quarantine_exit_passes=org.quarantine_exit_passes,
        max_parallel_runs=org.max_parallel_runs or default_cap,
    )


async def change_settings(
    session: AsyncSession, organization_id: str, changes: OrganizationSettingsPatch, default_cap: int
) -> OrganizationSettings:
    """Change what is sent; a field sent as null is refused (each has a value)."""
    org = await OrganisationRepository(session).get(organization_id)
    if org is None:
        raise NotFound(f"No organisation {organization_id}.")
    sent = changes.model_dump(exclude_unset=True)
    nulls = [name for name, value in sent.items() if value is None]
    if nulls:
        raise Unprocessable(
            f"{', '.join(nulls)} cannot be null.", details=[{"field": name, "issue": "null"} for name in nulls]
        )
    if "default_retries" in sent:
        org.default_test_retries = sent["default_retries"]
    if "auto_quarantine" in sent:
        org.auto_quarantine = sent["auto_quarantine"]
    if "quarantine_exit_passes" in sent:
        org.quarantine_exit_passes = sent["quarantine_exit_passes"]
    await session.flush()
    return await settings_of(session, organization_id, default_cap)


@dataclass(frozen=True)
class FirstStart:
    """What the very first start created; ``key.secret`` and ``password`` are printed once, never stored."""

    key: NewKey
    email: str
    password: str


async def bootstrap(session: AsyncSession) -> FirstStart | None:
    """On the very first start: a default organisation, its admin user (with a dashboard password) and a
    key. Never again after."""
    repo = OrganisationRepository(session)
    if await repo.count() > 0:
        return None
    org = await create_organization(session, "Default organisation")
    user = await create_user(session, org.id, "Admin", "admin@localhost")
    # Short enough to type, 96 random bits; `qualgent admin set-password` replaces it.
    password = secrets.token_urlsafe(12)
    user.password_hash = hash_password(password)
    key = await create_key(session, user.id, name="first key")
    return FirstStart(key, user.email, password)
