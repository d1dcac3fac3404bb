"""The ``qualgent`` command: serve the API, migrate the database, administer organisations and keys.

The client commands (apps, run, run-all, jobs, …) need only the base install. The server's commands
(serve, db, admin) and the device agent's import their dependencies when they run, so `qualgent --help`
and a CI step never load the server's, and each says in one line which extra to install when its own
are missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperOption

from qualgent.cli import client_commands, webhook_commands
from qualgent.cli.text import add_row, escaped
from qualgent.cli.waiting import EXIT_USAGE

if TYPE_CHECKING:
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncSession

    from qualgent.config import Settings

_IMPORTED = time.monotonic()

# httpx imports its own command-line client (httpx._main: pygments, rich.syntax, rich.progress) wherever
# click is installed (the server's extra brings it with uvicorn; the light client has none), to define
# `httpx.main`, a console script this process never runs. Refusing that one import leaves httpx a stub
# `main` and saves 20-80 ms of every command that talks to the server there. Only this CLI's process does
# it; the SDK imported by a program of its own leaves httpx as it is.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

T = TypeVar("T")


def _type_unless_flag(self: TyperOption, ctx: Any) -> str | None:
    """Typer's help writes a value's type after each option, and `<bool>` after a flag, which takes none."""
    return None if self.is_flag else _option_type(self, ctx)


_option_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _type_unless_flag  # type: ignore[method-assign]

app = typer.Typer(
    help="qualgent: run automated mobile-app tests from CI/CD pipelines (the QualGent API).",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
admin_app = typer.Typer(
    help="Administer organisations, users, API keys, test cases and categories (talks to the database directly).",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
client_commands.register(app)  # apps, run, run-all, jobs, devices, categories, test-cases (issue 5)
webhook_commands.register(app)  # webhooks (issue 15)

console = Console()
err = Console(stderr=True)

# What each extra brings, by the modules its commands import first.
SERVER_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "aiosqlite", "jsbox")
AGENT_MODULES = ("jsbox", "PIL", "av")


def _missing(modules: tuple[str, ...]) -> bool:
    return any(find_spec(name) is None for name in modules)


def _require(command: str, what: str, extra: str, modules: tuple[str, ...]) -> None:
    """Exit 3 with one line naming the extra to install when ``command``'s dependencies are absent."""
    if _missing(modules):
        err.print(f"{command} needs {what}: pip install 'qualgent[{extra}]'", markup=False, highlight=False)
        raise typer.Exit(EXIT_USAGE)


def _require_server(command: str) -> None:
    _require(command, "the server", "server", SERVER_MODULES)


@db_app.callback()
def _db_needs_server() -> None:
    _require_server("qualgent db")


@admin_app.callback()
def _admin_needs_server() -> None:
    _require_server("qualgent admin")


def _seconds_since_start() -> float:
    """Seconds since this process started (Linux's /proc), else since this module was imported."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            # Field 22 is the start in clock ticks after boot; the name in parentheses may hold spaces.
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            return float(uptime.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


def _run_in_session(fn: Callable[[AsyncSession], Awaitable[T]], settings: Settings | None = None) -> T:
    """Run one unit of work against the configured database and commit it."""
    import asyncio

    from sqlalchemy.exc import DBAPIError

    from qualgent.config import get_settings
    from qualgent.db.dialect import writer
    from qualgent.db.session import make_engine, make_sessionmaker, transaction
    from qualgent.errors import QualgentError

    settings = settings or get_settings()
    url = settings.resolved_database_url
    if url.startswith("sqlite") and not _sqlite_file(url).exists():
        _no_database(url)  # rather than create an empty database file here

    async def main() -> T:
        engine = make_engine(url, pool_size=1)
        try:
            async with transaction(make_sessionmaker(writer(engine))) as session:
                return await fn(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except QualgentError as exc:
        err.print(f"[red]error:[/red] {escaped(exc.message)}", highlight=False)
        raise typer.Exit(1) from None
    except DBAPIError as exc:
        text = str(exc.orig).lower()
        if "no such table" in text or "does not exist" in text:
            _no_database(url)  # a database without qualgent's tables
        raise


def _sqlite_file(url: str) -> Path:
    return Path(url.split(":///", 1)[-1].split("?", 1)[0])


def _no_database(url: str) -> NoReturn:
    where = _sqlite_file(url) if url.startswith("sqlite") else url.split("@")[-1]
    err.print(
        f"error: no qualgent database at {where}. Run this where the server runs (its QUALGENT_DATA_DIR), or set "
        "QUALGENT_DATA_DIR (or QUALGENT_DATABASE_URL) to the server's; `qualgent db upgrade` creates one.",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(1)


def _print_table(table: Table) -> None:
    """Print a table; when output is not a terminal, at its natural width so IDs are never cut short."""
    if console.is_terminal:
        console.print(table)
        return
    width = console.measure(table, options=console.options.update_width(10_000)).maximum
    Console(file=console.file, width=max(width, console.width)).print(table)


def _default_org(session: AsyncSession, org: str | None) -> Awaitable[str]:
    from qualgent.errors import QualgentError
    from qualgent.organisations.repository import OrganisationRepository

    async def pick() -> str:
        if org:
            return org
        orgs = await OrganisationRepository(session).list()
        if len(orgs) != 1:
            raise QualgentError(f"There are {len(orgs)} organisations; name one with --org.")
        return orgs[0].id

    return pick()


# ---------------------------------------------------------------------------------------------- serve


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Server processes (share limits through Redis when set).")] = 1,
    migrate: Annotated[
        bool | None,
        typer.Option(help="Apply database migrations first. Default: yes on SQLite, no elsewhere."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Start the API server (the embedded default: SQLite and files under the data directory)."""
    _require_server("qualgent serve")
    import uvicorn

    from qualgent.config import get_settings
    from qualgent.db.migrations import upgrade
    from qualgent.organisations.service import bootstrap

    settings = get_settings()
    if "public_base_url" not in settings.model_fields_set:
        # Links must point where this server listens; workers read the same environment.
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        os.environ["QUALGENT_PUBLIC_BASE_URL"] = f"http://{shown}:{port}"
        get_settings.cache_clear()
        settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate if migrate is not None else settings.is_sqlite:
        upgrade(settings.resolved_database_url)
    else:
        _require_current_schema(settings)

    first = _run_in_session(bootstrap, settings)
    agent_thread = None
    if settings.embedded_agent and _missing(AGENT_MODULES):
        err.print(
            "No simulated devices: the embedded agent needs the agent extra: pip install 'qualgent[agent]' "
            "(QUALGENT_EMBEDDED_AGENT=false to serve remote agents only)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    elif settings.embedded_agent:
        agent_thread = _start_embedded_agent(settings, host, port)
    base = settings.public_base_url.rstrip("/")
    if first is not None:
        console.print(
            "\n[bold green]First start:[/bold green] created a default organisation and this API key. "
            "It is shown [bold]once[/bold]; keep it:\n"
        )
        console.print(f"    [bold]{first.key.secret}[/bold]\n", highlight=False, soft_wrap=True)
        console.print("Try it:\n", highlight=False)
        console.print(f'    export QUALGENT_API_KEY="{first.key.secret}"', highlight=False, soft_wrap=True)
        console.print(
            f'    curl {base}/v1/devices/list -H "X-Api-Key: $QUALGENT_API_KEY"\n', highlight=False, soft_wrap=True
        )
        console.print(f"Dashboard: sign in at {base}/sign-in", highlight=False, soft_wrap=True)
        console.print(f"    email:    {first.email}", highlight=False, soft_wrap=True)
        console.print(f"    password: {first.password}", highlight=False, soft_wrap=True)
        console.print(
            f"Shown once too; change it with `qualgent admin set-password {first.email}`.\n",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(f"Dashboard: {base}/sign-in", highlight=False)
    console.print(f"API docs: {base}/docs", highlight=False)
    options: dict[str, Any] = dict(
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        # Forwarded headers are believed from QUALGENT_TRUSTED_PROXIES only (app.py), not from
        # uvicorn's default of 127.0.0.1: behind a proxy on the same host every client would otherwise
        # be whoever X-Forwarded-For names, and per-address limits nobody's.
        proxy_headers=False,
        # Long polls end at once when the process is asked to stop (qualgent.shutdown); what else is
        # still open after a few seconds (an upload) is cut.
        timeout_graceful_shutdown=3,
    )
    if workers > 1:
        _metrics_across_workers(settings)
        uvicorn.run("qualgent.app:create_app", **options)
    else:
        _serve_one(uvicorn.Config("qualgent.app:create_app", **options))
    if agent_thread is not None:
        agent_thread.join(timeout=5)  # it was told to stop with the server; its runs' leases expire


def _metrics_across_workers(settings: Settings) -> None:
    """Several workers: each writes its metrics to files in one directory that /metrics, in whichever
    worker answers, adds up (prometheus-client's multiprocess mode). Emptied at each start: the files
    of a previous run's processes would count again."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return  # the operator's own
    folder = settings.data_dir / "metrics"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder.resolve())


def _serve_one(config: Any) -> None:
    """uvicorn.run for one process, logging when the server listens: "Ready in N s" since the command started."""
    import logging

    import uvicorn

    class ReadyServer(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                # The process may have started earlier than the command: `./dev serve` execs it once
                # installed, so the second figure is a first start's whole wait.
                logging.getLogger("uvicorn.error").info(
                    "Ready in %.2f s since qualgent serve started (%.2f s since its process did)",
                    time.monotonic() - _IMPORTED,
                    _seconds_since_start(),
                )

    server = ReadyServer(config)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: Ctrl-C before its handlers are installed
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE: the port is taken, the app did not start, …


def _start_embedded_agent(settings: Settings, host: str, port: int) -> threading.Thread:
    """One device agent with simulated devices for the catalogue, in a thread of this process.

    It talks to this server over HTTP, like any agent; it starts polling once the server answers, and
    stops as soon as the process is asked to stop.
    """
    import asyncio

    from qualgent.agent.config import load_devices
    from qualgent.agent.loop import Agent
    from qualgent.agents.service import create_agent
    from qualgent.drivers.simulator import SimulatorDriver
    from qualgent.shutdown import on_shutdown

    _agent, token = _run_in_session(
        lambda s: create_agent(s, "embedded simulator agent", organization_id=None, embedded=True), settings
    )
    devices = [d for d in load_devices(settings.devices_file) if d.driver == "simulator"]
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "localhost") else host
    agent = Agent(
        f"http://{local}:{port}",
        token,
        devices,
        {"simulator": SimulatorDriver(settings.simulator_step_seconds)},
        settings.data_dir / "agent-cache",
    )

    async def serve_agent() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        forget = on_shutdown(lambda: _call_soon(loop, stop.set))
        try:
            await agent.run(stop)
        finally:
            forget()

    thread = threading.Thread(target=lambda: asyncio.run(serve_agent()), name="embedded-agent", daemon=True)
    thread.start()
    console.print(f"Simulated devices: {len(devices)} (embedded agent; QUALGENT_EMBEDDED_AGENT=false to turn off)")
    return thread


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    loop.call_soon_threadsafe(callback)


def _require_current_schema(settings: Settings) -> None:
    import asyncio

    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import Connection

    from qualgent.db.migrations import alembic_config
    from qualgent.db.session import make_engine

    head = ScriptDirectory.from_config(alembic_config(settings.resolved_database_url)).get_current_head()

    async def current() -> str | None:
        engine = make_engine(settings.resolved_database_url, pool_size=1)
        try:
            async with engine.connect() as conn:

                def rev(sync: Connection) -> str | None:
                    return MigrationContext.configure(sync).get_current_revision()

                return await conn.run_sync(rev)
        finally:
            await engine.dispose()

    found = asyncio.run(current())
    if found != head:
        err.print(
            f"[red]The database schema is at {found or 'nothing'}, not {head}.[/red] "
            "Run `qualgent db upgrade` (or start with --migrate)."
        )
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- agent


@app.command()
def agent(
    server: Annotated[str, typer.Option(help="The qualgent server's URL.", envvar="QUALGENT_AGENT_SERVER")],
    token: Annotated[
        str, typer.Option(help="Agent token (qga_…) from `qualgent admin create-agent`.", envvar="QUALGENT_AGENT_TOKEN")
    ],
    devices: Annotated[
        Path | None, typer.Option(help="YAML devices file (default: the catalogue as simulated devices).", exists=True)
    ] = None,
    cache_dir: Annotated[Path, typer.Option(help="Where downloaded apps are cached by SHA-256.")] = Path(
        ".agent-cache"
    ),
    step_seconds: Annotated[
        float, typer.Option(help="Simulated step duration.", envvar="QUALGENT_SIMULATOR_STEP_SECONDS")
    ] = 0.2,
) -> None:
    """Run a device agent: serve devices and execute the runs the server hands out."""
    _require("qualgent agent", "the agent extra", "agent", AGENT_MODULES)
    import asyncio
    import logging
    import signal

    from qualgent.agent.config import load_devices
    from qualgent.agent.loop import Agent
    from qualgent.drivers.appium import AppiumDriver
    from qualgent.drivers.base import Driver
    from qualgent.drivers.simulator import SimulatorDriver

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    configs = load_devices(devices)
    drivers: dict[str, Driver] = {"simulator": SimulatorDriver(step_seconds), "appium": AppiumDriver()}
    worker = Agent(server, token, configs, drivers, cache_dir)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop)

    err.print(f"Agent serving {len(configs)} devices for {server}")
    asyncio.run(main())


# ------------------------------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from qualgent.config import get_settings
    from qualgent.db.migrations import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url, revision)
    console.print(f"Database at {revision}.")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision ('base' = empty).")]) -> None:
    """Revert migrations down to REVISION."""
    from qualgent.config import get_settings
    from qualgent.db.migrations import downgrade

    downgrade(get_settings().resolved_database_url, revision)
    console.print(f"Database at {revision}.")


# ---------------------------------------------------------------------------------------------- admin


@admin_app.command("create-org")
def create_org(
    name: Annotated[str, typer.Argument(help="Organisation name.")],
    parallel_runs: Annotated[int | None, typer.Option(help="Runs it may execute at once.")] = None,
) -> None:
    """Create an organisation and print its ID."""
    from qualgent.organisations.service import create_organization

    org = _run_in_session(lambda s: create_organization(s, name, parallel_runs))
    console.print(org.id)


@admin_app.command("create-agent")
def create_agent_cmd(
    name: Annotated[str, typer.Argument(help="A name for the agent (e.g. its host).")],
    org: Annotated[
        str | None,
        typer.Option(help="The organisation whose runs it claims (default: the only one).", show_default=False),
    ] = None,
    shared: Annotated[
        bool, typer.Option("--shared", help="Serve every organisation's runs (devices the operator shares).")
    ] = False,
) -> None:
    """Create a device agent's token and print it (shown once). Start the agent with `qualgent agent`.

    An agent claims the runs of one organisation, or with --shared those of every organisation."""
    from qualgent.agents.service import create_agent

    if shared and org:
        raise typer.BadParameter("--shared serves every organisation; leave out --org.")

    async def create(session: AsyncSession) -> Any:
        return await create_agent(session, name, organization_id=None if shared else await _default_org(session, org))

    agent, token = _run_in_session(create)
    whose = "every organisation (shared)" if agent.organization_id is None else agent.organization_id
    err.print(f"Created {agent.id}, serving {whose}. Its token, shown once:")
    console.print(token, highlight=False, soft_wrap=True)


@admin_app.command("list-orgs")
def list_orgs() -> None:
    """List organisations."""
    from qualgent.organisations.repository import OrganisationRepository

    orgs = _run_in_session(lambda s: OrganisationRepository(s).list())
    table = Table("id", "name", "parallel runs")
    for org in orgs:
        add_row(table, org.id, org.name, org.max_parallel_runs or "default")
    _print_table(table)


@admin_app.command("create-user")
def create_user(
    email: Annotated[str, typer.Argument(help="The user's email address.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    org: Annotated[str | None, typer.Option(help="Organisation ID (default: the only one).")] = None,
) -> None:
    """Create a user in an organisation and print the user's ID."""
    from qualgent.organisations.service import create_user as create

    async def work(session: AsyncSession) -> Any:
        return await create(session, await _default_org(session, org), name or email.split("@")[0], email)

    console.print(_run_in_session(work).id)


@admin_app.command("create-key")
def create_key(
    user: Annotated[str | None, typer.Option(help="User ID the key acts as (default: the org's first user).")] = None,
    org: Annotated[str | None, typer.Option(help="Organisation ID (default: the only one).")] = None,
    scopes: Annotated[str, typer.Option(help="'read' or 'read,write'.")] = "read,write",
    rate_limit: Annotated[int | None, typer.Option(help="Requests per second (default: the server's).")] = None,
    name: Annotated[str, typer.Option(help="A label to tell keys apart.")] = "",
) -> None:
    """Create an API key and print it. It is shown once and stored only as a hash."""
    from qualgent.errors import QualgentError
    from qualgent.organisations.repository import OrganisationRepository
    from qualgent.organisations.service import create_key as create

    async def work(session: AsyncSession) -> Any:
        user_id = user
        if user_id is None:
            first = await OrganisationRepository(session).first_user(await _default_org(session, org))
            if first is None:
                raise QualgentError("The organisation has no users; create one with `qualgent admin create-user`.")
            user_id = first.id
        return await create(session, user_id, name=name, scopes=scopes, rate_limit=rate_limit)

    key = _run_in_session(work)
    err.print(f"Created {key.id} ({key.scopes}) for {key.user_id}. The key, shown once:")
    console.print(key.secret, highlight=False, soft_wrap=True)


@admin_app.command("list-keys")
def list_keys(org: Annotated[str | None, typer.Option(help="Organisation ID (default: the only one).")] = None) -> None:
    """List an organisation's API keys (prefixes only: keys are stored as hashes)."""
    from qualgent.organisations.service import list_keys as list_

    async def work(session: AsyncSession) -> Any:
        return await list_(session, await _default_org(session, org))

    table = Table("id", "prefix", "user", "scopes", "rate limit", "created", "last used", "revoked")
    for key in _run_in_session(work):
        add_row(
            table,
            key.id,
            key.prefix + "…",
            key.user_id,
            key.scopes,
            str(key.rate_limit or "default"),
            key.created_at.strftime("%Y-%m-%d %H:%M"),
            key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "never",
            key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "",
        )
    _print_table(table)


@admin_app.command("set-password")
def set_password(
    email: Annotated[str, typer.Argument(help="The user's email address.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input (for scripts).")
    ] = False,
) -> None:
    """Set a user's dashboard password (asked twice unless --password-stdin); signs the user out everywhere."""
    from qualgent.config import get_settings
    from qualgent.organisations.service import set_password as set_it

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    _run_in_session(lambda s: set_it(s, email, password))
    settings = get_settings()
    # The server's address is known here only when it is configured; 8000 is only serve's default port.
    where = (
        f"{settings.public_base_url.rstrip('/')}/sign-in"
        if "public_base_url" in settings.model_fields_set
        else "/sign-in on the server's address"
    )
    console.print(f"Password set for {email}; sign in at {where}.", highlight=False, soft_wrap=True)


@admin_app.command("revoke-key")
def revoke_key(key_id: Annotated[str, typer.Argument(help="The key's ID (key_…).")]) -> None:
    """Revoke an API key: it stops working at once."""
    from qualgent.organisations.service import revoke_key as revoke

    _run_in_session(lambda s: revoke(s, key_id))
    console.print(f"Revoked {key_id}.")


@admin_app.command("set-rate-limit")
def set_rate_limit(
    key_id: Annotated[str, typer.Argument(help="The key's ID (key_…).")],
    per_second: Annotated[int, typer.Argument(help="Requests per second; 0 restores the server default.")],
) -> None:
    """Set an API key's rate limit."""
    from qualgent.organisations.service import set_key_rate_limit

    _run_in_session(lambda s: set_key_rate_limit(s, key_id, per_second or None))
    console.print(f"{key_id}: {per_second or 'default'} requests per second.")


@admin_app.command("set-parallel-runs")
def set_parallel_runs(
    cap: Annotated[int, typer.Argument(help="Runs executing at once; 0 restores the server default.")],
    org: Annotated[str | None, typer.Option(help="Organisation ID (default: the only one).")] = None,
) -> None:
    """Set how many runs an organisation may execute at once."""
    from qualgent.organisations.service import set_parallel_runs as set_cap

    async def work(session: AsyncSession) -> Any:
        return await set_cap(session, await _default_org(session, org), cap or None)

    result = _run_in_session(work)
    console.print(f"{result.id}: {cap or 'default'} parallel runs.")


@admin_app.command("org-settings")
def org_settings(
    org: Annotated[str | None, typer.Option(help="Organisation ID (default: the only one).")] = None,
    default_retries: Annotated[
        int | None, typer.Option("--default-retries", help="Test retries of runs that ask none (0–5).", min=0, max=5)
    ] = None,
    auto_quarantine: Annotated[
        bool | None,
        typer.Option("--auto-quarantine/--no-auto-quarantine", help="Quarantine flaky test cases automatically."),
    ] = None,
    quarantine_exit_passes: Annotated[
        int | None,
        typer.Option(
            "--quarantine-exit-passes", help="Passes in a row that end a quarantine (0: by hand only).", min=0, max=100
        ),
    ] = None,
) -> None:
    """Show an organisation's settings (test retries, quarantine of flaky tests); change those given."""
    from qualgent.config import get_settings
    from qualgent.organisations.schemas import OrganizationSettingsPatch
    from qualgent.organisations.service import change_settings

    given = {
        "default_retries": default_retries,
        "auto_quarantine": auto_quarantine,
        "quarantine_exit_passes": quarantine_exit_passes,
    }
    patch = OrganizationSettingsPatch(**{k: v for k, v in given.items() if v is not None})
    settings = get_settings()

    async def work(session: AsyncSession) -> Any:
        return await change_settings(session, await _default_org(session, org), patch, settings.default_parallel_runs)

    result = _run_in_session(work)
    for name, value in result.model_dump().items():
        console.print(f"{name}: {value}", highlight=False)


@admin_app.command("add-category")
def add_category(
    name: Annotated[str, typer.Argument(help="Category name.")],
    description: Annotated[str, typer.Option(help="What the category holds.")] = "",
    org: Annotated[str | None, typer.Option(help="Organisation ID (default: the only one).")] = None,
) -> None:
    """Add a test category and print its ID."""
    from qualgent.categories.schemas import CategoryIn
    from qualgent.categories.service import create

    async def work(session: AsyncSession) -> Any:
        return await create(session, await _default_org(session, org), CategoryIn(name=name, description=description))

    console.print(_run_in_session(work).id)


@admin_app.command("add-test-case")
def add_test_case(
    name: Annotated[str, typer.Argument(help="Test case name.")],
    flow: Annotated[Path | None, typer.Option(help="YAML flow file with the test's steps.", exists=True)] = None,
    category: Annotated[str | None, typer.Option(help="Category ID (cat_…).")] = None,
    description: Annotated[str, typer.Option(help="What the test checks.")] = "",
    inactive: Annotated[bool, typer.Option(help="Create it inactive (listed, not run).")] = False,
    org: Annotated[str | None, typer.Option(help="Organisation ID (default: the only one).")] = None,
) -> None:
    """Add a test case and print its ID."""
    from qualgent.test_cases.schemas import TestCaseIn
    from qualgent.test_cases.service import create

    body = TestCaseIn(
        name=name,
        description=description,
        category_id=category,
        status="inactive" if inactive else "active",
        flow=flow.read_text() if flow else "",
    )

    async def work(session: AsyncSession) -> str:
        return await create(session, await _default_org(session, org), body)

    console.print(_run_in_session(work))


@admin_app.command("purge")
def purge_cmd(
    retention_days: Annotated[
        float | None,
        typer.Option(help="Days a deleted app's content is kept (default: QUALGENT_APP_RETENTION_DAYS)."),
    ] = None,
    run_retention_days: Annotated[
        float | None,
        typer.Option(
            help="Days after a run finished when its videos, device logs and screenshots are deleted "
            "(default: QUALGENT_RUN_RETENTION_DAYS)."
        ),
    ] = None,
) -> None:
    """Purge now: deleted apps' content past retention, expired resumable uploads, crashed uploads' data, and
    old runs' videos, device logs and screenshots."""
    import asyncio

    from qualgent.apps.purge import purge
    from qualgent.config import get_settings
    from qualgent.db.dialect import write_sessionmaker
    from qualgent.db.session import make_engine
    from qualgent.state import make_storage

    settings = get_settings()
    if retention_days is not None:
        settings = settings.model_copy(update={"app_retention_days": retention_days})
    if run_retention_days is not None:
        settings = settings.model_copy(update={"run_retention_days": run_retention_days})

    async def main() -> str:
        engine = make_engine(settings.resolved_database_url, pool_size=1)
        storage = make_storage(settings)
        try:
            return str(await purge(settings, write_sessionmaker(engine), storage))
        finally:
            await storage.close()
            await engine.dispose()

    console.print(f"Purged: {asyncio.run(main())}.", highlight=False)


def main() -> None:  # pragma: no cover - console entry for `python -m qualgent`
    app(prog_name=os.path.basename(sys.argv[0]))
