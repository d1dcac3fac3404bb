"""The live event stream: how many streams one process holds, and the delay from a run's change to its
event on them, on SQLite and PostgreSQL (`./dev bench events`).

For each backend: two `qualgent serve` processes on one database (no embedded agent). STREAMS streams
of GET /v1/jobs/events are opened on the first (raw asyncio connections from this process). Then
CHANGES runs are queued and cancelled one at a time, every GAP seconds, through the second process (the
change reaches the streams through the database, not the process's memory), then as many through the
first. Each change's delay is measured at every stream, from the moment the cancel request was sent
(an upper bound: it includes the request itself) to the moment that stream read the event. Also: the
streaming process's memory and CPU per second while the streams are only kept open (heartbeats).
Target (issue 15): >= 1,000 open streams on one process, p50 delay <= 100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from bench.measure import cpu_seconds

STREAMS = int(os.environ.get("BENCH_STREAMS", "1000"))
CHANGES = int(os.environ.get("BENCH_CHANGES", "40"))
GAP = 0.4  # seconds between changes (a queue, then a cancel half-way): two events each, 5 events a second
IDLE_SECONDS = 5.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Streams:
    """STREAMS raw SSE connections; for each (run, status) the times each stream read it."""

    def __init__(self, url: str, key: str) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.key = key
        self.arrivals: dict[tuple[str, str], list[float]] = {}
        self.open = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, n: int) -> None:
        ready = asyncio.Semaphore(100)  # open them 100 at a time

        async def one() -> None:
            async with ready:
                reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
                self.writers.append(writer)
                request = (
                    f"GET /v1/jobs/events?heartbeat=15 HTTP/1.1\r\nHost: {self.host}\r\n"
                    f"X-Api-Key: {self.key}\r\nAccept: text/event-stream\r\n\r\n"
                )
                writer.write(request.encode())
                await writer.drain()
                status = await reader.readline()
                assert b" 200 " in status, status
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                # The opening comment: subscribed.
                while b"run events" not in await reader.readline():
                    pass
                self.open += 1
            await self.read(reader)

        self.tasks = [asyncio.create_task(one()) for _ in range(n)]
        while self.open < n:
            failed = [t for t in self.tasks if t.done() and t.exception() is not None]
            if failed:
                raise RuntimeError(f"a stream failed: {failed[0].exception()!r}")
            await asyncio.sleep(0.05)

    async def read(self, reader: asyncio.StreamReader) -> None:
        # Chunked transfer encoding: SSE lines come inside chunks; the run ID and status are found in
        # the data line, whatever the framing.
        while True:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                now = time.monotonic()
                text = line.decode()
                run_id = text.split('"run_id":"', 1)[1].split('"', 1)[0]
                status = text.split('"status":"', 1)[1].split('"', 1)[0]
                self.arrivals.setdefault((run_id, status), []).append(now)

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


WORKERS = int(os.environ.get("BENCH_STREAM_WORKERS", "4"))


def _worker(url: str, key: str, n: int, conn: Connection) -> None:
    """A process holding ``n`` streams: says when they are open, then, asked, sends what arrived when.
    (Several processes: one Python process reading 1,000 sockets would add its own queueing to the delay.)"""

    async def main() -> None:
        streams = Streams(url, key)
        await streams.start(n)
        conn.send(streams.open)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)
        conn.send(streams.arrivals)
        await streams.close()

    asyncio.run(main())


async def _changes(url: str, key: str, job: dict[str, Any]) -> list[tuple[str, float, float]]:
    """CHANGES runs queued, then cancelled: (run, when the cancel was sent, how long its request took)."""
    out = []
    async with httpx.AsyncClient(base_url=url, headers={"X-Api-Key": key}, timeout=30) as client:
        for _ in range(CHANGES):
            queued = await client.post("/v1/test-cases/run", json={"jobs": [job]})
            assert queued.status_code == 200, queued.text
            run_id = queued.json()["jobs"][0]["id"]
            await asyncio.sleep(GAP / 2)
            sent = time.monotonic()
            cancelled = await client.post(f"/v1/jobs/{run_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            out.append((run_id, sent, time.monotonic() - sent))
            await asyncio.sleep(GAP / 2)
    return out


def measure(streaming_url: str, changing_urls: list[str], key: str, app: str, case: str, pid: int) -> None:
    context = multiprocessing.get_context("fork")
    pipes = []
    workers = []
    started = time.monotonic()
    for i in range(WORKERS):
        mine, theirs = context.Pipe()
        share = STREAMS // WORKERS + (1 if i < STREAMS % WORKERS else 0)
        worker = context.Process(target=_worker, args=(streaming_url, key, share, theirs), daemon=True)
        worker.start()
        pipes.append(mine)
        workers.append(worker)
    opened = sum(pipe.recv() for pipe in pipes)
    took = time.monotonic() - started
    rss = rss_mib(pid)
    cpu0 = cpu_seconds(pid)
    time.sleep(IDLE_SECONDS)
    idle_cpu = (cpu_seconds(pid) - cpu0) / IDLE_SECONDS
    print(
        f"  {opened} streams open on one process in {took:.1f} s; its RSS {rss:.0f} MiB; "
        f"CPU while they stay open: {idle_cpu * 100:.1f}% of a core"
    )
    job = {"test_case_id": case, "app_file_id": app, "device_selector": {"tags": ["bench-nobody"]}}
    rounds = []
    for label, url in zip(("through another process", "through the same process"), changing_urls, strict=True):
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        changes = asyncio.run(_changes(url, key, job))
        rounds.append((label, changes, (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)))
    time.sleep(2)  # the last events' deliveries
    arrivals: dict[tuple[str, str], list[float]] = {}
    for pipe in pipes:
        pipe.send("stop")
        for event, times in pipe.recv().items():
            arrivals.setdefault(event, []).extend(times)
    for worker in workers:
        worker.join(timeout=10)
    for label, changes, busy_cpu in rounds:
        delays: list[float] = []
        firsts, lasts, requests = [], [], []
        missing = 0
        for run_id, sent, request in changes:
            times = arrivals.get((run_id, "cancelled"), [])
            missing += opened - len(times)
            delays.extend(t - sent for t in times)
            firsts.append(min(times) - sent)
            lasts.append(max(times) - sent)
            requests.append(request)
        delays.sort()
        p50 = statistics.median(delays) * 1000
        p99 = delays[int(len(delays) * 0.99)] * 1000
        print(
            f"  {len(changes)} changes {label}: {len(delays)} deliveries ({missing} missing); delay p50 {p50:.0f} ms, "
            f"p99 {p99:.0f} ms (the cancel request itself p50 {statistics.median(requests) * 1000:.0f} ms; "
            f"first stream p50 {statistics.median(firsts) * 1000:.0f} ms, last stream p50 "
            f"{statistics.median(lasts) * 1000:.0f} ms); streaming process CPU {busy_cpu * 100:.0f}% of a core"
            f" -> {'met' if p50 <= 100 else 'MISSED'} (target p50 <= 100 ms)"
        )


def run_backend(backend: str) -> None:
    from tests.fixtures.factories import Database, create_test_case, make_tenant, upload_app
    from tests.fixtures.processes import processes, serve_env

    print(f"{backend}:")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        settings = {"embedded_agent": "false", "default_rate_limit": "100000"}
        with serve_env(backend, tmp, **settings) as (env, url), processes() as procs:
            streaming = procs.serve(env, tmp / "streaming.log")
            changing = procs.serve(env, tmp / "changing.log")
            db = Database(url)
            try:
                tenant = make_tenant(db, changing.url)
                uploaded = upload_app(tenant)
                assert uploaded.status_code == 200, uploaded.text
                case = create_test_case(tenant, name="Bench events", flow="appId: a.b\n---\n- launchApp\n")
                measure(
                    streaming.url,
                    [changing.url, streaming.url],
                    tenant.key,
                    uploaded.json()["file"]["id"],
                    case["id"],
                    streaming.proc.pid,
                )
                tenant.client.close()
            finally:
                db.close()
            for server in (streaming, changing):
                assert "Traceback" not in server.output(), server.output()


def main() -> None:
    print(f"Live event stream: {STREAMS} streams on one process, {CHANGES} run changes each way")
    backends = sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "events" else ["sqlite", "postgresql"]
    for backend in backends:
        with contextlib.suppress(KeyboardInterrupt):
            run_backend(backend)


if __name__ == "__main__":
    main()
