"""Reliability: real processes killed at the worst moments.

- an agent SIGKILLed mid-run: its run returns to the queue when the lease expires and passes on the
  next agent, with the lost attempt on record;
- a server stopped (SIGTERM, SIGKILL) with runs queued: after a restart every run passes, once;
- devices that cannot take the queued runs wait without keeping the server busy;
- a soak: over a thousand runs while agents are SIGKILLed and restarted at random; the per-organisation
  cap is never exceeded, every run ends in one terminal state, and none succeeds twice.

Servers and agents are `qualgent serve` / `qualgent agent` subprocesses, as they run in production.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.agents.service import create_agent
from qualgent.db.models import Device, Organization, RunAttempt, RunStep, TestRun
from qualgent.db.session import make_sessionmaker
from qualgent.organisations.service import set_parallel_runs
from tests.fixtures.factories import IPHONE_14_PRO, Database, Tenant, ipa_bytes, make_tenant
from tests.fixtures.flows import TEXTS
from tests.fixtures.processes import clean_env, processes, serve_env, write_devices_file
from tests.fixtures.servers import ServeProcess

T = TypeVar("T")

FIRST_KEY = re.compile(r"qg_[A-Za-z0-9_-]{43}")
AGENT_TOKEN = re.compile(r"qga_[A-Za-z0-9_-]+")
IPHONE_15 = {"name": "iPhone 15", "platform": "iOS", "os_version": "17.0", "orientation": "portrait"}
IOS_DEVICES = [("iPhone 14 Pro", "iOS", "16.0"), ("iPhone 15", "iOS", "17.0")]
TERMINAL = {"passed", "failed", "cancelled"}

# Fast leases so that a lost agent's runs come back within seconds.
FAST_LEASES = {"lease_seconds": "2", "heartbeat_seconds": "0.5", "reaper_interval": "0.2"}
HIGH_LIMITS = {"default_rate_limit": "100000", "auth_failure_limit": "100000"}


def _long_flow(steps: int) -> str:
    body = ["- launchApp"]
    cycle = ["- tapOn: Sign in", "- inputText: user@example.com", "- assertVisible: Welcome back"]
    body += [cycle[i % len(cycle)] for i in range(steps - 1)]
    return "appId: com.example.app\n---\n" + "\n".join(body) + "\n"


def _first_key(server: ServeProcess) -> str:
    found = FIRST_KEY.search(server.output())
    assert found, server.output()
    return found.group(0)


def _api(server: ServeProcess, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-Api-Key": key}, timeout=30)


def _ios_app(client: httpx.Client) -> str:
    files = {"file": ("Example.ipa", ipa_bytes(texts=TEXTS), "application/octet-stream")}
    response = client.post("/v1/apps/upload", data={"app_name": "Example", "version": "1.2.3"}, files=files)
    assert response.status_code == 200, response.text
    return str(response.json()["file"]["id"])


def _test_case(client: httpx.Client, name: str, flow: str) -> str:
    response = client.post("/v1/test-cases", json={"name": name, "flow": flow})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _status(client: httpx.Client, run_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/status/{run_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _wait(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _wait_status(client: httpx.Client, run_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        nonlocal last
        last = _status(client, run_id)
        return last if last["status"] in statuses else None

    try:
        return _wait(f"run {run_id} to be {statuses}", check, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {last}") from None


def _create_agent_with_cli(env: dict[str, str], cwd: Path, name: str) -> str:
    """`qualgent admin create-agent NAME` prints the agent's token on stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "qualgent", "admin", "create-agent", name, "--shared"],
        env=clean_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    token = done.stdout.strip()
    assert AGENT_TOKEN.fullmatch(token), done.stdout
    return token


class DbReader:
    """Reads the server's database from the test (plain transactions: never takes SQLite's write lock)."""

    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.sessions = make_sessionmaker(self.db.engine)

    def run(self, fn: Callable[[AsyncSession], Any]) -> Any:
        async def work() -> Any:
            async with self.sessions() as session:
                return await fn(session)

        return self.db.runner.run(work())

    def close(self) -> None:
        self.db.close()


@contextlib.contextmanager
def _db(url: str) -> Iterator[DbReader]:
    reader = DbReader(url)
    try:
        yield reader
    finally:
        reader.close()


async def _attempts(session: AsyncSession, run_ids: list[str]) -> dict[str, list[tuple[int, str | None]]]:
    rows = await session.execute(
        select(RunAttempt.run_id, RunAttempt.number, RunAttempt.outcome)
        .where(RunAttempt.run_id.in_(run_ids))
        .order_by(RunAttempt.run_id, RunAttempt.number)
    )
    out: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
    for run_id, number, outcome in rows:
        out[run_id].append((number, outcome))
    return out


# ---------------------------------------------------------------------------- 1. an agent SIGKILLed


def test_a_run_whose_agent_is_killed_returns_to_the_queue_and_passes_on_the_next_agent(
    backend: str, tmp_path: Path
) -> None:
    with (
        serve_env(backend, tmp_path, embedded_agent="false", **FAST_LEASES, **HIGH_LIMITS) as (env, url),
        processes() as procs,
    ):
        server = procs.serve(env, tmp_path / "serve.log")
        token = _create_agent_with_cli(env, tmp_path, "agent on host-1")
        devices = write_devices_file(tmp_path / "devices.yaml", [IOS_DEVICES[0]])
        with _api(server, _first_key(server)) as client:
            app = _ios_app(client)
            case = _test_case(client, "Long login", _long_flow(20))
            job = {"test_case_id": case, "app_file_id": app, "device": IPHONE_14_PRO}
            queued = client.post("/v1/test-cases/run", json={"jobs": [job]})
            assert queued.status_code == 200, queued.text
            [run_id] = [j["id"] for j in queued.json()["jobs"]]

            agent = procs.agent(server.url, token, devices, tmp_path / "agent", step_seconds=0.3).start()
            # Mid-run: a few of the 20 steps reported (progress counts them), far from the end.
            running = _wait(
                "the run to be a few steps in",
                lambda: s if (s := _status(client, run_id))["status"] == "running" and s["progress"] >= 10 else None,
                timeout=30,
            )
            assert running["attempt"] == 1 and running["progress"] < 60, running
            agent.kill()
            killed_at = time.monotonic()
            assert _status(client, run_id)["status"] == "running"  # nobody knows yet: the lease still holds

            requeued = _wait_status(client, run_id, {"queued", "passed", "failed", "cancelled"}, timeout=10)
            waited = time.monotonic() - killed_at
            assert requeued["status"] == "queued" and requeued["attempt"] == 1, requeued
            assert waited > 1.0, f"requeued {waited:.2f} s after the kill: before the 2 s lease could expire"
            report = client.get(f"/v1/jobs/{run_id}/report").json()
            [lost] = report["attempts"]
            assert lost["outcome"] == "lost" and "lease expired" in lost["message"], lost
            assert 0 < len(report["steps"]) < 20

            with _db(url) as db:
                # The reaper gave the device back and the organisation's running count with it.
                busy = db.run(lambda s: s.scalar(select(func.count()).where(Device.current_run_id.is_not(None))))
                counted = db.run(lambda s: s.scalar(select(func.sum(Organization.running_runs))))
            assert (busy, counted) == (0, 0)

            # The same agent (token, devices file) started again, as a supervisor would restart it.
            agent.step_seconds = 0.05
            agent.start()
            done = _wait_status(client, run_id, {"passed", "failed", "cancelled"}, timeout=30)
            assert done["status"] == "passed" and done["attempt"] == 2, done
            report = client.get(f"/v1/jobs/{run_id}/report").json()
            assert [a["outcome"] for a in report["attempts"]] == ["lost", "passed"], report["attempts"]
            assert [a["number"] for a in report["attempts"]] == [1, 2]
            assert [s["status"] for s in report["steps"]] == ["passed"] * 20  # attempt 2's, in full
        assert "Traceback" not in server.output(), server.output()


# ---------------------------------------------------------------------- 2. a server stopped, restarted


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_runs_queued_before_a_server_restart_all_pass_after_it(backend: str, stop: str, tmp_path: Path) -> None:
    with serve_env(backend, tmp_path, embedded_agent="false", **HIGH_LIMITS) as (env, url), processes() as procs:
        first = procs.serve(env, tmp_path / "first.log")
        key = _first_key(first)
        with _api(first, key) as client:
            app = _ios_app(client)
            case = _test_case(client, "Login", _long_flow(4))
            jobs = [
                {"test_case_id": case, "app_file_id": app, "device": IPHONE_14_PRO if n % 2 else IPHONE_15}
                for n in range(20)
            ]
            response = client.post("/v1/test-cases/run", json={"jobs": jobs})
            assert response.status_code == 200, response.text
            run_ids = [j["id"] for j in response.json()["jobs"]]
            listed = client.get("/v1/jobs/list", params={"ids": ",".join(run_ids)}).json()["test_runs"]
            assert sorted(r["id"] for r in listed) == sorted(run_ids)
            assert {(r["status"], r["attempt"]) for r in listed} == {("queued", 0)}

        if stop == "SIGTERM":
            first.stop()  # graceful: uvicorn finishes, then re-raises the signal (SIGKILL after 15 s)
            assert first.proc.returncode in (0, -signal.SIGTERM), (first.proc.returncode, first.output())
        else:
            first.kill()
            assert first.proc.returncode == -signal.SIGKILL

        second = procs.serve(
            {**env, "QUALGENT_EMBEDDED_AGENT": "true", "QUALGENT_SIMULATOR_STEP_SECONDS": "0"},
            tmp_path / "second.log",
        )
        assert "First start" not in second.output() and key not in second.output()
        with _api(second, key) as client:

            def finished() -> list[dict[str, Any]] | None:
                body = client.get("/v1/jobs/list", params={"ids": ",".join(run_ids)}).json()
                runs: list[dict[str, Any]] = body["test_runs"]
                return runs if all(r["status"] in TERMINAL for r in runs) else None

            runs = _wait("every run to finish after the restart", finished, timeout=60, interval=0.2)
        assert len(runs) == 20
        assert Counter((r["status"], r["attempt"]) for r in runs) == {("passed", 1): 20}, runs
        with _db(url) as db:
            attempts = db.run(lambda s: _attempts(s, run_ids))
        assert {run_id: attempts[run_id] for run_id in run_ids} == {run_id: [(1, "passed")] for run_id in run_ids}
        for server in (first, second):
            assert "Traceback" not in server.output(), server.output()


# ---------------------------------------------------------------- waiting devices that cannot help


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_devices_that_cannot_take_the_queued_runs_wait_without_spinning_the_server(tmp_path: Path) -> None:
    """Runs are queued for a busy device; eight other devices wait. Wake-ups that none of them can use
    must not keep them claiming (a wake-up passed from waiter to waiter went round without end)."""
    with serve_env("sqlite", tmp_path, embedded_agent="false", **FAST_LEASES, **HIGH_LIMITS) as (env, url):
        with processes() as procs:
            server = procs.serve(env, tmp_path / "serve.log")
            with _db(url) as reader:
                _agent, token = reader.db.run(
                    functools.partial(create_agent, name="mixed devices", organization_id=None)
                )
            devices = [*IOS_DEVICES, ("Pixel 7", "Android", "14.0")]
            devices_file = write_devices_file(tmp_path / "devices.yaml", devices, copies=[1, 4, 4])
            with _api(server, _first_key(server)) as client:
                app = _ios_app(client)
                case = _test_case(client, "Long login", _long_flow(30))
                job = {"test_case_id": case, "app_file_id": app, "device": IPHONE_14_PRO}
                procs.agent(server.url, token, devices_file, tmp_path / "agent", step_seconds=0.2).start()
                [first] = [j["id"] for j in client.post("/v1/test-cases/run", json={"jobs": [job]}).json()["jobs"]]
                _wait_status(client, first, {"running"}, timeout=30)
                # Five more for the busy iPhone: five wake-ups that the eight waiting devices cannot use.
                assert client.post("/v1/test-cases/run", json={"jobs": [job] * 5}).status_code == 200
                time.sleep(0.5)
                before = _cpu_seconds(server.proc.pid)
                time.sleep(3)
                used = _cpu_seconds(server.proc.pid) - before
                assert _status(client, first)["status"] == "running"  # the window was all waiting
        assert used < 1.0, f"the server used {used:.2f} s of CPU in 3 s while nothing could be claimed"


# ------------------------------------------------------------------------------------------- 3. soak

SOAK_RUNS = {"A": 700, "B": 320}  # runs per organisation, queued by run-all over BATCH test cases
CAPS = {"A": 8, "B": 3}
BATCH = 20
AGENTS = 4
KILLS = 12  # SIGKILLs, at random points between 2 % and 85 % of the runs done
DEVICE_COPIES = 2  # of each iOS device, per agent: 4 agents x 4 devices = 16 > 8 + 3
SOAK_STEPS = 8  # at 0.01-0.02 s each: runs last long enough for the caps to bind
PASSING_FLOWS = [_long_flow(SOAK_STEPS), "- launchApp\n" + "- assertNotVisible: Error\n" * (SOAK_STEPS - 1)]


class Sampler:
    """Polls an organisation's running runs (one statement each time) in a thread of its own."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self.seen: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, headers={"X-Api-Key": self.key}, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.get("/v1/jobs/list", params={"status": "running", "limit": 1000})
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                if response.status_code != 200:
                    self.errors.append(f"{response.status_code} {response.text[:200]}")
                    continue
                self.seen.append(len(response.json()["test_runs"]))
                self._stop.wait(0.1)


async def _soak_snapshot(
    session: AsyncSession, orgs: list[str]
) -> tuple[Counter[str], list[tuple[int, int]], dict[str, datetime]]:
    """Runs per status; per organisation, its running_runs counter and its runs running, read in one
    statement (one snapshot, in which the two must agree); per agent running runs, when it claimed
    the last of them."""
    rows = await session.execute(
        select(TestRun.status, func.count()).where(TestRun.organization_id.in_(orgs)).group_by(TestRun.status)
    )
    running = (
        select(func.count())
        .where(TestRun.organization_id == Organization.id, TestRun.status == "running")
        .scalar_subquery()
    )
    pairs = await session.execute(
        select(Organization.running_runs, running).where(Organization.id.in_(orgs)).order_by(Organization.id)
    )
    executing = await session.execute(
        select(TestRun.agent_id, func.max(TestRun.started_at))
        .where(TestRun.organization_id.in_(orgs), TestRun.status == "running")
        .group_by(TestRun.agent_id)
    )
    return (
        Counter({status: int(n) for status, n in rows}),
        [(int(a), int(b)) for a, b in pairs],
        {agent_id: claimed for agent_id, claimed in executing if agent_id and claimed},
    )


async def _final_state(session: AsyncSession, orgs: list[str]) -> Any:
    runs = (
        await session.execute(
            select(TestRun.id, TestRun.status, TestRun.attempt, TestRun.max_attempts, TestRun.failure_kind).where(
                TestRun.organization_id.in_(orgs)
            )
        )
    ).all()
    attempts = await _attempts(session, [r[0] for r in runs])
    # Steps that passed in each run's last attempt.
    steps = dict(
        (
            await session.execute(
                select(RunStep.run_id, func.count())
                .join(TestRun, (TestRun.id == RunStep.run_id) & (TestRun.attempt == RunStep.attempt))
                .where(TestRun.organization_id.in_(orgs), RunStep.status == "passed")
                .group_by(RunStep.run_id)
            )
        ).all()
    )
    busy = await session.scalar(select(func.count()).where(Device.current_run_id.is_not(None)))
    running = dict((await session.execute(select(Organization.id, Organization.running_runs))).all())
    return runs, attempts, steps, busy, running


def test_soak_agents_killed_at_random_never_break_the_cap_lose_or_repeat_a_run(backend: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("QUALGENT_SOAK_SEED", str(time.time_ns() % 1_000_000)))
    rng = random.Random(seed)
    settings = {**FAST_LEASES, "heartbeat_seconds": "0.4", "max_attempts": "10", **HIGH_LIMITS}
    with (
        serve_env(backend, tmp_path, embedded_agent="false", **settings) as (env, url),
        processes() as procs,
        contextlib.ExitStack() as stack,
    ):
        server = procs.serve(env, tmp_path / "serve.log")
        db = Database(url)
        stack.callback(db.close)
        reader = DbReader(url)
        stack.callback(reader.close)

        tenants: dict[str, Tenant] = {}
        apps: dict[str, str] = {}
        for name, cap in CAPS.items():
            tenant = tenants[name] = make_tenant(db, server.url, name=f"Soak {name}")
            stack.callback(tenant.client.close)
            db.run(functools.partial(set_parallel_runs, organization_id=tenant.organization_id, cap=cap))
            apps[name] = _ios_app(tenant.client)
            for n in range(BATCH):  # run-all queues one run per active test case
                _test_case(tenant.client, f"Soak case {n}", PASSING_FLOWS[n % len(PASSING_FLOWS)])
        orgs = [t.organization_id for t in tenants.values()]

        batches = [name for name, runs in SOAK_RUNS.items() for _ in range(runs // BATCH)]
        total = len(batches) * BATCH
        rng.shuffle(batches)
        queued: list[str] = []

        def queue_batch() -> None:
            name = batches.pop()
            body = {
                "app_file_id": apps[name],
                "device": rng.choice([IPHONE_14_PRO, IPHONE_15]),
                "priority": rng.choice(["low", "medium", "high"]),
            }
            response = tenants[name].client.post("/v1/test-cases/run-all", json=body)
            assert response.status_code == 200, response.text
            ids = [j["id"] for j in response.json()["jobs"]]
            assert len(ids) == BATCH
            queued.extend(ids)

        for _ in range(len(batches) // 3):
            queue_batch()
        samplers = {name: Sampler(server.url, t.key).start() for name, t in tenants.items()}
        for sampler in samplers.values():
            stack.callback(sampler.stop)

        devices = write_devices_file(tmp_path / "devices.yaml", IOS_DEVICES, copies=DEVICE_COPIES)
        made = [
            db.run(functools.partial(create_agent, name=f"soak agent {n}", organization_id=None)) for n in range(AGENTS)
        ]
        agent_ids = [agent.id for agent, _token in made]
        agents = [
            procs.agent(server.url, token, devices, tmp_path / f"agent-{n}") for n, (_agent, token) in enumerate(made)
        ]
        restart_at = {n: 0.0 for n in range(AGENTS)}
        snapshots: list[list[tuple[int, int]]] = []
        kill_points = sorted(rng.sample(range(total // 50, total * 85 // 100), KILLS))
        started = time.monotonic()
        deadline = started + 200
        while True:
            now = time.monotonic()
            counts, pairs, executing = reader.run(lambda s: _soak_snapshot(s, orgs))
            snapshots.append(pairs)
            done = sum(counts[s] for s in TERMINAL)
            if not batches and done == total:
                break
            assert server.proc.poll() is None, f"the server exited ({server.proc.returncode}): {server.output()}"
            assert now < deadline, f"soak (seed {seed}) not done: {dict(counts)}, {len(batches)} batches left"
            # Chaos at random points of the progress (not of the clock: a slow machine gets no more of
            # it): SIGKILL one of the agents executing runs at this moment, chosen at random. (A run
            # claimed before the agent's restart is its killed predecessor's, waiting for its lease.)
            if kill_points and done >= kill_points[0]:
                victims = [
                    n
                    for n, agent in enumerate(agents)
                    if agent.running
                    and agent.started_at
                    and executing.get(agent_ids[n], agent.started_at) > agent.started_at
                ]
                if victims:
                    n = rng.choice(victims)
                    agents[n].kill()
                    kill_points.pop(0)
                    restart_at[n] = now + rng.uniform(0.2, 1.0)
            if batches and counts["queued"] < 300:
                queue_batch()
            for n, agent in enumerate(agents):  # restart what was killed, as a supervisor would
                if not agent.running and now >= restart_at[n]:
                    agent.step_seconds = rng.choice([0.01, 0.02])
                    agent.start()
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        for agent in agents:
            agent.kill()
        for sampler in samplers.values():
            sampler.stop()
        runs, attempts, steps, busy, running = reader.run(lambda s: _final_state(s, orgs))
        # No request failed on the server (a deadlock, a locked database) and no agent crashed.
        assert "Traceback" not in server.output(), server.output()[-5000:]
        for agent in agents:
            assert "Traceback" not in agent.output(), agent.output()[-5000:]

    assert len(queued) == len(set(queued)) == total >= 1000
    # The counter the cap is enforced on always matched the runs running, and stayed under the cap.
    caps = [CAPS[name] for name in sorted(CAPS, key=lambda n: tenants[n].organization_id)]
    bad = [pairs for pairs in snapshots if any(c != r or r > cap for (c, r), cap in zip(pairs, caps, strict=True))]
    assert not bad, bad[:5]
    # The cap: never more running than allowed, and reached (so the soak did put it to the test).
    for name, sampler in samplers.items():
        assert not sampler.errors, sampler.errors[:5]
        assert sampler.seen and max(sampler.seen) <= CAPS[name], (name, Counter(sampler.seen))
        assert max(sampler.seen) == CAPS[name], (name, Counter(sampler.seen))

    assert sorted(r[0] for r in runs) == sorted(queued)
    statuses = Counter(r[1] for r in runs)
    problems: list[tuple[Any, ...]] = []
    lost = 0
    for run_id, status, attempt, max_attempts, failure_kind in runs:
        history = attempts[run_id]
        outcomes = [outcome for _, outcome in history]
        lost += outcomes.count("lost")
        if [number for number, _ in history] != list(range(1, attempt + 1)):
            problems.append((run_id, "attempts not numbered 1..attempt", attempt, history))
        if outcomes.count("passed") > 1:
            problems.append((run_id, "passed twice", history))
        if status == "passed":
            if outcomes[-1:] != ["passed"] or set(outcomes[:-1]) - {"lost"}:
                problems.append((run_id, "passed, but its attempts say otherwise", history))
            if steps.get(run_id) != SOAK_STEPS:
                problems.append((run_id, "passed without running its steps", steps.get(run_id)))
        elif status == "failed":
            # Allowed only when every attempt was lost (its agents killed max_attempts times).
            if failure_kind != "infrastructure" or attempt != max_attempts or set(outcomes) != {"lost"}:
                problems.append((run_id, "failed", failure_kind, history))
        else:
            problems.append((run_id, f"ended {status}", history))
    assert not problems, (f"seed {seed}", statuses, problems[:10])
    assert statuses["passed"] + statuses["failed"] == total and statuses["passed"] >= total - 5, statuses
    assert busy == 0, "devices still marked busy"
    assert [running[org] for org in orgs] == [0, 0], running
    # Every kill happened, and kills landed on running runs: their attempts were lost, then retried.
    # (Not every kill need lose a run: one whose finish is already on its way has passed.)
    assert not kill_points and lost >= KILLS // 2, (kill_points, lost)
    running_seen = {name: sorted(Counter(sampler.seen).items()) for name, sampler in samplers.items()}
    print(f"\nsoak {backend} (seed {seed}): {total} runs in {elapsed:.1f} s, {KILLS} kills, {lost} lost attempts")
    print(f"runs running when sampled (count, times): {running_seen}")
