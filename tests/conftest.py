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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests (tests/web/) run last, whatever the order on the command line: once started,
    Playwright's sync API keeps an event loop running in the main thread for the rest of the session,
    and asyncio.Runner (tests/fixtures/factories.Database) refuses to run inside a running loop."""
    web = Path(__file__).parent / "web"
    items.sort(key=lambda item: item.path.is_relative_to(web))
