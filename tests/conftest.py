"""Every API test runs against a real server over HTTP, once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.factories import Database, Tenant, make_tenant
from tests.fixtures.servers import LiveServer, live_server

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One live server per backend for the whole session; tests isolate by organisation."""
    with live_server(backend, tmp_path_factory.mktemp(f"server-{backend}")) as srv:
        yield srv


@pytest.fixture(scope="session")
def db(server: LiveServer) -> Iterator[Database]:
    database = Database(server.settings.resolved_database_url)
    yield database
    database.close()


@pytest.fixture
def tenant(db: Database, server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(db, server.url)
    yield t
    t.client.close()


@pytest.fixture
def other_tenant(db: Database, server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(db, server.url)
    yield t
    t.client.close()


@pytest.fixture
def data_dir(server: LiveServer) -> Path:
    return server.settings.data_dir


# The files that take longest (a minute or more each, on two cores), longest first. `./dev test` hands
# whole files to its two processes in the order collected; starting with these, the processes end
# together instead of one waiting out the other's last long file. A file missing here only runs later.
LONG_FILES = (
    "test_reliability.py",
    "test_client_cli.py",
    "test_openapi.py",
    "test_faults.py",
    "test_run_artifacts.py",
    "test_cli_output.py",
    "test_workspace_sync.py",
    "test_events.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests (tests/web/) run last, whatever the order on the command line: once started,
    Playwright's sync API keeps an event loop running in the main thread for the rest of the session,
    and asyncio.Runner (tests/fixtures/factories.Database) refuses to run inside a running loop. The
    long files run first (LONG_FILES)."""
    web = Path(__file__).parent / "web"

    def order(item: pytest.Item) -> tuple[bool, int]:
        name = item.path.name
        return item.path.is_relative_to(web), LONG_FILES.index(name) if name in LONG_FILES else len(LONG_FILES)

    items.sort(key=order)
