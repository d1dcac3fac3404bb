"""Migrations: empty → head → base → head on fresh SQLite and PostgreSQL databases, matching the ORM."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, inspect

from qualgent.db import models  # noqa: F401  (registers every table on Base.metadata)
from qualgent.db.base import Base
from qualgent.db.migrations import alembic_config, downgrade, upgrade
from qualgent.db.session import make_engine
from tests.fixtures.servers import postgres_database

TABLES = {"organizations", "users", "api_keys", "app_files", "categories", "test_cases", "test_runs"}


@contextlib.contextmanager
def fresh_database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    else:
        with postgres_database() as url:
            yield url


def inspect_database(url: str) -> dict[str, Any]:
    """The revision, the tables, and alembic's differences between the database and the ORM metadata."""

    def look(conn: Connection) -> dict[str, Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return {
            "revision": context.get_current_revision(),
            "tables": set(inspect(conn).get_table_names()) - {"alembic_version"},
            "diff": compare_metadata(context, Base.metadata),
            # The comparison is live: against no models at all, every table differs.
            "diff_from_nothing": compare_metadata(context, MetaData()),
        }

    async def main() -> dict[str, Any]:
        engine = make_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(look)
        finally:
            await engine.dispose()

    return asyncio.run(main())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_downgrade_upgrade_matches_the_models(backend: str, tmp_path: Path) -> None:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    assert set(Base.metadata.tables) >= TABLES

    with fresh_database(backend, tmp_path) as url:
        empty = inspect_database(url)
        assert empty["revision"] is None
        assert empty["tables"] == set()

        upgrade(url)
        state = inspect_database(url)
        assert state["revision"] == head
        assert state["tables"] == set(Base.metadata.tables)
        assert state["diff"] == []
        assert {op[1].name for op in state["diff_from_nothing"] if op[0] == "remove_table"} == state["tables"]

        downgrade(url, "base")
        state = inspect_database(url)
        assert state["revision"] is None
        assert state["tables"] == set()

        upgrade(url)
        state = inspect_database(url)
        assert state["revision"] == head
        assert state["diff"] == []

        # Upgrading an up-to-date database is a no-op.
        upgrade(url)
        assert inspect_database(url)["revision"] == head


def test_one_linear_history() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1
    assert len(script.get_bases()) == 1
    revisions = list(script.walk_revisions())
    for revision in revisions:
        assert revision.doc, revision.revision
        assert callable(getattr(revision.module, "downgrade", None)), revision.revision
