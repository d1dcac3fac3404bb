"""The Python SDK (qualgent.client) against the live test server, on SQLite and PostgreSQL: typed
models and errors, configuration from the environment and .env, pagination, polling many runs in few
requests, retries of transient failures and waiting out 429s. No agent serves this server, so queued
runs stay queued until cancelled."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qualgent.client import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    ConfigurationError,
    NotFoundError,
    RetryPolicy,
    ServerError,
    TransportError,
    ValidationError,
    WaitTimeout,
)
from tests.fixtures.cli import HELLO_APK, LOGIN_FLOW
from tests.fixtures.factories import PIXEL_7, Database, Tenant, make_tenant
from tests.fixtures.servers import LiveServer, free_port

FAST = RetryPolicy(retries=2, backoff=0.01, max_backoff=0.02)


@pytest.fixture
def qg(tenant: Tenant, server: LiveServer) -> Iterator[Client]:
    with Client(tenant.key, server.url) as client:
        yield client


def _queued(qg: Client, n: int) -> list[str]:
    app = qg.upload_app(HELLO_APK, "Hello", "1.0.0")
    case = qg.create_test_case("Login", flow=LOGIN_FLOW)
    jobs = qg.run([{"test_case_id": case.id, "app_file_id": app.id, "device": PIXEL_7}] * n)
    return [j.id for j in jobs]


def test_a_round_trip_through_typed_models(qg: Client) -> None:
    progress: list[int] = []
    uploaded = qg.upload_app(HELLO_APK, "Hello", "1.4.2", on_progress=progress.append)
    assert uploaded.os == "android" and uploaded.file_size == HELLO_APK.stat().st_size
    assert progress and progress[-1] == uploaded.file_size  # the progress callback saw every byte
    assert qg.latest_app("android").id == uploaded.id == qg.get_app(uploaded.id).id
    category = qg.create_category("Smoke", "fast checks")
    case = qg.create_test_case("Login", flow=LOGIN_FLOW, category_id=category.id)
    assert case.category is not None and case.category.name == "Smoke" and case.flow == LOGIN_FLOW
    assert [c.id for c in qg.list_test_cases(category.id)] == [case.id]
    assert qg.update_test_case(case.id, status="inactive").status == "inactive"
    qg.update_test_case(case.id, status="active")
    assert {"Pixel 7", "iPhone 15"} <= {d.name for d in qg.list_devices()}

    [job] = qg.run_all(app_file_id=uploaded.id, category_id=category.id, device=PIXEL_7)
    run = qg.get_run(job.id)
    assert run.status == "queued" and run.test_case.name == "Login" and run.device == "Pixel 7"
    assert not run.finished
    assert qg.cancel_run(job.id).status == "cancelled"
    report = qg.run_report(job.id)
    assert report.run.status == "cancelled" and report.steps == []
    assert b"<testsuites" in qg.run_junit(job.id)
    assert [r.id for r in qg.list_runs(status="cancelled")] == [job.id]


def test_errors_carry_the_server_s_code_message_and_request_id(qg: Client, server: LiveServer) -> None:
    with pytest.raises(NotFoundError) as missing:
        qg.get_run("run_01jd2f3g4h5j6k7m8n9p0q1r2s")
    assert missing.value.status_code == 404 and missing.value.code == "not_found"
    assert missing.value.request_id and missing.value.message.startswith("No test run")

    with pytest.raises(ValidationError) as invalid:
        qg.run([{"test_case_id": "tc_01jd2f3g4h5j6k7m8n9p0q1r2s", "platform": "android"}])
    assert invalid.value.status_code == 422 and invalid.value.details  # which entry, which field

    with pytest.raises(BadRequestError):
        qg.request("POST", "/v1/test-cases/run", content=b"{not json", headers={"Content-Type": "application/json"})

    with Client("qg_" + "x" * 43, server.url) as wrong, pytest.raises(AuthenticationError) as denied:
        wrong.list_devices()
    assert denied.value.code == "invalid_api_key"


def test_configuration_comes_from_arguments_environment_or_dotenv(
    tenant: Tenant, server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QUALGENT_API_KEY", raising=False)
    monkeypatch.delenv("QUALGENT_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError):
        Client()
    (tmp_path / ".env").write_text(f"QUALGENT_API_KEY={tenant.key}\nQUALGENT_URL={server.url}\nQUALGENT_DATA_DIR=x\n")
    with Client() as from_dotenv:
        assert from_dotenv.base_url == server.url and from_dotenv.list_devices()
    monkeypatch.setenv("QUALGENT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with Client(retry=FAST) as from_env, pytest.raises(TransportError):
        from_env.list_devices()
    with Client(base_url=server.url) as from_argument:  # arguments win over the environment
        assert from_argument.list_devices()


def test_lists_follow_every_page(qg: Client) -> None:
    for n in range(105):
        qg.request("POST", "/v1/test-cases", json={"name": f"Case {n:03}"})
    assert [c.name for c in qg.list_test_cases()] == [f"Case {n:03}" for n in range(105)]


def test_many_runs_are_polled_in_few_requests(qg: Client) -> None:
    run_ids = _queued(qg, 450)  # three requests of up to 200 IDs
    states = qg.get_runs(run_ids)
    assert [r.id for r in states] == run_ids and {r.status for r in states} == {"queued"}
    with pytest.raises(WaitTimeout) as timed_out:
        qg.wait_for_runs(run_ids[:3], timeout=0.5, poll_interval=0.1)
    assert [r.id for r in timed_out.value.runs] == run_ids[:3]

    polls: list[int] = []

    def cancel_some(runs: list[Any]) -> None:
        polls.append(len(runs))
        for run in runs:
            if not run.finished:
                qg.cancel_run(run.id)

    finished = qg.wait_for_runs(run_ids[:5], poll_interval=0.05, on_update=cancel_some)
    assert {r.status for r in finished} == {"cancelled"} and polls[-1] == 5
    with pytest.raises(NotFoundError):  # a run that does not exist is never waited on forever
        qg.wait_for_runs([run_ids[0], "run_01jd2f3g4h5j6k7m8n9p0q1r2s"], timeout=30)


def _env_of(db: Database, run_id: str) -> Any:
    from sqlalchemy import select

    from qualgent.db.models import TestRun

    async def read(session: Any) -> Any:
        return await session.scalar(select(TestRun.env).where(TestRun.id == run_id))

    return db.run(read)


def test_files_tags_values_and_tag_filters(qg: Client, db: Database) -> None:
    app = qg.upload_app(HELLO_APK, "Hello", "1.0.0")
    head = "appId: com.qualgent.fixture\ntags: [{}]\n---\n"
    smoke = qg.create_test_case(
        "Smoke",
        flow=head.format("smoke") + "- runFlow: sub/a.yaml\n",
        files=[{"path": "sub/a.yaml", "content": "- back\n"}],
    )
    assert smoke.tags == ["smoke"]
    assert [(f.path, f.size, f.sha256[:8]) for f in smoke.files] == [("sub/a.yaml", 7, "b84217d0")]
    qg.create_test_case("Flaky", flow=head.format("smoke, flaky") + "- back\n")
    assert {c.name: c.tags for c in qg.list_test_cases()} == {"Smoke": ["smoke"], "Flaky": ["smoke", "flaky"]}

    jobs = qg.run_all(
        app_file_id=app.id, device=PIXEL_7, include_tags=["smoke"], exclude_tags=["flaky"], env={"USERNAME": "a"}
    )
    [job] = jobs
    assert qg.get_run(job.id).test_case.name == "Smoke" and _env_of(db, job.id) == {"USERNAME": "a"}
    own, shared = qg.run(
        [
            {"test_case_id": smoke.id, "app_file_id": app.id, "device": PIXEL_7, "env": {"OWN": "1"}},
            {"test_case_id": smoke.id, "app_file_id": app.id, "device": PIXEL_7},
        ],
        env={"SHARED": "2"},
    )
    assert _env_of(db, own.id) == {"OWN": "1"} and _env_of(db, shared.id) == {"SHARED": "2"}
    for queued in (job, own, shared):
        qg.cancel_run(queued.id)


def test_the_async_client(tenant: Tenant, server: LiveServer) -> None:
    async def main() -> None:
        async with AsyncClient(tenant.key, server.url) as qg:
            app = await qg.upload_app(HELLO_APK, "Hello", "2.0.0")
            case = await qg.create_test_case("Login", flow=LOGIN_FLOW)
            jobs = await qg.run(
                [{"test_case_id": case.id, "app_file_id": app.id, "device": PIXEL_7}] * 3, env={"USERNAME": "a"}
            )
            ids = [j.id for j in jobs]
            await asyncio.gather(*(qg.cancel_run(i) for i in ids))
            runs = await qg.wait_for_runs(ids, timeout=10, poll_interval=0.05)
            assert [r.status for r in runs] == ["cancelled"] * 3
            assert [r.id for r in await qg.list_runs()] == list(reversed(ids))
            with pytest.raises(ValidationError, match="no_test_cases"):
                await qg.run_all(app_file_id=app.id, device=PIXEL_7, include_tags=["no-such-tag"], env={"A": "b"})
            with pytest.raises(NotFoundError):
                await qg.get_app("file_01jd2f3g4h5j6k7m8n9p0q1r2s")

    asyncio.run(main())


def test_429s_are_waited_out_and_remaining_zero_paces_the_next_request(db: Database, server: LiveServer) -> None:
    tenant = make_tenant(db, server.url, rate_limit=2)
    try:
        # Pacing off: every request past the limit gets a 429, waited out by its Retry-After.
        with Client(tenant.key, server.url, retry=RetryPolicy(pace=False)) as eager:
            started = time.monotonic()
            for _ in range(6):
                eager.list_devices()
            assert eager.pacer.rate_limited >= 2
            assert time.monotonic() - started >= 1.0
        time.sleep(1.1)
        # Pacing on: X-RateLimit-Remaining: 0 makes the client wait for the window instead.
        with Client(tenant.key, server.url) as paced:
            for _ in range(6):
                paced.list_devices()
            assert paced.pacer.rate_limited == 0
        # Patience spent: the 429 surfaces as a typed error.
        with Client(tenant.key, server.url, retry=RetryPolicy(pace=False, rate_limit_patience=0)) as impatient:
            with pytest.raises(Exception) as refused:
                for _ in range(10):
                    impatient.list_devices()
            assert getattr(refused.value, "status_code", None) == 429
    finally:
        tenant.client.close()


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    """A real HTTP server that fails the first ``failures`` requests with 503: the qualgent server
    cannot be made to fail on demand, so this stands in for a proxy in trouble."""

    failures = 0
    seen: list[str] = []

    def _answer(self) -> None:
        type(self).seen.append(f"{self.command} {self.headers.get('Idempotency-Key', '-')}")
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        if type(self).failures > 0:
            type(self).failures -= 1
            body = json.dumps({"success": False, "error": {"code": "unavailable", "message": "try again"}})
            self.send_response(503)
        else:
            body = json.dumps({"success": True, "jobs": [], "phone": [], "tablet": []})
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = _answer
    do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[tuple[str, type[_FlakyHandler]]]:
    handler = type("Flaky", (_FlakyHandler,), {"failures": 0, "seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_5xx_is_retried_on_idempotent_calls_only(flaky: tuple[str, type[_FlakyHandler]]) -> None:
    url, handler = flaky
    with Client("qg_test", url, retry=FAST) as qg:
        handler.failures = 2
        assert qg.list_devices() == []  # GET: retried twice, then answered
        assert handler.seen == ["GET -"] * 3

        handler.seen.clear()
        handler.failures = 2
        assert qg.run([{"test_case_id": "tc_x", "platform": "android"}]) == []
        keys = {entry.split()[1] for entry in handler.seen}
        assert len(handler.seen) == 3 and len(keys) == 1 and keys != {"-"}  # one Idempotency-Key, reused

        handler.seen.clear()
        handler.failures = 5
        with pytest.raises(ServerError) as failed:
            qg.request("POST", "/v1/test-cases", json={"name": "x"})  # not idempotent: never repeated
        assert failed.value.code == "unavailable" and handler.seen == ["POST -"]

        handler.failures = 5
        with pytest.raises(ServerError):
            qg.list_devices()  # retries spent


def test_a_refused_connection_is_retried_then_raised() -> None:
    sleeps: list[float] = []
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with Client("qg_test", closed, retry=FAST, sleep=sleeps.append) as qg, pytest.raises(TransportError):
        qg.request("POST", "/v1/test-cases", json={"name": "never sent"})
    assert len(sleeps) == 2  # a refused connection never reached the server: safe even for a POST
