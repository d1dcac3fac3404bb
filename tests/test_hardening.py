"""Hostile and careless requests: authentication before bodies, leftovers of refused uploads, limits of
agent routes, values the database cannot hold, stalled and over-long multipart bodies."""

from __future__ import annotations

import socket
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.agents import agent_token
from tests.fixtures.apps import BOUNDARY, assert_error, multipart_end, multipart_part, upload_body
from tests.fixtures.factories import (
    IPHONE_14_PRO,
    Database,
    Tenant,
    apk_bytes,
    create_test_case,
    ipa_bytes,
    make_tenant,
    upload_app,
)
from tests.fixtures.servers import LiveServer, live_server
from tests.fixtures.web import signed_in_tenant

PNG_HEADER = b"\x89PNG\r\n\x1a\n"


class HandAgent:
    """An agent speaking the protocol by hand, with one iPhone 14 Pro."""

    def __init__(self, server: LiveServer, token: str, tags: list[str] | None = None) -> None:
        self.http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        device = {"id": "phone-0", "name": "iPhone 14 Pro", "platform": "iOS", "os_version": "16.0", "tags": tags or []}
        body = {"devices": [device]}
        registered = self.http.post("/v1/agent/register", json=body)
        assert registered.status_code == 200, registered.text
        self.device_ids = [d["id"] for d in registered.json()["devices"]]

    def claim(self) -> dict[str, Any]:
        response = self.http.post("/v1/agent/claim", json={"device_ids": self.device_ids, "wait_seconds": 5})
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()["run"]
        assert run is not None
        return run


@pytest.fixture
def held_run(tenant: Tenant, db: Database, server: LiveServer) -> Iterator[tuple[HandAgent, dict[str, Any]]]:
    """A run of ``tenant`` that a hand-driven agent (scoped to the tenant) holds, its step 0 reported."""
    agent = HandAgent(server, agent_token(db, organization_id=tenant.organization_id))
    app = upload_app(tenant, ipa_bytes(), filename="Example.ipa").json()["file"]["id"]
    case = create_test_case(tenant, name="Held", flow="- launchApp\n")["id"]
    job = {"test_case_id": case, "app_file_id": app, "device": IPHONE_14_PRO}
    assert tenant.client.post("/v1/test-cases/run", json={"jobs": [job]}).status_code == 200
    run = agent.claim()
    step = {"attempt": run["attempt"], "steps": [{"index": 0, "description": "launchApp", "status": "passed"}]}
    assert agent.http.post(f"/v1/agent/runs/{run['id']}/steps", json=step).status_code == 200
    yield agent, run
    agent.http.close()


# -------------------------------------------------------------- item 5: authentication before the body


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/test-cases/run", {}),
        ("/v1/test-cases/run", {"X-Api-Key": "qg_not-a-key"}),
        ("/v1/agent/claim", {}),
        ("/v1/agent/claim", {"Authorization": "Bearer qga_not-a-token"}),
    ],
)
def test_an_unauthenticated_body_is_not_read_before_the_401(
    server: LiveServer, path: str, headers: dict[str, str]
) -> None:
    # Malformed JSON: a server that parsed it first would answer 400.
    for body in (b'{"jobs": [', b"[" + b"1," * 500_000):
        response = httpx.post(
            server.url + path, content=body, headers={"Content-Type": "application/json", **headers}, timeout=30
        )
        assert response.status_code == 401, response.text
        assert_error(response, 401)


def test_a_large_malformed_body_is_not_retried_leniently(tenant: Tenant) -> None:
    """The trailing-comma retry (a character loop on the event loop) is for small bodies only."""
    small = tenant.client.post(
        "/v1/test-cases/run", content=b'{"jobs": [],}', headers={"Content-Type": "application/json"}
    )
    assert_error(small, 422)  # parsed leniently, then refused for its (empty) value
    big = b'{"jobs": [' + b'{"test_case_id": "tc_x",},' * 4000 + b"]}"  # ~100 KB of trailing commas
    started = time.monotonic()
    response = tenant.client.post("/v1/test-cases/run", content=big, headers={"Content-Type": "application/json"})
    assert_error(response, 400)
    assert time.monotonic() - started < 5


# --------------------------------------------------------- item 8: nothing stays behind a refused upload


def test_an_upload_refused_for_a_reused_idempotency_key_leaves_no_file(tenant: Tenant, data_dir: Path) -> None:
    def send(content: bytes) -> httpx.Response:
        return tenant.client.post(
            "/v1/apps/upload",
            data={"app_name": "MyApp", "version": "1.0.0"},
            files={"file": ("app.apk", content, "application/octet-stream")},
            headers={"Idempotency-Key": "build-1"},
        )

    assert send(apk_bytes()).status_code == 200
    org_dir = data_dir / "apps" / tenant.organization_id
    assert len([p for p in org_dir.rglob("*") if p.is_file()]) == 1
    for n in range(3):
        assert_error(send(apk_bytes(extra={"assets/other.txt": str(n).encode()})), 422, "idempotency_key_reused")
    assert len([p for p in org_dir.rglob("*") if p.is_file()]) == 1


# ------------------------------------------------------------- item 9: the screenshot route's own limit


def test_a_screenshot_over_the_json_limit_is_stored(held_run: tuple[HandAgent, dict[str, Any]]) -> None:
    agent, run = held_run
    png = PNG_HEADER + b"\0" * (3 * 1024 * 1024)
    path = f"/v1/agent/runs/{run['id']}/steps/{run['attempt']}/0/screenshot"
    response = agent.http.put(path, content=png, headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    too_large = agent.http.put(path, content=PNG_HEADER + b"\0" * (21 * 1024 * 1024))
    assert_error(too_large, 413)


# ---------------------------------------------------------------- item 10: values the database refuses


def test_nul_characters_are_refused_not_a_500(tenant: Tenant, server: LiveServer, db: Database) -> None:
    # A sign-in form, unauthenticated.
    sign_in = httpx.post(
        server.url + "/sign-in",
        content=b"email=a%00b%40example.com&password=x",
        timeout=10,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(sign_in, 400, "bad_request")
    # Query strings and paths.
    assert_error(tenant.client.get("/v1/devices/list", params={"platform": "and\x00roid"}), 400, "bad_request")
    assert_error(tenant.client.get("/v1/jobs/list", params={"status": "\x00"}), 400, "bad_request")
    assert_error(tenant.client.get("/v1/test-cases/tc_%00x"), 400, "bad_request")
    # JSON bodies: names of test cases, categories, device names of agents: 422 naming the field.
    assert_error(tenant.client.post("/v1/categories", json={"name": "Smoke\x00"}), 422, "invalid_request")
    assert_error(tenant.client.post("/v1/test-cases", json={"name": "a\x00", "flow": "- launchApp\n"}), 422)
    agent = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {agent_token(db, organization_id=tenant.organization_id)}"},
    )
    with agent:
        device = {"id": "d\x00", "name": "Pixel\x007", "platform": "Android", "os_version": "14"}
        error = assert_error(agent.post("/v1/agent/register", json={"devices": [device]}), 422, "invalid_request")
        assert error["details"] == [{"field": "devices.0.id", "issue": "must not contain NUL characters"}]


@pytest.mark.parametrize(
    "report",
    [
        {"attempt": 2**70, "status": "passed"},
        {"attempt": True, "status": "passed"},
        {"attempt": 1, "status": "failed", "failure": {"kind": "test", "message": "x", "step": 2**64}},
        {
            "attempt": 1,
            "status": "passed",
            "steps": [{"index": 0, "description": "x", "status": "passed", "duration_ms": 2**63}],
        },
        {"attempt": 1, "status": "passed", "steps": [{"index": True, "description": "x", "status": "passed"}]},
    ],
)
def test_integers_beyond_the_columns_are_invalid_not_a_500(
    held_run: tuple[HandAgent, dict[str, Any]], report: dict[str, Any]
) -> None:
    agent, run = held_run
    assert_error(agent.http.post(f"/v1/agent/runs/{run['id']}/finish", json=report), 422, "invalid_request")
    assert_error(agent.http.post(f"/v1/agent/runs/{run['id']}/heartbeat", json={"attempt": 2**64}), 422)
    shot = agent.http.put(f"/v1/agent/runs/{run['id']}/steps/{2**64}/{2**70}/screenshot", content=PNG_HEADER)
    assert_error(shot, 422)
    # The run is still the agent's: nothing above changed it.
    assert agent.http.post(f"/v1/agent/runs/{run['id']}/heartbeat", json={"attempt": run["attempt"]}).status_code == 200


def test_a_non_ascii_signature_is_a_403(tenant: Tenant, server: LiveServer) -> None:
    link = upload_app(tenant).json()["file"]["link"]
    forged = link.split("signature=")[0] + "signature=%C3%A9t%C3%A9"
    assert_error(httpx.get(forged), 403, "invalid_signature")
    shot = f"{server.url}/v1/jobs/run_x/screenshots/1/0.png?org=org_x&expires=4102444800&signature=%E2%82%AC"
    assert httpx.get(shot).status_code in (403, 404)
    # An expiry no link was ever signed with (after 2100) is refused as invalid, as the document says.
    assert_error(httpx.get(shot.replace("4102444800", "9999999999")), 422)


def test_a_multipart_boundary_over_256_bytes_is_a_400(tenant: Tenant) -> None:
    boundary = "b" * 300
    body = upload_body(apk_bytes()).replace(BOUNDARY.encode(), boundary.encode())
    response = tenant.client.post(
        "/v1/apps/upload", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert_error(response, 400, "malformed_multipart")


# --------------------------------------------------- item 11: the closing boundary; a stalled body


def _raw_request(server: LiveServer, head: bytes, body_parts: list[bytes], pause: float = 0.0) -> tuple[bytes, float]:
    """Sends ``head`` then each part (pausing between), and returns the answer and the seconds it took."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        started = time.monotonic()
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
            time.sleep(pause)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer, time.monotonic() - started


def test_the_upload_stops_at_the_closing_boundary(tenant: Tenant, server: LiveServer) -> None:
    """Bytes after the closing boundary (sent chunked, without end) are not waited for."""
    body = upload_body(apk_bytes())
    head = (
        b"POST /v1/apps/upload HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + tenant.key.encode() + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=" + BOUNDARY.encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = body + b"epilogue " * 1000
    # The body, then an epilogue that never ends (the chunked stream is not closed).
    answer, took = _raw_request(server, head, [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"])
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert took < 10


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server("sqlite", tmp_path_factory.mktemp("impatient"), request_idle_seconds=1.0) as srv:
        yield srv


def test_a_stalled_upload_is_answered_408_and_discarded(impatient_server: LiveServer) -> None:
    db = Database(impatient_server.settings.resolved_database_url)
    try:
        tenant = make_tenant(db, impatient_server.url)
    finally:
        db.close()
    data_dir = impatient_server.settings.data_dir
    body = b"".join(multipart_part(k, v) for k, v in {"app_name": b"MyApp", "version": b"1.0.0"}.items())
    body += multipart_part("file", apk_bytes(size_padding=200_000), b"app.apk", "application/octet-stream")
    body += multipart_end()
    head = (
        b"POST /v1/apps/upload HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + tenant.key.encode() + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=" + BOUNDARY.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    # Half the body, then nothing: the server gives up after its idle time, not never.
    answer, took = _raw_request(impatient_server, head, [body[: len(body) // 2]])
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"request_timeout" in answer or took < 10
    assert 0.9 < took < 10
    deadline = time.monotonic() + 5
    while list((data_dir / "tmp").glob("*.part")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((data_dir / "tmp").glob("*.part")) == []
    assert not [p for p in (data_dir / "apps").rglob("*") if p.is_file()] if (data_dir / "apps").exists() else True
    tenant.client.close()


# --------------------------------------------------------------- item 13: agents of an organisation


def _queue_on(tenant: Tenant, pool: str) -> str:
    app = upload_app(tenant, ipa_bytes(), filename="Example.ipa").json()["file"]["id"]
    case = create_test_case(tenant, name="Scoped", flow="- launchApp\n")["id"]
    job = {"test_case_id": case, "app_file_id": app, "device_selector": {"pool": pool}}
    response = tenant.client.post("/v1/test-cases/run", json={"jobs": [job]})
    assert response.status_code == 200, response.text
    return str(response.json()["jobs"][0]["id"])


def test_an_organisations_agent_claims_only_its_organisations_runs(
    tenant: Tenant, other_tenant: Tenant, db: Database, server: LiveServer
) -> None:
    pool = f"scoped-{uuid.uuid4().hex[:8]}"  # no other device of the test server fits these runs
    agent = HandAgent(server, agent_token(db, organization_id=tenant.organization_id), tags=[f"pool:{pool}"])
    try:
        foreign = _queue_on(other_tenant, pool)
        nothing = agent.http.post("/v1/agent/claim", json={"device_ids": agent.device_ids, "wait_seconds": 0})
        assert nothing.status_code == 200 and nothing.json()["run"] is None
        # For the other organisation, this agent's device is no device at all.
        assert other_tenant.client.get(f"/v1/jobs/status/{foreign}").json()["queue"]["reason"] == "no_device"
        own = _queue_on(tenant, pool)
        assert tenant.client.get(f"/v1/jobs/status/{own}").json()["queue"]["reason"] == "scheduling"
        assert agent.claim()["id"] == own
        assert other_tenant.client.get(f"/v1/jobs/status/{foreign}").json()["status"] == "queued"
        assert other_tenant.client.post(f"/v1/jobs/{foreign}/cancel").status_code == 200
    finally:
        agent.http.close()


def test_create_agent_names_its_organisation_or_is_shared(server: LiveServer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from qualgent.cli.main import app
    from qualgent.config import get_settings

    env = {"QUALGENT_DATABASE_URL": server.settings.resolved_database_url, "QUALGENT_DATA_DIR": str(tmp_path)}

    def cli(*args: str) -> Any:
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(app, list(args), env=env)
        finally:
            get_settings.cache_clear()

    # Many organisations in the test database: one must be named, or the agent shared.
    ambiguous = cli("admin", "create-agent", "lab-1")
    assert ambiguous.exit_code == 1 and "--org" in ambiguous.stderr
    shared = cli("admin", "create-agent", "lab-2", "--shared")
    assert shared.exit_code == 0 and "every organisation" in shared.stderr
    assert cli("admin", "create-agent", "lab-3", "--shared", "--org", "org_x").exit_code != 0


def test_the_data_directory_is_its_owners_alone(tmp_path: Path) -> None:
    with live_server("sqlite", tmp_path / "private") as srv:
        db = Database(srv.settings.resolved_database_url)
        try:
            tenant = make_tenant(db, srv.url)
        finally:
            db.close()
        with tenant.client:
            assert upload_app(tenant).status_code == 200
            created = tenant.client.post(
                "/v1/apps/uploads/",
                headers={
                    "Tus-Resumable": "1.0.0",
                    "Upload-Length": "100",
                    "Upload-Metadata": "filename YXBwLmFwaw==,app_name TXlBcHA=,version MS4w",
                },
            )
            assert created.status_code == 201, created.text
        data = srv.settings.data_dir
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for path in data.rglob("*"):
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
        assert list((data / "tmp" / "tus").glob("*.part"))  # the resumable upload's part was among them


def test_the_plain_upload_form_sends_its_csrf_token_in_the_body(tenant: Tenant, db: Database) -> None:
    csrf = signed_in_tenant(db, tenant)
    page = tenant.client.get("/apps").text
    assert "csrf_token=" not in page.split('id="upload-form"', 1)[1].split(">", 1)[0]  # not in the URL
    fields = {"app_name": b"Plain", "version": b"1.0"}

    def post(token: bytes | None, after_file: bool = False) -> httpx.Response:
        parts = [multipart_part(k, v) for k, v in fields.items()]
        file = multipart_part("file", apk_bytes(), b"app.apk", "application/octet-stream")
        token_part = [multipart_part("csrf_token", token)] if token is not None else []
        body = b"".join([*token_part, *parts, file] if not after_file else [*parts, file, *token_part])
        return tenant.client.post(
            "/apps/upload",
            content=body + multipart_end(),
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            follow_redirects=False,
        )

    assert_error(post(None), 403, "csrf_failed")
    assert_error(post(b"forged"), 403, "csrf_failed")
    assert_error(post(csrf.encode(), after_file=True), 403, "csrf_failed")  # checked before the file
    assert tenant.client.get("/v1/apps").json() == []
    ok = post(csrf.encode())
    assert ok.status_code == 303, ok.text
    assert [a["app_name"] for a in tenant.client.get("/v1/apps").json()] == ["Plain"]


def test_dashboard_requests_are_rate_limited(tmp_path: Path) -> None:
    with live_server("sqlite", tmp_path / "limited", dashboard_rate_limit=3) as srv:
        db = Database(srv.settings.resolved_database_url)
        try:
            tenant = make_tenant(db, srv.url)
            signed_in_tenant(db, tenant)
        finally:
            db.close()
        try:
            answers = [tenant.client.get("/devices").status_code for _ in range(8)]
            assert 429 in answers, answers
            assert tenant.client.get("/v1/apps").status_code == 200  # the API key's own limit is apart
        finally:
            tenant.client.close()


# ----------------------------------------------------------------------------- what a newcomer hit


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    from typer.testing import CliRunner

    from qualgent.cli.main import app
    from qualgent.config import get_settings

    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args), env=env, input=stdin)
    finally:
        get_settings.cache_clear()


def test_an_admin_command_without_a_database_says_so_in_one_line(tmp_path: Path) -> None:
    elsewhere = tmp_path / "not-the-project"
    env = {"QUALGENT_DATA_DIR": str(elsewhere / ".data"), "QUALGENT_DATABASE_URL": ""}
    result = _cli(env, "admin", "list-keys")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "QUALGENT_DATA_DIR" in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (elsewhere / ".data" / "qualgent.db").exists()  # no empty database left behind


def test_set_password_names_no_port_it_does_not_know(tenant: Tenant, server: LiveServer, tmp_path: Path) -> None:
    env = {"QUALGENT_DATABASE_URL": server.settings.resolved_database_url, "QUALGENT_DATA_DIR": str(tmp_path)}
    result = _cli(env, "admin", "set-password", tenant.user_email, "--password-stdin", stdin="a long password 1\n")
    assert result.exit_code == 0, result.stderr
    assert ":8000" not in result.stdout and "/sign-in" in result.stdout
    configured = _cli(
        {**env, "QUALGENT_PUBLIC_BASE_URL": "https://qa.example.com"},
        "admin",
        "set-password",
        tenant.user_email,
        "--password-stdin",
        stdin="a long password 2\n",
    )
    assert "https://qa.example.com/sign-in" in configured.stdout


# --------------------------------------------------------------------------- item 12: names, integers


@pytest.mark.parametrize("name", ["   ", "\t", "Login\nFlow", "Login\x1b[31m", "a\x07b", "a\u0085b"])
def test_blank_names_and_control_characters_are_refused(tenant: Tenant, name: str) -> None:
    assert_error(tenant.client.post("/v1/categories", json={"name": name}), 422, "invalid_request")
    assert_error(tenant.client.post("/v1/test-cases", json={"name": name, "flow": "- launchApp\n"}), 422)
    case = create_test_case(tenant, name="  Padded  ", flow="- launchApp\n")
    assert case["name"] == "Padded"
    assert_error(tenant.client.patch(f"/v1/test-cases/{case['id']}", json={"name": name}), 422)


def test_booleans_are_not_integers(tenant: Tenant) -> None:
    case = create_test_case(tenant, name="Ints", flow="- launchApp\n")
    for body in ({"retries": True}, {"timeout_seconds": True}):
        assert_error(tenant.client.patch(f"/v1/test-cases/{case['id']}", json=body), 422, "invalid_request")
    assert tenant.client.patch(f"/v1/test-cases/{case['id']}", json={"retries": 1}).status_code == 200


def test_a_test_case_may_exist_without_a_flow(tenant: Tenant) -> None:
    """The reference lets a test case exist without steps; its runs fail as `test`, saying the flow is empty."""
    response = tenant.client.post("/v1/test-cases", json={"name": "No steps yet"})
    assert response.status_code == 201, response.text
