"""GET /metrics (issue 15): Prometheus' text format, read back with prometheus-client's own parser, its
values checked against the actions a test takes; the bearer token; several workers adding up
(multiprocess mode). Real servers on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from qualgent.db.models import Device
from tests.fixtures.factories import PIXEL_7, Database, Tenant, create_test_case, make_tenant, upload_app
from tests.fixtures.hand_agent import HandAgent, phone, tag
from tests.fixtures.servers import LiveServer, live_server, start_serve_process

TOKEN = "metrics-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def m_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(backend, tmp_path_factory.mktemp(f"metrics-{backend}"), metrics_token=TOKEN) as srv:
        yield srv


@pytest.fixture(scope="module")
def m_db(m_server: LiveServer) -> Iterator[Database]:
    database = Database(m_server.settings.resolved_database_url)
    yield database
    database.close()


@pytest.fixture
def org(m_db: Database, m_server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(m_db, m_server.url)
    yield t
    t.client.close()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, token: str | None = TOKEN) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_metrics_need_the_token_when_one_is_set(m_server: LiveServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"X-Api-Key": TOKEN}):
        response = httpx.get(f"{m_server.url}/metrics", headers=headers, timeout=10)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"]["code"] == "invalid_metrics_token"
    names = {name for name, _ in scrape(m_server.url)}
    assert all(n.startswith(("qualgent_", "python_", "process_")) for n in names), names
    assert {"qualgent_http_request_duration_seconds_count", "qualgent_webhook_deliveries_pending"} <= names


def test_metrics_follow_the_actions_taken(org: Tenant, m_server: LiveServer, m_db: Database) -> None:
    url = m_server.url
    before = scrape(url)

    uploaded = upload_app(org)
    assert uploaded.status_code == 200, uploaded.text
    app = uploaded.json()["file"]
    case = create_test_case(org, name=f"Metrics {uuid.uuid4().hex[:6]}", flow="appId: x\n---\n- launchApp\n")
    t = tag()
    jobs: list[dict[str, Any]] = [
        {"test_case_id": case["id"], "app_file_id": app["id"], "device_selector": {"tags": [t]}},
        {"test_case_id": case["id"], "app_file_id": app["id"], "device": PIXEL_7},
    ]
    queued = org.client.post("/v1/test-cases/run", json={"jobs": jobs})
    assert queued.status_code == 200, queued.text
    tagged, pixel = (j["id"] for j in queued.json()["jobs"])
    for _ in range(3):
        assert org.client.get(f"/v1/jobs/status/{pixel}").status_code == 200
    assert org.client.get("/v1/jobs/status/run_nope").status_code == 404

    during = scrape(url)
    mine = {"organization": org.organization_id, "platform": "android"}
    assert value(during, "qualgent_queue_depth", **mine) == 2
    assert value(during, "qualgent_queue_oldest_seconds", **mine) >= 0
    assert (
        total(during, "qualgent_runs_queued_total", platform="android")
        - total(before, "qualgent_runs_queued_total", platform="android")
        == 2
    )
    assert (
        value(during, "qualgent_uploads_total", platform="android")
        - value(before, "qualgent_uploads_total", platform="android")
        == 1
    )
    assert (
        value(during, "qualgent_upload_bytes_total", platform="android")
        - value(before, "qualgent_upload_bytes_total", platform="android")
        == app["file_size"]
    )
    assert (
        value(during, "qualgent_upload_duration_seconds_count")
        - value(before, "qualgent_upload_duration_seconds_count")
        == 1
    )
    # Requests by route template (never the raw path), method and status.
    status_route = {"method": "GET", "route": "/v1/jobs/status/{test_run_id}"}
    name = "qualgent_http_request_duration_seconds_count"
    assert value(during, name, **status_route, status="200") - value(before, name, **status_route, status="200") == 3
    assert value(during, name, **status_route, status="404") - value(before, name, **status_route, status="404") == 1
    upload_route = {"method": "POST", "route": "/v1/apps/upload", "status": "200"}
    assert value(during, name, **upload_route) - value(before, name, **upload_route) == 1
    assert not any(n == name and dict(ls).get("route", "").startswith("/v1/jobs/status/run_") for n, ls in during)
    # A stream open for two seconds counts the time to its first byte, not the two seconds.
    events_route = {"method": "GET", "route": "/v1/jobs/events", "status": "200"}
    stream = org.client.get("/v1/jobs/events", params={"max_seconds": 2})
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    streamed = scrape(url)
    assert value(streamed, name, **events_route) - value(during, name, **events_route) == 1
    seconds = "qualgent_http_request_duration_seconds_sum"
    assert value(streamed, seconds, **events_route) - value(during, seconds, **events_route) < 1.5

    # An agent of the organisation takes the tagged run: a device busy, a run running against the cap.
    agent = HandAgent(m_server, m_db, [phone("a", t), phone("b", t)], organization_id=org.organization_id)
    try:
        run = agent.claim("a")
        assert run is not None and run["id"] == tagged
        taking = scrape(url)
        agent_id = agent_id_of(m_db, agent)
        devices = {
            n: v for (n, ls), v in taking.items() if n.startswith("qualgent_devices_") and ("agent_id", agent_id) in ls
        }
        assert devices == {"qualgent_devices_online": 2, "qualgent_devices_busy": 1}, devices
        assert value(taking, "qualgent_runs_running", organization=org.organization_id) == 1
        assert value(taking, "qualgent_runs_parallel_cap", organization=org.organization_id) == 10
        assert value(taking, "qualgent_queue_depth", **mine) == 1
        assert (
            value(taking, "qualgent_agent_claim_duration_seconds_count")
            - value(before, "qualgent_agent_claim_duration_seconds_count")
            == 1
        )
        assert (
            value(taking, "qualgent_queue_wait_seconds_count", platform="android")
            - value(before, "qualgent_queue_wait_seconds_count", platform="android")
            == 1
        )
        agent.fail(run)
    finally:
        agent.close()
    assert org.client.post(f"/v1/jobs/{pixel}/cancel").status_code == 200

    after = scrape(url)
    finished = "qualgent_runs_finished_total"
    assert (
        value(after, finished, status="failed", failure_kind="test")
        - value(before, finished, status="failed", failure_kind="test")
        == 1
    )
    assert (
        value(after, finished, status="cancelled", failure_kind="")
        - value(before, finished, status="cancelled", failure_kind="")
        == 1
    )
    assert value(after, "qualgent_queue_depth", **mine) == 0
    assert value(after, "qualgent_runs_running", organization=org.organization_id) == 0


def agent_id_of(db: Database, agent: HandAgent) -> str:
    """The agent's ID, read from one of its devices."""
    device_id = next(iter(agent.ids.values()))
    found: str = db.run(lambda s: s.scalar(select(Device.agent_id).where(Device.id == device_id)))
    return found


def test_workers_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    """`qualgent serve --workers 2`: whichever worker answers /metrics counts every worker's requests."""
    env = {
        "QUALGENT_DATA_DIR": str(tmp_path / "data"),
        "QUALGENT_EMBEDDED_AGENT": "false",
        "QUALGENT_METRICS_TOKEN": TOKEN,
    }
    serve = start_serve_process(env, tmp_path / "serve.log", "--workers", "2")
    try:
        with httpx.Client(base_url=serve.url, timeout=10) as client:
            for _ in range(3):  # both workers up (each answers /healthz once it is)
                assert client.get("/readyz").status_code == 200
            before = scrape(serve.url)
            for _ in range(40):
                # A new connection each: the kernel spreads them over the workers.
                assert httpx.get(f"{serve.url}/healthz", timeout=10).status_code == 200
        after = scrape(serve.url)
        healthz = {"method": "GET", "route": "/healthz", "status": "200"}
        name = "qualgent_http_request_duration_seconds_count"
        assert value(after, name, **healthz) - value(before, name, **healthz) == 40
        assert list((tmp_path / "data" / "metrics").glob("*.db")), "no multiprocess files were written"
    finally:
        serve.stop()


def test_the_example_grafana_dashboard_uses_only_metrics_the_server_has(m_server: LiveServer) -> None:
    response = httpx.get(f"{m_server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    families = {f.name for f in text_string_to_metric_families(response.text)}
    dashboard = json.loads((Path(__file__).parent.parent / "docs" / "grafana-dashboard.json").read_text())
    used = {
        re.sub(r"_(bucket|count|sum|total)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"qualgent_[a-z_]+", target["expr"])
    }
    assert len(used) >= 12 and used <= families, used - families
