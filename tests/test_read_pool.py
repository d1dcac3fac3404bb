"""The Reader's own asyncpg pool (db/dialect._ReadPool), against the local PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]
import pytest

from qualgent.db.dialect import _ReadPool
from tests.fixtures.servers import PG_ADMIN_URL


def _pool(size: int) -> _ReadPool:
    return _ReadPool(PG_ADMIN_URL, size=size)


def test_never_opens_more_than_its_size_and_serves_everyone() -> None:
    async def main() -> None:
        pool = _pool(3)
        backends: set[int] = set()

        async def one(i: int) -> int:
            [row] = await pool.fetch("SELECT $1::int AS i, pg_backend_pid() AS pid, pg_sleep(0.01)", i)
            backends.add(row["pid"])
            assert pool._open <= 3
            return int(row["i"])

        assert await asyncio.gather(*(one(i) for i in range(40))) == list(range(40))
        assert len(backends) == 3 and pool._open == 3
        await pool.close()

    asyncio.run(main())


def test_a_refused_statement_keeps_the_connection_a_cancelled_one_drops_it() -> None:
    async def main() -> None:
        pool = _pool(2)
        [first] = await pool.fetch("SELECT pg_backend_pid() AS pid")
        with pytest.raises(asyncpg.DivisionByZeroError):
            await pool.fetch("SELECT 1/0")
        # The server refused the statement; the connection is still good and is reused.
        assert (await pool.fetch("SELECT pg_backend_pid() AS pid"))[0]["pid"] == first["pid"]

        # Cancelled mid-query: its protocol state is unknown, so it is closed, not reused.
        task = asyncio.create_task(pool.fetch("SELECT pg_sleep(5)"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool._open == 0
        [fresh] = await pool.fetch("SELECT pg_backend_pid() AS pid")
        assert fresh["pid"] != first["pid"]
        await pool.close()

    asyncio.run(main())


def test_waiters_get_connections_as_they_are_released_even_if_one_gives_up() -> None:
    async def main() -> None:
        pool = _pool(1)
        slow = asyncio.create_task(pool.fetch("SELECT pg_sleep(0.3)"))
        await asyncio.sleep(0.1)
        quitter = asyncio.create_task(pool.fetch("SELECT 1"))
        patient = asyncio.create_task(pool.fetch("SELECT 2 AS n"))
        await asyncio.sleep(0.05)
        quitter.cancel()
        await slow
        assert (await asyncio.wait_for(patient, 5))[0]["n"] == 2
        assert pool._open == 1
        await pool.close()

    asyncio.run(main())
