"""Faults one at a time, each made for real: the API gone for seconds under a running agent, database
connections terminated by PostgreSQL, Redis killed and started again, a server stopped with long polls
open, sign-ins raced, forwarded addresses and other people's bad keys. (All of them at once, on two
server processes: tests/test_fault_drill.py.)"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.fixtures.agents import agent_token, running_agent, simulated_devices
from tests.fixtures.factories import (
    IPHONE_14_PRO,
    Database,
    Tenant,
    add_key,
    create_category,
    create_test_case,
    ipa_bytes,
    make_tenant,
    upload_app,
)
from tests.fixtures.faults import TERMINATE_OTHERS, outage_proxy, redis_server, terminate_connections
from tests.fixtures.flows import TEXTS
from tests.fixtures.processes import clean_env, processes, serve_env
from tests.fixtures.servers import LiveServer, live_server
from tests.fixtures.web import PASSWORD, csrf_of, set_password, sign_in


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
        running_agent(proxy.url, token, devices, tmp_path / "cache", step_seconds=0.5),
    ):
        # Every run a few steps in (about 9 s of steps each), then the API goes away for 8 s: more
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
    # they ended within a couple of back-off periods, not after the rest of their steps (at least 7 s of
    # them had the runs waited for the API: 14 steps or more of 0.5 s).
    assert ended_after < 6, ended_after
    assert not [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]


# ------------------------------------------------------------ 2. database connections terminated


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
READS = ("status", "list", "report", "devices")


@pytest.fixture
def pg_server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server("postgresql", tmp_path / "pg", lease_seconds=60) as srv:
        yield srv


class _Agent:
    """An agent speaking the protocol by hand, with one iPhone 14 Pro per run it will hold."""

    def __init__(self, server: LiveServer, token: str, devices: int) -> None:
        self.http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        body = {
            "devices": [
                {"id": f"phone-{n}", "name": "iPhone 14 Pro", "platform": "iOS", "os_version": "16.0"}
                for n in range(devices)
            ]
        }
        registered = self.http.post("/v1/agent/register", json=body)
        assert registered.status_code == 200, registered.text
        self.device_ids = [d["id"] for d in registered.json()["devices"]]

    def claim(self) -> list[dict[str, Any]]:
        response = self.http.post(
            "/v1/agent/claim", json={"device_ids": self.device_ids, "wait_seconds": 0, "max_runs": len(self.device_ids)}
        )
        assert response.status_code == 200, response.text
        runs: list[dict[str, Any]] = response.json()["runs"]
        return runs


def _calls(tenant: Tenant, agent: _Agent, run: dict[str, Any], case: str, app: str, n: int) -> dict[str, Any]:
    """One request of each kind the fault touches, for a run ``run`` this agent holds."""
    rid, attempt = run["id"], run["attempt"]
    return {
        "status": lambda: tenant.client.get(f"/v1/jobs/status/{rid}"),
        "list": lambda: tenant.client.get("/v1/jobs/list"),
        "report": lambda: tenant.client.get(f"/v1/jobs/{rid}/report"),
        "devices": lambda: tenant.client.get("/v1/devices/list"),
        "run": lambda: tenant.client.post(
            "/v1/test-cases/run",
            json={"jobs": [{"test_case_id": case, "app_file_id": app, "device": IPHONE_14_PRO}]},
        ),
        "claim": lambda: agent.http.post(
            "/v1/agent/claim", json={"device_ids": agent.device_ids[-1:], "wait_seconds": 0}
        ),
        "heartbeat": lambda: agent.http.post(f"/v1/agent/runs/{rid}/heartbeat", json={"attempt": attempt}),
        "steps": lambda: agent.http.post(
            f"/v1/agent/runs/{rid}/steps",
            json={"attempt": attempt, "steps": [{"index": n, "description": f"step {n}", "status": "passed"}]},
        ),
        "screenshot": lambda: agent.http.put(
            # The previous round's step: a screenshot's step is reported first.
            f"/v1/agent/runs/{rid}/steps/{attempt}/{n - 1}/screenshot",
            content=PNG,
            headers={"Content-Type": "image/png"},
        ),
    }


def _assert_answer(name: str, response: httpx.Response, *, allow_503: bool) -> None:
    if response.status_code == 503 and allow_503 and name not in READS:
        # A write that lost its connection midway: refused whole, with when to retry.
        assert response.headers["retry-after"] == "1", response.headers
        assert response.json()["error"]["code"] == "database_unavailable", response.text
        return
    assert response.status_code < 300, (name, response.status_code, response.text)


def test_terminated_database_connections_are_replaced_without_a_500(pg_server: LiveServer) -> None:
    url = pg_server.settings.resolved_database_url
    with _tenant_and_token(pg_server) as (tenant, token):
        case = create_test_case(tenant, flow=_flow(4, 2))["id"]
        app = _ios_app(tenant)
        agent = _Agent(pg_server, token, 3)
        _queue(tenant, case, app, 3)
        runs = agent.claim()
        assert len(runs) == 3
        step = 0
        first = {"attempt": 1, "steps": [{"index": 0, "description": "step 0", "status": "passed"}]}
        assert agent.http.post(f"/v1/agent/runs/{runs[0]['id']}/steps", json=first).status_code == 200
        # Every pool gets connections: several of each request at once.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for _ in range(3):
                step += 1
                calls = _calls(tenant, agent, runs[0], case, app, step)
                for name, response in zip(calls, pool.map(lambda call: call(), calls.values()), strict=True):
                    _assert_answer(name, response, allow_503=False)
            for round_ in range(2):
                assert terminate_connections(url) > 0
                if round_:
                    time.sleep(0.3)  # the server saw its connections close: none is used again
                step += 1
                calls = _calls(tenant, agent, runs[0], case, app, step)
                # A run ends in each round (the batch route the agent uses: a repeat is "repeat").
                report = {"run_id": runs[1 + round_]["id"], "attempt": 1, "status": "passed"}
                calls["finish"] = lambda report=report: agent.http.post("/v1/agent/finish", json={"reports": [report]})
                # Right after the kill a write may lose its connection midway (503 + Retry-After);
                # a read is sent again; nothing is a 500. Once the closes are seen, all succeed.
                for name, response in zip(calls, pool.map(lambda call: call(), calls.values()), strict=True):
                    _assert_answer(name, response, allow_503=not round_)
                    if response.status_code == 503:
                        # As a client does after a 503: the same request again succeeds.
                        _assert_answer(name, calls[name](), allow_503=False)
        for run in runs[1:]:
            assert tenant.client.get(f"/v1/jobs/status/{run['id']}").json()["status"] == "passed"
        agent.http.close()


@contextlib.contextmanager
def _table_locked(database_url: str, table: str) -> Iterator[Any]:
    """A connection of the test's own holding an exclusive lock on ``table`` (until the block ends), so
    the server's statements on it wait, in flight, where a terminated connection hurts most. Yields a
    function that terminates every other connection and then releases the lock."""
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql", 1)))
    tx = conn.transaction()
    loop.run_until_complete(tx.start())
    loop.run_until_complete(conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))

    def waiting() -> int:
        sql = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        # Inside a transaction the statistics are a snapshot taken at their first read: take a new one.
        loop.run_until_complete(conn.execute("SELECT pg_stat_clear_snapshot()"))
        return int(loop.run_until_complete(conn.fetchval(sql)))

    def terminate_waiting_then_release() -> None:
        _wait("a server statement to wait for the lock", waiting, timeout=10)
        loop.run_until_complete(conn.fetch(TERMINATE_OTHERS))
        time.sleep(0.2)  # the read sent again waits for the lock in turn
        loop.run_until_complete(tx.commit())

    try:
        yield terminate_waiting_then_release
    finally:
        loop.run_until_complete(conn.close())
        loop.close()


def test_a_read_whose_connection_dies_midway_is_sent_again_and_a_write_is_a_503(
    pg_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = pg_server.settings.resolved_database_url
    caplog.set_level(logging.WARNING, logger="qualgent")
    with _tenant_and_token(pg_server) as (tenant, _token):
        case = create_test_case(tenant, flow=_flow(4, 2))["id"]
        [run_id] = _queue(tenant, case, _ios_app(tenant), 1)
        create_category(tenant, "Nightly")
        reads = {
            # The fast reader's own pool (the hot status route), and a request's ORM session.
            f"/v1/jobs/status/{run_id}": ("test_runs", run_id),
            "/v1/categories/list": ("categories", "Nightly"),
        }
        for path, (table, expected) in reads.items():
            assert tenant.client.get(path).status_code == 200
            with _table_locked(url, table) as kill, concurrent.futures.ThreadPoolExecutor(1) as pool:
                answer = pool.submit(tenant.client.get, path)
                kill()
                response = answer.result(timeout=30)
            assert response.status_code == 200, (path, response.text)
            assert expected in response.text, response.text
        # The session's read lost its connection, and the request was answered by a second pass (the
        # status route's reader sent its statement again by itself).
        lost = [r.getMessage() for r in caplog.records if r.getMessage().startswith("database unavailable on GET")]
        assert [m.split(":")[0] for m in lost] == ["database unavailable on GET /v1/categories/list"], lost
        # A write cannot be sent again on the server's side (did it commit?): 503 with Retry-After, and
        # nothing done; the client's retry then does it.
        with _table_locked(url, "test_runs") as kill, concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(tenant.client.post, f"/v1/jobs/{run_id}/cancel")
            kill()
            refused = answer.result(timeout=30)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "database_unavailable"
        assert tenant.client.get(f"/v1/jobs/status/{run_id}").json()["status"] == "queued"
        again = tenant.client.post(f"/v1/jobs/{run_id}/cancel")
        assert again.status_code == 200, again.text
        assert tenant.client.get(f"/v1/jobs/status/{run_id}").json()["status"] == "cancelled"


# --------------------------------------------------------------------------- 3. Redis unreachable


def test_rate_limits_fall_back_to_the_process_while_redis_is_away_and_share_again_when_it_is_back(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="qualgent.ratelimit")
    with (
        redis_server(tmp_path / "redis") as store,
        live_server(backend, tmp_path / "srv", redis_url=store.url) as server,
        _tenant_and_token(server) as (tenant, _token),
    ):
        db = Database(server.settings.resolved_database_url)
        try:
            _, limited = add_key(db, tenant, rate_limit=5)
        finally:
            db.close()
        bad = "qg_" + "x" * 43
        with httpx.Client(base_url=server.url, headers={"X-Api-Key": limited}, timeout=10) as client:
            assert client.get("/v1/devices/list").status_code == 200
            assert store.keys() > 0  # the limits live in Redis

            store.kill()
            time.sleep(1.1)  # the key's one-second window is empty again
            answers = [client.get("/v1/devices/list") for _ in range(8)]
            # Per process now, and still enforced: 5 a second, then 429; never a 500.
            assert [r.status_code for r in answers] == [200] * 5 + [429] * 3, [r.text for r in answers]
            assert all(r.headers["x-ratelimit-limit"] == "5" for r in answers)
            assert httpx.get(f"{server.url}/v1/apps", headers={"X-Api-Key": bad}).status_code == 401
            ready = httpx.get(f"{server.url}/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json() == {"status": "degraded", "database": backend, "redis": "unreachable"}
            warnings = [r.getMessage() for r in caplog.records if r.name == "qualgent.ratelimit"]
            assert len(warnings) == 1 and warnings[0].startswith("Redis is unreachable"), warnings

            store.start()
            _wait(
                "the server to use Redis again",
                lambda: httpx.get(f"{server.url}/readyz").json()["status"] == "ok",
                timeout=10,
                interval=0.2,
            )
            assert httpx.get(f"{server.url}/readyz").json() == {"status": "ok", "database": backend, "redis": "ok"}
            time.sleep(1.1)
            assert store.keys() == 0  # a new, empty Redis
            answers = [client.get("/v1/devices/list").status_code for _ in range(4)]
            assert answers == [200] * 4, answers
            assert store.keys() > 0  # counted there again, with no restart of the server
            # One warning when it went, one when it came back: its stale connections did not count as
            # another outage.
            warnings = [r.getMessage().split(" (")[0] for r in caplog.records if r.name == "qualgent.ratelimit"]
            assert len(warnings) == 2 and warnings[0] == "Redis is unreachable", warnings
            assert warnings[1].startswith("Redis is reachable again"), warnings


# ------------------------------------------------------------------------ 4. stopping the server


def _cli_agent_token(env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "qualgent", "admin", "create-agent", "lab"],
        env=clean_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_the_server_ends_long_polls_with_an_empty_answer_at_once(stop: signal.Signals, tmp_path: Path) -> None:
    with serve_env("sqlite", tmp_path) as (env, _url), processes() as procs:
        # As `./dev serve` runs it: the embedded agent long-polls too.
        server = procs.serve(env, tmp_path / "serve.log", "--log-level", "info")
        auth = {"Authorization": f"Bearer {_cli_agent_token(env, tmp_path)}"}
        device = {"id": "lab-1", "name": "Pixel 7", "platform": "Android", "os_version": "14.0"}
        registered = httpx.post(f"{server.url}/v1/agent/register", json={"devices": [device]}, headers=auth)
        assert registered.status_code == 200, registered.text
        body = {"device_ids": [registered.json()["devices"][0]["id"]], "wait_seconds": 60}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            polling = pool.submit(httpx.post, f"{server.url}/v1/agent/claim", json=body, headers=auth, timeout=90)
            time.sleep(1.0)  # the poll is waiting on the server
            assert not polling.done()
            started = time.monotonic()
            server.proc.send_signal(stop)
            answer = polling.result(timeout=10)
            answered_in = time.monotonic() - started
            server.proc.wait(timeout=10)
            exited_in = time.monotonic() - started
        output = server.output()
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"run": None, "runs": []}
    assert answered_in < 1, answered_in
    assert exited_in < 2, (exited_in, output)
    assert "Traceback" not in output and "CancelledError" not in output and "ERROR" not in output, output
    assert "Application shutdown complete" in output


# -------------------------------------------------------- 6, 7. sign-ins raced, others' bad keys


@pytest.fixture
def strict_server(backend: str, tmp_path: Path) -> Iterator[LiveServer]:
    """Five failed authentications per address and minute."""
    with live_server(backend, tmp_path / "strict", auth_failure_limit=5) as srv:
        yield srv


def _wrong_sign_ins(server: LiveServer, email: str, count: int) -> list[int]:
    """``count`` sign-ins with a wrong password, all at once, from one address; their status codes."""
    with httpx.Client(base_url=server.url, timeout=60) as browser:
        form = browser.get("/sign-in")
        data = {"email": email, "password": "not the password", "csrf_token": csrf_of(form.text)}
        cookies = dict(browser.cookies)

        def attempt(_: int) -> int:
            response = httpx.post(f"{server.url}/sign-in", data=data, cookies=cookies, timeout=60)
            return response.status_code

        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            return list(pool.map(attempt, range(count)))


def test_concurrent_wrong_sign_ins_are_counted_before_the_password_is_checked(strict_server: LiveServer) -> None:
    db = Database(strict_server.settings.resolved_database_url)
    try:
        victim = make_tenant(db, strict_server.url)
        colleague = make_tenant(db, strict_server.url)
        for tenant in (victim, colleague):
            tenant.client.close()
            set_password(db, tenant.user_email)
    finally:
        db.close()
    statuses = _wrong_sign_ins(strict_server, victim.user_email, 60)
    # Only the limit's worth reached the password check (401); the others were refused before (429).
    assert statuses.count(401) == 5, statuses
    assert statuses.count(429) == 55, statuses
    with httpx.Client(base_url=strict_server.url, timeout=30) as browser:
        # That account is closed to this address for the minute, even with the right password...
        form = browser.get("/sign-in")
        data = {"email": victim.user_email, "password": PASSWORD, "csrf_token": csrf_of(form.text)}
        assert browser.post("/sign-in", data=data).status_code == 429
    # ...and a colleague at the same address signs in as usual.
    with httpx.Client(base_url=strict_server.url, timeout=30) as colleagues_browser:
        assert sign_in(colleagues_browser, colleague.user_email)


def test_others_bad_keys_never_lock_out_valid_keys_or_agents_from_the_same_address(strict_server: LiveServer) -> None:
    db = Database(strict_server.settings.resolved_database_url)
    try:
        tenant = make_tenant(db, strict_server.url)
        token = agent_token(db)
    finally:
        db.close()
    try:
        bad = {"X-Api-Key": "qg_" + "x" * 43}
        codes = [httpx.get(f"{strict_server.url}/v1/devices/list", headers=bad).status_code for _ in range(8)]
        assert codes == [401] * 5 + [429] * 3, codes
        assert httpx.get(f"{strict_server.url}/v1/apps").status_code == 429  # no key at all: a failure too
        # A valid key, and an agent's token, from the same address: never locked out.
        assert tenant.client.get("/v1/devices/list").status_code == 200
        agent = {"Authorization": f"Bearer {token}"}
        device = {"id": "d1", "name": "Pixel 7", "platform": "Android", "os_version": "14.0"}
        registered = httpx.post(f"{strict_server.url}/v1/agent/register", json={"devices": [device]}, headers=agent)
        assert registered.status_code == 200, registered.text
        # A bad agent token is one more failure.
        wrong = {"Authorization": "Bearer qga_" + "y" * 43}
        assert (
            httpx.post(f"{strict_server.url}/v1/agent/register", json={"devices": [device]}, headers=wrong).status_code
            == 429
        )
    finally:
        tenant.client.close()


def _failures_until_429(url: str, headers: dict[str, str]) -> int:
    for n in range(1, 30):
        if httpx.get(f"{url}/v1/devices/list", headers=headers).status_code == 429:
            return n - 1
    raise AssertionError("never limited")


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"], ids=["default", "trusted-proxy"])
def test_forwarded_addresses_are_believed_only_from_configured_proxies(trusted: str, tmp_path: Path) -> None:
    settings = {"auth_failure_limit": "5", "embedded_agent": "false", "trusted_proxies": trusted}
    with serve_env("sqlite", tmp_path, **settings) as (env, _url), processes() as procs:
        server = procs.serve({k: v for k, v in env.items() if v}, tmp_path / "serve.log")
        # Bad keys, each claiming another client address, all from 127.0.0.1.
        spoofed = [
            httpx.get(
                f"{server.url}/v1/devices/list",
                headers={"X-Api-Key": "qg_" + "x" * 43, "X-Forwarded-For": f"203.0.113.{n}"},
            ).status_code
            for n in range(8)
        ]
        if trusted:
            # Behind a configured proxy, each named client has its own budget; the proxy's own is untouched.
            assert spoofed == [401] * 8, spoofed
            assert _failures_until_429(server.url, {"X-Api-Key": "qg_" + "z" * 43}) == 5
        else:
            # By default the header means nothing: all of them are 127.0.0.1's failures.
            assert spoofed == [401] * 5 + [429] * 3, spoofed
