"""Execution engine figures, on SQLite and PostgreSQL, over real HTTP with real processes.

- accept: time for `POST /v1/test-cases/run-all` over 1,000 active test cases (target <= 1 s);
- throughput: finished runs per second end to end, 50 simulated devices (one `qualgent agent`
  process), flows of instant steps (target >= 100/s);
- latency: queued -> running when a device is free, from the runs' own timestamps (target p50 <= 50 ms).
The server is `qualgent serve` (one process, embedded agent off); the agent is `qualgent agent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import yaml
from sqlalchemy import insert
from tests.fixtures.factories import ipa_bytes
from tests.fixtures.servers import free_port, postgres_database

from bench.measure import cpu_seconds
from qualgent.agents.service import create_agent
from qualgent.db.dialect import writer
from qualgent.db.migrations import upgrade
from qualgent.db.models import TestCase
from qualgent.db.session import make_engine, make_sessionmaker, transaction
from qualgent.ids import new_id
from qualgent.organisations import service as admin

ROOT = Path(__file__).resolve().parent.parent
CASES = 1000
DEVICES = 50
THROUGHPUT_RUNS = int(os.environ.get("BENCH_ENGINE_RUNS", "2000"))
LATENCY_RUNS = 200
IPHONE = {"name": "iPhone 14 Pro", "platform": "iOS", "os_version": "16.0"}


async def seed(url: str) -> tuple[str, str, str]:
    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(writer(engine))
    async with transaction(sessions) as s:
        org = await admin.create_organization(s, "Bench org", max_parallel_runs=DEVICES)
        user = await admin.create_user(s, org.id, "Bench", "bench@example.com")
        key = await admin.create_key(s, user.id, rate_limit=1_000_000)
        _agent, token = await create_agent(s, "bench agent", organization_id=None)
        rows = [
            {
                "id": new_id("tc"),
                "organization_id": org.id,
                "name": f"Test {i}",
                "description": "",
                "status": "active",
                "flow": "appId: com.example.app\n---\n- launchApp\n- tapOn: Sign in\n- back\n",
            }
            for i in range(CASES)
        ]
        await s.execute(insert(TestCase), rows)
    await engine.dispose()
    return key.secret, token, org.id


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("server did not start")


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def bench_backend(name: str, url: str, tmp: Path) -> dict[str, float]:
    upgrade(url)
    key, token, _org = asyncio.run(seed(url))
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
    devices = {"devices": [{**IPHONE, "id": f"sim-{n}", "device_type": "phone"} for n in range(DEVICES)]}
    devices_file = tmp / "devices.yaml"
    devices_file.write_text(yaml.safe_dump(devices))
    serve = [sys.executable, "-m", "qualgent", "serve", "--port", str(port), "--log-level", "warning", "--no-migrate"]
    agent = [
        sys.executable,
        "-m",
        "qualgent",
        "agent",
        "--server",
        base,
        "--token",
        token,
        "--devices",
        str(devices_file),
        "--cache-dir",
        str(tmp / "cache"),
        "--step-seconds",
        "0",
    ]
    results: dict[str, float] = {}
    headers = {"X-Api-Key": key}
    with process(serve, env, tmp / "serve.log") as server_proc:
        wait_healthy(base)
        client = httpx.Client(base_url=base, headers=headers, timeout=60)
        app = client.post(
            "/v1/apps/upload",
            files={"file": ("Example.ipa", ipa_bytes(texts={"L": "Sign in"}))},
            data={"app_name": "Example", "version": "1"},
        ).json()["file"]["id"]

        # 1. Accepting a run-all of 1,000 test cases (no agent yet: nothing starts meanwhile).
        accept = []
        for _ in range(3):
            t0 = time.perf_counter()
            response = client.post("/v1/test-cases/run-all", json={"app_file_id": app, "device": IPHONE})
            accept.append(time.perf_counter() - t0)
            assert response.status_code == 200 and len(response.json()["jobs"]) == CASES, response.text[:300]
        results["accept_1000_s"] = statistics.median(accept)
        queued = 3 * CASES

        # 2. Throughput: the agent's 50 devices drain the queue (extra runs queued up to THROUGHPUT_RUNS).
        extra = max(0, THROUGHPUT_RUNS - queued)
        jobs = [{"test_case_id": None, "app_file_id": app, "device": IPHONE}]
        cases = [c["id"] for c in client.get("/v1/test-cases/list", params={"limit": 1000}).json()]
        for start in range(0, extra, 500):
            batch = [{**jobs[0], "test_case_id": cases[i % len(cases)]} for i in range(start, min(extra, start + 500))]
            assert client.post("/v1/test-cases/run", json={"jobs": batch}).status_code == 200
        total = queued + extra
        with process(agent, env, tmp / "agent.log") as agent_proc:
            server_cpu0 = cpu_seconds(server_proc.pid)
            t0 = time.perf_counter()
            while True:
                queued_left = _runs(client, "queued", tmp)
                running = _runs(client, "running", tmp)
                if not queued_left and not running:
                    break
                if os.environ.get("BENCH_VERBOSE"):
                    print(
                        f"  {time.perf_counter() - t0:6.1f} s  queued={len(queued_left)} running={len(running)}",
                        flush=True,
                    )
                if time.perf_counter() - t0 > 600:
                    raise RuntimeError("runs did not finish in 10 minutes")
                time.sleep(0.2)
            elapsed = time.perf_counter() - t0
            server_cpu = cpu_seconds(server_proc.pid) - server_cpu0
            agent_cpu = cpu_seconds(agent_proc.pid)
            failed = client.get("/v1/jobs/list", params={"status": "failed", "limit": 1}).json()["test_runs"]
            assert not failed, failed
            # Rate from the runs' own timestamps: first start to last finish.
            starts, finishes = [], []
            cursor = None
            while True:
                params: dict[str, str | int] = {"limit": 1000, "status": "passed"}
                if cursor:
                    params["cursor"] = cursor
                page = client.get("/v1/jobs/list", params=params)
                runs = page.json()["test_runs"]
                starts += [parse_time(r["started_at"]) for r in runs]
                finishes += [parse_time(r["finished_at"]) for r in runs]
                link = page.headers.get("link")
                if not link:
                    break
                cursor = link.split("cursor=")[1].split(">")[0].split("&")[0]
            results["runs_finished"] = len(finishes)
            results["throughput_runs_per_s"] = len(finishes) / (max(finishes) - min(starts))
            results["wall_clock_s"] = elapsed
            results["server_cpu_ms_per_run"] = server_cpu * 1000 / total
            results["agent_cpu_ms_per_run"] = agent_cpu * 1000 / total
            assert len(finishes) == total, (len(finishes), total)

            # 3. Latency queued -> running with free devices: one run at a time.
            latencies = []
            for i in range(LATENCY_RUNS):
                run_id = client.post(
                    "/v1/test-cases/run", json={"jobs": [{**jobs[0], "test_case_id": cases[i]}]}
                ).json()["jobs"][0]["id"]
                while True:
                    body = client.get(f"/v1/jobs/status/{run_id}").json()
                    if body["status"] in ("passed", "failed"):
                        break
                    time.sleep(0.01)
                latencies.append((parse_time(body["started_at"]) - parse_time(body["created_at"])) * 1000)
            results["latency_p50_ms"] = statistics.median(latencies)
            results["latency_p99_ms"] = sorted(latencies)[int(len(latencies) * 0.99) - 1]
        client.close()
    return results


def _runs(client: httpx.Client, status: str, tmp: Path) -> list[dict[str, object]]:
    # One row is enough to tell whether any are left; a page of 1,000 every 0.2 s would load the server
    # being measured.
    response = client.get("/v1/jobs/list", params={"status": status, "limit": 1})
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code} {response.text}\n{(tmp / 'serve.log').read_text()[-3000:]}")
    runs: list[dict[str, object]] = response.json()["test_runs"]
    return runs


def report(name: str, r: dict[str, float]) -> None:
    print(f"\n== {name}: execution engine ==")
    print(f"  accept run-all of {CASES} test cases   {r['accept_1000_s'] * 1000:.0f} ms   (target <= 1000 ms)")
    print(
        f"  throughput, {DEVICES} simulated devices   {r['throughput_runs_per_s']:.0f} runs/s "
        f"({r['runs_finished']:.0f} runs, {r['wall_clock_s']:.1f} s wall clock)   (target >= 100/s)"
    )
    print(
        f"  CPU per run: server {r['server_cpu_ms_per_run']:.1f} ms, agent {r['agent_cpu_ms_per_run']:.1f} ms "
        f"(server CPU bounds throughput at {1000 / r['server_cpu_ms_per_run']:.0f} runs/s on one core)"
    )
    print(
        f"  queued -> running, device free        p50 {r['latency_p50_ms']:.1f} ms   p99 {r['latency_p99_ms']:.1f} ms   (target p50 <= 50 ms)"
    )
    print(json.dumps({name: r}), flush=True)


def main() -> None:
    for name in os.environ.get("BENCH_BACKENDS", "sqlite,postgresql").split(","):
        with tempfile.TemporaryDirectory(prefix=f"qg-engine-{name}-") as tmp, contextlib.ExitStack() as stack:
            path = Path(tmp)
            url = (
                f"sqlite+aiosqlite:///{path / 'qualgent.db'}"
                if name == "sqlite"
                else stack.enter_context(postgres_database())
            )
            report(name, bench_backend(name, url, path))


if __name__ == "__main__":
    main()
