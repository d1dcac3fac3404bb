"""Faults one at a time, each made for real: the API gone for seconds under a running agent, database
connections terminated by PostgreSQL, Redis killed and started again, a server stopped with long polls
open, sign-ins raced, forwarded addresses and other people's bad keys. (All of them at once, on two
server processes: tests/test_fault_drill.py.)"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.agents import agent_token, running_agent, simulated_devices
from tests.fixtures.factories import (
    IPHONE_14_PRO,
    Database,
    Tenant,
    create_test_case,
    ipa_bytes,
    make_tenant,
    upload_app,
)
from tests.fixtures.faults import outage_proxy
from tests.fixtures.flows import TEXTS
from tests.fixtures.servers import LiveServer, live_server


def _flow(steps: int, screenshot_every: int) -> str:
    """A flow of ``steps`` steps that pass on the TEXTS build, with a screenshot every few."""
    body = ["- launchApp"]
    cycle = ["- tapOn: Sign in", "- inputText: user@example.com", "- assertVisible: Welcome back"]
    for i in range(1, steps):
        body.append(f"- takeScreenshot: shot-{i}" if i % screenshot_every == 0 else cycle[i % len(cycle)])
    return "appId: com.example.app\n---\n" + "\n".join(body) + "\n"


def _ios_app(tenant: Tenant) -> str:
    response = upload_app(tenant, ipa_bytes(texts=TEXTS), filename="Example.ipa", app_name="Example", version="1.2.3")
    assert response.status_code == 200, response.text
    return str(response.json()["file"]["id"])


def _queue(tenant: Tenant, case_id: str, app_id: str, n: int) -> list[str]:
    jobs = [{"test_case_id": case_id, "app_file_id": app_id, "device": IPHONE_14_PRO} for _ in range(n)]
    response = tenant.client.post("/v1/test-cases/run", json={"jobs": jobs})
    assert response.status_code == 200, response.text
    return [j["id"] for j in response.json()["jobs"]]


def _statuses(tenant: Tenant, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    response = tenant.client.get("/v1/jobs/list", params={"ids": ",".join(run_ids), "limit": 100})
    assert response.status_code == 200, response.text
    return {run["id"]: run for run in response.json()["test_runs"]}


@contextlib.contextmanager
def _tenant_and_token(server: LiveServer) -> Iterator[tuple[Tenant, str]]:
    """A tenant of its own on ``server`` and an agent token."""
    db = Database(server.settings.resolved_database_url)
    try:
        tenant = make_tenant(db, server.url)
        token = agent_token(db)
    finally:
        db.close()
    try:
        yield tenant, token
    finally:
        tenant.client.close()


def _ended(tenant: Tenant, run_ids: list[str]) -> dict[str, dict[str, Any]] | None:
    runs = _statuses(tenant, run_ids)
    return runs if all(run["status"] in ("passed", "failed", "cancelled") for run in runs.values()) else None


def _wait(what: str, check: Any, timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------- 1. the API away under a running agent


@pytest.fixture
def leased_server(backend: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A server whose leases outlast the outage below by a few seconds, with a quick reaper: a run its
    agent gave up on would be requeued (a second attempt) within the test."""
    with live_server(backend, tmp_path / "srv", lease_seconds=12, heartbeat_seconds=0.5, reaper_interval=0.2) as srv:
        yield srv


def test_an_agent_keeps_running_and_reporting_through_an_api_outage_shorter_than_the_lease(
    leased_server: LiveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _tenant_and_token(leased_server) as (tenant, token):
        _agent_rides_out_an_outage(tenant, token, leased_server, tmp_path, caplog)


def _agent_rides_out_an_outage(
    tenant: Tenant, token: str, leased_server: LiveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    steps, every = 18, 4
    case = create_test_case(tenant, flow=_flow(steps, every))
    run_ids = _queue(tenant, case["id"], _ios_app(tenant), 4)
    port = int(leased_server.url.rsplit(":", 1)[1])
    devices = simulated_devices(["iPhone 14 Pro"], copies=4)
    caplog.set_level(logging.INFO, logger="qualgent.agent")
    with (
        outage_proxy(port) as proxy,
        running_agent(proxy.url, token, devices, tmp_path / "cache", step_seconds=0.3),
    ):
        # Every run a few steps in (about 5 s of steps each), then the API goes away for 8 s: more
        # than the old ~6 s of retries of a step report, less than the 12 s lease.
        _wait(
            "every run to be a few steps in",
            lambda: all(r["status"] == "running" and r["progress"] >= 10 for r in _statuses(tenant, run_ids).values()),
            timeout=30,
        )
        proxy.down()
        time.sleep(8)
        proxy.up()
        back = time.monotonic()
        done = _wait("every run to end", lambda: _ended(tenant, run_ids), timeout=30)
        ended_after = time.monotonic() - back
    for run_id, run in done.items():
        assert run["status"] == "passed", run
        assert run["attempt"] == 1, run  # never abandoned, never requeued
        report = tenant.client.get(f"/v1/jobs/{run_id}/report").json()
        assert [a["outcome"] for a in report["attempts"]] == ["passed"], report["attempts"]
        # Every step was reported, and every screenshot taken during the outage reached the server.
        assert [s["index"] for s in report["steps"]] == list(range(steps)), report["steps"]
        shots = [s["index"] for s in report["steps"] if s["screenshot"]]
        assert shots == [i for i in range(steps) if i and i % every == 0], report["steps"]
        for index in shots[:1]:
            assert httpx.get(report["steps"][index]["screenshot"]).content.startswith(b"\x89PNG")
    # The runs went on while their reports waited: their steps were done when the API came back, so
    # they ended within a couple of back-off periods, not after the rest of their steps.
    assert ended_after < 4.5, ended_after
    assert not [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
