"""Batches: every run / run-all request makes one, with counts by status, wall time and a gate verdict
(passed, failed, flaky-passed, infrastructure; quarantined test cases never fail it); a group's new batch
cancels the unfinished runs of its earlier ones; queued runs say about when they start. Real servers on
SQLite and PostgreSQL, the agent protocol spoken by hand, the CLI as a CI job runs it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from qualgent.client import AsyncClient, Client
from qualgent.db.models import TestRun
from qualgent.ids import new_id
from tests.fixtures.cli import Cli
from tests.fixtures.factories import Database, Tenant, create_test_case, make_tenant, upload_app
from tests.fixtures.hand_agent import HandAgent, phone, tag
from tests.fixtures.servers import LiveServer, live_server
from tests.fixtures.web import signed_in_tenant

FLOW = "appId: com.example.app\n---\n- launchApp\n- tapOn: Checkout\n"


@pytest.fixture(scope="module")
def b_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        backend, tmp_path_factory.mktemp(f"batches-{backend}"), heartbeat_seconds=0.3, reaper_interval=0.2
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def b_db(b_server: LiveServer) -> Iterator[Database]:
    database = Database(b_server.settings.resolved_database_url)
    yield database
    database.close()


@pytest.fixture
def org(b_db: Database, b_server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(b_db, b_server.url)
    yield t
    for status in ("queued", "running"):
        for run in t.client.get("/v1/jobs/list", params={"status": status}).json()["test_runs"]:
            t.client.post(f"/v1/jobs/{run['id']}/cancel")
    t.client.close()


def _app(tenant: Tenant) -> str:
    response = upload_app(tenant)
    assert response.status_code == 200, response.text
    return str(response.json()["file"]["id"])


def _cases(tenant: Tenant, n: int) -> list[str]:
    return [create_test_case(tenant, name=f"Case {i} {uuid.uuid4().hex[:6]}", flow=FLOW)["id"] for i in range(n)]


def _run(tenant: Tenant, case_ids: list[str], app: str, device_tag: str, **extra: Any) -> dict[str, Any]:
    jobs = [{"test_case_id": c, "app_file_id": app, "device_selector": {"tags": [device_tag]}} for c in case_ids]
    response = tenant.client.post("/v1/test-cases/run", json={"jobs": jobs, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _batch(tenant: Tenant, batch_id: str, **params: Any) -> dict[str, Any]:
    response = tenant.client.get(f"/v1/batches/{batch_id}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _status(tenant: Tenant, run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = tenant.client.get(f"/v1/jobs/status/{run_id}").json()
    return body


def test_run_and_run_all_make_batches(org: Tenant) -> None:
    app = _app(org)
    cases = _cases(org, 3)
    t = tag()
    queued = _run(org, cases[:2], app, t)
    # The reference's answer, with the batch beside it; each job keeps its three fields.
    assert set(queued) == {"success", "jobs", "batch_id"} and all(
        set(j) == {"id", "link", "status"} for j in queued["jobs"]
    )
    batch = _batch(org, queued["batch_id"])
    assert (batch["kind"], batch["total"], batch["finished"], batch["verdict"]) == ("run", 2, False, None)
    assert batch["counts"] == {"queued": 2, "running": 0, "passed": 0, "failed": 0, "cancelled": 0}
    assert batch["runs"] is None
    with_runs = _batch(org, queued["batch_id"], runs="true", queue="true")
    assert [r["id"] for r in with_runs["runs"]] == [j["id"] for j in queued["jobs"]]
    assert {r["batch_id"] for r in with_runs["runs"]} == {queued["batch_id"]}
    assert all(r["queue"]["reason"] == "no_device" for r in with_runs["runs"])
    listed = org.client.get("/v1/jobs/list", params={"batch_id": queued["batch_id"]}).json()["test_runs"]
    assert {r["id"] for r in listed} == {j["id"] for j in queued["jobs"]}

    run_all = org.client.post("/v1/test-cases/run-all", json={"app_file_id": app, "device_selector": {"tags": [t]}})
    assert run_all.status_code == 200, run_all.text
    other = _batch(org, run_all.json()["batch_id"])
    assert (other["kind"], other["total"]) == ("run-all", 3) and other["id"] != queued["batch_id"]
    for missing in (new_id("batch"), "batch_x", "nope"):
        assert org.client.get(f"/v1/batches/{missing}").status_code == 404


def _finish_all(agent: HandAgent, device: str, outcomes: list[str]) -> None:
    """Claim each queued run of the device in turn and end it: pass, fail (as a test), infra."""
    for outcome in outcomes:
        run = agent.claim(device)
        assert run is not None, outcome
        if outcome == "pass":
            agent.pass_(run)
        elif outcome == "fail":
            agent.fail(run)
        else:
            agent.fail(run, kind="infrastructure", message="the device went away")


@pytest.mark.parametrize(
    ("outcomes", "verdict"),
    [
        (["pass", "pass"], "passed"),
        (["pass", "fail"], "failed"),
        (["pass", "infra"], "infrastructure"),
        (["fail", "infra"], "failed"),  # a test failure outweighs the infrastructure
        (["fail", "pass", "pass"], "flaky-passed"),  # the first run fails, is retried and passes
    ],
)
def test_the_gate_verdict(org: Tenant, b_server: LiveServer, b_db: Database, outcomes: list[str], verdict: str) -> None:
    app = _app(org)
    t = tag()
    retries = 1 if verdict == "flaky-passed" else 0
    queued = _run(org, _cases(org, 2), app, t, retries=retries)
    agent = HandAgent(b_server, b_db, [phone("a", t)])
    try:
        _finish_all(agent, "a", outcomes)
    finally:
        agent.close()
    batch = _batch(org, queued["batch_id"])
    assert batch["finished"] is True and batch["verdict"] == verdict
    assert batch["total"] == 2 and batch["finished_at"] is not None and batch["wall_seconds"] > 0
    assert batch["flaky"] == (1 if verdict == "flaky-passed" else 0)
    assert batch["test_retries"] == retries


def test_a_quarantined_test_case_never_fails_the_gate(org: Tenant, b_server: LiveServer, b_db: Database) -> None:
    app = _app(org)
    t = tag()
    steady, shaky = _cases(org, 2)
    assert org.client.put(f"/v1/test-cases/{shaky}/quarantine").status_code == 200
    queued = _run(org, [steady, shaky], app, t)
    agent = HandAgent(b_server, b_db, [phone("a", t)])
    try:
        _finish_all(agent, "a", ["pass", "fail"])
    finally:
        agent.close()
    batch = _batch(org, queued["batch_id"], runs="true")
    assert batch["verdict"] == "passed"
    assert batch["counts"]["failed"] == 1 and (batch["quarantined"], batch["quarantined_failed"]) == (1, 1)
    failed = next(r for r in batch["runs"] if r["status"] == "failed")
    assert failed["quarantined"] is True and failed["test_case"]["id"] == shaky
    # A batch with only its quarantined runs cancelled is no infrastructure problem either.
    again = _run(org, [shaky], app, t)
    org.client.post(f"/v1/jobs/{again['jobs'][0]['id']}/cancel")
    assert _batch(org, again["batch_id"])["verdict"] == "passed"


def test_a_cancelled_run_makes_the_verdict_infrastructure(org: Tenant) -> None:
    app = _app(org)
    queued = _run(org, _cases(org, 1), app, tag())
    org.client.post(f"/v1/jobs/{queued['jobs'][0]['id']}/cancel")
    assert _batch(org, queued["batch_id"])["verdict"] == "infrastructure"


def test_a_new_batch_of_a_group_cancels_the_earlier_ones(org: Tenant, b_server: LiveServer, b_db: Database) -> None:
    app = _app(org)
    cases = _cases(org, 3)
    t = tag()
    agent = HandAgent(b_server, b_db, [phone("a", t)])
    try:
        first = _run(org, cases, app, t, group="pr-42")
        running = agent.claim("a")
        assert running is not None and running["id"] == first["jobs"][0]["id"]
        untouched = _run(org, cases[:1], app, t, group="pr-43", cancel_previous=True)  # another group
        kept = _run(org, cases[:1], app, t, group="pr-42")  # the same group, without cancel_previous

        second = _run(org, cases, app, t, group="pr-42", cancel_previous=True)
        old = _batch(org, first["batch_id"], runs="true")
        assert old["superseded_by"] == second["batch_id"] and old["group"] == "pr-42"
        statuses = [r["status"] for r in old["runs"]]
        assert statuses == ["running", "cancelled", "cancelled"]
        # The running one is stopped by its agent: its next heartbeat says so.
        beat = agent.http.post(f"/v1/agent/runs/{running['id']}/heartbeat", json={"attempt": running["attempt"]})
        assert beat.status_code == 200 and beat.json()["cancel"] is True
        assert _batch(org, kept["batch_id"])["counts"]["cancelled"] == 1  # an earlier batch of the group too
        assert _batch(org, untouched["batch_id"])["counts"]["cancelled"] == 0
        assert _batch(org, second["batch_id"])["counts"]["queued"] == 3
    finally:
        agent.close()
    refused = org.client.post(
        "/v1/test-cases/run",
        json={"jobs": [{"test_case_id": cases[0], "app_file_id": app, "platform": "android"}], "cancel_previous": True},
    )
    assert refused.status_code == 422 and refused.json()["error"]["details"][0]["field"] == "cancel_previous"
    other_org_group = org.client.post(
        "/v1/test-cases/run-all", json={"app_file_id": app, "platform": "android", "cancel_previous": True}
    )
    assert other_org_group.status_code == 422


def test_a_group_is_per_organisation(org: Tenant, b_db: Database, b_server: LiveServer) -> None:
    other = make_tenant(b_db, b_server.url)
    try:
        mine = _run(org, _cases(org, 1), _app(org), tag(), group="main")
        _run(other, _cases(other, 1), _app(other), tag(), group="main", cancel_previous=True)
        assert _batch(org, mine["batch_id"])["counts"]["queued"] == 1
        assert _batch(org, mine["batch_id"])["superseded_by"] is None
    finally:
        for run in other.client.get("/v1/jobs/list", params={"status": "queued"}).json()["test_runs"]:
            other.client.post(f"/v1/jobs/{run['id']}/cancel")
        other.client.close()


def test_queued_runs_say_about_when_they_start(org: Tenant, b_server: LiveServer, b_db: Database) -> None:
    app = _app(org)
    t = tag()
    cases = _cases(org, 3)
    queued = _run(org, cases, app, t)
    # History: the organisation's runs take 30 s (the median of its latest passed runs).

    async def seed(session: Any) -> None:
        row = (
            await session.execute(
                text("SELECT user_id, target_id FROM test_runs WHERE organization_id = :o LIMIT 1"),
                {"o": org.organization_id},
            )
        ).one()
        end = datetime.now(UTC) - timedelta(hours=1)
        for seconds in (20, 30, 40):
            session.add(
                TestRun(
                    id=new_id("run"),
                    organization_id=org.organization_id,
                    test_case_id=cases[0],
                    app_id=app,
                    user_id=row.user_id,
                    device_name="Pixel 7",
                    device_platform="Android",
                    device_os_version="14.0",
                    target_id=row.target_id,
                    status="passed",
                    priority="medium",
                    priority_rank=1,
                    progress=100,
                    attempt=1,
                    queued_at=end - timedelta(seconds=seconds + 1),
                    started_at=end - timedelta(seconds=seconds),
                    finished_at=end,
                )
            )
        await session.flush()

    b_db.run(seed)
    agent = HandAgent(b_server, b_db, [phone("a", t)])  # one device fits them, and it is free
    try:
        etas = [_status(org, r["id"])["queue"]["eta_seconds"] for r in queued["jobs"]]
        assert etas == [0, 30, 60]
        listed = org.client.get("/v1/jobs/list", params={"batch_id": queued["batch_id"], "queue": "true"}).json()
        assert sorted(r["queue"]["eta_seconds"] for r in listed["test_runs"]) == [0, 30, 60]
        # Its device busy: the first waits for about half a run.
        assert agent.claim("a") is not None
        assert [_status(org, r["id"])["queue"]["eta_seconds"] for r in queued["jobs"][1:]] == [15, 45]
    finally:
        agent.close()
    # No device fits: nobody can say.
    lonely = _run(org, cases[:1], app, tag())
    assert _status(org, lonely["jobs"][0]["id"])["queue"]["eta_seconds"] is None


def test_the_cli_waits_on_its_batch_and_a_newer_batch_of_its_group_supersedes_it(
    org: Tenant, b_server: LiveServer, tmp_path: Path
) -> None:
    app = _app(org)
    [case] = _cases(org, 1)
    t = tag()  # no device fits: the first CLI waits until the second supersedes it
    cli = Cli(b_server.url, org.key, tmp_path)
    common = ("--app", app, "--platform", "android", "--device-tag", t, "--group", "feature-x")
    live = cli.popen(
        "run", case, *common, "--wait", "--json", "--poll-interval", "0.2", "--no-device-grace", "600",
        "--timeout", "60",
    )  # fmt: skip
    live.wait_for_output("Queued 1 run(s) (batch batch_")
    time.sleep(0.5)
    second = cli("run", case, *common, "--cancel-previous", "--json")
    assert second.code == 0, second.stderr
    done = live.wait(60)
    assert done.code == 2, done  # cancelled by someone else: a re-run may pass
    summary = done.json()
    [batch] = summary["batches"]
    assert batch["verdict"] == "infrastructure" and batch["superseded_by"]
    assert "superseded by batch" in "".join(live.stderr)
    assert cli("run", case, "--platform", "android", "--cancel-previous").code == 3  # needs --group


def test_the_batch_page_lists_its_runs_with_retries(org: Tenant, b_server: LiveServer, b_db: Database) -> None:
    app = _app(org)
    t = tag()
    queued = _run(org, _cases(org, 2), app, t, retries=1)
    agent = HandAgent(b_server, b_db, [phone("a", t)])
    try:
        _finish_all(agent, "a", ["fail", "pass", "pass"])
    finally:
        agent.close()
    signed_in_tenant(b_db, org)
    page = org.client.get(f"/batches/{queued['batch_id']}")
    assert page.status_code == 200, page.text
    html = page.text
    assert 'id="batch-verdict"' in html and "flaky-passed" in html
    for job in queued["jobs"]:
        assert f'data-run="{job["id"]}"' in html
    assert "1 / 1" in html and 'class="badge flaky"' in html  # the retried run: 1 of 1 test retries
    run_page = org.client.get(f"/test-runs/{queued['jobs'][0]['id']}").text
    assert f'href="/batches/{queued["batch_id"]}"' in run_page and "test retry" in run_page
    assert org.client.get(f"/batches/{new_id('batch')}").status_code == 404


def test_the_sdk_queues_and_waits_on_batches(org: Tenant, b_server: LiveServer, b_db: Database) -> None:
    """`Client.run` / `run_all` give each job its batch; `wait_for_batches` (sync and async) returns the
    batches with their runs once they have ended."""
    app = _app(org)
    cases = _cases(org, 2)
    t = tag()
    with Client(org.key, b_server.url) as qg:
        jobs = qg.run(
            [{"test_case_id": c, "app_file_id": app, "device_selector": {"tags": [t]}} for c in cases],
            retries=1,
            group="sdk",
        )
        assert len({j.batch_id for j in jobs}) == 1 and jobs[0].batch_id
        all_jobs = qg.run_all(app_file_id=app, device_selector={"tags": [t]}, group="sdk", cancel_previous=True)
        first = qg.get_batch(str(jobs[0].batch_id))
        assert first.superseded_by == all_jobs[0].batch_id and first.counts.cancelled == 2
        agent = HandAgent(b_server, b_db, [phone("a", t)])
        try:
            _finish_all(agent, "a", ["pass", "pass"])
        finally:
            agent.close()
        [done] = qg.wait_for_batches([str(all_jobs[0].batch_id)], timeout=30, poll_interval=0.1)
        assert done.verdict == "passed" and done.runs is not None and {r.status for r in done.runs} == {"passed"}

    async def wait() -> str | None:
        async with AsyncClient(org.key, b_server.url) as qg:
            [batch] = await qg.wait_for_batches([str(jobs[0].batch_id)], timeout=30, poll_interval=0.1)
            return batch.verdict

    assert asyncio.run(wait()) == "infrastructure"  # its runs were cancelled by the newer batch
