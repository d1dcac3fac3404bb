"""Everything that differs between SQLite and PostgreSQL, in one place."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque, namedtuple
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import Insert, Table, event, exc, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from qualgent.errors import DatabaseUnavailable

SQLITE_BUSY_TIMEOUT_MS = 15_000
T = TypeVar("T")


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


# What asyncpg raises when the connection, or the server, went away rather than a statement failing:
# the server closed it (a restart, a failover, pg_terminate_backend), refused it, or it broke midway.
_ASYNCPG_LOST = (
    asyncpg.exceptions.PostgresConnectionError,  # class 08: connection exceptions
    asyncpg.exceptions.AdminShutdownError,  # 57P01: terminated by the administrator
    asyncpg.exceptions.CrashShutdownError,  # 57P02
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
    asyncpg.exceptions.TooManyConnectionsError,  # 53300
    asyncpg.exceptions.InterfaceError,  # "connection is closed", "another operation is in progress"
    # The server's termination notice arrived on an idle connection before its socket closed: the next
    # statement finds the protocol out of step ("cannot switch to state …; another operation is in
    # progress").
    asyncpg.exceptions.InternalClientError,
)


def database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says that the database could not be reached or the connection was lost (a
    restart, a failover, a terminated backend, a pool with no connection to give, SQLite's write lock
    held past the busy timeout), rather than that a statement was wrong: the request may succeed if
    sent again, so it is answered 503 with Retry-After, not 500."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 6:
        if isinstance(current, exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, (exc.TimeoutError, exc.DisconnectionError, *_ASYNCPG_LOST, OSError)):
            return True  # OSError: the network (a refused connection, a reset, a connect timeout)
        if isinstance(current, sqlite3.OperationalError) and "locked" in str(current):
            return True
        nested = current.orig if isinstance(current, exc.DBAPIError) else None
        current = nested if isinstance(nested, BaseException) else (current.__cause__ or current.__context__)
        seen += 1
    return False


def configure_engine(engine: AsyncEngine) -> None:
    if not is_sqlite(engine):

        @event.listens_for(engine.sync_engine, "checkout")
        def _replace_closed(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
            # A connection the server closed while it sat in the pool (a restart, a failover,
            # pg_terminate_backend) is replaced before use, without the round trip of a pre-ping:
            # asyncpg saw the socket close when it happened. The pool opens a new one.
            connection = getattr(dbapi_conn, "_connection", None)
            if connection is not None and connection.is_closed():
                raise exc.DisconnectionError("the database closed this pooled connection")

        return

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        # We emit BEGIN ourselves (below): the sqlite3 module's own transaction handling would
        # start write transactions late, which makes concurrent writers fail instead of wait.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # WAL lets readers proceed during a write; foreign keys are off in SQLite unless asked;
        # the busy timeout makes concurrent writers wait instead of failing with "database is locked".
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _sqlite_begin(conn: Any) -> None:
        # A transaction that will write takes the write lock up front (BEGIN IMMEDIATE), so it waits
        # for other writers at its start rather than failing when it upgrades from a read.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def insert_ignoring_duplicates(dialect: str, table: Table) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` for the database (its dialect's name): a repeated row is
    skipped in the same statement instead of being looked up first."""
    if dialect == "sqlite":
        return sqlite_insert(table).on_conflict_do_nothing()
    return postgresql_insert(table).on_conflict_do_nothing()


def upsert(dialect: str, table: Table, keys: list[str], updates: list[str]) -> Insert:
    """``INSERT … ON CONFLICT (keys) DO UPDATE SET`` the ``updates`` columns to the new row's values: a
    create-or-replace that two concurrent requests cannot both insert."""
    stmt = sqlite_insert(table) if dialect == "sqlite" else postgresql_insert(table)
    return stmt.on_conflict_do_update(index_elements=keys, set_={name: stmt.excluded[name] for name in updates})


# pg_advisory_xact_lock key of "matching devices with targets" (an arbitrary constant of ours).
_DEVICE_MATCHING_LOCK = 0x51475447  # "QGTG"


async def serialise_device_matching(session: AsyncSession) -> None:
    """Take turns with every other transaction that matches devices with targets, until this one ends.

    A device that registers reads every target, and a target written for the first time reads every
    device; two such transactions at once on PostgreSQL would each miss the other's row. SQLite's write
    transactions (BEGIN IMMEDIATE) take turns already.
    """
    if session.get_bind().dialect.name != "sqlite":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DEVICE_MATCHING_LOCK})


def writer(engine: AsyncEngine) -> AsyncEngine:
    """The engine to use for a transaction that writes."""
    if is_sqlite(engine):
        return engine.execution_options(sqlite_begin="IMMEDIATE")
    return engine


class Reader:
    """Fast reads for the hottest routes (key resolution, run status and lists).

    A request's ORM session costs a transaction (BEGIN, ROLLBACK) and ORM object construction on top
    of its query; for a primary-key lookup that overhead is ten times the query. Readers run Core
    statements without a transaction:
    - SQLite: a synchronous pysqlite connection, queried inline on the event loop. An indexed lookup
      takes tens of microseconds, less than one hop to aiosqlite's thread; WAL means readers never
      wait for writers.
    - PostgreSQL: the async engine in AUTOCOMMIT, with no reset when connections return to the pool;
      statements marked with ``prepared()`` (the fixed hottest ones) skip SQLAlchemy at run time and go
      to asyncpg directly as prepared statements: 45 µs instead of 360 µs for a run's status here.
    - On SQLite too, ``prepared()`` statements are compiled once and go to the sqlite3 connection
      directly, with the columns' own result processors applied: SQLAlchemy's per-execution work
      (cache key, compiled-cache lookup, result set-up) cost several times the query itself.
    Statements are built once with bind parameters, so SQLAlchemy compiles each once per process.
    """

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.ext.asyncio import create_async_engine

        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            sync_url = url.replace("sqlite+aiosqlite", "sqlite+pysqlite", 1)
            self._sync = create_engine(sync_url, pool_size=1, max_overflow=4)

            @event.listens_for(self._sync, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                cur.execute("PRAGMA query_only=ON")
                cur.close()

            self._sync_conn = self._sync.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._sqlite_compiled: dict[int, Any] = {}
        else:
            self._async = create_async_engine(
                url, pool_size=10, max_overflow=10, pool_reset_on_return=None, isolation_level="AUTOCOMMIT"
            )
            configure_engine(self._async)
            self._dsn = self._async.url.set(drivername="postgresql").render_as_string(hide_password=False)
            self._pool: _ReadPool | None = None
            self._compiled: dict[int, tuple[str, tuple[str, ...], dict[str, Any], Any]] = {}

    async def all(self, stmt: Any, params: dict[str, Any]) -> list[Any]:
        """The statement's rows. A connection lost in the pool is replaced and the read sent once more,
        on a new connection; a database that still cannot be reached is DatabaseUnavailable (503)."""
        if self.is_sqlite:
            if id(stmt) in _PREPARED:
                return self._raw_sqlite(stmt, params)
            return list(self._sync_conn.execute(stmt, params).all())
        try:
            if id(stmt) in _PREPARED:
                return await self._raw(stmt, params)
            try:
                async with self._async.connect() as conn:
                    return list((await conn.execute(stmt, params)).all())
            except exc.DBAPIError as error:
                if not error.connection_invalidated:
                    raise
                # The pool has been invalidated with it: the next connection is a new one.
                async with self._async.connect() as conn:
                    return list((await conn.execute(stmt, params)).all())
        except Exception as error:
            if database_unavailable(error):
                raise DatabaseUnavailable() from error
            raise

    def _raw_sqlite(self, stmt: Any, params: dict[str, Any]) -> list[Any]:
        entry = self._sqlite_compiled.get(id(stmt))
        if entry is None:
            dialect = self._sync.dialect
            compiled = stmt.compile(dialect=dialect)
            order = tuple(compiled.positiontup or ())
            binds = {name: bind.type._cached_bind_processor(dialect) for name, bind in compiled.binds.items()}
            results = [column.type._cached_result_processor(dialect, None) for column in stmt.selected_columns]
            names = [column.key for column in stmt.selected_columns]
            row_class: Any = namedtuple("Row", names, rename=True)  # type: ignore[misc]
            entry = (str(compiled), order, dict(compiled.params), binds, results, row_class)
            self._sqlite_compiled[id(stmt)] = entry
        sql, order, defaults, binds, results, row_type = entry
        args = []
        for name in order:
            value = params[name] if name in params else defaults[name]
            process = binds[name]
            args.append(process(value) if process is not None and value is not None else value)
        rows = self._sync_conn.connection.dbapi_connection.execute(sql, args).fetchall()  # type: ignore[union-attr]
        if not any(results):
            return [row_type(*row) for row in rows]
        return [
            row_type(*[value if p is None else p(value) for p, value in zip(results, row, strict=True)]) for row in rows
        ]

    async def _raw(self, stmt: Any, params: dict[str, Any]) -> list[Any]:
        entry = self._compiled.get(id(stmt))
        if entry is None:
            from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

            compiled = stmt.compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
            names = [column.key for column in stmt.selected_columns]
            row_class: Any = namedtuple("Row", names, rename=True)  # type: ignore[misc]
            entry = (str(compiled), tuple(compiled.positiontup or ()), dict(compiled.params), row_class)
            self._compiled[id(stmt)] = entry
        sql, order, defaults, row_type = entry
        if self._pool is None:
            self._pool = _ReadPool(self._dsn, size=10)
        args = [params[name] if name in params else defaults[name] for name in order]
        records = await self._pool.fetch(sql, *args)
        return [row_type(*record) for record in records]

    async def one(self, stmt: Any, params: dict[str, Any]) -> Any | None:
        rows = await self.all(stmt, params)
        return rows[0] if rows else None

    async def close(self) -> None:
        if self.is_sqlite:
            self._sync_conn.close()
            self._sync.dispose()
        else:
            if self._pool is not None:
                await self._pool.close()
            await self._async.dispose()


class _ReadPool:
    """A minimal pool of asyncpg connections for the Reader's single read statements.

    asyncpg's own Pool spends more per query than the query on a primary key: a timeout context,
    a shielded release task and a reset round trip (``RESET ALL``, ``UNLISTEN *``…) on every release.
    These connections run one statement at a time with no transaction or session state, so a list of
    idle connections is all the pooling they need. A connection whose statement failed or was
    cancelled is closed rather than reused (its protocol state is unknown); the next query opens a
    new one, so a database restart heals on its own. A connection found closed when taken from the
    idle list (the server ended it: a restart, pg_terminate_backend) is dropped for another; one lost
    mid-statement gets the statement once more, on a newly opened connection (only reads come here,
    so sending one twice is harmless).
    """

    def __init__(self, dsn: str, size: int) -> None:
        self._dsn = dsn
        self._size = size
        self._idle: list[Any] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        conn = self._pop_idle()
        if conn is None:
            conn = await self._acquire()
        try:
            records: list[Any] = await conn.fetch(sql, *args)
        except Exception as error:
            if not self._release_after(conn, error):
                raise
            conn = await self._acquire(fresh=True)
            try:
                records = await conn.fetch(sql, *args)
            except BaseException as again:
                self._release_after(conn, again)
                raise
        except BaseException:
            self._discard(conn)  # cancelled midway: the protocol state is unknown
            raise
        self._idle.append(conn)
        if self._waiters:
            self._wake()
        return records

    def _release_after(self, conn: Any, error: BaseException) -> bool:
        """Put back or drop a connection whose statement failed; True when the connection was lost
        (the statement is worth sending again, on another connection)."""
        if isinstance(error, asyncpg.PostgresError) and not conn.is_closed() and not database_unavailable(error):
            # The server refused the statement: the connection itself is fine.
            self._idle.append(conn)
            self._wake()
            return False
        self._discard(conn)
        return isinstance(error, Exception) and database_unavailable(error)

    def _pop_idle(self) -> Any | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
            self._discard(conn)
        return None

    async def _acquire(self, fresh: bool = False) -> Any:
        """An idle connection, else a new one while under the size, else the next one released;
        ``fresh``: a new one rather than an idle one while there is room."""
        while True:
            if self._idle and not (fresh and self._open < self._size):
                if (conn := self._pop_idle()) is not None:
                    return conn
                continue
            if self._open < self._size:
                self._open += 1
                try:
                    # No statement cache limit worth tuning: the Reader's statements are few and fixed.
                    return await asyncpg.connect(self._dsn)
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, then cancelled: pass the turn on
                raise

    def _discard(self, conn: Any) -> None:
        self._open -= 1
        conn.terminate()
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            self._open -= 1
            await conn.close()


# Statements the Reader sends to asyncpg directly on PostgreSQL (by identity: they are module-level or
# cached, built once). Only fixed statements belong here: no expanding IN lists, no JSON columns.
_PREPARED: dict[int, Any] = {}


def prepared(stmt: T) -> T:
    """Mark a fixed hot statement for the Reader's direct asyncpg path."""
    _PREPARED[id(stmt)] = stmt
    return stmt


class SerializedWriteSession(AsyncSession):
    """A session whose first statement waits for this process's SQLite write lock (an asyncio.Lock).

    SQLite has one writer at a time. Writers that contend inside SQLite wait in its busy handler,
    which sleeps in steps of up to 100 ms; under load that turns milliseconds of work into seconds of
    waiting. Queuing writers on an asyncio lock first hands the database over at once, in order.
    Other processes sharing the file still meet in SQLite's busy handler, as before.
    """

    _held = False

    async def _enter(self) -> None:
        if not self._held:
            lock: asyncio.Lock | None = self.info.get("write_lock")
            if lock is not None:
                await lock.acquire()
                self._held = True

    def release_write_lock(self) -> None:
        if self._held:
            self._held = False
            self.info["write_lock"].release()

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        await self._enter()
        return await super().execute(*args, **kwargs)

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        await self._enter()
        return await super().scalar(*args, **kwargs)

    async def scalars(self, *args: Any, **kwargs: Any) -> Any:
        await self._enter()
        return await super().scalars(*args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        await self._enter()
        return await super().get(*args, **kwargs)

    async def flush(self, *args: Any, **kwargs: Any) -> None:
        await self._enter()
        await super().flush(*args, **kwargs)

    async def delete(self, instance: object) -> None:
        await self._enter()
        await super().delete(instance)

    async def connection(self, *args: Any, **kwargs: Any) -> Any:
        await self._enter()
        return await super().connection(*args, **kwargs)

    async def commit(self) -> None:
        try:
            await super().commit()
        finally:
            self.release_write_lock()

    async def rollback(self) -> None:
        try:
            await super().rollback()
        finally:
            self.release_write_lock()

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self.release_write_lock()


def write_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for transactions that write: BEGIN IMMEDIATE and an in-process queue on SQLite."""
    if not is_sqlite(engine):
        return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
    return async_sessionmaker(
        writer(engine),
        class_=SerializedWriteSession,
        expire_on_commit=False,
        autoflush=False,
        info={"write_lock": asyncio.Lock()},
    )
