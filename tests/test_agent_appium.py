"""Runs through a real device agent on the ``appium`` driver, end to end, on both backends.

Every part is the real one: a live qualgent server (short lease and heartbeat), a token from
`qualgent admin create-agent`, `qualgent agent` as a subprocess reading a YAML devices file, and a
real Appium server with Appium's fake driver (tests/fixtures/appium.py), which plays tests/appium/app.xml.

The devices file serves two catalogue devices through Appium: "Pixel 7" on the Appium server, and
"Pixel 8" pointing at a port nothing listens on. Runs queued for one of them reach only that device.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.appium import FAKE_APP, AppiumServer, appium_server, slow_quit_relay
from tests.fixtures.factories import PIXEL_7, Database, Tenant, apk_bytes, create_test_case, make_tenant, upload_app
from tests.fixtures.servers import LiveServer, free_port, live_server

PIXEL_8 = {**PIXEL_7, "name": "Pixel 8"}
PIXEL_6 = {**PIXEL_7, "name": "Pixel 6", "os_version": "13"}
PNG = b"\x89PNG\r\n\x1a\n"
AGENT_TOKEN = re.compile(r"^qga_\S+$", re.MULTILINE)

# What tests/appium/app.xml shows: a "Welcome" title, an "Email" field (id email), a "Sign in" button
# (id sign_in) and a button that is there but hidden (id hidden_button).
PASSING_FLOW = """appId: com.example.app
name: Sign in on Appium
---
- launchApp
- assertVisible: Welcome
- tapOn:
    id: email
- inputText: me@example.com
- tapOn: Sign in
- assertNotVisible:
    id: hidden_button
- takeScreenshot: signed-in
"""
FAILING_FLOW = """appId: com.example.app
---
- launchApp
- tapOn: Sign in
- assertVisible:
    text: Checkout complete
    timeout: 1000
- takeScreenshot: never
"""


@dataclass
class AgentProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def _cli_env(server: LiveServer) -> dict[str, str]:
    """The environment of a shell on the server's host: the CLI finds the server's database there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUALGENT_")}
    env["QUALGENT_DATA_DIR"] = str(server.settings.data_dir)
    env["QUALGENT_DATABASE_URL"] = server.settings.resolved_database_url
    return env


def _appium_device(config_id: str, device: dict[str, str], server_url: str) -> dict[str, Any]:
    """A devices-file entry for a catalogue device served through Appium's fake driver at ``server_url``."""
    return {
        "id": config_id,
        "name": device["name"],
        "platform": device["platform"],
        "os_version": f"{device['os_version']}.0",  # as the catalogue spells it: runs match devices on it
        "driver": "appium",
        "appium": {
            "server_url": server_url,
            "new_session_timeout_s": 30,
            "command_timeout_s": 10,
            "capabilities": {
                "platformName": "Fake",  # the fake driver's only platform; configured wins over the device's
                "automationName": "Fake",  # sent as appium:automationName
                "appium:app": str(FAKE_APP),  # the fake driver's app, instead of the uploaded APK
            },
        },
    }


@contextlib.contextmanager
def _agent_process(server: LiveServer, devices: list[dict[str, Any]], home: Path) -> Iterator[AgentProcess]:
    """`qualgent agent --devices devices.yaml` with a token from `qualgent admin create-agent`; SIGTERM at the end."""
    env = _cli_env(server)
    created = subprocess.run(
        [sys.executable, "-m", "qualgent", "admin", "create-agent", home.name, "--shared"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    token = AGENT_TOKEN.search(created.stdout)
    assert token is not None, created.stdout
    devices_file = home / "devices.yaml"
    devices_file.write_text(yaml.safe_dump({"devices": devices}, sort_keys=False))
    log_path = home / "agent.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qualgent",
                "agent",
                "--server",
                server.url,
                "--devices",
                str(devices_file),
                "--cache-dir",
                str(home / "cache"),
            ],
            env={**env, "QUALGENT_AGENT_TOKEN": token.group(0)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    handle = AgentProcess(proc, log_path)
    try:
        deadline = time.monotonic() + 30
        while f"registered {len(devices)} devices" not in handle.output():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the agent did not register:\n{handle.output()}")
            time.sleep(0.05)
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def appium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppiumServer]:
    with appium_server(tmp_path_factory.mktemp("appium")) as server:
        yield server


@pytest.fixture(scope="module")
def appium_exec_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        backend,
        tmp_path_factory.mktemp(f"agent-appium-{backend}"),
        lease_seconds=3,
        heartbeat_seconds=0.5,
        reaper_interval=0.2,
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def appium_exec_db(appium_exec_server: LiveServer) -> Iterator[Database]:
    database = Database(appium_exec_server.settings.resolved_database_url)
    yield database
    database.close()


@pytest.fixture(scope="module")
def agent(
    appium_exec_server: LiveServer, appium: AppiumServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    """One agent serving Pixel 7 on the Appium server and Pixel 8 at a port nothing listens on."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    devices = [_appium_device("pixel-7-fake", PIXEL_7, appium.url), _appium_device("pixel-8-gone", PIXEL_8, nowhere)]
    with _agent_process(appium_exec_server, devices, tmp_path_factory.mktemp("appium-host")) as handle:
        yield handle


@pytest.fixture
def org(appium_exec_db: Database, appium_exec_server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(appium_exec_db, appium_exec_server.url)
    yield t
    t.client.close()


def _run(tenant: Tenant, flow: str, device: dict[str, str]) -> str:
    uploaded = upload_app(tenant, apk_bytes())
    assert uploaded.status_code == 200, uploaded.text
    case = create_test_case(tenant, flow=flow)
    job = {"test_case_id": case["id"], "app_file_id": uploaded.json()["file"]["id"], "device": device}
    response = tenant.client.post("/v1/test-cases/run", json={"jobs": [job]})
    assert response.status_code == 200, response.text
    return str(response.json()["jobs"][0]["id"])


def _finished(tenant: Tenant, run_id: str, agent: AgentProcess, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = tenant.client.get(f"/v1/jobs/status/{run_id}").json()
        if body["status"] in ("passed", "failed", "cancelled"):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {body['status']} after {timeout} s: {body}\n{agent.output()}")
        time.sleep(0.05)


def _report(tenant: Tenant, run_id: str) -> dict[str, Any]:
    response = tenant.client.get(f"/v1/jobs/{run_id}/report")
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def test_a_flow_passes_on_appium_with_webdriver_logs_and_a_screenshot(
    org: Tenant, agent: AgentProcess, appium: AppiumServer
) -> None:
    run_id = _run(org, PASSING_FLOW, PIXEL_7)
    done = _finished(org, run_id, agent)
    assert done["status"] == "passed", (done, agent.output())
    assert done["failure"] is None and done["attempt"] == 1 and done["progress"] == 100

    report = _report(org, run_id)
    steps = report["steps"]
    assert [s["status"] for s in steps] == ["passed"] * 7, steps
    assert [s["index"] for s in steps] == list(range(7))
    assert steps[2]["description"] == 'tapOn id "email"'
    # The session's creation shows in the first step, with the merged capabilities.
    created = steps[0]["logs"][0]
    assert created.startswith("POST /session {"), steps[0]["logs"]
    assert '"platformName":"Fake"' in created and '"appium:automationName":"Fake"' in created
    assert "app.xml" in created
    session_id = created.rsplit(" ", 1)[-1]
    assert f"GET /session/{session_id}/source " in "\n".join(steps[1]["logs"])  # assertVisible looked
    assert any(f"POST /session/{session_id}/actions " in line for line in steps[4]["logs"]), steps[4]  # tapped
    typed = steps[3]["logs"][-1]  # inputText typed into the field tapped before
    assert re.search(r"/element/\w+/value .*me@example.com.* -> 200", typed), steps[3]
    assert session_id not in appium.session_ids()  # the agent quit the session

    shot = steps[6]["screenshot"]
    assert shot, steps[6]
    png = httpx.get(shot)
    assert png.status_code == 200 and png.content.startswith(PNG)
    assert [a["outcome"] for a in report["attempts"]] == ["passed"]
    assert report["attempts"][0]["device"] == "Pixel 7"

    # The Appium server itself received the typed text.
    assert "me@example.com" in appium.log_path.read_text(errors="replace")


def test_a_missing_element_fails_the_run_at_its_step(org: Tenant, agent: AgentProcess) -> None:
    run_id = _run(org, FAILING_FLOW, PIXEL_7)
    done = _finished(org, run_id, agent)
    assert done["status"] == "failed", (done, agent.output())
    failure = done["failure"]
    assert failure["kind"] == "test" and failure["step"] == 2, failure
    assert "Checkout complete" in failure["message"] and "waited 1000 ms" in failure["message"]

    steps = _report(org, run_id)["steps"]
    assert [s["status"] for s in steps] == ["passed", "passed", "failed"]  # the last step never ran
    assert steps[2]["message"] == '"Checkout complete" is not visible (waited 1000 ms)'
    assert any(line.startswith("looked ") and "not found" in line for line in steps[2]["logs"]), steps[2]
    shot = steps[2]["screenshot"]  # a picture of the screen the step failed on
    assert shot and httpx.get(shot).content.startswith(PNG)


def test_no_appium_server_is_an_infrastructure_failure(org: Tenant, agent: AgentProcess) -> None:
    run_id = _run(org, PASSING_FLOW, PIXEL_8)
    done = _finished(org, run_id, agent)
    assert done["status"] == "failed", (done, agent.output())
    failure = done["failure"]
    assert failure["kind"] == "infrastructure" and failure["step"] is None, failure
    assert "could not create an Appium session" in failure["message"] and "unreachable" in failure["message"]

    report = _report(org, run_id)
    assert report["steps"] == []  # no session, no step
    assert [a["outcome"] for a in report["attempts"]] == ["failed"]
    assert report["attempts"][0]["device"] == "Pixel 8"


def test_an_agent_stopped_mid_run_quits_its_appium_session_first(
    org: Tenant, appium_exec_server: LiveServer, appium: AppiumServer, tmp_path: Path
) -> None:
    """SIGTERM while a step waits: the agent ends the Appium session before it exits, however long the
    quit takes, so the device is free for the next agent. The run itself is abandoned to its lease."""
    stuck = "appId: com.example.app\n---\n- assertVisible:\n    text: Never there\n    timeout: 30000\n"
    before = set(appium.session_ids())
    with slow_quit_relay(appium.url, delay=2) as relay:
        device = _appium_device("pixel-6-slow-quit", PIXEL_6, relay)
        with _agent_process(appium_exec_server, [device], tmp_path) as agent:
            run_id = _run(org, stuck, PIXEL_6)
            deadline = time.monotonic() + 20
            while not set(appium.session_ids()) - before:
                assert time.monotonic() < deadline, agent.output()
                time.sleep(0.05)
            assert org.client.get(f"/v1/jobs/status/{run_id}").json()["status"] == "running"
            started = time.monotonic()
            assert agent.stop() == 0, agent.output()
            assert set(appium.session_ids()) == before, agent.output()
            assert time.monotonic() - started >= 2  # it waited for the quit to pass the relay
    deadline = time.monotonic() + 15
    while (status := org.client.get(f"/v1/jobs/status/{run_id}").json())["status"] != "queued":
        assert time.monotonic() < deadline, status  # the lease expires and the reaper requeues the run
        time.sleep(0.05)
    attempts = _report(org, run_id)["attempts"]
    assert [a["outcome"] for a in attempts] == ["lost"]
    assert org.client.post(f"/v1/jobs/{run_id}/cancel").json()["status"] == "cancelled"  # nobody serves Pixel 6
