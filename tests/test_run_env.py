"""What a run needs beyond its flow: values passed for it (`env`), the organisation's secrets and the test
case's files reach the agent that claims it; run-all picks test cases by tag; agents report nested steps
and their own progress.

The module has its own server: its agents claim whatever is queued there, so no other module's runs
may be."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.agent.client import AgentClient, RunMovedOn
from qualgent.agents.schemas import RunPayload
from qualgent.db.models import TestCaseFile, TestRun
from tests.fixtures.agents import agent_token, simulated_devices
from tests.fixtures.contract import assert_error
from tests.fixtures.factories import PIXEL_7, Database, Tenant, create_test_case, make_tenant, upload_app
from tests.fixtures.servers import LiveServer, live_server

FLOW = "appId: com.example.app\n---\n- launchApp\n"
SUBFLOW = b"- tapOn: Sign in\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x01" * 40


@pytest.fixture(scope="module")
def env_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(backend, tmp_path_factory.mktemp(f"env-{backend}")) as srv:
        yield srv


@pytest.fixture(scope="module")
def env_db(env_server: LiveServer) -> Iterator[Database]:
    database = Database(env_server.settings.resolved_database_url)
    yield database
    database.close()


def _tenant(db: Database, server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(db, server.url)
    yield t
    # What a test left queued or running must not reach the next test's agents.
    for run in t.client.get("/v1/jobs/list", params={"limit": 1000}).json()["test_runs"]:
        if run["status"] in ("queued", "running"):
            t.client.post(f"/v1/jobs/{run['id']}/cancel")
    t.client.close()


@pytest.fixture
def org(env_db: Database, env_server: LiveServer) -> Iterator[Tenant]:
    yield from _tenant(env_db, env_server)


@pytest.fixture
def org2(env_db: Database, env_server: LiveServer) -> Iterator[Tenant]:
    yield from _tenant(env_db, env_server)


def android_app(tenant: Tenant) -> str:
    response = upload_app(tenant)
    assert response.status_code == 200, response.text
    return str(response.json()["file"]["id"])


def run(tenant: Tenant, case_id: str, app_id: str, **extra: Any) -> httpx.Response:
    job = {"test_case_id": case_id, "app_file_id": app_id, "device": PIXEL_7, **extra}
    return tenant.client.post("/v1/test-cases/run", json={"jobs": [job]})


def queued_ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["jobs"]]


def env_of(db: Database, run_id: str) -> Any:
    async def read(session: AsyncSession) -> Any:
        return await session.scalar(select(TestRun.env).where(TestRun.id == run_id))

    return db.run(read)


class RawAgent:
    """An agent speaking the protocol by hand: register one Pixel 7, claim, report."""

    def __init__(self, server: LiveServer, db: Database, name: str = "raw") -> None:
        self.server = server
        self.token = agent_token(db, f"{name}-{uuid.uuid4().hex[:6]}")
        self.auth = {"Authorization": f"Bearer {self.token}"}
        devices = [
            {"id": f"{d.id}-{uuid.uuid4().hex[:6]}", "name": d.name, "platform": d.platform, "os_version": d.os_version}
            for d in simulated_devices(["Pixel 7"])
        ]
        devices.append({**devices[0], "id": devices[0]["id"] + "-b"})
        response = httpx.post(f"{server.url}/v1/agent/register", json={"devices": devices}, headers=self.auth)
        assert response.status_code == 200, response.text
        self.device_ids = [d["id"] for d in response.json()["devices"]]

    def claim(self, max_runs: int = 1) -> list[dict[str, Any]]:
        response = httpx.post(
            f"{self.server.url}/v1/agent/claim",
            json={"device_ids": self.device_ids, "wait_seconds": 5, "max_runs": max_runs},
            headers=self.auth,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        runs: list[dict[str, Any]] = response.json()["runs"]
        return runs

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.server.url}{path}", params=params, headers=self.auth, timeout=30)

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.server.url}{path}", json=body, headers=self.auth, timeout=30)


# ------------------------------------------------------------------------------------------- env


def test_env_is_stored_with_the_run(org: Tenant, env_db: Database) -> None:
    app = android_app(org)
    case = create_test_case(org, flow=FLOW)
    # Names are ASCII words; values any text.
    env = {"USERNAME": "qa@example.com", "_private": "x", "EMPTY": "", "LONG": "v" * 10_000, "UNICODE": "grüße ✓"}
    [run_id] = queued_ids(run(org, case["id"], app, env=env))
    assert env_of(env_db, run_id) == env
    [plain] = queued_ids(run(org, case["id"], app))
    assert env_of(env_db, plain) is None

    all_runs = org.client.post(
        "/v1/test-cases/run-all", json={"app_file_id": app, "device": PIXEL_7, "env": {"BUILD": "1234"}}
    )
    [from_all] = queued_ids(all_runs)
    assert env_of(env_db, from_all) == {"BUILD": "1234"}


@pytest.mark.parametrize(
    "env",
    [
        {"1LEADING_DIGIT": "x"},
        {"with-dash": "x"},
        {"": "x"},
        {"SPACE NAME": "x"},
        {"N" * 101: "x"},
        {"NUMBER": 5},
        {"BOOL": True},
        {"NULL": None},
        {"LIST": ["a"]},
        {"TOO_LONG": "v" * 10_001},
        {"NUL": "a\u0000b"},
        {f"K{i}": "v" for i in range(101)},
    ],
)
def test_malformed_env_is_422_and_queues_nothing(org: Tenant, env: Any) -> None:
    app = android_app(org)
    case = create_test_case(org, flow=FLOW)
    assert_error(run(org, case["id"], app, env=env), 422)
    response = org.client.post("/v1/test-cases/run-all", json={"app_file_id": app, "device": PIXEL_7, "env": env})
    assert_error(response, 422)
    assert org.client.get("/v1/jobs/list").json()["test_runs"] == []


def test_env_at_its_limits_is_accepted(org: Tenant, env_db: Database) -> None:
    app = android_app(org)
    case = create_test_case(org, flow=FLOW)
    env = {f"K{i}": "v" for i in range(100)}
    env["N" * 100] = "x"
    del env["K0"]
    [run_id] = queued_ids(run(org, case["id"], app, env=env))
    assert env_of(env_db, run_id) == env


def test_idempotency_covers_env(org: Tenant) -> None:
    app = android_app(org)
    case = create_test_case(org, flow=FLOW)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    job = {"test_case_id": case["id"], "app_file_id": app, "device": PIXEL_7, "env": {"A": "1"}}
    first = org.client.post("/v1/test-cases/run", json={"jobs": [job]}, headers=key)
    again = org.client.post("/v1/test-cases/run", json={"jobs": [job]}, headers=key)
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    other = org.client.post("/v1/test-cases/run", json={"jobs": [{**job, "env": {"A": "2"}}]}, headers=key)
    assert_error(other, 422, "idempotency_key_reused")


# ------------------------------------------------------------------------------------------ tags


def test_run_all_picks_test_cases_by_tag(org: Tenant) -> None:
    app = android_app(org)

    def tagged(name: str, tags: list[str], **extra: Any) -> str:
        header = f"tags: [{', '.join(tags)}]\n" if tags else ""
        return str(
            create_test_case(org, name=name, flow=f"appId: com.example.app\n{header}---\n- launchApp\n", **extra)["id"]
        )

    smoke = tagged("smoke", ["smoke"])
    smoke_login = tagged("smoke login", ["smoke", "login"])
    nightly = tagged("nightly", ["nightly"])
    untagged = tagged("untagged", [])
    tagged("inactive smoke", ["smoke"], status="inactive")

    def run_all(**filters: Any) -> set[str]:
        response = org.client.post("/v1/test-cases/run-all", json={"app_file_id": app, "device": PIXEL_7, **filters})
        ids = queued_ids(response)
        runs = org.client.get("/v1/jobs/list", params={"ids": ",".join(ids)}).json()["test_runs"]
        return {r["test_case"]["id"] for r in runs}

    assert run_all() == {smoke, smoke_login, nightly, untagged}
    assert run_all(include_tags=["smoke"]) == {smoke, smoke_login}
    assert run_all(include_tags=["login", "nightly"]) == {smoke_login, nightly}
    assert run_all(exclude_tags=["login"]) == {smoke, nightly, untagged}
    assert run_all(include_tags=["smoke"], exclude_tags=["login"]) == {smoke}
    assert run_all(exclude_tags=["smoke", "nightly"]) == {untagged}
    assert run_all(include_tags=[], exclude_tags=[]) == {smoke, smoke_login, nightly, untagged}
    # Tags compare exactly.
    error = assert_error(
        org.client.post(
            "/v1/test-cases/run-all", json={"app_file_id": app, "device": PIXEL_7, "include_tags": ["SMOKE"]}
        ),
        422,
        "no_test_cases",
    )
    assert "tags" in error["message"]
    assert_error(
        org.client.post(
            "/v1/test-cases/run-all", json={"app_file_id": app, "device": PIXEL_7, "include_tags": "smoke"}
        ),
        422,
    )


# ------------------------------------------------------------------------------- what agents get


def test_a_claimed_run_carries_env_secrets_and_files(
    org: Tenant, org2: Tenant, env_server: LiveServer, env_db: Database
) -> None:
    assert org.client.put("/v1/secrets/TEST_PASSWORD", json={"value": "hunter2"}).status_code == 200
    assert org.client.put("/v1/secrets/API_TOKEN", json={"value": "tok-ü"}).status_code == 200
    assert org2.client.put("/v1/secrets/THEIR_SECRET", json={"value": "not yours"}).status_code == 200
    app = android_app(org)
    files = [
        {"path": "subflows/login.yaml", "content": SUBFLOW.decode()},
        {"path": "media/logo.png", "content_base64": base64.b64encode(PNG).decode()},
    ]
    case = create_test_case(org, flow=FLOW, files=files)
    [with_env] = queued_ids(run(org, case["id"], app, env={"USERNAME": "qa@example.com"}))
    plain_case = create_test_case(org, name="plain", flow=FLOW)
    [plain] = queued_ids(run(org, plain_case["id"], app))

    agent = RawAgent(env_server, env_db)
    claimed = {r["id"]: r for r in agent.claim(max_runs=2)}
    assert set(claimed) == {with_env, plain}
    first = claimed[with_env]
    assert first["env"] == {"USERNAME": "qa@example.com"}
    assert first["secrets"] == {"TEST_PASSWORD": "hunter2", "API_TOKEN": "tok-ü"}
    assert first["files"] == case["files"]  # path, sha256 and size, sorted by path
    assert [f["path"] for f in first["files"]] == ["media/logo.png", "subflows/login.yaml"]
    second = claimed[plain]
    assert second["env"] == {} and second["files"] == []
    assert second["secrets"] == first["secrets"]
    # The agent's own model reads it, and keeps secrets out of its repr.
    payload = RunPayload.model_validate(first)
    assert payload.secrets["TEST_PASSWORD"] == "hunter2" and "hunter2" not in repr(payload)

    # An organisation without secrets, env or files gets empty ones.
    app2 = android_app(org2)
    assert org2.client.delete("/v1/secrets/THEIR_SECRET").status_code == 200
    [theirs] = queued_ids(run(org2, create_test_case(org2, flow=FLOW)["id"], app2))
    other_agent = RawAgent(env_server, env_db, "other")
    [claimed2] = other_agent.claim()
    assert claimed2["id"] == theirs
    assert (claimed2["env"], claimed2["secrets"], claimed2["files"]) == ({}, {}, [])


def test_a_secret_that_does_not_decrypt_is_left_out(
    org: Tenant, org2: Tenant, env_server: LiveServer, env_db: Database
) -> None:
    """A ciphertext moved to another organisation's row (or tampered with) is not handed out."""
    assert org.client.put("/v1/secrets/STOLEN", json={"value": "org one's value"}).status_code == 200
    assert org2.client.put("/v1/secrets/OWN", json={"value": "two"}).status_code == 200
    assert org2.client.put("/v1/secrets/STOLEN", json={"value": "placeholder"}).status_code == 200

    async def move(session: AsyncSession) -> None:
        await session.execute(
            text(
                "UPDATE secrets SET ciphertext = (SELECT ciphertext FROM secrets WHERE organization_id = :src "
                "AND name = 'STOLEN') WHERE organization_id = :dst AND name = 'STOLEN'"
            ),
            {"src": org.organization_id, "dst": org2.organization_id},
        )

    env_db.run(move)
    app = android_app(org2)
    [run_id] = queued_ids(run(org2, create_test_case(org2, flow=FLOW)["id"], app))
    [claimed] = RawAgent(env_server, env_db).claim()
    assert claimed["id"] == run_id
    assert claimed["secrets"] == {"OWN": "two"}


def test_the_agent_holding_a_run_downloads_its_files(
    org: Tenant, env_server: LiveServer, env_db: Database, tmp_path: Path
) -> None:
    app = android_app(org)
    case = create_test_case(
        org,
        flow=FLOW,
        files=[
            {"path": "subflows/login.yaml", "content": SUBFLOW.decode()},
            {"path": "../shared/seed.js", "content": "output.n = 1"},
        ],
    )
    [run_id] = queued_ids(run(org, case["id"], app))
    agent = RawAgent(env_server, env_db)
    [claimed] = agent.claim()
    assert claimed["id"] == run_id and claimed["attempt"] == 1
    base = f"/v1/agent/runs/{run_id}/files"

    got = agent.get(f"{base}/subflows/login.yaml", attempt=1)
    assert got.status_code == 200 and got.content == SUBFLOW
    assert got.headers["content-type"] == "application/yaml"
    assert agent.get(f"{base}/%2E%2E/shared/seed.js", attempt=1).content == b"output.n = 1"
    assert_error(agent.get(f"{base}/subflows/missing.yaml", attempt=1), 404, "not_found")
    assert_error(agent.get(f"{base}/%2E%2E/%2E%2E/%2E%2E/etc/passwd", attempt=1), 404, "not_found")
    assert_error(agent.get(f"{base}//etc/passwd", attempt=1), 404, "not_found")
    # Only for the attempt it holds, and only to that agent.
    assert_error(agent.get(f"{base}/subflows/login.yaml", attempt=2), 409, "run_moved_on")
    assert_error(agent.get(f"{base}/subflows/login.yaml"), 400)
    stranger = RawAgent(env_server, env_db, "stranger")
    assert_error(stranger.get(f"{base}/subflows/login.yaml", attempt=1), 409, "run_moved_on")
    assert_error(httpx.get(f"{env_server.url}{base}/subflows/login.yaml", params={"attempt": 1}), 401)
    assert_error(
        httpx.get(f"{env_server.url}{base}/subflows/login.yaml", params={"attempt": 1}, headers={"X-Api-Key": org.key}),
        401,
    )

    # The agent's client fetches them, checked against their SHA-256.
    payload = RunPayload.model_validate(claimed)

    async def fetch(path: str) -> bytes:
        client = AgentClient(env_server.url, agent.token)
        try:
            return await client.fetch_file(payload, path)
        finally:
            await client.close()

    assert asyncio.run(fetch("subflows/login.yaml")) == SUBFLOW
    assert asyncio.run(fetch("../shared/seed.js")) == b"output.n = 1"

    async def corrupt(session: AsyncSession) -> None:
        await session.execute(
            update(TestCaseFile)
            .where(TestCaseFile.test_case_id == case["id"], TestCaseFile.path == "subflows/login.yaml")
            .values(content=b"- back\n")
        )

    env_db.run(corrupt)
    with pytest.raises(OSError, match="SHA-256"):
        asyncio.run(fetch("subflows/login.yaml"))

    # Once the run is over, nobody gets them.
    assert agent.post(f"/v1/agent/runs/{run_id}/finish", {"attempt": 1, "status": "passed"}).status_code == 200
    assert_error(agent.get(f"{base}/%2E%2E/shared/seed.js", attempt=1), 409, "run_moved_on")
    with pytest.raises(RunMovedOn):
        asyncio.run(fetch("../shared/seed.js"))


# ----------------------------------------------------------------------------- steps and progress


def step(index: int, description: str, parent: int | None = None, depth: int = 0) -> dict[str, Any]:
    return {"index": index, "description": description, "status": "passed", "parent": parent, "depth": depth}


def test_nested_steps_and_the_agent_s_progress(org: Tenant, env_server: LiveServer, env_db: Database) -> None:
    app = android_app(org)
    [run_id] = queued_ids(run(org, create_test_case(org, flow=FLOW)["id"], app))
    agent = RawAgent(env_server, env_db)
    [claimed] = agent.claim()
    assert claimed["id"] == run_id
    steps_url = f"/v1/agent/runs/{run_id}/steps"

    def progress() -> int:
        return int(org.client.get(f"/v1/jobs/status/{run_id}").json()["progress"])

    # The agent's own progress is used as sent.
    body = {"attempt": 1, "steps": [step(0, "launchApp"), step(1, "runFlow: login.yaml")], "progress": 42}
    assert agent.post(steps_url, body).status_code == 200
    assert progress() == 42
    body = {
        "attempt": 1,
        "steps": [step(2, 'tapOn "Sign in"', parent=1, depth=1), step(3, "repeat (1/2)", parent=1, depth=1)],
        "progress": 17,  # the agent may also go back (a retry)
    }
    assert agent.post(steps_url, body).status_code == 200
    assert progress() == 17
    # 100 is for a finished run: a running one stays below.
    body = {"attempt": 1, "steps": [step(4, 'inputText "x"', parent=3, depth=2)], "progress": 100}
    assert agent.post(steps_url, body).status_code == 200
    assert progress() == 99
    # Without it, progress comes from the indexes and the flow's step count, as before.
    body = {"attempt": 1, "steps": [step(5, "back")], "step_count": 12}
    assert agent.post(steps_url, body).status_code == 200
    assert progress() == 50
    # Limits: index up to 100,000, depth up to 32, no negative parent, progress 0..100.
    for bad in (
        {"steps": [step(100_001, "x")]},
        {"steps": [step(6, "x", depth=33)]},
        {"steps": [step(6, "x", parent=-1)]},
        {"steps": [step(6, "x")], "progress": 101},
        {"steps": [step(6, "x")], "progress": -1},
        {"steps": [step(i, "x") for i in range(501)]},
    ):
        assert_error(agent.post(steps_url, {"attempt": 1, **bad}), 422)
    finish = {"attempt": 1, "status": "passed", "steps": [step(100_000, "assertVisible: Done", parent=3, depth=32)]}
    assert agent.post(f"/v1/agent/runs/{run_id}/finish", finish).status_code == 200

    report = org.client.get(f"/v1/jobs/{run_id}/report").json()
    assert [(s["index"], s["parent"], s["depth"]) for s in report["steps"]] == [
        (0, None, 0),
        (1, None, 0),
        (2, 1, 1),
        (3, 1, 1),
        (4, 3, 2),
        (5, None, 0),
        (100_000, 3, 32),
    ]
    assert report["run"]["progress"] == 100
