"""Test retries: a run that fails as `test` is tried again, ahead of the queue and on another device where
one fits; every attempt keeps its steps; a run that passes on a retry is `flaky`; infrastructure retries
stay apart; JUnit records retries as Maven Surefire does. Real servers on SQLite and PostgreSQL, the
agent protocol spoken by hand where a test chooses the device and the outcome, and a real agent running
a genuinely flaky flow."""

from __future__ import annotations

import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from tests.fixtures.agents import agent_token, running_agent
from tests.fixtures.cli import Cli
from tests.fixtures.factories import Database, Tenant, create_test_case, make_tenant, upload_app
from tests.fixtures.hand_agent import HandAgent, phone, tag
from tests.fixtures.servers import LiveServer, live_server

FIXTURES = Path(__file__).parent / "fixtures"
SUREFIRE_XSD = xmlschema.XMLSchema(str(FIXTURES / "surefire-test-report-3.0.xsd"))
JUNIT_XSD = xmlschema.XMLSchema(str(FIXTURES / "junit-10.xsd"))
FLOW = "appId: com.example.app\n---\n- launchApp\n- tapOn: Checkout\n"


@pytest.fixture(scope="module")
def rt_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # Short leases: a test makes an attempt lose its agent. Two infrastructure attempts, so that a test
    # retry counted against them would show.
    with live_server(
        backend,
        tmp_path_factory.mktemp(f"retries-{backend}"),
        lease_seconds=1.5,
        heartbeat_seconds=0.3,
        reaper_interval=0.2,
        max_attempts=2,
        retry_device_wait=30,
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def rt_db(rt_server: LiveServer) -> Iterator[Database]:
    database = Database(rt_server.settings.resolved_database_url)
    yield database
    database.close()


@pytest.fixture
def org(rt_db: Database, rt_server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(rt_db, rt_server.url)
    yield t
    for status in ("queued", "running"):  # devices serve every organisation: leave nothing behind
        for run in t.client.get("/v1/jobs/list", params={"status": status}).json()["test_runs"]:
            t.client.post(f"/v1/jobs/{run['id']}/cancel")
    t.client.close()


def _app(tenant: Tenant) -> str:
    response = upload_app(tenant)
    assert response.status_code == 200, response.text
    return str(response.json()["file"]["id"])


def _queue(tenant: Tenant, device_tag: str, n: int = 1, **extra: Any) -> list[str]:
    app = _app(tenant)
    case = create_test_case(tenant, name=f"Checkout {uuid.uuid4().hex[:6]}", flow=FLOW)
    jobs = [
        {"test_case_id": case["id"], "app_file_id": app, "device_selector": {"tags": [device_tag]}} for _ in range(n)
    ]
    response = tenant.client.post("/v1/test-cases/run", json={"jobs": jobs, **extra})
    assert response.status_code == 200, response.text
    return [j["id"] for j in response.json()["jobs"]]


def _status(tenant: Tenant, run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = tenant.client.get(f"/v1/jobs/status/{run_id}").json()
    return body


def _report(tenant: Tenant, run_id: str, **params: Any) -> dict[str, Any]:
    response = tenant.client.get(f"/v1/jobs/{run_id}/report", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def validate_junit(xml: bytes) -> ET.Element:
    """Valid JUnit for CI systems (Jenkins' junit-10.xsd, the whole document) and each <testsuite> for
    Maven Surefire's own schema, which defines reruns."""
    JUNIT_XSD.validate(xml.decode())
    root = ET.fromstring(xml)
    for suite in root.iter("testsuite"):
        SUREFIRE_XSD.validate(ET.tostring(suite, encoding="unicode"))
    return root


# ---------------------------------------------------------------------------------- the protocol


def test_a_test_failure_is_tried_again_on_another_device_and_passes_as_flaky(
    org: Tenant, rt_server: LiveServer, rt_db: Database
) -> None:
    t = tag()
    agent = HandAgent(rt_server, rt_db, [phone("a", t), phone("b", t)])
    try:
        [run_id] = _queue(org, t, retries=2)
        assert _status(org, run_id)["retries"] == {"allowed": 2, "used": 0}
        first = agent.claim("a")
        assert first is not None and first["id"] == run_id and first["attempt"] == 1
        agent.fail(first)

        # Queued again: the same run, its first attempt kept with its failure, the device that failed it
        # passed over while another that fits exists.
        again = _status(org, run_id)
        assert again["status"] == "queued" and again["failure"] is None
        assert again["retries"] == {"allowed": 2, "used": 1} and again["attempt"] == 1
        assert again["queue"]["position"] == 1
        assert agent.claim("a") is None
        second = agent.claim("b")
        assert second is not None and (second["id"], second["attempt"]) == (run_id, 2)
        agent.pass_(second)
    finally:
        agent.close()

    done = _status(org, run_id)
    assert (done["status"], done["flaky"], done["failure"]) == ("passed", True, None)
    assert done["retries"] == {"allowed": 2, "used": 1}
    report = _report(org, run_id)
    one, two = report["attempts"]
    assert (one["outcome"], one["retry"], one["device_id"]) == ("failed", None, agent.ids["a"])
    assert one["failure"] == {"kind": "test", "message": "Step 2 failed: no Checkout", "step": 1}
    assert one["failing_step"]["logs"] == ["looked for Checkout for 5 s", "screen: Home"]
    assert (two["outcome"], two["retry"], two["device_id"]) == ("passed", "test", agent.ids["b"])
    # Every attempt keeps its steps: the latest's in the report, the first's by asking for it.
    assert report["attempt"] == 2 and [s["status"] for s in report["steps"]] == ["passed", "passed"]
    earlier = _report(org, run_id, attempt=1)
    assert earlier["attempt"] == 1 and [s["status"] for s in earlier["steps"]] == ["passed", "failed"]
    assert org.client.get(f"/v1/jobs/{run_id}/report", params={"attempt": 3}).status_code == 404

    # JUnit: one test (not one per attempt), passed, with the failed attempt as a flaky failure.
    root = validate_junit(org.client.get(f"/v1/jobs/{run_id}/junit").content)
    suite = root.find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "0", "0")
    [case] = suite.findall("testcase")
    [flaky] = case.findall("flakyFailure")
    assert (flaky.get("type"), flaky.get("message")) == ("test", "Step 2 failed: no Checkout")
    trace = flaky.findtext("stackTrace") or ""
    assert 'tapOn "Checkout"' in trace and "looked for Checkout for 5 s" in trace
    assert case.find("failure") is None and case.find("rerunFailure") is None


def test_a_retry_goes_ahead_of_the_queue(org: Tenant, rt_server: LiveServer, rt_db: Database) -> None:
    t = tag()
    agent = HandAgent(rt_server, rt_db, [phone("a", t), phone("b", t)])
    try:
        [flaky] = _queue(org, t, retries=1)
        later = _queue(org, t, n=3)
        first = agent.claim("a")
        assert first is not None and first["id"] == flaky
        agent.fail(first)
        # Three runs were queued before the retry; it starts first all the same.
        assert _status(org, flaky)["queue"]["position"] == 1
        assert [_status(org, r)["queue"]["position"] for r in later] == [2, 3, 4]
        second = agent.claim("b")
        assert second is not None and second["id"] == flaky
        # The device that failed it takes the next run in line meanwhile.
        nxt = agent.claim("a")
        assert nxt is not None and nxt["id"] == later[0]
    finally:
        agent.close()


def test_the_failing_device_may_retry_when_it_is_the_only_one_that_fits(
    org: Tenant, rt_server: LiveServer, rt_db: Database
) -> None:
    t = tag()
    agent = HandAgent(rt_server, rt_db, [phone("a", t), phone("other", tag())])
    try:
        [run_id] = _queue(org, t, retries=1)
        first = agent.claim("a")
        assert first is not None
        agent.fail(first)
        second = agent.claim("a")
        assert second is not None and (second["id"], second["attempt"]) == (run_id, 2)
        agent.pass_(second)
    finally:
        agent.close()
    assert _status(org, run_id)["flaky"] is True


def test_another_organisations_device_is_no_other_device_for_a_retry(
    org: Tenant, rt_server: LiveServer, rt_db: Database
) -> None:
    """A device that fits but belongs to another organisation's agent never takes this organisation's
    runs: the device that failed is the only one, and retries at once."""
    t = tag()
    other = make_tenant(rt_db, rt_server.url)
    shared = HandAgent(rt_server, rt_db, [phone("a", t)])
    theirs = HandAgent(rt_server, rt_db, [phone("b", t)], organization_id=other.organization_id)
    try:
        [run_id] = _queue(org, t, retries=1)
        first = shared.claim("a")
        assert first is not None
        shared.fail(first)
        assert theirs.claim("b") is None
        second = shared.claim("a")
        assert second is not None and (second["id"], second["attempt"]) == (run_id, 2)
        shared.pass_(second)
    finally:
        shared.close()
        theirs.close()
        other.client.close()


def test_when_retries_are_spent_the_run_fails_with_every_attempt(
    org: Tenant, rt_server: LiveServer, rt_db: Database
) -> None:
    t = tag()
    agent = HandAgent(rt_server, rt_db, [phone("a", t), phone("b", t)])
    try:
        [run_id] = _queue(org, t, retries=1)
        first = agent.claim("a")
        assert first is not None
        agent.fail(first)
        second = agent.claim("b")
        assert second is not None and second["attempt"] == 2
        agent.fail(second, message="Step 2 failed again")
        # No retry left: a third claim finds nothing.
        assert agent.claim("a") is None and agent.claim("b") is None
    finally:
        agent.close()
    done = _status(org, run_id)
    assert (done["status"], done["flaky"], done["failure"]["kind"]) == ("failed", False, "test")
    assert done["retries"] == {"allowed": 1, "used": 1} and done["attempt"] == 2
    attempts = _report(org, run_id)["attempts"]
    assert [(a["outcome"], a["retry"]) for a in attempts] == [("failed", None), ("failed", "test")]

    root = validate_junit(org.client.get(f"/v1/jobs/{run_id}/junit").content)
    suite = root.find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("1", "1")
    [case] = suite.findall("testcase")
    [failure] = case.findall("failure")
    [rerun] = case.findall("rerunFailure")
    assert failure.get("message") == "Step 2 failed again"
    assert rerun.get("message") == "Step 2 failed: no Checkout" and rerun.findtext("stackTrace")
    assert case.find("flakyFailure") is None


def test_infrastructure_retries_stay_apart_from_test_retries(
    org: Tenant, rt_server: LiveServer, rt_db: Database
) -> None:
    """max_attempts is 2 here. A test retry does not spend it: after a test failure and a lost agent, the
    run is queued again (an infrastructure retry), and its pass is flaky by its test failure only."""
    t = tag()
    agent = HandAgent(rt_server, rt_db, [phone("a", t), phone("b", t)])
    try:
        [run_id] = _queue(org, t, retries=1)
        first = agent.claim("a")
        assert first is not None
        agent.fail(first)
        lost = agent.claim("b")
        assert lost is not None and lost["attempt"] == 2
        # No heartbeat: the lease runs out and the reaper queues the run again.
        deadline = time.monotonic() + 15
        while _status(org, run_id)["status"] != "queued":
            assert time.monotonic() < deadline, "the lost attempt was not reaped"
            time.sleep(0.1)
        assert _status(org, run_id)["retries"] == {"allowed": 1, "used": 1}
        third = agent.claim("b")
        assert third is not None and third["attempt"] == 3
        agent.pass_(third)
    finally:
        agent.close()
    done = _status(org, run_id)
    assert (done["status"], done["flaky"], done["attempt"]) == ("passed", True, 3)
    attempts = _report(org, run_id)["attempts"]
    assert [(a["outcome"], a["retry"]) for a in attempts] == [
        ("failed", None),
        ("lost", "test"),
        ("passed", "infrastructure"),
    ]
    assert attempts[1]["failure"] is None  # a lost attempt is no test failure
    # JUnit: only the test failure is a rerun; the lost attempt is not flakiness.
    root = validate_junit(org.client.get(f"/v1/jobs/{run_id}/junit").content)
    [case] = root.iter("testcase")
    assert len(case.findall("flakyFailure")) == 1


def test_an_infrastructure_failure_is_not_tried_again_as_a_test(
    org: Tenant, rt_server: LiveServer, rt_db: Database
) -> None:
    t = tag()
    agent = HandAgent(rt_server, rt_db, [phone("a", t), phone("b", t)])
    try:
        [run_id] = _queue(org, t, retries=2)
        first = agent.claim("a")
        assert first is not None
        agent.fail(first, kind="infrastructure", message="the app did not install")
        assert agent.claim("b") is None
    finally:
        agent.close()
    done = _status(org, run_id)
    assert (done["status"], done["failure"]["kind"], done["retries"]["used"]) == ("failed", "infrastructure", 0)


def test_a_repeated_report_of_a_retried_attempt_is_a_repeat(
    org: Tenant, rt_server: LiveServer, rt_db: Database
) -> None:
    t = tag()
    agent = HandAgent(rt_server, rt_db, [phone("a", t), phone("b", t)])
    try:
        [run_id] = _queue(org, t, retries=1)
        first = agent.claim("a")
        assert first is not None
        agent.fail(first)
        agent.fail(first)  # the agent retried its report (its answer was lost): 200, nothing changes
        assert _status(org, run_id)["retries"]["used"] == 1
    finally:
        agent.close()


def test_retries_come_from_the_request_the_test_case_or_the_organisation(org: Tenant) -> None:
    app = _app(org)
    own = create_test_case(org, name="Has its own", flow=FLOW, retries=3)
    plain = create_test_case(org, name="Has none", flow=FLOW)
    assert (own["retries"], plain["retries"]) == (3, None)
    settings = org.client.patch("/v1/organization/settings", json={"default_retries": 1})
    assert settings.status_code == 200 and settings.json()["default_retries"] == 1

    def allowed(case_id: str, **extra: Any) -> int:
        job = {"test_case_id": case_id, "app_file_id": app, "platform": "android", **extra.pop("job", {})}
        response = org.client.post("/v1/test-cases/run", json={"jobs": [job], **extra})
        assert response.status_code == 200, response.text
        retries: int = _status(org, response.json()["jobs"][0]["id"])["retries"]["allowed"]
        return retries

    assert allowed(own["id"]) == 3
    assert allowed(plain["id"]) == 1
    assert allowed(own["id"], retries=0) == 0
    assert allowed(own["id"], retries=0, job={"retries": 5}) == 5  # a job's own wins
    run_all = org.client.post("/v1/test-cases/run-all", json={"app_file_id": app, "platform": "android", "retries": 2})
    assert run_all.status_code == 200, run_all.text
    assert {_status(org, j["id"])["retries"]["allowed"] for j in run_all.json()["jobs"]} == {2}
    # PATCH null: back to the organisation's.
    patched = org.client.patch(f"/v1/test-cases/{own['id']}", json={"retries": None})
    assert patched.status_code == 200 and patched.json()["retries"] is None
    assert allowed(own["id"]) == 1

    for body in ({"retries": 6}, {"retries": -1}):
        response = org.client.post("/v1/test-cases/run", json={"jobs": [{"test_case_id": plain["id"]}], **body})
        assert response.status_code == 422, response.text
    assert org.client.patch("/v1/organization/settings", json={"default_retries": 9}).status_code == 422
    assert org.client.patch("/v1/organization/settings", json={"default_retries": None}).status_code == 422
    assert org.client.post("/v1/test-cases", json={"name": "x", "retries": 7}).status_code == 422


# ------------------------------------------------------------------------ a real, flaky flow


class _Verdicts(BaseHTTPRequestHandler):
    """Answers "fail" to the first request and "pass" to every later one: a flaky backend."""

    calls = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            type(self).calls += 1
            body = b"fail" if type(self).calls == 1 else b"pass"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def verdicts() -> Iterator[str]:
    _Verdicts.calls = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Verdicts)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/verdict"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_flaky_flow_passes_on_a_retry_on_the_other_device(
    org: Tenant, rt_server: LiveServer, rt_db: Database, verdicts: str, tmp_path: Path
) -> None:
    """A real agent with two devices runs a flow whose backend fails it once: the run fails on one device,
    is tried again on the other and passes; `qualgent run --wait` exits 0, names it flaky, and writes
    Surefire's JUnit."""
    flow = (
        "appId: com.example.app\n---\n- launchApp\n"
        f"- evalScript: ${{output.verdict = http.get('{verdicts}').body}}\n"
        "- assertTrue: ${output.verdict == 'pass'}\n"
    )
    _app(org)
    case = create_test_case(org, name="Flaky checkout", flow=flow)
    t = tag()
    devices = [phone("one", t), phone("two", t)]
    from qualgent.drivers.base import DeviceConfig

    configs = [
        DeviceConfig(d["id"], d["name"], d["platform"], d["os_version"], "phone", "simulator", tags=tuple(d["tags"]))
        for d in devices
    ]
    junit = tmp_path / "junit.xml"
    cli = Cli(rt_server.url, org.key, tmp_path)
    with running_agent(rt_server.url, agent_token(rt_db), configs, tmp_path / "cache", step_seconds=0.01):
        done = cli(
            "run", case["id"], "--platform", "android", "--device-tag", t, "--latest", "--retries", "1",
            "--wait", "--timeout", "90", "--junit", str(junit), "--json",
        )  # fmt: skip
    assert done.code == 0, done.stderr + done.stdout
    summary = done.json()
    [run] = summary["runs"]
    assert (run["status"], run["flaky"], run["retries"]) == ("passed", True, {"allowed": 1, "used": 1})
    assert summary["flaky"] == [run["id"]]
    assert summary["batches"][0]["verdict"] == "flaky-passed"
    assert "FLAKY Flaky checkout" in done.stderr
    attempts = _report(org, run["id"])["attempts"]
    assert [a["outcome"] for a in attempts] == ["failed", "passed"]
    assert attempts[0]["device_id"] != attempts[1]["device_id"]  # tried again on the other device
    assert "assertion is false" in attempts[0]["failure"]["message"]
    root = validate_junit(junit.read_bytes())
    [case_element] = root.iter("testcase")
    assert len(case_element.findall("flakyFailure")) == 1 and case_element.find("failure") is None
