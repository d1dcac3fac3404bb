"""Organisation secrets: named values every run of the organisation receives, encrypted at rest and
never shown again once set (see secrets/crypto.py)."""

from __future__ import annotations

import re

from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.errors import NotFound, Unprocessable
from qualgent.runs.schemas import ENV_NAME_PATTERN, MAX_ENV_NAME
from qualgent.secrets import crypto
from qualgent.secrets.repository import SecretRepository
from qualgent.secrets.schemas import MAX_SECRETS, SecretOut

_NAME = re.compile(ENV_NAME_PATTERN)


def valid_name(name: str) -> bool:
    return len(name) <= MAX_ENV_NAME and _NAME.fullmatch(name) is not None


async def list_secrets(session: AsyncSession, organization_id: str) -> list[SecretOut]:
    return [SecretOut.model_validate(row) for row in await SecretRepository(session, organization_id).names()]


async def put(session: AsyncSession, key: bytes, organization_id: str, name: str, value: str) -> SecretOut:
    if not valid_name(name):
        raise Unprocessable(
            f"A secret's name is a letter or _ then letters, digits or _ (at most {MAX_ENV_NAME}): not {name!r}.",
            details=[{"field": "name", "issue": f"must match {ENV_NAME_PATTERN}, at most {MAX_ENV_NAME} characters"}],
        )
    if "\x00" in value:
        raise Unprocessable(
            "A secret's value cannot contain NUL characters.", details=[{"field": "value", "issue": "NUL"}]
        )
    repo = SecretRepository(session, organization_id)
    if await repo.named(name) is None and await repo.count() >= MAX_SECRETS:
        raise Unprocessable(
            f"An organisation has at most {MAX_SECRETS} secrets; delete one first.",
            code="too_many_secrets",
        )
    row = await repo.put(name, crypto.encrypt(key, organization_id, name, value))
    return SecretOut.model_validate(row)


async def delete(session: AsyncSession, organization_id: str, name: str) -> None:
    if not valid_name(name) or not await SecretRepository(session, organization_id).delete_named(name):
        raise NotFound(f"No secret {name}.")
