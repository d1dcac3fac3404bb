"""Rate limits: per key, with the documented headers; per address for failed authentication; shared by
server processes through Redis (and, as the contrast shows, not shared without it)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from qualgent.ids import new_id
from tests.fixtures.factories import Database, Tenant, add_key, make_tenant
from tests.fixtures.servers import LiveServer, ServeProcess, live_server, start_serve_process

REDIS_DB = 11  # a database of the local Redis that these tests alone use, flushed first
KEY_IN_OUTPUT = re.compile(r"qg_[A-Za-z0-9_-]{43}")
HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


def client_for(base_url: str, key: str | None = None, local_address: str | None = None) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
    headers = {"X-Api-Key": key} if key else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=30, transport=transport)


def assert_rate_headers(response: httpx.Response, limit: int) -> tuple[int, int]:
    for name in HEADERS:
        assert name in response.headers, (response.status_code, name, dict(response.headers))
    assert int(response.headers["x-ratelimit-limit"]) == limit
    remaining = int(response.headers["x-ratelimit-remaining"])
    reset = int(response.headers["x-ratelimit-reset"])
    assert 0 <= remaining <= limit
    assert 0 <= reset <= 1, reset  # seconds, and the window is one second
    return remaining, reset


def assert_429(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit() and int(retry_after) >= 1, retry_after
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    return int(retry_after)


# --------------------------------------------------------------------------------------- per key


def test_burst_over_the_key_limit_gets_429_with_headers(server: LiveServer, db: Database, tenant: Tenant) -> None:
    _, secret = add_key(db, tenant, rate_limit=5)
    ghost = new_id("file")
    statuses: list[int] = []
    with client_for(server.url, secret) as client:
        started = time.monotonic()
        responses = [
            # 200s and 404s alike count, and carry the headers.
            client.get(f"/v1/apps/{ghost}") if i % 3 == 1 else client.get("/v1/devices/list")
            for i in range(20)
        ]
        elapsed = time.monotonic() - started
        remaining_seen = []
        for response in responses:
            statuses.append(response.status_code)
            remaining, _ = assert_rate_headers(response, 5)
            if response.status_code == 429:
                assert_429(response)
                assert remaining == 0
            else:
                assert response.status_code in (200, 404), response.text
                remaining_seen.append(remaining)
        assert 404 in statuses and 200 in statuses
        assert statuses.count(429) >= 1
        if elapsed < 1:
            # A moving window of one second: exactly the limit got through, counting down to 0.
            assert len(remaining_seen) == 5, statuses
            assert remaining_seen == [4, 3, 2, 1, 0]
            assert statuses[5:] == [429] * 15

        # Once Retry-After has passed, the key works again.
        retry_after = assert_429(client.get("/v1/devices/list"))
        time.sleep(retry_after + 0.05)
        again = client.get("/v1/devices/list")
        assert again.status_code == 200, again.text
        assert_rate_headers(again, 5)


def test_an_exhausted_key_does_not_limit_another(server: LiveServer, db: Database, tenant: Tenant) -> None:
    _, first = add_key(db, tenant, rate_limit=5)
    _, second = add_key(db, tenant, rate_limit=5)  # same user, same organisation
    with client_for(server.url, first) as one, client_for(server.url, second) as two:
        for _ in range(8):
            one.get("/v1/devices/list")
        assert_429(one.get("/v1/devices/list"))
        fresh = two.get("/v1/devices/list")
        assert fresh.status_code == 200, fresh.text
        assert assert_rate_headers(fresh, 5)[0] == 4
        # The tenant's own key, on the server default, is untouched as well.
        assert tenant.client.get("/v1/devices/list").status_code == 200
        assert_429(one.get("/v1/devices/list"))


def test_key_limit_applies_to_writes_and_the_run_page(server: LiveServer, db: Database, tenant: Tenant) -> None:
    _, secret = add_key(db, tenant, rate_limit=2)
    run = new_id("run")
    with client_for(server.url, secret) as client:
        responses = [client.post("/v1/categories", json={"name": f"rl-{i}"}) for i in range(3)]
        responses.append(client.get(f"/test-runs/{run}"))
    assert [r.status_code for r in responses[:2]] == [201, 201]
    for response in responses[2:]:
        assert_429(response)
        assert_rate_headers(response, 2)
    names = {c["name"] for c in tenant.client.get("/v1/categories/list").json()}
    assert {"rl-0", "rl-1"} <= names and "rl-2" not in names


# ---------------------------------------------------------------------------- failed authentication


@pytest.fixture
def strict_server(backend: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A server of its own that allows 5 failed authentications per address and minute."""
    with live_server(backend, tmp_path / "strict", auth_failure_limit=5) as srv:
        yield srv


def test_failed_authentications_are_limited_per_address(strict_server: LiveServer) -> None:
    database = Database(strict_server.settings.resolved_database_url)
    try:
        tenant = make_tenant(database, strict_server.url)
        tenant.client.close()
    finally:
        database.close()
    bad = "qg_" + "x" * 43
    with client_for(strict_server.url, tenant.key) as good, client_for(strict_server.url, bad) as wrong:
        assert good.get("/v1/devices/list").status_code == 200
        for _ in range(5):
            response = wrong.get("/v1/devices/list")
            assert response.status_code == 401, response.text
        blocked = wrong.get("/v1/devices/list")
        assert_429(blocked)
        # The address is blocked for failures (another bad key, or none at all)...
        with client_for(strict_server.url) as nobody:
            assert_429(nobody.get("/v1/apps"))
        # ...never for a valid key: others' failures from the same address lock no one out.
        assert good.get("/v1/devices/list").status_code == 200
    # Another address is not.
    with client_for(strict_server.url, tenant.key, local_address="127.0.0.2") as elsewhere:
        response = elsewhere.get("/v1/devices/list")
        assert response.status_code == 200, response.text


# ------------------------------------------------------------------------------ several processes


def _burst(urls: list[str], key: str, count: int) -> tuple[list[httpx.Response], float]:
    clients = [client_for(url, key) for url in urls]
    try:
        # Warm each connection (and each server's database and limiter storage) without using the key's
        # budget, then let any earlier hits leave the one-second window.
        for client in clients:
            assert client.get("/readyz").status_code == 200
            assert client.get("/v1/devices/list", headers={"X-Api-Key": "qg_" + "w" * 43}).status_code == 401
        time.sleep(1.1)
        started = time.monotonic()
        responses = [clients[i % len(clients)].get("/v1/devices/list") for i in range(count)]
        return responses, time.monotonic() - started
    finally:
        for client in clients:
            client.close()


def _allowed_in_fast_burst(urls: list[str], key: str, attempts: int = 4) -> tuple[list[httpx.Response], int]:
    for _ in range(attempts):
        responses, elapsed = _burst(urls, key, 30)
        if elapsed < 1:
            return responses, sum(r.status_code == 200 for r in responses)
    pytest.fail(f"no burst of 30 requests took under a second (last: {elapsed:.2f} s)")


@pytest.mark.redis
def test_processes_share_the_limit_through_redis_and_not_without(tmp_path: Path) -> None:
    redis_url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    with redis.Redis.from_url(redis_url) as store:
        store.flushdb()
    env = {
        "QUALGENT_DATA_DIR": str(tmp_path / "data"),
        "QUALGENT_DEFAULT_RATE_LIMIT": "10",
        "QUALGENT_SECRET_KEY": "ratelimit-test-secret",
    }
    shared = {**env, "QUALGENT_REDIS_URL": redis_url}
    processes: list[ServeProcess] = []
    try:
        # The first process creates the database and prints the first key; the others start after it,
        # together (each takes seconds to start): a second one sharing Redis, and a pair without it.
        first = start_serve_process(shared, tmp_path / "redis-1.log")
        processes.append(first)
        found = KEY_IN_OUTPUT.search(first.output())
        assert found, first.output()
        key = found.group(0)
        with ThreadPoolExecutor(3) as pool:
            starting = [
                pool.submit(start_serve_process, shared, tmp_path / "redis-2.log"),
                pool.submit(start_serve_process, env, tmp_path / "memory-1.log"),
                pool.submit(start_serve_process, env, tmp_path / "memory-2.log"),
            ]
            errors = []
            for future in starting:
                try:
                    processes.append(future.result())
                except Exception as exc:  # the ones that did start are stopped below
                    errors.append(exc)
            if errors:
                raise errors[0]
        second, memory_one, memory_two = processes[1:]
        assert key not in second.output()  # the database existed: no second first key

        responses, allowed = _allowed_in_fast_burst([first.url, second.url], key)
        assert allowed == 10, [r.status_code for r in responses]
        for response in responses:
            assert_rate_headers(response, 10)
            if response.status_code != 200:
                assert_429(response)
        # Both processes served some of the ten, counting down one shared budget.
        served = [r for r in responses if r.status_code == 200]
        assert {f"{r.url.scheme}://{r.url.host}:{r.url.port}" for r in served} == {first.url, second.url}
        assert sorted(int(r.headers["x-ratelimit-remaining"]) for r in served) == list(range(10))
        with redis.Redis.from_url(redis_url) as store:
            assert store.dbsize() > 0  # the limits really were kept there

        # The same set-up, same database and key, without Redis: each process keeps its own count.
        responses, allowed = _allowed_in_fast_burst([memory_one.url, memory_two.url], key)
        assert allowed > 10, [r.status_code for r in responses]
        assert allowed == 20, [r.status_code for r in responses]
    finally:
        for process in reversed(processes):
            process.stop()


def test_memory_windows_move(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process moving window: N hits in any one-second span, whatever the clock's alignment."""
    from qualgent.auth import ratelimit

    now = [1000.25]
    monkeypatch.setattr(ratelimit.time, "time", lambda: now[0])
    windows = ratelimit.MemoryWindows()
    results = []
    for _ in range(4):
        results.append(windows.hit("k", 3, 1).remaining)
        now[0] += 0.1
    assert results == [2, 1, 0, -1]  # the fourth, 0.3 s after the first, is refused
    assert windows.peek("k", 3, 1).reset_time == pytest.approx(1001.25)  # when the first hit leaves
    now[0] = 1001.30  # the first hit left the window; the second and third are still in it
    assert windows.hit("k", 3, 1).remaining == 0
    assert windows.hit("k", 3, 1).remaining == -1
    assert windows.hit("other", 3, 1).remaining == 2  # keys are separate
    now[0] = 1010.0
    assert windows.peek("k", 3, 1).remaining == 3
