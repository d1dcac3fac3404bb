"""Jobs API latency and throughput with 100,000 runs of one organisation, on SQLite and PostgreSQL.

For each backend: seed 100,000 runs, start `qualgent serve` and, in the same run, a bare FastAPI route
returning a constant JSON body (the baseline). Then, over real HTTP on loopback:
- p50/p99 latency of GET /v1/jobs/status/{id} (random IDs) and of one page (100) of GET /v1/jobs/list,
  measured with sequential requests on one keep-alive connection;
- requests per second of the status route and of the bare route with wrk (8 connections, 1 thread),
  alternating, three rounds of 3 s each, medians.
Targets (issue 2): status p50 <= 5 ms, list page p50 <= 20 ms, status rps >= 40% of bare rps.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert
from tests.fixtures.servers import free_port, postgres_database

from bench.measure import cpu_seconds
from qualgent.db.dialect import writer
from qualgent.db.migrations import upgrade
from qualgent.db.models import AppFile, TestCase, TestRun
from qualgent.db.session import make_engine, make_sessionmaker, transaction
from qualgent.devices.repository import TargetRepository
from qualgent.devices.selectors import pinned
from qualgent.ids import new_id
from qualgent.organisations import service as admin

RUNS = int(os.environ.get("BENCH_RUNS", "100000"))
ROOT = Path(__file__).resolve().parent.parent
WRK_ROUNDS = 3
WRK_SECONDS = 3


async def seed(url: str) -> tuple[str, list[str]]:
    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(writer(engine))
    async with transaction(sessions) as s:
        org = await admin.create_organization(s, "Bench org")
        user = await admin.create_user(s, org.id, "Bench", "bench@example.com")
        key = await admin.create_key(s, user.id, rate_limit=1_000_000)
        app = AppFile(
            id=new_id("file"),
            organization_id=org.id,
            user_id=user.id,
            app_name="MyApp",
            version="1.0.0",
            os="android",
            original_name="app.apk",
            filename="x.apk",
            storage_key="x",
            file_path="x",
            file_size=1,
            file_type="application/vnd.android.package-archive",
            sha256="0" * 64,
            package_metadata={},
        )
        s.add(app)
        cases = [
            TestCase(
                id=new_id("tc"), organization_id=org.id, name=f"Test {i}", description="", status="active", flow=""
            )
            for i in range(100)
        ]
        s.add_all(cases)
        await s.flush()
        pixel = pinned("Pixel 7", "Android", "14.0")
        await TargetRepository(s).ensure([pixel])
    run_ids: list[str] = []
    now = datetime.now(UTC)
    start = now - timedelta(days=30)
    statuses = ["passed"] * 6 + ["failed"] * 2 + ["queued", "running"]
    batch: list[dict[str, object]] = []
    for i in range(RUNS):
        run_id = new_id("run")
        run_ids.append(run_id)
        status = statuses[i % len(statuses)]
        # Finished runs spread over a month; queued and running ones are recent and leased, as on a
        # live server, so the reaper has nothing to time out while we measure.
        at = start + timedelta(seconds=i * 25) if status in ("passed", "failed") else now
        batch.append(
            {
                "id": run_id,
                "organization_id": org.id,
                "test_case_id": cases[i % 100].id,
                "app_id": app.id,
                "user_id": user.id,
                "api_key_id": key.id,
                "device_name": "Pixel 7",
                "device_platform": "Android",
                "device_os_version": "14.0",
                "device_orientation": "portrait",
                "target_id": pixel.key,
                "status": status,
                "priority": "medium",
                "priority_rank": 1,
                "progress": 100 if status in ("passed", "failed") else 0,
                "attempt": 1,
                "max_attempts": 3,
                "cancel_requested": False,
                "queued_at": at,
                "started_at": at,
                "finished_at": at if status in ("passed", "failed") else None,
                "lease_expires_at": now + timedelta(days=1) if status == "running" else None,
                "created_at": at,
                "updated_at": at,
            }
        )
        if len(batch) == 5000:
            async with transaction(sessions) as s:
                await s.execute(insert(TestRun), batch)
            batch = []
    if batch:
        async with transaction(sessions) as s:
            await s.execute(insert(TestRun), batch)
    # A live database has its statistics and visibility map up to date; right after a bulk load
    # autovacuum would be catching up during the measurement instead.
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("ANALYZE" if engine.dialect.name == "sqlite" else "VACUUM ANALYZE")
    await engine.dispose()
    return key.secret, run_ids


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], health_path: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "server exited")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", health_path)
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def latencies(port: int, paths: list[str], headers: dict[str, str], warmup: int = 100) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    out = []
    for i, path in enumerate(paths):
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - t0
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
        if i >= warmup:
            out.append(elapsed * 1000)
    conn.close()
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def wrk_rps(url: str, headers: dict[str, str], pid: int, seconds: int = 5) -> tuple[float, float] | None:
    """Requests per second, and the server's CPU microseconds per request (which other load on the
    machine moves much less than the rate)."""
    if shutil.which("wrk") is None:
        return None
    args = ["wrk", "-t1", "-c8", f"-d{seconds}s"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    cpu0 = cpu_seconds(pid)
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu0
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    if not match or not count:
        return None
    return float(match.group(1)), cpu * 1e6 / int(count.group(1))


def bench_backend(name: str, url: str, data_dir: Path) -> dict[str, float | None]:
    upgrade(url)
    t0 = time.perf_counter()
    key, run_ids = asyncio.run(seed(url))
    print(f"[{name}] seeded {len(run_ids)} runs in {time.perf_counter() - t0:.1f} s", flush=True)

    env = {k: v for k, v in os.environ.items() if not k.startswith("QUALGENT_")}
    env.update(
        {
            "QUALGENT_DATABASE_URL": url,
            "QUALGENT_DATA_DIR": str(data_dir),
            "QUALGENT_DEFAULT_RATE_LIMIT": "1000000",
            # No device agent: the seeded queued runs must stay as they are while we measure.
            "QUALGENT_EMBEDDED_AGENT": "false",
        }
    )
    port, bare_port = free_port(), free_port()
    headers = {"X-Api-Key": key}
    rng = random.Random(7)
    results: dict[str, float | None] = {}
    serve = [sys.executable, "-m", "qualgent", "serve", "--port", str(port), "--log-level", "warning", "--no-migrate"]
    bare = [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(bare_port), "--log-level", "warning"]
    with process(serve, env, "/healthz", port) as server, process(bare, env, "/bare", bare_port) as bare_server:
        status_paths = [f"/v1/jobs/status/{rng.choice(run_ids)}" for _ in range(2100)]
        status = latencies(port, status_paths, headers)
        # First pages and deep pages (cursor somewhere in the middle of the 100,000).
        list_paths = ["/v1/jobs/list"] * 250 + [f"/v1/jobs/list?cursor={rng.choice(run_ids)}" for _ in range(350)]
        listing = latencies(port, list_paths, headers)
        bare_lat = latencies(bare_port, ["/bare"] * 2100, {})
        results.update(
            status_p50=statistics.median(status),
            status_p99=pct(status, 0.99),
            list_p50=statistics.median(listing),
            list_p99=pct(listing, 0.99),
            bare_p50=statistics.median(bare_lat),
            bare_p99=pct(bare_lat, 0.99),
        )
        status_url = f"http://127.0.0.1:{port}/v1/jobs/status/{run_ids[len(run_ids) // 2]}"
        # Alternate the two, several rounds, and take each one's median: the machine's speed drifts
        # (other load, clock changes), and alternating shares the drift between them.
        rounds: list[tuple[tuple[float, float], tuple[float, float]]] = []
        for _ in range(WRK_ROUNDS):
            status_round = wrk_rps(status_url, headers, server.pid, WRK_SECONDS)
            bare_round = wrk_rps(f"http://127.0.0.1:{bare_port}/bare", {}, bare_server.pid, WRK_SECONDS)
            if status_round is None or bare_round is None:
                break
            rounds.append((status_round, bare_round))
        if rounds:
            results["status_rps"] = statistics.median(r[0][0] for r in rounds)
            results["status_cpu_us"] = statistics.median(r[0][1] for r in rounds)
            results["bare_rps"] = statistics.median(r[1][0] for r in rounds)
            results["bare_cpu_us"] = statistics.median(r[1][1] for r in rounds)
    return results


def report(name: str, r: dict[str, float | None]) -> None:
    print(f"\n== {name}: {RUNS} runs in the database ==")
    print(
        f"  GET /v1/jobs/status/{{id}}   p50 {r['status_p50']:.2f} ms   p99 {r['status_p99']:.2f} ms   (target p50 <= 5 ms)"
    )
    print(
        f"  GET /v1/jobs/list (100)     p50 {r['list_p50']:.2f} ms   p99 {r['list_p99']:.2f} ms   (target p50 <= 20 ms)"
    )
    print(f"  bare FastAPI route          p50 {r['bare_p50']:.2f} ms   p99 {r['bare_p99']:.2f} ms")
    if r.get("status_rps") and r.get("bare_rps"):
        ratio = r["status_rps"] / r["bare_rps"]  # type: ignore[operator]
        print(
            f"  throughput (wrk, 8 conns, median of {WRK_ROUNDS})   status {r['status_rps']:.0f} req/s, bare {r['bare_rps']:.0f} req/s"
            f"  -> {ratio:.0%} of bare (target >= 40%)"
        )
        print(
            f"  server CPU per request      status {r['status_cpu_us']:.0f} us, bare {r['bare_cpu_us']:.0f} us"
            f"  -> bare/status {r['bare_cpu_us'] / r['status_cpu_us']:.0%}"  # type: ignore[operator]
        )
    else:
        print("  throughput: wrk not installed (apt-get install wrk); skipped")
    print(json.dumps({name: r}), flush=True)


def main() -> None:
    backends = os.environ.get("BENCH_BACKENDS", "sqlite,postgresql").split(",")
    for name in backends:
        with tempfile.TemporaryDirectory(prefix=f"qg-bench-{name}-") as tmp, contextlib.ExitStack() as stack:
            data_dir = Path(tmp)
            if name == "sqlite":
                url = f"sqlite+aiosqlite:///{data_dir / 'qualgent.db'}"
            else:
                url = stack.enter_context(postgres_database())
            report(name, bench_backend(name, url, data_dir))


if __name__ == "__main__":
    main()
