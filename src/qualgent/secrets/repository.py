from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Table, delete, func

from qualgent.db.base import utcnow
from qualgent.db.dialect import upsert
from qualgent.db.models import Secret
from qualgent.db.repository import OrgScopedRepository

# What a secret shows: never its ciphertext.
_LISTED = (Secret.name, Secret.created_at, Secret.updated_at)


class SecretRepository(OrgScopedRepository[Secret]):
    model = Secret
    id_prefix = ""  # secrets are named, not identified: the inherited get() is not for them

    async def names(self) -> list[Any]:
        """(name, created_at, updated_at) of every secret, by name."""
        return list((await self.session.execute(self.scoped(*_LISTED).order_by(Secret.name))).all())

    async def named(self, name: str) -> Any | None:
        return (await self.session.execute(self.scoped(*_LISTED).where(Secret.name == name))).first()

    async def count(self) -> int:
        return int(await self.session.scalar(self.scoped(func.count())) or 0)

    async def put(self, name: str, ciphertext: bytes) -> Any:
        """Create or replace; the row's (name, created_at, updated_at)."""
        now = utcnow()
        stmt = _upsert_statement(self.session.get_bind().dialect.name).returning(*_LISTED)
        values = {
            "organization_id": self.organization_id,
            "name": name,
            "ciphertext": ciphertext,
            "created_at": now,
            "updated_at": now,
        }
        return (await self.session.execute(stmt, values)).one()

    async def delete_named(self, name: str) -> bool:
        result = await self.session.execute(
            delete(Secret).where(Secret.organization_id == self.organization_id, Secret.name == name)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


@cache
def _upsert_statement(dialect: str) -> Any:
    table = Secret.__table__
    assert isinstance(table, Table)
    return upsert(dialect, table, ["organization_id", "name"], ["ciphertext", "updated_at"])
