"""Runs execute: the scheduler hands queued runs to real agents (HTTP), which run flows on simulated
devices and report steps, screenshots and results. Each module server has fast leases and reaper."""

from __future__ import annotations

import concurrent.futures
import threading
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
from tests.fixtures.flows import FAILING_FLOW, PASSING_FLOW, TEXTS
from tests.fixtures.servers import LiveServer, live_server


@pytest.fixture(scope="module")
def exec_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        backend,
        tmp_path_factory.mktemp(f"exec-{backend}"),
        lease_seconds=3,
        heartbeat_seconds=0.3,
        reaper_interval=0.2,
        max_attempts=2,
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def exec_db(exec_server: LiveServer) -> Iterator[Database]:
    database = Database(exec_server.settings.resolved_database_url)
    yield database
    database.close()


@pytest.fixture
def org(exec_db: Database, exec_server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(exec_db, exec_server.url)
    yield t
    t.client.close()


def _ios_app(tenant: Tenant) -> str:
    response = upload_app(tenant, ipa_bytes(texts=TEXTS), filename="Example.ipa", app_name="Example", version="1.2.3")
    assert response.status_code == 200, response.text
    return str(response.json()["file"]["id"])


def _queue(tenant: Tenant, case_id: str, app_id: str, n: int = 1, **extra: Any) -> list[str]:
    jobs = [{"test_case_id": case_id, "app_file_id": app_id, "device": IPHONE_14_PRO, **extra} for _ in range(n)]
    response = tenant.client.post("/v1/test-cases/run", json={"jobs": jobs})
    assert response.status_code == 200, response.text
    return [j["id"] for j in response.json()["jobs"]]


def _wait_status(tenant: Tenant, run_id: str, statuses: set[str], timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = tenant.client.get(f"/v1/jobs/status/{run_id}").json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {body['status']} after {timeout} s: {body}")
        time.sleep(0.05)


def test_a_passing_flow_runs_on_a_simulated_device(
    org: Tenant, exec_server: LiveServer, exec_db: Database, tmp_path: Path
) -> None:
    app = _ios_app(org)
    case = create_test_case(org, flow=PASSING_FLOW)
    [run_id] = _queue(org, case["id"], app)
    queued = org.client.get(f"/v1/jobs/status/{run_id}").json()
    assert queued["status"] == "queued" and queued["progress"] == 0
    # No device and no history: no ETA either.
    assert queued["queue"] == {"reason": "no_device", "position": 1, "eta_seconds": None}

    devices = simulated_devices(["iPhone 14 Pro"])
    with running_agent(exec_server.url, agent_token(exec_db), devices, tmp_path / "cache"):
        done = _wait_status(org, run_id, {"passed", "failed"})
    assert done["status"] == "passed", done
    assert done["progress"] == 100 and done["failure"] is None and done["attempt"] == 1
    assert done["started_at"] and done["finished_at"]

    report = org.client.get(f"/v1/jobs/{run_id}/report").json()
    assert [s["status"] for s in report["steps"]] == ["passed"] * 7
    assert report["steps"][1]["description"] == 'tapOn "Sign in"'
    assert any("simulated" in line for line in report["steps"][1]["logs"])
    shot = report["steps"][5]["screenshot"]
    assert shot, report["steps"][5]
    png = httpx.get(shot)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    tampered = shot.replace("signature=", "signature=0")
    assert httpx.get(tampered).status_code == 403
    other_step = shot.replace("/5.png", "/4.png")
    assert httpx.get(other_step).status_code == 403  # a link opens only what it was signed for
    assert [a["outcome"] for a in report["attempts"]] == ["passed"]

    listed = org.client.get("/v1/test-cases/list").json()
    assert listed[0]["latest_completed_run"]["id"] == run_id


def test_a_failing_step_fails_the_run_with_its_step_and_screenshot(
    org: Tenant, exec_server: LiveServer, exec_db: Database, tmp_path: Path
) -> None:
    app = _ios_app(org)
    case = create_test_case(org, flow=FAILING_FLOW)
    [run_id] = _queue(org, case["id"], app)
    with running_agent(exec_server.url, agent_token(exec_db), simulated_devices(["iPhone 14 Pro"]), tmp_path):
        done = _wait_status(org, run_id, {"passed", "failed"})
    assert done["status"] == "failed"
    assert done["failure"]["kind"] == "test" and done["failure"]["step"] == 2
    assert "Checkout complete" in done["failure"]["message"]
    report = org.client.get(f"/v1/jobs/{run_id}/report").json()
    assert [s["status"] for s in report["steps"]] == ["passed", "passed", "failed"]
    assert httpx.get(report["steps"][2]["screenshot"]).content.startswith(b"\x89PNG")

    junit = org.client.get(f"/v1/jobs/{run_id}/junit")
    assert junit.status_code == 200 and junit.headers["content-type"].startswith("application/xml")
    assert b"<failure" in junit.content and b"Checkout complete" in junit.content


def test_app_id_must_match_the_build(org: Tenant, exec_server: LiveServer, exec_db: Database, tmp_path: Path) -> None:
    app = _ios_app(org)
    case = create_test_case(org, flow="appId: com.other.app\n---\n- launchApp\n")
    [run_id] = _queue(org, case["id"], app)
    with running_agent(exec_server.url, agent_token(exec_db), simulated_devices(["iPhone 14 Pro"]), tmp_path):
        done = _wait_status(org, run_id, {"passed", "failed"})
    assert done["status"] == "failed" and done["failure"]["step"] == 0
    assert "com.other.app" in done["failure"]["message"]


def test_invalid_flows_are_refused_with_their_line(org: Tenant) -> None:
    response = org.client.post(
        "/v1/test-cases", json={"name": "bad", "flow": "appId: x\n---\n- launchApp\n- tapOnn: Go\n"}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_flow" and error["details"][0]["line"] == 4
    case = create_test_case(org, flow="- launchApp\n")
    patched = org.client.patch(f"/v1/test-cases/{case['id']}", json={"flow": "- swipe: sideways\n"})
    assert patched.status_code == 422 and patched.json()["error"]["details"][0]["line"] == 1


def test_priority_then_age_decides_the_order(
    org: Tenant, exec_server: LiveServer, exec_db: Database, tmp_path: Path
) -> None:
    app = _ios_app(org)
    case = create_test_case(org, flow="- launchApp\n")
    low = _queue(org, case["id"], app, priority="low")
    medium = _queue(org, case["id"], app, 2)
    high = _queue(org, case["id"], app, priority="high")
    first = org.client.get(f"/v1/jobs/status/{high[0]}").json()
    assert first["queue"]["position"] == 1, first
    assert org.client.get(f"/v1/jobs/status/{low[0]}").json()["queue"]["position"] == 4
    with running_agent(exec_server.url, agent_token(exec_db), simulated_devices(["iPhone 14 Pro"]), tmp_path):
        for run_id in [*high, *medium, *low]:
            _wait_status(org, run_id, {"passed"})
    started = {r: org.client.get(f"/v1/jobs/status/{r}").json()["started_at"] for r in [*high, *medium, *low]}
    order = sorted(started, key=lambda r: started[r])
    assert order == [*high, *medium, *low], (started, high, medium, low)


def test_the_parallel_cap_holds(org: Tenant, exec_server: LiveServer, exec_db: Database, tmp_path: Path) -> None:
    from qualgent.organisations.service import set_parallel_runs

    exec_db.run(lambda s: set_parallel_runs(s, org.organization_id, 2))
    app = _ios_app(org)
    case = create_test_case(org, flow="- launchApp\n- tapOn: Sign in\n- back\n")
    runs = _queue(org, case["id"], app, 8)
    seen: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        with httpx.Client(base_url=exec_server.url, headers={"X-Api-Key": org.key}) as client:
            while not stop.is_set():
                body = client.get("/v1/jobs/list", params={"status": "running"}).json()
                seen.append(len(body["test_runs"]))

    devices = simulated_devices(["iPhone 14 Pro"], copies=6)
    with running_agent(exec_server.url, agent_token(exec_db), devices, tmp_path, step_seconds=0.05):
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            for run_id in runs:
                _wait_status(org, run_id, {"passed"})
        finally:
            stop.set()
            sampler.join()
    assert max(seen) <= 2 and 2 in seen, seen
    assert _running_count(exec_db, org.organization_id) == 0


def _running_count(db: Database, organization_id: str) -> int:
    from sqlalchemy import select

    from qualgent.db.models import Organization

    async def read(session: Any) -> int:
        return int(await session.scalar(select(Organization.running_runs).where(Organization.id == organization_id)))

    return db.run(read)


def _who(db: Database, run_id: str) -> Any:
    from sqlalchemy import select

    from qualgent.db.models import Agent, Device, RunAttempt

    async def read(session: Any) -> Any:
        rows = await session.execute(
            select(
                RunAttempt.number,
                RunAttempt.started_at,
                Agent.name,
                Agent.created_at,
                Agent.last_seen_at,
                Device.config_id,
            )
            .join(Device, Device.id == RunAttempt.device_id)
            .join(Agent, Agent.id == Device.agent_id)
            .where(RunAttempt.run_id == run_id)
        )
        return [tuple(r) for r in rows]

    return db.run(read)


def _claim_raw(server: LiveServer, token: str, device_ids: list[str], wait: float = 5) -> dict[str, Any] | None:
    response = httpx.post(
        f"{server.url}/v1/agent/claim",
        json={"device_ids": device_ids, "wait_seconds": wait},
        headers={"Authorization": f"Bearer {token}"},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    run: dict[str, Any] | None = response.json()["run"]
    return run


def _claim_many(server: LiveServer, token: str, device_ids: list[str], max_runs: int) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{server.url}/v1/agent/claim",
        json={"device_ids": device_ids, "wait_seconds": 0, "max_runs": max_runs},
        headers={"Authorization": f"Bearer {token}"},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    runs: list[dict[str, Any]] = body["runs"]
    assert body["run"] == (runs[0] if runs else None)
    return runs


def _register_raw(server: LiveServer, token: str, names: list[str], copies: int = 1) -> list[str]:
    devices = [
        {"id": d.id, "name": d.name, "platform": d.platform, "os_version": d.os_version}
        for d in simulated_devices(names, copies)
    ]
    response = httpx.post(
        f"{server.url}/v1/agent/register", json={"devices": devices}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    return [d["id"] for d in response.json()["devices"]]


def test_a_lost_agent_s_run_returns_to_the_queue_then_passes_elsewhere(
    org: Tenant, exec_server: LiveServer, exec_db: Database, tmp_path: Path
) -> None:
    app = _ios_app(org)
    case = create_test_case(org, flow="- launchApp\n")
    [run_id] = _queue(org, case["id"], app)
    # An agent that claims the run and then goes silent, as a killed process would.
    silent = agent_token(exec_db, "silent")
    device_ids = _register_raw(exec_server, silent, ["iPhone 14 Pro"])
    claimed = _claim_raw(exec_server, silent, device_ids)
    assert claimed is not None and claimed["id"] == run_id, claimed
    assert claimed["attempt"] == 1, [[str(x) for x in row] for row in _who(exec_db, run_id)]
    assert org.client.get(f"/v1/jobs/status/{run_id}").json()["status"] == "running"
    requeued = _wait_status(org, run_id, {"queued"}, timeout=10)
    assert requeued["attempt"] == 1

    with running_agent(exec_server.url, agent_token(exec_db), simulated_devices(["iPhone 14 Pro"]), tmp_path):
        done = _wait_status(org, run_id, {"passed", "failed"})
    assert done["status"] == "passed" and done["attempt"] == 2
    attempts = org.client.get(f"/v1/jobs/{run_id}/report").json()["attempts"]
    assert [a["outcome"] for a in attempts] == ["lost", "passed"]

    # The silent agent's late report is refused with 409: the run moved on.
    late = httpx.post(
        f"{exec_server.url}/v1/agent/runs/{run_id}/finish",
        json={"attempt": 1, "status": "passed"},
        headers={"Authorization": f"Bearer {silent}"},
    )
    assert late.status_code == 409 and late.json()["error"]["code"] == "run_moved_on"


def test_attempts_run_out_as_an_infrastructure_failure(org: Tenant, exec_server: LiveServer, exec_db: Database) -> None:
    app = _ios_app(org)
    case = create_test_case(org, flow="- launchApp\n")
    [run_id] = _queue(org, case["id"], app)
    silent = agent_token(exec_db, "silent twice")
    device_ids = _register_raw(exec_server, silent, ["iPhone 14 Pro"])
    for attempt in (1, 2):
        claimed = _claim_raw(exec_server, silent, device_ids)
        assert claimed is not None, (org.client.get(f"/v1/jobs/status/{run_id}").json(), _who(exec_db, run_id))
        assert claimed["id"] == run_id and claimed["attempt"] == attempt
        if attempt == 1:
            _wait_status(org, run_id, {"queued"}, timeout=10)
    done = _wait_status(org, run_id, {"failed"}, timeout=10)
    assert done["failure"]["kind"] == "infrastructure"
    assert _running_count(exec_db, org.organization_id) == 0


def test_reports_are_idempotent_and_stale_ones_conflict(
    org: Tenant, exec_server: LiveServer, exec_db: Database
) -> None:
    app = _ios_app(org)
    case = create_test_case(org, flow="- launchApp\n")
    [run_id] = _queue(org, case["id"], app)
    token = agent_token(exec_db, "reporter")
    device_ids = _register_raw(exec_server, token, ["iPhone 14 Pro"])
    claimed = _claim_raw(exec_server, token, device_ids)
    assert claimed is not None
    auth = {"Authorization": f"Bearer {token}"}
    step = {"attempt": 1, "steps": [{"index": 0, "description": "launchApp", "status": "passed", "logs": ["ok"]}]}
    for _ in range(2):
        assert httpx.post(f"{exec_server.url}/v1/agent/runs/{run_id}/steps", json=step, headers=auth).status_code == 200
    finish = {"attempt": 1, "status": "passed"}
    first = httpx.post(f"{exec_server.url}/v1/agent/runs/{run_id}/finish", json=finish, headers=auth)
    again = httpx.post(f"{exec_server.url}/v1/agent/runs/{run_id}/finish", json=finish, headers=auth)
    assert (first.status_code, again.status_code) == (200, 200)
    other = httpx.post(
        f"{exec_server.url}/v1/agent/runs/{run_id}/finish", json={**finish, "status": "failed"}, headers=auth
    )
    assert other.status_code == 409
    assert org.client.get(f"/v1/jobs/status/{run_id}").json()["status"] == "passed"
    beat = httpx.post(f"{exec_server.url}/v1/agent/runs/{run_id}/heartbeat", json={"attempt": 1}, headers=auth)
    assert beat.status_code == 409


def test_cancel_stops_a_running_run_at_its_next_heartbeat(
    org: Tenant, exec_server: LiveServer, exec_db: Database, tmp_path: Path
) -> None:
    app = _ios_app(org)
    steps = "".join("- tapOn: Sign in\n" for _ in range(40))
    case = create_test_case(org, flow=steps)
    [run_id] = _queue(org, case["id"], app)
    devices = simulated_devices(["iPhone 14 Pro"])
    with running_agent(exec_server.url, agent_token(exec_db), devices, tmp_path, step_seconds=0.1):
        # Cancel once some steps are in (progress moved), so that the report shows where it stopped.
        deadline = time.monotonic() + 20
        while org.client.get(f"/v1/jobs/status/{run_id}").json()["progress"] == 0:
            assert time.monotonic() < deadline, "no step was reported"
            time.sleep(0.05)
        cancelled = org.client.post(f"/v1/jobs/{run_id}/cancel")
        assert cancelled.json()["status"] == "running"
        done = _wait_status(org, run_id, {"cancelled", "passed", "failed"}, timeout=10)
    assert done["status"] == "cancelled"
    report = org.client.get(f"/v1/jobs/{run_id}/report").json()
    assert 0 < len(report["steps"]) < 40
    assert _running_count(exec_db, org.organization_id) == 0


def test_devices_show_online_and_free(org: Tenant, exec_server: LiveServer, exec_db: Database, tmp_path: Path) -> None:
    devices = simulated_devices(["Pixel Tablet"])
    with running_agent(exec_server.url, agent_token(exec_db), devices, tmp_path) as handle:
        deadline = time.monotonic() + 10
        while not handle.agent.registered.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        tablets = org.client.get("/v1/devices/list").json()["tablet"]
        pixel = next(d for d in tablets if d["name"] == "Pixel Tablet")
        assert pixel["online"] is True and pixel["available"] is True
        ipad = next(d for d in tablets if d["name"] == "iPad Pro")
        assert ipad["free_count"] == 0 or ipad["online"] is True


def test_agent_routes_take_agent_tokens_only(org: Tenant, exec_server: LiveServer, exec_db: Database) -> None:
    with_key = httpx.post(
        f"{exec_server.url}/v1/agent/register",
        json={"devices": [{"id": "x", "name": "Pixel 7", "platform": "Android", "os_version": "14.0"}]},
        headers={"Authorization": f"Bearer {org.key}", "X-Api-Key": org.key},
    )
    assert with_key.status_code == 401
    token = agent_token(exec_db, "scoped")
    with_token = httpx.get(f"{exec_server.url}/v1/jobs/list", headers={"X-Api-Key": token})
    assert with_token.status_code == 401


def test_concurrent_claims_never_exceed_the_cap(org: Tenant, exec_server: LiveServer, exec_db: Database) -> None:
    """Many agents claim at the same moment; the organisation's cap of 3 must hold."""
    from qualgent.organisations.service import set_parallel_runs

    exec_db.run(lambda s: set_parallel_runs(s, org.organization_id, 3))
    app = _ios_app(org)
    case = create_test_case(org, flow="- launchApp\n")
    _queue(org, case["id"], app, 12)
    agents = []
    for n in range(12):
        token = agent_token(exec_db, f"racer {n}")
        agents.append((token, _register_raw(exec_server, token, ["iPhone 14 Pro"])))
    barrier = threading.Barrier(len(agents))

    def race(token: str, device_ids: list[str]) -> dict[str, Any] | None:
        barrier.wait()
        return _claim_raw(exec_server, token, device_ids, wait=0)

    with concurrent.futures.ThreadPoolExecutor(len(agents)) as pool:
        claims = list(pool.map(lambda a: race(*a), agents))
    won = [c for c in claims if c is not None]
    assert len(won) == 3, [c and c["id"] for c in claims]
    assert len({c["id"] for c in won}) == 3
    assert _running_count(exec_db, org.organization_id) == 3
    body = org.client.get("/v1/jobs/list", params={"status": "running"}).json()
    assert len(body["test_runs"]) == 3
    for run in org.client.get("/v1/jobs/list").json()["test_runs"]:  # leave nothing for later tests
        org.client.post(f"/v1/jobs/{run['id']}/cancel")


def test_one_claim_takes_a_run_for_each_free_device(org: Tenant, exec_server: LiveServer, exec_db: Database) -> None:
    """An agent with several free devices claims for all of them in one request: one run per device,
    each device of the run's model, never more than asked for, attempts recorded for each."""
    app = _ios_app(org)
    case = create_test_case(org, flow="- launchApp\n")
    queued = _queue(org, case["id"], app, 5)
    token = agent_token(exec_db, "batch claimer")
    iphones = _register_raw(exec_server, token, ["iPhone 14 Pro"], copies=3)
    # A device of another model, also free, that none of the queued runs can use.
    token_ids = iphones + _register_raw(exec_server, token, ["iPhone 14 Pro", "Pixel 7"])[1:]

    first = _claim_many(exec_server, token, token_ids, max_runs=2)
    assert len(first) == 2
    second = _claim_many(exec_server, token, token_ids, max_runs=10)
    claimed = first + second
    # Three iPhones, so three runs, the oldest three in queue order; the Pixel got none.
    assert [r["id"] for r in claimed] == queued[:3]
    assert sorted(r["device_id"] for r in claimed) == sorted(iphones)
    assert _claim_many(exec_server, token, token_ids, max_runs=10) == []
    for run in claimed:
        assert [a[0] for a in _who(exec_db, run["id"])] == [1]
        assert org.client.get(f"/v1/jobs/status/{run['id']}").json()["status"] == "running"
    assert _running_count(exec_db, org.organization_id) == 3
    for run_id in queued:
        org.client.post(f"/v1/jobs/{run_id}/cancel")
    auth = {"Authorization": f"Bearer {token}"}
    for run in claimed:
        finish = {"attempt": 1, "status": "cancelled"}
        assert (
            httpx.post(f"{exec_server.url}/v1/agent/runs/{run['id']}/finish", json=finish, headers=auth).status_code
            == 200
        )
    assert _running_count(exec_db, org.organization_id) == 0


def test_one_claim_takes_runs_of_one_organisation(org: Tenant, exec_server: LiveServer, exec_db: Database) -> None:
    """A claim for several devices hands out runs of the best run's organisation only (a transaction
    holding two organisations' rows could deadlock with reports, which take them in ID order); the
    other organisation's runs go to the next claim."""
    other = make_tenant(exec_db, exec_server.url)
    try:
        [first] = _queue(org, create_test_case(org, flow="- launchApp\n")["id"], _ios_app(org))
        theirs = _queue(other, create_test_case(other, flow="- launchApp\n")["id"], _ios_app(other), 2)
        token = agent_token(exec_db, "one organisation per claim")
        devices = _register_raw(exec_server, token, ["iPhone 14 Pro"], copies=3)
        assert [r["id"] for r in _claim_many(exec_server, token, devices, max_runs=3)] == [first]
        assert sorted(r["id"] for r in _claim_many(exec_server, token, devices, max_runs=3)) == sorted(theirs)
        auth = {"Authorization": f"Bearer {token}"}
        reports = [{"run_id": r, "attempt": 1, "status": "cancelled"} for r in [first, *theirs]]
        answer = httpx.post(f"{exec_server.url}/v1/agent/finish", json={"reports": reports}, headers=auth)
        assert [r["outcome"] for r in answer.json()["results"]] == ["done"] * 3
        assert _running_count(exec_db, org.organization_id) == _running_count(exec_db, other.organization_id) == 0
    finally:
        other.client.close()


def test_a_finish_report_brings_the_device_s_next_run(org: Tenant, exec_server: LiveServer, exec_db: Database) -> None:
    """`claim_next_for` on a finish claims the device's next run in the same request, only for a device of
    the reporting agent."""
    app = _ios_app(org)
    case = create_test_case(org, flow="- launchApp\n")
    first, second, third = _queue(org, case["id"], app, 3)
    token = agent_token(exec_db, "finisher")
    [device] = _register_raw(exec_server, token, ["iPhone 14 Pro"])
    stranger = agent_token(exec_db, "stranger")
    [foreign_device] = _register_raw(exec_server, stranger, ["iPhone 14 Pro"])
    auth = {"Authorization": f"Bearer {token}"}
    [claimed] = _claim_many(exec_server, token, [device], max_runs=1)
    assert claimed["id"] == first

    body = {"attempt": 1, "status": "passed", "claim_next_for": device}
    answer = httpx.post(f"{exec_server.url}/v1/agent/runs/{first}/finish", json=body, headers=auth)
    assert answer.status_code == 200, answer.text
    next_run = answer.json()["next_run"]
    assert (next_run["id"], next_run["device_id"], next_run["attempt"]) == (second, device, 1)
    assert org.client.get(f"/v1/jobs/status/{first}").json()["status"] == "passed"
    assert org.client.get(f"/v1/jobs/status/{second}").json()["status"] == "running"

    # Another agent's device is not this agent's to claim for.
    body = {"attempt": 1, "status": "passed", "claim_next_for": foreign_device}
    answer = httpx.post(f"{exec_server.url}/v1/agent/runs/{second}/finish", json=body, headers=auth)
    assert answer.status_code == 200 and answer.json()["next_run"] is None
    assert org.client.get(f"/v1/jobs/status/{third}").json()["status"] == "queued"
    org.client.post(f"/v1/jobs/{third}/cancel")


def test_one_request_reports_several_ends_each_on_its_own(
    org: Tenant, exec_server: LiveServer, exec_db: Database
) -> None:
    """POST /v1/agent/finish: several reports in one request and transaction. Each result stands on its
    own (done, repeat, moved_on), steps are kept only for reports that are taken, and each device asked
    for gets its next run."""
    app = _ios_app(org)
    case = create_test_case(org, flow="- launchApp\n- back\n")
    queued = _queue(org, case["id"], app, 5)
    token = agent_token(exec_db, "batch finisher")
    devices = _register_raw(exec_server, token, ["iPhone 14 Pro"], copies=3)
    claimed = _claim_many(exec_server, token, devices, max_runs=3)
    assert [r["id"] for r in claimed] == queued[:3]
    auth = {"Authorization": f"Bearer {token}"}
    # The third run's user cancels it meanwhile (its agent learns at its heartbeat).
    org.client.post(f"/v1/jobs/{claimed[2]['id']}/cancel")
    heartbeat = f"{exec_server.url}/v1/agent/runs/{claimed[2]['id']}/heartbeat"
    assert httpx.post(heartbeat, json={"attempt": 1}, headers=auth).json()["cancel"] is True

    step = {"index": 0, "description": "launchApp", "status": "passed", "logs": ["launched"]}
    failure = {"kind": "test", "message": "Step 2 failed", "step": 1}
    reports = [
        {
            "run_id": claimed[0]["id"],
            "attempt": 1,
            "status": "passed",
            "steps": [step],
            "claim_next_for": claimed[0]["device_id"],
        },
        {
            "run_id": claimed[1]["id"],
            "attempt": 1,
            "status": "failed",
            "failure": failure,
            "steps": [step],
            "claim_next_for": claimed[1]["device_id"],
        },
        # Reported with the wrong attempt: moved on, and no next run for its device.
        {
            "run_id": claimed[2]["id"],
            "attempt": 2,
            "status": "passed",
            "steps": [step],
            "claim_next_for": claimed[2]["device_id"],
        },
        {"run_id": "run_0000000000000000000000000", "attempt": 1, "status": "passed"},
    ]
    answer = httpx.post(f"{exec_server.url}/v1/agent/finish", json={"reports": reports}, headers=auth)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["run_id"] for r in results] == [r["run_id"] for r in reports]
    assert [r["outcome"] for r in results] == ["done", "done", "moved_on", "moved_on"]
    assert {results[0]["next_run"]["id"], results[1]["next_run"]["id"]} == set(queued[3:5])
    assert results[0]["next_run"]["device_id"] == claimed[0]["device_id"]
    assert results[1]["next_run"]["device_id"] == claimed[1]["device_id"]
    assert results[2]["next_run"] is None and results[3]["next_run"] is None

    first = org.client.get(f"/v1/jobs/{claimed[0]['id']}/report").json()
    assert first["run"]["status"] == "passed" and first["steps"][0]["logs"] == ["launched"]
    second = org.client.get(f"/v1/jobs/status/{claimed[1]['id']}").json()
    assert (second["status"], second["failure"]) == ("failed", failure)
    third = org.client.get(f"/v1/jobs/{claimed[2]['id']}/report").json()
    assert third["run"]["status"] == "running" and third["steps"] == []

    # The same batch again: the two taken reports are repeats; nothing changes, no new run is claimed.
    again = httpx.post(f"{exec_server.url}/v1/agent/finish", json={"reports": reports[:2]}, headers=auth).json()
    assert [r["outcome"] for r in again["results"]] == ["repeat", "repeat"]
    assert all(r["next_run"] is None for r in again["results"])  # the devices run their next runs now
    assert org.client.get(f"/v1/jobs/status/{claimed[0]['id']}").json()["status"] == "passed"

    # Malformed batches are refused whole.
    malformed: list[dict[str, Any]] = [
        {"reports": []},
        {"reports": [{**reports[0], "run_id": "../x"}]},
        {"reports": [reports[0]] * 201},
    ]
    for bad in malformed:
        response = httpx.post(f"{exec_server.url}/v1/agent/finish", json=bad, headers=auth)
        assert response.status_code in (400, 422), response.text
    for run_id in [claimed[2]["id"], *queued[3:]]:
        httpx.post(
            f"{exec_server.url}/v1/agent/runs/{run_id}/finish", json={"attempt": 1, "status": "cancelled"}, headers=auth
        )
    assert _running_count(exec_db, org.organization_id) == 0


def test_concurrent_batch_claims_never_exceed_the_cap(org: Tenant, exec_server: LiveServer, exec_db: Database) -> None:
    """Agents with three free devices each claim up to three runs at the same moment; the cap of 4 holds."""
    from qualgent.organisations.service import set_parallel_runs

    exec_db.run(lambda s: set_parallel_runs(s, org.organization_id, 4))
    app = _ios_app(org)
    case = create_test_case(org, flow="- launchApp\n")
    _queue(org, case["id"], app, 15)
    agents = []
    for n in range(5):
        token = agent_token(exec_db, f"batch racer {n}")
        agents.append((token, _register_raw(exec_server, token, ["iPhone 14 Pro"], copies=3)))
    barrier = threading.Barrier(len(agents))

    def race(token: str, device_ids: list[str]) -> list[dict[str, Any]]:
        barrier.wait()
        return _claim_many(exec_server, token, device_ids, max_runs=3)

    with concurrent.futures.ThreadPoolExecutor(len(agents)) as pool:
        claims = [run for runs in pool.map(lambda a: race(*a), agents) for run in runs]
    assert len(claims) == 4, [c["id"] for c in claims]
    assert len({c["id"] for c in claims}) == 4
    assert len({c["device_id"] for c in claims}) == 4
    assert _running_count(exec_db, org.organization_id) == 4
    for run in org.client.get("/v1/jobs/list").json()["test_runs"]:  # leave nothing for later tests
        org.client.post(f"/v1/jobs/{run['id']}/cancel")


@pytest.fixture(scope="module")
def quick_timeouts(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        backend,
        tmp_path_factory.mktemp(f"timeouts-{backend}"),
        execution_timeout=1.0,
        queue_timeout=1.0,
        lease_seconds=5,
        heartbeat_seconds=0.3,
        reaper_interval=0.2,
    ) as srv:
        yield srv


def test_queue_and_execution_timeouts_fail_runs(quick_timeouts: LiveServer, tmp_path: Path) -> None:
    database = Database(quick_timeouts.settings.resolved_database_url)
    try:
        tenant = make_tenant(database, quick_timeouts.url)
        app = _ios_app(tenant)
        # Nobody serves an iPhone: the run waits, then fails for having waited too long.
        case = create_test_case(tenant, flow="".join("- tapOn: Sign in\n" for _ in range(20)))
        [waiting] = _queue(tenant, case["id"], app)
        done = _wait_status(tenant, waiting, {"failed"}, timeout=10)
        assert done["failure"]["kind"] == "timeout" and "queue" in done["failure"]["message"]

        # A run that takes longer than the execution timeout (20 steps of 0.2 s > 1 s) fails as timeout.
        [slow] = _queue(tenant, case["id"], app)
        devices = simulated_devices(["iPhone 14 Pro"])
        with running_agent(quick_timeouts.url, agent_token(database), devices, tmp_path, step_seconds=0.2):
            done = _wait_status(tenant, slow, {"failed", "passed"}, timeout=15)
        assert done["status"] == "failed" and done["failure"]["kind"] == "timeout", done
        assert _running_count(database, tenant.organization_id) == 0
        tenant.client.close()
    finally:
        database.close()
