"""A suite's wall time on a device farm: longest first (run-all) against arrival order, on SQLite and
PostgreSQL, over real HTTP.

200 test cases whose runs take skewed times (log-normal: most are short, a few are long), each with five
passed runs of history seeded, so that run-all knows what to expect; 10 simulated Android devices, one
agent. The same suite runs twice:
- `POST /v1/test-cases/run-all` with a device selector: each test case once on any free device,
  queued longest expected first;
- `POST /v1/test-cases/run` with the 200 jobs in the test cases' order (arrival order).
Wall time is the first run's start to the last run's end (the runs' own timestamps); its lower bound is
max(longest run, total run time / devices), from the same runs' measured durations.

The server is `qualgent serve` (embedded agent off); the agent runs in this process with a bench-only
simulator whose sessions take each flow's own duration (`TimedSimulator`), so the test suite's
simulator stays as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, text
from tests.fixtures.factories import apk_bytes
from tests.fixtures.servers import free_port, postgres_database

from bench.engine import process, wait_healthy
from qualgent.agent.loop import Agent
from qualgent.agents.service import create_agent
from qualgent.db.dialect import writer
from qualgent.db.migrations import upgrade
from qualgent.db.models import TestCase, TestRun
from qualgent.db.session import make_engine, make_sessionmaker, transaction
from qualgent.devices.repository import TargetRepository
from qualgent.devices.selectors import selector
from qualgent.drivers.base import AppUnderTest, DeviceConfig
from qualgent.drivers.simulator import SimulatorDriver, SimulatorSession
from qualgent.flows.model import Flow
from qualgent.ids import new_id
from qualgent.organisations import service as admin

CASES = int(os.environ.get("BENCH_SUITE_CASES", "200"))
DEVICES = 10
HISTORY = 5  # passed runs seeded per test case
MEAN_SECONDS = float(os.environ.get("BENCH_SUITE_MEAN_SECONDS", "0.75"))
TAG = "bench-farm"


def durations(n: int, mean: float, seed: int = 7) -> list[float]:
    """Skewed run times: log-normal (sigma 1.3) scaled to ``mean``; most short, a few long (the longest
    near total / devices, so that a long run started late shows)."""
    rng = random.Random(seed)
    raw = [rng.lognormvariate(0, 1.3) for _ in range(n)]
    scale = mean / statistics.fmean(raw)
    return [round(x * scale, 3) for x in raw]


def flow(i: int) -> str:
    return f"appId: com.example.app\nname: bench-{i:03d}\n---\n- launchApp\n- back\n- back\n"


@dataclass
class TimedSimulator(SimulatorDriver):
    """The simulator, with each flow (by its name) taking its own time, spread over its steps."""

    seconds: dict[str, float] = field(default_factory=dict)

    async def open(self, device: DeviceConfig, app: AppUnderTest, flow: Flow) -> SimulatorSession:
        session = await super().open(device, app, flow)
        session.step_seconds = self.seconds.get(flow.name or "", 0.0) / max(1, len(flow.steps))
        return session


async def seed(url: str, seconds: list[float]) -> tuple[str, str, list[str]]:
    """An organisation (cap = devices), 200 test cases, and each one's passed runs with jitter."""
    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(writer(engine))
    async with transaction(sessions) as s:
        org = await admin.create_organization(s, "Suite org", max_parallel_runs=DEVICES)
        user = await admin.create_user(s, org.id, "Bench", "bench@example.com")
        key = await admin.create_key(s, user.id, rate_limit=1_000_000)
        _agent, token = await create_agent(s, "bench agent", organization_id=None)
        case_ids = [new_id("tc") for _ in seconds]
        await s.execute(
            insert(TestCase),
            [
                {
                    "id": case_id,
                    "organization_id": org.id,
                    "name": f"bench-{i:03d}",
                    "description": "",
                    "status": "active",
                    "flow": flow(i),
                    "tags": [],
                }
                for i, case_id in enumerate(case_ids)
            ],
        )
    await engine.dispose()
    return key.secret, token, case_ids


async def seed_history(url: str, app_id: str, case_ids: list[str], seconds: list[float]) -> None:
    """Five passed runs per test case, each within ±15 % of its real time, finished yesterday."""
    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(writer(engine))
    rng = random.Random(11)
    target = selector("android", tags=[TAG])
    async with transaction(sessions) as s:
        await TargetRepository(s).ensure([target])
        first = await s.get(TestCase, case_ids[0])
        assert first is not None
        org_id = first.organization_id
        user_id = (await s.execute(text("SELECT id FROM users WHERE organization_id = :o"), {"o": org_id})).scalar_one()
        end = datetime.now(UTC) - timedelta(days=1)
        rows: list[dict[str, Any]] = []
        for case_id, took in zip(case_ids, seconds, strict=True):
            for n in range(HISTORY):
                real = took * rng.uniform(0.85, 1.15)
                finished = end - timedelta(minutes=n)
                rows.append(
                    {
                        "id": new_id("run"),
                        "organization_id": org_id,
                        "test_case_id": case_id,
                        "app_id": app_id,
                        "user_id": user_id,
                        "device_name": "Pixel 7",
                        "device_platform": "Android",
                        "device_os_version": "14.0",
                        "device_orientation": "portrait",
                        "target_id": target.key,
                        "status": "passed",
                        "priority": "medium",
                        "priority_rank": 1,
                        "progress": 100,
                        "attempt": 1,
                        "max_attempts": 3,
                        "queued_at": finished - timedelta(seconds=real + 1),
                        "started_at": finished - timedelta(seconds=real),
                        "finished_at": finished,
                        "created_at": finished,
                        "updated_at": finished,
                    }
                )
        await s.execute(insert(TestRun), rows)
    await engine.dispose()


@contextlib.contextmanager
def agent_thread(base: str, token: str, seconds: dict[str, float], cache: Path) -> Iterator[Agent]:
    devices = [
        DeviceConfig(f"farm-{n}", "Pixel 7", "Android", "14.0", "phone", "simulator", tags=(TAG,))
        for n in range(DEVICES)
    ]
    agent = Agent(base, token, devices, {"simulator": TimedSimulator(0.0, seconds=seconds)}, cache, claim_wait=5)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(agent.run(stop))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not agent.registered.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError("the agent did not register")
            time.sleep(0.05)
        yield agent
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def finished_runs(client: httpx.Client, run_ids: list[str], timeout: float = 900) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        runs: list[dict[str, Any]] = []
        for start in range(0, len(run_ids), 200):
            chunk = run_ids[start : start + 200]
            page = client.get("/v1/jobs/list", params={"ids": ",".join(chunk), "limit": len(chunk)})
            runs += page.json()["test_runs"]
        if len(runs) == len(run_ids) and all(r["status"] in ("passed", "failed", "cancelled") for r in runs):
            return runs
        if time.monotonic() > deadline:
            raise RuntimeError("the suite did not finish")
        time.sleep(0.5)


def measure(runs: list[dict[str, Any]]) -> dict[str, float]:
    failed = [r for r in runs if r["status"] != "passed"]
    assert not failed, failed[:3]
    starts = [parse_time(r["started_at"]) for r in runs]
    ends = [parse_time(r["finished_at"]) for r in runs]
    took = [e - s for s, e in zip(starts, ends, strict=True)]
    bound = max(max(took), sum(took) / DEVICES)
    wall = max(ends) - min(starts)
    return {"wall_s": wall, "bound_s": bound, "ratio": wall / bound, "longest_s": max(took), "total_s": sum(took)}


def bench_backend(name: str, url: str, tmp: Path) -> dict[str, dict[str, float]]:
    upgrade(url)
    seconds = durations(CASES, MEAN_SECONDS)
    key, token, case_ids = asyncio.run(seed(url, seconds))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUALGENT_")}
    env.update(
        QUALGENT_DATABASE_URL=url,
        QUALGENT_DATA_DIR=str(tmp / "data"),
        QUALGENT_EMBEDDED_AGENT="false",
        QUALGENT_DEFAULT_RATE_LIMIT="1000000",
        QUALGENT_PUBLIC_BASE_URL=base,
    )
    serve = [sys.executable, "-m", "qualgent", "serve", "--port", str(port), "--log-level", "warning", "--no-migrate"]
    results: dict[str, dict[str, float]] = {}
    with process(serve, env, tmp / "serve.log"):
        wait_healthy(base)
        client = httpx.Client(base_url=base, headers={"X-Api-Key": key}, timeout=60)
        app = client.post(
            "/v1/apps/upload",
            files={"file": ("app.apk", apk_bytes())},
            data={"app_name": "Bench", "version": "1"},
        ).json()["file"]["id"]
        asyncio.run(seed_history(url, app, case_ids, seconds))
        by_name = {f"bench-{i:03d}": s for i, s in enumerate(seconds)}
        wanted = {"tags": [TAG]}
        with agent_thread(base, token, by_name, tmp / "cache"):
            # Arrival order: the jobs in the test cases' order, one batch (a batch starts in the order sent).
            jobs = [{"test_case_id": c, "app_file_id": app, "device_selector": wanted} for c in case_ids]
            response = client.post("/v1/test-cases/run", json={"jobs": jobs})
            assert response.status_code == 200, response.text
            results["arrival"] = measure(finished_runs(client, [j["id"] for j in response.json()["jobs"]]))
            # Longest first: run-all over the same suite.
            response = client.post("/v1/test-cases/run-all", json={"app_file_id": app, "device_selector": wanted})
            assert response.status_code == 200, response.text
            results["longest_first"] = measure(finished_runs(client, [j["id"] for j in response.json()["jobs"]]))
        client.close()
    nominal = max(max(seconds), sum(seconds) / DEVICES)
    results["suite"] = {"nominal_bound_s": nominal, "longest_s": max(seconds), "total_s": sum(seconds)}
    return results


def report(name: str, r: dict[str, dict[str, float]]) -> None:
    suite = r["suite"]
    print(f"\n== {name}: a suite on {DEVICES} devices ==")
    print(
        f"  {CASES} test cases, {suite['total_s']:.1f} s of runs in all, the longest {suite['longest_s']:.1f} s: "
        f"lower bound {suite['nominal_bound_s']:.1f} s (from the flows' own times)"
    )
    for label, key in (("arrival order", "arrival"), ("longest first (run-all)", "longest_first")):
        m = r[key]
        print(
            f"  {label:<24} wall {m['wall_s']:6.2f} s   bound {m['bound_s']:6.2f} s   "
            f"= {m['ratio']:.3f} x the bound" + ("   (target <= 1.10)" if key == "longest_first" else "")
        )
    print(json.dumps({name: r}), flush=True)


def main() -> None:
    for name in os.environ.get("BENCH_BACKENDS", "sqlite,postgresql").split(","):
        with tempfile.TemporaryDirectory(prefix=f"qg-suites-{name}-") as tmp, contextlib.ExitStack() as stack:
            path = Path(tmp)
            url = (
                f"sqlite+aiosqlite:///{path / 'qualgent.db'}"
                if name == "sqlite"
                else stack.enter_context(postgres_database())
            )
            report(name, bench_backend(name, url, path))


if __name__ == "__main__":
    main()
