"""Webhooks (issue 15): endpoints per organisation, Standard Webhooks signatures checked by the
`standardwebhooks` verifier in a real receiver on loopback, run events written to the outbox with the
run's change, retries with backoff, the delivery log and redelivery, disabling after failures, the outbox
surviving a server that stops before delivering, address checks, and Slack messages. Real servers on
SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from qualgent.client import Client
from qualgent.db.migrations import upgrade
from qualgent.db.models import WebhookEvent
from qualgent.webhooks.service import address_allowed
from qualgent.webhooks.worker import backoff
from tests.fixtures.cli import Cli
from tests.fixtures.factories import PIXEL_7, Database, Tenant, create_test_case, make_tenant, upload_app
from tests.fixtures.hand_agent import HandAgent, phone, tag
from tests.fixtures.servers import (
    LiveServer,
    database_url,
    free_port,
    live_server,
    make_settings,
    start_serve_process,
)
from tests.fixtures.web import signed_in_tenant

FAST = {
    "webhooks_allow_private": True,
    "webhook_retry_base": 0.2,
    "webhook_poll_interval": 0.1,
    "webhook_timeout": 0.5,
    "webhook_disable_after": 1.0,
}


# ------------------------------------------------------------------------------------------ receiver


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on loopback that records what it is sent and answers as told: ``answers`` are the
    statuses of the next requests (then 200); ``delay`` seconds before answering."""

    url: str
    received: list[Received] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                seen = list(self.received)
            if predicate(seen):
                return seen
            assert time.monotonic() < deadline, f"receiver got {[(r.path, r.body[:200]) for r in seen]}"
            time.sleep(0.05)

    def events(self, path: str = "/hook") -> list[tuple[str, Any]]:
        with self.lock:
            return [(r.json()["type"], r.json()["data"]) for r in self.received if r.path == path]


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rec = holder[0]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with rec.lock:
                rec.received.append(Received(self.path, dict(self.headers.items()), body, time.monotonic()))
                status = rec.answers.pop(0) if rec.answers else 200
            if rec.delay:
                time.sleep(rec.delay)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(f"http://127.0.0.1:{httpd.server_address[1]}"))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        httpd.shutdown()
        httpd.server_close()


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def wh_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(backend, tmp_path_factory.mktemp(f"webhooks-{backend}"), **FAST) as srv:
        yield srv


@pytest.fixture(scope="module")
def wh_db(wh_server: LiveServer) -> Iterator[Database]:
    database = Database(wh_server.settings.resolved_database_url)
    yield database
    database.close()


@pytest.fixture
def org(wh_db: Database, wh_server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(wh_db, wh_server.url)
    yield t
    t.client.close()


@pytest.fixture
def other_org(wh_db: Database, wh_server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(wh_db, wh_server.url)
    yield t
    t.client.close()


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as rec:
        yield rec


def create(tenant: Tenant, url: str, events: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    body = {"url": url, "events": events or ["run.queued", "run.started", "run.finished", "batch.finished"]}
    response = tenant.client.post("/v1/webhooks", json={**body, **extra})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def queue(tenant: Tenant, **job: Any) -> tuple[str, str]:
    """A run queued on a Pixel 7 (no device serves it unless a test brings one): (run, batch)."""
    app = upload_app(tenant)
    assert app.status_code == 200, app.text
    case = create_test_case(tenant, name=f"Checkout {uuid.uuid4().hex[:6]}", flow="appId: x\n---\n- launchApp\n")
    entry = {"test_case_id": case["id"], "app_file_id": app.json()["file"]["id"], "device": PIXEL_7, **job}
    entry = {k: v for k, v in entry.items() if v is not None}
    response = tenant.client.post("/v1/test-cases/run", json={"jobs": [entry]})
    assert response.status_code == 200, response.text
    return response.json()["jobs"][0]["id"], response.json()["batch_id"]


def deliveries(tenant: Tenant, webhook_id: str) -> list[dict[str, Any]]:
    response = tenant.client.get(f"/v1/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["deliveries"]
    return items


def verified(secret: str, received: Received) -> Any:
    return Webhook(secret).verify(received.body, received.headers)


# ------------------------------------------------------------------------------------------ the API


def test_endpoints_are_created_shown_changed_and_deleted(org: Tenant, hook: Receiver) -> None:
    created = create(org, f"{hook.url}/hook", ["run.finished"], description="CI")
    assert created["id"].startswith("whk_") and created["secret"].startswith("whsec_")
    assert created["enabled"] is True and created["events"] == ["run.finished"] and created["kind"] == "webhook"

    listed = org.client.get("/v1/webhooks").json()
    assert [w["id"] for w in listed] == [created["id"]]
    assert "secret" not in listed[0] and created["secret"] not in org.client.get("/v1/webhooks").text
    got = org.client.get(f"/v1/webhooks/{created['id']}").json()
    assert "secret" not in got and got["description"] == "CI"

    changed = org.client.patch(
        f"/v1/webhooks/{created['id']}", json={"enabled": False, "events": ["batch.finished", "run.started"]}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["enabled"] is False and changed.json()["events"] == ["run.started", "batch.finished"]
    refused = org.client.patch(f"/v1/webhooks/{created['id']}", json={"url": None})
    assert refused.status_code == 422, refused.text

    for bad in ("ftp://example.com/x", "not a url", "http:///nohost", "https://user:pw@example.com/"):
        response = org.client.post("/v1/webhooks", json={"url": bad, "events": ["run.finished"]})
        assert response.status_code == 422, (bad, response.text)
    assert org.client.post("/v1/webhooks", json={"url": hook.url, "events": ["run.nope"]}).status_code == 422
    assert org.client.post("/v1/webhooks", json={"url": hook.url, "events": []}).status_code == 422

    assert org.client.delete(f"/v1/webhooks/{created['id']}").status_code == 200
    assert org.client.get(f"/v1/webhooks/{created['id']}").status_code == 404
    assert org.client.get("/v1/webhooks").json() == []


def test_another_organisation_cannot_see_or_touch_an_endpoint(org: Tenant, other_org: Tenant, hook: Receiver) -> None:
    mine = create(org, f"{hook.url}/hook", ["run.queued"])
    queue(org)
    hook.wait_for(lambda seen: len(seen) == 1)
    [delivery] = deliveries(org, mine["id"])
    them = other_org.client
    assert them.get("/v1/webhooks").json() == []
    for method, path, body in (
        ("GET", f"/v1/webhooks/{mine['id']}", None),
        ("PATCH", f"/v1/webhooks/{mine['id']}", {"enabled": False}),
        ("DELETE", f"/v1/webhooks/{mine['id']}", None),
        ("GET", f"/v1/webhooks/{mine['id']}/deliveries", None),
        ("POST", f"/v1/webhooks/{mine['id']}/deliveries/{delivery['id']}/redeliver", None),
    ):
        response = them.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    # Their own endpoint with my delivery's ID: still nothing.
    theirs = create(other_org, f"{hook.url}/other", ["run.queued"])
    response = them.post(f"/v1/webhooks/{theirs['id']}/deliveries/{delivery['id']}/redeliver")
    assert response.status_code == 404
    assert org.client.get(f"/v1/webhooks/{mine['id']}").json()["enabled"] is True
    # Their runs never reach my endpoint.
    queue(other_org)
    hook.wait_for(lambda seen: any(r.path == "/other" for r in seen))
    assert len([r for r in hook.received if r.path == "/hook"]) == 1


# ------------------------------------------------------------------------------------------ delivery


def test_run_events_arrive_signed_with_the_status_body(
    org: Tenant, hook: Receiver, wh_server: LiveServer, wh_db: Database
) -> None:
    endpoint = create(org, f"{hook.url}/hook")
    t = tag()
    agent = HandAgent(wh_server, wh_db, [phone("a", t)], organization_id=org.organization_id)
    try:
        run_id, batch_id = queue(org, device=None, device_selector={"tags": [t]})
        hook.wait_for(lambda seen: len(seen) >= 1)
        run = agent.claim("a")
        assert run is not None and run["id"] == run_id
        hook.wait_for(lambda seen: len(seen) >= 2)
        agent.fail(run)
    finally:
        agent.close()
    seen = hook.wait_for(lambda seen: len(seen) >= 4)
    time.sleep(0.3)  # nothing more comes
    assert len(hook.received) == 4

    order = ["run.queued", "run.started", "run.finished", "batch.finished"]
    # The run's end and its batch's end are sent at once, in either order.
    seen = sorted(seen, key=lambda r: order.index(r.json()["type"]))
    bodies = [verified(endpoint["secret"], r) for r in seen]
    assert [b["type"] for b in bodies] == order
    status = org.client.get(f"/v1/jobs/status/{run_id}").json()
    finished = bodies[2]["data"]
    assert finished == status  # the same body as GET /v1/jobs/status/{id}
    assert finished["status"] == "failed" and finished["link"].endswith(f"/test-runs/{run_id}")
    assert bodies[0]["data"]["status"] == "queued" and bodies[1]["data"]["status"] == "running"
    batch = bodies[3]["data"]
    assert batch["id"] == batch_id and batch["finished"] is True and batch["verdict"] == "failed"
    assert batch["link"].endswith(f"/batches/{batch_id}") and [r["id"] for r in batch["runs"]] == [run_id]
    # Standard Webhooks headers: a message ID per message, a timestamp, a v1 signature.
    ids = [r.headers["webhook-id"] for r in seen]
    assert len(set(ids)) == 4 and all(i.startswith("msg_") for i in ids)
    assert all(r.headers["webhook-signature"].startswith("v1,") for r in seen)
    assert abs(int(seen[0].headers["webhook-timestamp"]) - time.time()) < 60
    # Another secret does not verify, nor a changed body.
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 32).verify(seen[0].body, seen[0].headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint["secret"]).verify(seen[0].body + b" ", seen[0].headers)

    log = deliveries(org, endpoint["id"])
    assert [d["event_type"] for d in log] == ["batch.finished", "run.finished", "run.started", "run.queued"]
    assert {(d["status"], d["attempts"], d["response_status"]) for d in log} == {("delivered", 1, 200)}
    assert [d["id"] for d in reversed(log)] == ids
    assert all(d["duration_ms"] is not None and d["error"] is None for d in log)


def test_only_subscribed_events_and_a_cancelled_run_finishes(org: Tenant, hook: Receiver) -> None:
    endpoint = create(org, f"{hook.url}/hook", ["run.finished"])
    run_id, _ = queue(org)
    assert org.client.post(f"/v1/jobs/{run_id}/cancel").status_code == 200
    seen = hook.wait_for(lambda seen: len(seen) >= 1)
    time.sleep(0.3)
    assert len(hook.received) == 1
    body = verified(endpoint["secret"], seen[0])
    assert body["type"] == "run.finished" and body["data"]["status"] == "cancelled"


def test_failed_deliveries_are_retried_with_backoff(org: Tenant, hook: Receiver) -> None:
    endpoint = create(org, f"{hook.url}/hook", ["run.queued"])
    hook.answers = [500, 503, 500]
    queue(org)
    seen = hook.wait_for(lambda seen: len(seen) >= 4)
    assert len({r.headers["webhook-id"] for r in seen}) == 1  # the same message each time
    for r in seen:
        verified(endpoint["secret"], r)  # signed afresh each attempt (a new timestamp)
    gaps = [b.at - a.at for a, b in itertools.pairwise(seen)]
    # 0.2 s, 0.4 s, 0.8 s (the worker looks every 0.1 s).
    assert gaps[0] >= 0.18 and gaps[1] >= 0.38 and gaps[2] >= 0.78, gaps
    log = hook.wait_for(lambda _: deliveries(org, endpoint["id"])[0]["status"] == "delivered")
    assert log
    [delivery] = deliveries(org, endpoint["id"])
    assert delivery["attempts"] == 4 and delivery["response_status"] == 200 and delivery["error"] is None
    assert org.client.get(f"/v1/webhooks/{endpoint['id']}").json()["failing_since"] is None


def test_a_timeout_is_a_failure_and_retried(org: Tenant, hook: Receiver, wh_server: LiveServer) -> None:
    endpoint = create(org, f"{hook.url}/hook", ["run.queued"])
    hook.delay = wh_server.settings.webhook_timeout + 0.3
    queue(org)
    hook.wait_for(lambda seen: len(seen) >= 1)

    def logged_timeout(_: Any) -> bool:
        d = deliveries(org, endpoint["id"])[0]
        return d["attempts"] >= 1 and "within" in (d["error"] or "")

    hook.wait_for(logged_timeout, timeout=10)
    hook.delay = 0
    hook.wait_for(lambda _: deliveries(org, endpoint["id"])[0]["status"] == "delivered", timeout=10)


def test_redelivery_sends_the_same_message_again(org: Tenant, hook: Receiver) -> None:
    endpoint = create(org, f"{hook.url}/hook", ["run.queued"])
    queue(org)
    first = hook.wait_for(lambda seen: len(seen) == 1)[0]
    hook.wait_for(lambda _: deliveries(org, endpoint["id"])[0]["status"] == "delivered")
    [delivery] = deliveries(org, endpoint["id"])
    again = org.client.post(f"/v1/webhooks/{endpoint['id']}/deliveries/{delivery['id']}/redeliver")
    assert again.status_code == 200, again.text
    assert again.json()["status"] in ("pending", "delivered")
    second = hook.wait_for(lambda seen: len(seen) == 2)[1]
    assert second.headers["webhook-id"] == first.headers["webhook-id"] == delivery["id"]
    assert verified(endpoint["secret"], second) == verified(endpoint["secret"], first)
    ghost = org.client.post(f"/v1/webhooks/{endpoint['id']}/deliveries/msg_{'0' * 26}/redeliver")
    assert ghost.status_code == 404


def test_an_endpoint_failing_long_enough_is_disabled_and_says_why(org: Tenant, hook: Receiver) -> None:
    endpoint = create(org, f"{hook.url}/hook", ["run.queued"])
    hook.answers = [500] * 1000
    queue(org)

    def disabled(_: Any) -> bool:
        return org.client.get(f"/v1/webhooks/{endpoint['id']}").json()["enabled"] is False

    hook.wait_for(disabled, timeout=15)
    shown = org.client.get(f"/v1/webhooks/{endpoint['id']}").json()
    assert "every delivery failed" in shown["disabled_reason"] and "500" in shown["disabled_reason"]
    assert shown["failing_since"] is not None
    count = len(hook.received)
    time.sleep(0.6)
    assert len(hook.received) == count  # disabled: nothing more is sent
    # Enabled again: the reason goes, and the waiting message is delivered.
    hook.answers = []
    enabled = org.client.patch(f"/v1/webhooks/{endpoint['id']}", json={"enabled": True}).json()
    assert enabled["enabled"] is True and enabled["disabled_reason"] is None and enabled["failing_since"] is None
    hook.wait_for(lambda _: deliveries(org, endpoint["id"])[0]["status"] == "delivered", timeout=10)


def test_slack_gets_a_block_kit_message_for_a_finished_batch(org: Tenant, hook: Receiver) -> None:
    slack_url = f"{hook.url}/services/T000/B000/{uuid.uuid4().hex}"
    endpoint = create(org, slack_url, ["run.finished", "batch.finished"], kind="slack")
    assert endpoint["secret"] is None and endpoint["kind"] == "slack"
    assert endpoint["url"] != slack_url  # the URL's secret part is not shown
    assert slack_url not in org.client.get("/v1/webhooks").text
    run_id, batch_id = queue(org)
    assert org.client.post(f"/v1/jobs/{run_id}/cancel").status_code == 200
    seen = hook.wait_for(lambda seen: len(seen) >= 1)
    time.sleep(0.3)
    # A cancelled run is no failure: only the batch's message.
    assert len(hook.received) == 1
    message = seen[0].json()
    assert seen[0].path == slack_url.removeprefix(hook.url)
    assert "webhook-signature" not in {k.lower() for k in seen[0].headers}
    assert message["text"].startswith(":") and "0 passed" in message["text"]
    kinds = [b["type"] for b in message["blocks"]]
    assert kinds[0] == "header" and "section" in kinds and kinds[-1] == "context"
    assert f"/batches/{batch_id}" in json.dumps(message["blocks"])


# ------------------------------------------------------------------------------------------ durability


def test_events_wait_in_the_outbox_for_a_server_that_delivers(backend: str, tmp_path: Path) -> None:
    """A server that does not deliver (stopped before it could, here one told not to) leaves its events
    in the database; the next server delivers them."""
    with contextlib.ExitStack() as stack, receiver() as rec:
        url = database_url(backend, tmp_path, stack)
        upgrade(url)
        db = stack.enter_context(contextlib.closing(Database(url)))
        first = LiveServer.start(make_settings(tmp_path, url, **FAST, webhook_worker=False))
        try:
            tenant = make_tenant(db, first.url)
            endpoint = create(tenant, f"{rec.url}/hook", ["run.queued", "run.finished"])
            run_id, _ = queue(tenant)
            assert tenant.client.post(f"/v1/jobs/{run_id}/cancel").status_code == 200
            time.sleep(0.5)
            assert rec.received == []
            waiting = db.run(lambda s: s.scalar(select(func.count()).select_from(WebhookEvent)))
            assert waiting == 2
        finally:
            first.stop()
        second = LiveServer.start(make_settings(tmp_path, url, **FAST))
        try:
            seen = rec.wait_for(lambda seen: len(seen) >= 2)
            bodies = [verified(endpoint["secret"], r) for r in seen]
            # Deliveries are made concurrently, in no promised order (each carries its event's timestamp).
            assert sorted((b["type"], b["data"]["id"]) for b in bodies) == [
                ("run.finished", run_id),
                ("run.queued", run_id),
            ]
            assert db.run(lambda s: s.scalar(select(func.count()).select_from(WebhookEvent))) == 0
        finally:
            second.stop()
            tenant.client.close()


# ------------------------------------------------------------------------------------------ addresses


def test_private_addresses_are_refused_unless_allowed(server: LiveServer, tenant: Tenant) -> None:
    """The shared server keeps the default: no private addresses."""
    assert server.settings.webhooks_allow_private is False
    for url in (
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",
    ):
        response = tenant.client.post("/v1/webhooks", json={"url": url, "events": ["run.queued"]})
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"]["details"][0]["field"] == "url"
    ok = tenant.client.post("/v1/webhooks", json={"url": "https://hooks.example.com/x", "events": ["run.queued"]})
    assert ok.status_code == 201, ok.text


def test_a_name_resolving_to_a_private_address_is_refused_at_delivery(server: LiveServer, tenant: Tenant) -> None:
    """A name passes creation (it could resolve anywhere later); the address it resolves to when a
    delivery is made is what counts. This host's own name resolves to loopback here."""
    import socket

    name = socket.gethostname()
    if address_allowed(socket.gethostbyname(name)):
        pytest.skip("this host's name resolves to a public address")
    endpoint = tenant.client.post(
        "/v1/webhooks", json={"url": f"http://{name}:9/hook", "events": ["run.queued"]}
    ).json()
    queue(tenant)
    deadline = time.monotonic() + 10
    while True:
        log = deliveries(tenant, endpoint["id"])
        if log and log[0]["attempts"] >= 1:
            break
        assert time.monotonic() < deadline, log
        time.sleep(0.1)
    assert log[0]["status"] == "pending" and log[0]["response_status"] is None
    assert "non-public address" in log[0]["error"]


def test_address_rules() -> None:
    for public in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"):
        assert address_allowed(public), public
    for private in (
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:10.0.0.1",
        "224.0.0.1",
        "255.255.255.255",
    ):
        assert not address_allowed(private), private


def test_backoff_doubles_up_to_six_hours() -> None:
    assert [backoff(5, n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff(5, 30) == 6 * 3600
    # A day of retries from a 5 s base is some fifteen attempts.
    total, attempts = 0.0, 0
    while total < 86_400:
        attempts += 1
        total += backoff(5, attempts)
    assert 12 <= attempts <= 20


# ------------------------------------------------------------------------------------------ CLI and SDK


def test_cli_and_sdk_manage_endpoints(org: Tenant, hook: Receiver, wh_server: LiveServer, tmp_path: Path) -> None:
    cli = Cli(wh_server.url, org.key, tmp_path)
    created = cli("webhooks", "create", f"{hook.url}/hook", "--event", "run.queued", "--json")
    assert created.code == 0, created.stderr
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_") and endpoint["events"] == ["run.queued"]
    text = cli("webhooks", "list")
    assert text.code == 0 and endpoint["id"] in text.stdout and "run.queued" in text.stdout

    queue(org)
    received = hook.wait_for(lambda seen: len(seen) == 1)[0]
    assert verified(endpoint["secret"], received)["type"] == "run.queued"
    with Client(api_key=org.key, base_url=wh_server.url) as client:
        [delivery] = client.webhook_deliveries(endpoint["id"])
        assert delivery.id == received.headers["webhook-id"] and delivery.event_type == "run.queued"
        assert [w.id for w in client.list_webhooks()] == [endpoint["id"]]
    log = cli("webhooks", "deliveries", endpoint["id"], "--json")
    assert log.code == 0 and log.json()[0]["id"] == delivery.id

    disabled = cli("webhooks", "disable", endpoint["id"], "--json")
    assert disabled.code == 0 and disabled.json()["enabled"] is False
    missing = cli("webhooks", "show", f"whk_{'0' * 26}")
    assert missing.code == 3 and "404" in missing.stderr
    assert cli("webhooks", "delete", endpoint["id"]).code == 0
    assert org.client.get("/v1/webhooks").json() == []


def test_a_delivery_survives_the_server_being_killed(tmp_path: Path) -> None:
    """`qualgent serve` SIGKILLed while a message waits for its retry: the next server sends it, as the
    same message."""
    env = {
        "QUALGENT_DATA_DIR": str(tmp_path / "data"),
        "QUALGENT_EMBEDDED_AGENT": "false",
        "QUALGENT_SECRET_KEY": "test-secret-key",
        "QUALGENT_WEBHOOKS_ALLOW_PRIVATE": "true",
        "QUALGENT_WEBHOOK_RETRY_BASE": "2",
        "QUALGENT_WEBHOOK_POLL_INTERVAL": "0.1",
    }
    port = free_port()
    with receiver() as rec:
        rec.answers = [503] * 1000  # the receiver is down
        first = start_serve_process(env, tmp_path / "first.log", port=port)
        try:
            [key] = set(re.findall(r"qg_[A-Za-z0-9_-]{43}", first.output()))
            tenant = Tenant("", "", "", key, "", httpx.Client(base_url=first.url, headers={"X-Api-Key": key}))
            endpoint = create(tenant, f"{rec.url}/hook", ["run.queued"])
            run_id, _ = queue(tenant)
            rec.wait_for(lambda seen: len(seen) >= 1)
            # Killed once the failed attempt is recorded (its retry is 2 s away).
            rec.wait_for(lambda _: deliveries(tenant, endpoint["id"])[0]["attempts"] == 1)
        finally:
            first.kill()
        rec.answers = []
        second = start_serve_process(env, tmp_path / "second.log", port=port)
        try:
            seen = rec.wait_for(lambda seen: len(seen) >= 2, timeout=30)
            assert seen[0].headers["webhook-id"] == seen[-1].headers["webhook-id"]
            body = verified(endpoint["secret"], seen[-1])
            assert body["type"] == "run.queued" and body["data"]["id"] == run_id
            rec.wait_for(lambda _: deliveries(tenant, endpoint["id"])[0]["status"] == "delivered")
            [delivery] = deliveries(tenant, endpoint["id"])
            assert delivery["attempts"] >= 2 and delivery["response_status"] == 200
        finally:
            second.stop()
            tenant.client.close()


# ------------------------------------------------------------------------------------------ dashboard


def test_dashboard_adds_shows_disables_redelivers_and_deletes(org: Tenant, hook: Receiver, wh_db: Database) -> None:
    csrf = signed_in_tenant(wh_db, org)
    page = org.client.post(
        "/settings/webhooks",
        data={"csrf_token": csrf, "url": f"{hook.url}/hook", "events": ["run.queued", "run.finished"]},
    )
    assert page.status_code == 200, page.text
    found = re.search(r'id="new-webhook" data-webhook="(whk_[0-9a-z]+)"', page.text)
    secret = re.search(r'id="new-secret-value" readonly value="(whsec_[^"]+)"', page.text)
    assert found and secret
    webhook_id = found.group(1)
    listed = org.client.get("/settings/webhooks")
    assert f'data-webhook="{webhook_id}"' in listed.text and secret.group(1) not in listed.text
    refused = org.client.post(
        "/settings/webhooks", data={"csrf_token": csrf, "url": "ftp://x.example.com/", "events": ["run.queued"]}
    )
    assert refused.status_code == 422 and 'id="webhook-error"' in refused.text

    queue(org)
    first = hook.wait_for(lambda seen: len(seen) == 1)[0]
    assert Webhook(secret.group(1)).verify(first.body, first.headers)["type"] == "run.queued"
    hook.wait_for(lambda _: deliveries(org, webhook_id)[0]["status"] == "delivered")
    delivery_id = first.headers["webhook-id"]
    detail = org.client.get(f"/settings/webhooks/{webhook_id}")
    assert detail.status_code == 200 and f'data-delivery="{delivery_id}"' in detail.text

    again = org.client.post(
        f"/settings/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
        data={"csrf_token": csrf},
        follow_redirects=False,
    )
    assert again.status_code == 303, again.text
    hook.wait_for(lambda seen: len(seen) == 2)
    off = org.client.post(
        f"/settings/webhooks/{webhook_id}/enabled",
        data={"csrf_token": csrf, "enabled": "false"},
        follow_redirects=False,
    )
    assert off.status_code == 303 and org.client.get(f"/v1/webhooks/{webhook_id}").json()["enabled"] is False
    gone = org.client.post(f"/settings/webhooks/{webhook_id}/delete", data={"csrf_token": csrf}, follow_redirects=False)
    assert gone.status_code == 303 and org.client.get(f"/v1/webhooks/{webhook_id}").status_code == 404
