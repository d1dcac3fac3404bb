"""The fault drill: everything that goes wrong in production, at once, on every CI run.

Two `qualgent serve` processes share a PostgreSQL database and a Redis of the test's own; a remote
`qualgent agent` (six simulated phones) works through a queue of runs of one organisation capped at
three at a time, talking to the first process. While it does, the test
- SIGKILLs that process and starts it again on its port a few seconds later (the agent's API is gone
  for longer than its reports used to be retried, shorter than the lease);
- terminates every database connection, twice;
- kills Redis and starts it again.
Meanwhile clients poll and write through both processes. The drill fails on any 500 (or any other
answer than 2xx/4xx, but 503 with Retry-After), any run not passed, any run the agent dropped, any
moment with more than three runs of the organisation running, a Redis outage `/readyz` did not report,
or a traceback in a server's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from qualgent.agents.service import create_agent
from qualgent.organisations.repository import OrganisationRepository
from qualgent.organisations.service import set_parallel_runs
from tests.fixtures.factories import IPHONE_14_PRO, Database, ipa_bytes
from tests.fixtures.faults import redis_server, stable_port, terminate_connections
from tests.fixtures.flows import TEXTS
from tests.fixtures.processes import processes, serve_env, write_devices_file
from tests.fixtures.servers import ServeProcess

CAP = 3
RUNS = 24
DEVICES = 6
STEPS = 10
FIRST_KEY = re.compile(r"qg_[A-Za-z0-9_-]{43}")
STARTED = re.compile(r"run (run_\w+) attempt (\d+): started")
SETTINGS = {
    "embedded_agent": "false",
    # Longer than the API outage below (a kill and a restart, up to ~10 s on a busy machine), so no
    # run may be lost to it; short enough that a reaper would requeue a dropped one within the drill.
    "lease_seconds": "20",
    "heartbeat_seconds": "1",
    "reaper_interval": "0.5",
    "default_rate_limit": "100000",
    "auth_failure_limit": "100000",
}


def _flow() -> str:
    steps = ["- launchApp"]
    cycle = ["- tapOn: Sign in", "- inputText: user@example.com", "- assertVisible: Welcome back"]
    for i in range(1, STEPS):
        steps.append(f"- takeScreenshot: shot-{i}" if i % 4 == 0 else cycle[i % 3])
    return "appId: com.example.app\n---\n" + "\n".join(steps) + "\n"


def _wait(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Observed:
    """What the watchers saw, from their threads."""

    answers: Counter[tuple[str, int]] = field(default_factory=Counter)  # (process, status) → count
    bad: list[str] = field(default_factory=list)  # answers no client should ever get
    unreachable: Counter[str] = field(default_factory=Counter)  # process → transport errors
    b_unreachable: list[str] = field(default_factory=list)
    readyz: list[dict[str, Any]] = field(default_factory=list)
    most_running: int = 0
    cap_samples: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


def _clients(observed: Observed, servers: dict[str, str], key: str, run_ids: list[str]) -> None:
    """Polls and writes through both processes, as CI pipelines and people do, recording every answer."""
    clients = {
        name: httpx.Client(base_url=url, headers={"X-Api-Key": key}, timeout=30) for name, url in servers.items()
    }
    n = 0
    try:
        while not observed.stop.is_set():
            n += 1
            for name, client in clients.items():
                run = random.choice(run_ids)
                requests: list[tuple[str, str, dict[str, Any] | None]] = [
                    ("GET", f"/v1/jobs/status/{run}", None),
                    ("GET", "/v1/jobs/list", None),
                    ("GET", f"/v1/jobs/{run}/report", None),
                ]
                if n % 5 == 0:
                    requests.append(("POST", "/v1/categories", {"name": f"drill {name} {n}"}))
                for method, path, body in requests:
                    try:
                        response = client.request(method, path, json=body)
                    except httpx.TransportError as exc:
                        observed.unreachable[name] += 1
                        if name == "b":
                            observed.b_unreachable.append(f"{method} {path}: {exc!r}")
                        continue
                    observed.answers[(name, response.status_code)] += 1
                    code = response.status_code
                    if code >= 500 and not (code == 503 and response.headers.get("retry-after")):
                        observed.bad.append(f"{name} {method} {path}: {code} {response.text[:300]}")
            time.sleep(0.05)
    finally:
        for client in clients.values():
            client.close()


def _readiness(observed: Observed, url: str) -> None:
    while not observed.stop.is_set():
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(f"{url}/readyz", timeout=5)
            observed.readyz.append({"code": response.status_code, **response.json()})
        time.sleep(0.2)


def _cap_watch(observed: Observed, database_url: str, organization_id: str) -> None:
    """Counts the organisation's running runs every 20 ms; a connection terminated by the drill is opened again."""
    sql = "SELECT count(*) FROM test_runs WHERE organization_id = $1 AND status = 'running'"
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    async def watch() -> None:
        conn = None
        while not observed.stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(dsn)
                running = int(await conn.fetchval(sql, organization_id))
            except Exception:  # terminated by the drill, whatever asyncpg calls it: connect again
                conn = None
                await asyncio.sleep(0.02)
                continue
            observed.most_running = max(observed.most_running, running)
            observed.cap_samples += 1
            await asyncio.sleep(0.02)
        if conn is not None:
            await conn.close()

    asyncio.run(watch())


@contextlib.contextmanager
def _watching(observed: Observed, *targets: Callable[[], None]) -> Iterator[None]:
    threads = [threading.Thread(target=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        observed.stop.set()
        for thread in threads:
            thread.join(timeout=30)


def _statuses(client: httpx.Client, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    response = client.get("/v1/jobs/list", params={"ids": ",".join(run_ids), "limit": 100})
    assert response.status_code == 200, response.text
    return {run["id"]: run for run in response.json()["test_runs"]}


def _ended(client: httpx.Client, run_ids: list[str]) -> dict[str, dict[str, Any]] | None:
    runs = _statuses(client, run_ids)
    return runs if all(run["status"] in ("passed", "failed", "cancelled") for run in runs.values()) else None


@pytest.mark.redis
def test_fault_drill(tmp_path: Path) -> None:
    observed = Observed()
    with (
        redis_server(tmp_path / "redis") as store,
        serve_env("postgresql", tmp_path, redis_url=store.url, **SETTINGS) as (env, database_url),
        processes() as procs,
    ):
        port_a = stable_port()
        a = procs.serve(env, tmp_path / "a.log", port=port_a)
        found = FIRST_KEY.search(a.output())
        assert found, a.output()
        key = found.group(0)
        b = procs.serve(env, tmp_path / "b.log")
        db = Database(database_url)
        try:
            [org] = db.run(lambda s: OrganisationRepository(s).list())
            db.run(lambda s: set_parallel_runs(s, org.id, CAP))
            _agent, token = db.run(lambda s: create_agent(s, "drill agent", organization_id=None))
        finally:
            db.close()

        with httpx.Client(base_url=b.url, headers={"X-Api-Key": key}, timeout=30) as api:
            upload = api.post(
                "/v1/apps/upload",
                data={"app_name": "Example", "version": "1.0"},
                files={"file": ("Example.ipa", ipa_bytes(texts=TEXTS), "application/octet-stream")},
            )
            assert upload.status_code == 200, upload.text
            case = api.post("/v1/test-cases", json={"name": "Drill", "flow": _flow()})
            assert case.status_code == 201, case.text
            job = {
                "test_case_id": case.json()["id"],
                "app_file_id": upload.json()["file"]["id"],
                "device": IPHONE_14_PRO,
            }
            queued = api.post("/v1/test-cases/run", json={"jobs": [job] * RUNS})
            assert queued.status_code == 200, queued.text
            run_ids = [j["id"] for j in queued.json()["jobs"]]

            devices = write_devices_file(tmp_path / "devices.yaml", [("iPhone 14 Pro", "iOS", "16.0")], DEVICES)
            agent = procs.agent(a.url, token, devices, tmp_path / "agent", step_seconds=0.15).start()
            servers = {"a": a.url, "b": b.url}
            with _watching(
                observed,
                lambda: _clients(observed, servers, key, run_ids),
                lambda: _readiness(observed, b.url),
                lambda: _cap_watch(observed, database_url, org.id),
            ):
                _wait(
                    "runs to be running",
                    lambda: sum(r["status"] == "running" for r in _statuses(api, run_ids).values()) >= CAP,
                    30,
                )

                # 1. The agent's API process dies mid-run and comes back on its port.
                a.kill()
                time.sleep(5)
                a2 = procs.serve(env, tmp_path / "a-again.log", port=port_a)

                # 2. Every database connection terminated, twice.
                time.sleep(1)
                assert terminate_connections(database_url) > 0
                time.sleep(1.5)
                assert terminate_connections(database_url) > 0

                # 3. Redis gone for a few seconds, then back (empty) on its port.
                time.sleep(1)
                store.kill()
                time.sleep(3)
                store.start()
                _wait("/readyz to answer ok again", lambda: observed.readyz[-1].get("status") == "ok", 10)

                done = _wait("every run to end", lambda: _ended(api, run_ids), timeout=60, interval=0.5)
            agent.stop()
            counter = api.get("/readyz")
            assert counter.status_code == 200

        db = Database(database_url)
        try:
            [org_after] = db.run(lambda s: OrganisationRepository(s).list())
        finally:
            db.close()
        logs = {"a": a.output(), "a again": a2.output(), "b": b.output()}
        agent_log = agent.output()

    # No 500, and nothing else a client should not get; the process never killed always answered.
    assert not observed.bad, observed.bad
    assert not observed.b_unreachable, observed.b_unreachable
    assert sum(count for (name, _), count in observed.answers.items() if name == "b") > 50, observed.answers
    for name, log in logs.items():
        assert "Traceback" not in log and "unhandled error" not in log, (name, log[-5000:])
    # One warning per process for the Redis outage (and one when it was back).
    for name in ("a again", "b"):
        assert logs[name].count("Redis is unreachable") == 1, logs[name]
    # Every run passed; none was dropped by the agent (a lost attempt could only be one it never received,
    # its claim's answer cut off by the kill: never one it had started).
    assert {run["status"] for run in done.values()} == {"passed"}, Counter(r["status"] for r in done.values())
    started = {(run_id, int(attempt)) for run_id, attempt in STARTED.findall(agent_log)}
    for run_id, run in done.items():
        for attempt in range(1, run["attempt"]):
            assert (run_id, attempt) not in started, (run_id, attempt, run)
    assert "dropped" not in agent_log and "Traceback" not in agent_log, agent_log[-5000:]
    # The cap held all along, and its counter is back to zero.
    assert observed.cap_samples > 100
    assert 0 < observed.most_running <= CAP, observed.most_running
    assert org_after.running_runs == 0
    # /readyz told the Redis outage (200, degraded), and its end.
    degraded = [r for r in observed.readyz if r.get("redis") == "unreachable"]
    assert degraded and all(r["code"] == 200 and r["status"] == "degraded" for r in degraded), observed.readyz
    assert observed.readyz[-1]["status"] == "ok"
    assert isinstance(a2, ServeProcess)
