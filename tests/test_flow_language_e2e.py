"""The flow language end to end through the server: a test case saved with its files (a subflow and a
script), run with `env` values and an organisation secret by a real `qualgent agent` process, and read
back as a report, a status and JUnit XML; one run on the Appium server with Appium's fake driver.

The module has its own server (short lease and heartbeat): its agents claim whatever is queued there.
Agents run as subprocesses, as `qualgent agent` runs on a device host.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.appium import AppiumServer, appium_server
from tests.fixtures.contract import assert_error
from tests.fixtures.factories import PIXEL_7, Database, Tenant, apk_bytes, create_test_case, make_tenant, upload_app
from tests.fixtures.servers import LiveServer, live_server
from tests.test_agent_appium import AgentProcess, _agent_process, _appium_device

ROOT = Path(__file__).resolve().parents[1]
HELLO_APK = (ROOT / "examples" / "hello.apk").read_bytes()  # com.qualgent.fixture: "Sign in", "Log in", id username
PIXEL_8 = {**PIXEL_7, "name": "Pixel 8"}
SECRET = "s3cret-Passw0rd"

MAIN = """appId: com.qualgent.fixture
name: Log in with a subflow
env:
  USER: ${USERNAME || 'nobody'}
---
- launchApp
- runFlow:
    file: flows/login.yaml
    env:
      TYPED_PASSWORD: ${PASSWORD}
- runScript: scripts/check.js
- assertTrue: ${output.checked == USER}
"""
LOGIN = """appId: com.qualgent.fixture
---
- tapOn:
    id: username
- inputText: ${USER}
- inputText: ${TYPED_PASSWORD}
- repeat:
    times: 2
    commands:
      - tapOn: Log in
"""
CHECK_JS = "console.log('checking', USER, 'with', PASSWORD);\noutput.checked = USER;\n"
FILES = [
    {"path": "flows/login.yaml", "content": LOGIN},
    {"path": "scripts/check.js", "content": CHECK_JS},
]


@pytest.fixture(scope="module")
def lang_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        backend,
        tmp_path_factory.mktemp(f"flow-language-{backend}"),
        lease_seconds=5,
        heartbeat_seconds=0.5,
        reaper_interval=0.2,
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def lang_db(lang_server: LiveServer) -> Iterator[Database]:
    database = Database(lang_server.settings.resolved_database_url)
    yield database
    database.close()


@pytest.fixture
def org(lang_db: Database, lang_server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(lang_db, lang_server.url)
    yield t
    t.client.close()


@pytest.fixture(scope="module")
def sim_agent(lang_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """`qualgent agent` serving one simulated Pixel 7 (its own process, its own JavaScript workers)."""
    device = {
        "id": "pixel-7-sim",
        "name": "Pixel 7",
        "platform": "Android",
        "os_version": "14.0",
        "driver": "simulator",
    }
    with _agent_process(lang_server, [device], tmp_path_factory.mktemp("sim-host")) as handle:
        yield handle


@pytest.fixture(scope="module")
def appium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppiumServer]:
    with appium_server(tmp_path_factory.mktemp("appium")) as server:
        yield server


@pytest.fixture(scope="module")
def appium_agent(
    lang_server: LiveServer, appium: AppiumServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    """`qualgent agent` serving a Pixel 8 through the Appium server's fake driver."""
    device = _appium_device("pixel-8-fake", PIXEL_8, appium.url)
    with _agent_process(lang_server, [device], tmp_path_factory.mktemp("appium-host")) as handle:
        yield handle


def _queue(tenant: Tenant, case_id: str, app_id: str, device: dict[str, str], **extra: Any) -> str:
    job = {"test_case_id": case_id, "app_file_id": app_id, "device": device, **extra}
    response = tenant.client.post("/v1/test-cases/run", json={"jobs": [job]})
    assert response.status_code == 200, response.text
    return str(response.json()["jobs"][0]["id"])


def _app(tenant: Tenant, content: bytes = HELLO_APK) -> str:
    response = upload_app(tenant, content, filename="hello.apk", app_name="Hello")
    assert response.status_code == 200, response.text
    return str(response.json()["file"]["id"])


def _finished(tenant: Tenant, run_id: str, agent: AgentProcess, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = tenant.client.get(f"/v1/jobs/status/{run_id}").json()
        if body["status"] in ("passed", "failed", "cancelled"):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {body['status']} after {timeout} s: {body}\n{agent.output()}")
        time.sleep(0.05)


def _steps(tenant: Tenant, run_id: str) -> list[dict[str, Any]]:
    response = tenant.client.get(f"/v1/jobs/{run_id}/report")
    assert response.status_code == 200, response.text
    steps: list[dict[str, Any]] = response.json()["steps"]
    return steps


def _tree(steps: list[dict[str, Any]]) -> list[tuple[int, int | None, int, str, str]]:
    return [(s["index"], s["parent"], s["depth"], s["description"], s["status"]) for s in steps]


# ------------------------------------------------------------------------------- simulated device


def test_a_flow_with_files_env_and_a_secret_passes_with_its_steps_nested(org: Tenant, sim_agent: AgentProcess) -> None:
    assert org.client.put("/v1/secrets/PASSWORD", json={"value": SECRET}).status_code == 200
    case = create_test_case(org, name="language", flow=MAIN, files=FILES)
    assert [f["path"] for f in case["files"]] == ["flows/login.yaml", "scripts/check.js"]
    run_id = _queue(org, case["id"], _app(org), PIXEL_7, env={"USERNAME": "qa@example.com"})
    done = _finished(org, run_id, sim_agent)
    assert done["status"] == "passed", (done, sim_agent.output())
    assert done["failure"] is None and done["progress"] == 100

    steps = _steps(org, run_id)
    assert _tree(steps) == [
        (0, None, 0, "launchApp", "passed"),
        (1, None, 0, "runFlow flows/login.yaml", "passed"),
        (2, 1, 1, 'tapOn id "username"', "passed"),
        (3, 1, 1, 'inputText "qa@example.com"', "passed"),
        (4, 1, 1, 'inputText "***"', "passed"),
        (5, 1, 1, "repeat 2 times", "passed"),
        (6, 5, 2, "iteration 1", "passed"),
        (7, 6, 3, 'tapOn "Log in"', "passed"),
        (8, 5, 2, "iteration 2", "passed"),
        (9, 8, 3, 'tapOn "Log in"', "passed"),
        (10, None, 0, "runScript scripts/check.js", "passed"),
        (11, None, 0, 'assertTrue "${output.checked == USER}"', "passed"),
    ]
    assert steps[10]["logs"] == ["console: checking qa@example.com with ***"]
    # What reached the simulated device: the typed value, masked in its log too.
    assert any("***" in line for line in steps[4]["logs"]), steps[4]

    report = org.client.get(f"/v1/jobs/{run_id}/report").text
    junit = org.client.get(f"/v1/jobs/{run_id}/junit")
    assert junit.status_code == 200
    assert SECRET not in report and SECRET not in junit.text
    assert "qa@example.com" in junit.text  # run values that are not secrets are shown
    assert "***" in junit.text


def test_a_failing_nested_step_fails_the_run_at_that_step(org: Tenant, sim_agent: AgentProcess) -> None:
    assert org.client.put("/v1/secrets/PASSWORD", json={"value": SECRET}).status_code == 200
    login = LOGIN.replace("      - tapOn: Log in\n", "      - tapOn: Log in\n      - tapOn: ${TYPED_PASSWORD} button\n")
    files = [{"path": "flows/login.yaml", "content": login}, FILES[1]]
    case = create_test_case(org, name="failing", flow=MAIN, files=files)
    run_id = _queue(org, case["id"], _app(org), PIXEL_7)
    done = _finished(org, run_id, sim_agent)
    assert done["status"] == "failed", (done, sim_agent.output())
    failure = done["failure"]
    assert failure["kind"] == "test" and failure["step"] == 8, failure
    assert failure["message"] == (
        'Step 9 (tapOn "*** button", flows/login.yaml line 11) failed: '
        "No text '*** button' in the build: the simulated device cannot find it on any screen."
    )
    steps = _steps(org, run_id)
    assert _tree(steps) == [
        (0, None, 0, "launchApp", "passed"),
        (1, None, 0, "runFlow flows/login.yaml", "failed"),
        (2, 1, 1, 'tapOn id "username"', "passed"),
        (3, 1, 1, 'inputText "nobody"', "passed"),
        (4, 1, 1, 'inputText "***"', "passed"),
        (5, 1, 1, "repeat 2 times", "failed"),
        (6, 5, 2, "iteration 1", "failed"),
        (7, 6, 3, 'tapOn "Log in"', "passed"),
        (8, 6, 3, 'tapOn "*** button"', "failed"),
    ]
    junit = org.client.get(f"/v1/jobs/{run_id}/junit").text
    assert SECRET not in junit and SECRET not in org.client.get(f"/v1/jobs/{run_id}/report").text
    assert "<failure" in junit and "*** button" in junit


def test_run_env_wins_over_the_flow_s_env(org: Tenant, sim_agent: AgentProcess) -> None:
    flow = "appId: com.qualgent.fixture\nenv:\n  TEXT: Log out\n---\n- tapOn: ${TEXT}\n"
    case = create_test_case(org, name="env wins", flow=flow)
    app = _app(org)
    passing = _queue(org, case["id"], app, PIXEL_7, env={"TEXT": "Log in"})
    failing = _queue(org, case["id"], app, PIXEL_7)
    assert _finished(org, passing, sim_agent)["status"] == "passed"
    done = _finished(org, failing, sim_agent)
    assert done["status"] == "failed" and "'Log out'" in done["failure"]["message"]


# ----------------------------------------------------------------------------------- saving is checked


def test_a_missing_subflow_is_refused_with_its_file_and_line(tenant: Tenant) -> None:
    body = {"name": "x", "flow": MAIN, "files": [FILES[1]]}
    error = assert_error(tenant.client.post("/v1/test-cases", json=body), 422, "invalid_flow")
    assert error["details"] == [
        {
            "field": "flow",
            "path": None,
            "line": 8,
            "issue": (
                "flow file 'flows/login.yaml' is not among the test case's files "
                "(looked for 'flows/login.yaml'; files: scripts/check.js)"
            ),
        }
    ]
    # In a subflow, the subflow's file and line.
    broken = LOGIN + "- runFlow: ../shared/missing.yaml\n"
    body = {"name": "x", "flow": MAIN, "files": [{"path": "flows/login.yaml", "content": broken}, FILES[1]]}
    error = assert_error(tenant.client.post("/v1/test-cases", json=body), 422, "invalid_flow")
    [detail] = error["details"]
    assert (detail["field"], detail["path"], detail["line"]) == ("files", "flows/login.yaml", 11)
    assert "shared/missing.yaml" in detail["issue"]
    assert error["message"].startswith(
        "The flow is invalid: flows/login.yaml line 11: flow file '../shared/missing.yaml'"
    )


def test_a_script_with_a_syntax_error_is_refused_with_its_file_and_line(tenant: Tenant) -> None:
    bad = {"path": "scripts/check.js", "content": "output.checked = USER;\nif (USER {\n}\n"}
    body = {"name": "x", "flow": MAIN, "files": [FILES[0], bad]}
    error = assert_error(tenant.client.post("/v1/test-cases", json=body), 422, "invalid_flow")
    [detail] = error["details"]
    assert (detail["field"], detail["path"], detail["line"]) == ("files", "scripts/check.js", 2)
    assert detail["issue"].startswith("JavaScript SyntaxError")
    # An expression in the flow itself: the flow's line.
    flow = MAIN.replace("${output.checked == USER}", "${output.checked == }")
    error = assert_error(
        tenant.client.post("/v1/test-cases", json={"name": "x", "flow": flow, "files": FILES}), 422, "invalid_flow"
    )
    [detail] = error["details"]
    assert (detail["field"], detail["path"], detail["line"]) == ("flow", None, 12)
    assert detail["issue"].startswith("JavaScript SyntaxError in ${output.checked ==}: ")
    # PATCH checks the same way: a broken script cannot replace a good one.
    case = create_test_case(tenant, name="good", flow=MAIN, files=FILES)
    patched = tenant.client.patch(f"/v1/test-cases/{case['id']}", json={"files": [FILES[0], bad]})
    assert assert_error(patched, 422, "invalid_flow")["details"][0]["path"] == "scripts/check.js"


def test_a_flow_with_a_lone_surrogate_is_a_422(tenant: Tenant) -> None:
    """JSON can carry "\\ud800"; it is bad text in a flow, never a server error."""
    body = '{"name": "x", "flow": "- back\\n- inputText: a\\ud800b\\n"}'
    response = tenant.client.post("/v1/test-cases", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text


# ----------------------------------------------------------------------------------------- Appium


APPIUM_FLOW = """appId: com.example.app
env:
  EMAIL: ${USERNAME}
---
- launchApp
- runFlow: flows/signin.yaml
- repeat:
    times: 2
    commands:
      - assertVisible: ${'Wel' + 'come'}
- evalScript: ${output.typed = EMAIL.toUpperCase()}
- tapOn:
    id: email
- inputText: ${output.typed}
"""


def test_the_language_drives_an_appium_device(org: Tenant, appium_agent: AgentProcess, appium: AppiumServer) -> None:
    uploaded = upload_app(org, apk_bytes())
    assert uploaded.status_code == 200, uploaded.text
    case = create_test_case(
        org, name="appium", flow=APPIUM_FLOW, files=[{"path": "flows/signin.yaml", "content": "- tapOn: Sign in\n"}]
    )
    run_id = _queue(org, case["id"], uploaded.json()["file"]["id"], PIXEL_8, env={"USERNAME": "me@example.com"})
    done = _finished(org, run_id, appium_agent, timeout=60)
    steps = _steps(org, run_id)
    assert done["status"] == "passed", (done["failure"], [(st["description"], st["logs"]) for st in steps])
    assert _tree(steps) == [
        (0, None, 0, "launchApp", "passed"),
        (1, None, 0, "runFlow flows/signin.yaml", "passed"),
        (2, 1, 1, 'tapOn "Sign in"', "passed"),
        (3, None, 0, "repeat 2 times", "passed"),
        (4, 3, 1, "iteration 1", "passed"),
        (5, 4, 2, 'assertVisible "Welcome"', "passed"),
        (6, 3, 1, "iteration 2", "passed"),
        (7, 6, 2, 'assertVisible "Welcome"', "passed"),
        (8, None, 0, 'evalScript "${output.typed = EMAIL.toUpperCase()}"', "passed"),
        (9, None, 0, 'tapOn id "email"', "passed"),
        (10, None, 0, 'inputText "ME@EXAMPLE.COM"', "passed"),
    ]
    created = steps[0]["logs"][0]
    assert created.startswith("POST /session {") and '"platformName":"Fake"' in created, steps[0]["logs"]
    session = created.rsplit(" ", 1)[-1]
    call = re.compile(rf"^(GET|POST|DELETE) /session/{re.escape(session)}/\S+")
    calls = {s["index"]: [line for line in s["logs"] if call.match(line)] for s in steps}
    # Every device step, in the subflow and in each iteration too, reached the fake driver in this session;
    # the language's own steps (runFlow, repeat, iterations, evalScript) did not.
    assert {index for index, lines in calls.items() if lines} == {0, 2, 5, 7, 9, 10}, calls
    # The text typed is the evalScript's result, sent to the driver.
    assert any("ME@EXAMPLE.COM" in line for line in calls[10]), calls[10]
    assert "ME@EXAMPLE.COM" in appium.log_path.read_text(errors="replace")
    assert session not in appium.session_ids()  # the agent quit the session
