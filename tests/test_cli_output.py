"""What the CLI prints of the server's strings, and what `qualgent serve` and its agents log.

The CLI runs as a pipeline runs it (a subprocess) against a `qualgent serve` subprocess: test cases named
``[/x]`` and ``[bold]x`` (Rich markup), a device named with markup, and a flow whose step text carries
terminal escapes, a bell and a form feed (they reach failure messages, step logs and JUnit files). Runs
the CLI cancels are reported as the server shows them; JUnit files stay well-formed and say why the CLI
stopped; screenshot links lead to the step on the run page, not to a link signed for minutes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import xmlschema
import yaml

from qualgent.drivers.base import DeviceConfig
from qualgent.reports.junit import JUnitCase, JUnitRerun, JUnitStep, render
from tests.fixtures.agents import RunningAgent, agent_token, running_agent
from tests.fixtures.cli import HELLO_APK, LOGIN_FLOW, LOGOUT_FLOW, Cli, Result, long_flow, write_flows
from tests.fixtures.factories import Database, Tenant, make_tenant
from tests.fixtures.processes import clean_env, processes, serve_env
from tests.fixtures.servers import ServeProcess
from tests.fixtures.web import set_password, sign_in

JUNIT_XSD = xmlschema.XMLSchema(str(Path(__file__).parent / "fixtures" / "junit-10.xsd"))
ODD_DEVICE = "[/x] [bold]Phone"  # Rich reads both as markup; "[/x]" closes a tag that is not open
# A step text that would rewrite a terminal: a colour, a window title (OSC … BEL) and a form feed.
HOSTILE = r"\e[31m\e]0;pwned\a[/x]\f"  # YAML escapes, as written in the flow file
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
MARKUP_PASSES = LOGIN_FLOW.replace("name: Login", 'name: "[/x]"')
MARKUP_FAILS = f'appId: com.qualgent.fixture\nname: "[bold]x"\n---\n- launchApp\n- tapOn: "{HOSTILE}"\n'
ALL_FLOWS = 'flows:\n  - "**"\n'


@dataclass
class Served:
    server: ServeProcess
    db: Database
    agent: RunningAgent


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `qualgent serve` (SQLite, the embedded agent's simulated catalogue) and an agent serving two
    devices named with markup. Heartbeats every 2 s: a run the CLI cancels while it runs stays running
    on the server until its agent's next heartbeat."""
    tmp = tmp_path_factory.mktemp("cli-output")
    settings = {
        "simulator_step_seconds": "0.05",
        "heartbeat_seconds": "2",
        "lease_seconds": "8",
        "reaper_interval": "0.2",
    }
    with serve_env("sqlite", tmp, **settings) as (env, url), processes() as procs:
        server = procs.serve(env, tmp / "serve.log")
        db = Database(url)
        odd = [DeviceConfig(f"odd-{n}", ODD_DEVICE, "Android", "14.0") for n in range(2)]
        try:
            with running_agent(
                server.url, agent_token(db, "odd agent"), odd, tmp / "odd-agent", step_seconds=0.05
            ) as a:
                yield Served(server, db, a)
            assert not a.errors, a.errors
        finally:
            db.close()
        assert "Traceback" not in server.output(), server.output()


@pytest.fixture
def tenant(served: Served) -> Iterator[Tenant]:
    t = make_tenant(served.db, served.server.url)
    yield t
    t.client.close()


@pytest.fixture
def cli(served: Served, tenant: Tenant, tmp_path: Path) -> Cli:
    return Cli(served.server.url, tenant.key, tmp_path)


def _upload(cli: Cli) -> str:
    done = cli("apps", "upload", str(HELLO_APK), "--name", "Hello", "--version", "1.0.0", "--json")
    assert done.code == 0, done
    app_id: str = done.json()["id"]
    return app_id


def _sync(cli: Cli, flows: dict[str, str]) -> None:
    done = cli("test-cases", "sync", str(write_flows(cli.cwd / "flows", {"config.yaml": ALL_FLOWS, **flows})))
    assert done.code == 0, done


def _junit(xml: bytes) -> dict[str, Any]:
    """A JUnit document that XML parsers read and CI systems accept (Jenkins' junit-10.xsd)."""
    ET.fromstring(xml)  # well-formed: raises ParseError on a character XML does not allow
    JUNIT_XSD.validate(xml.decode())
    decoded: dict[str, Any] = JUNIT_XSD.to_dict(xml.decode())  # type: ignore[assignment]
    return decoded


def _cases(junit: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {case["@name"]: case for suite in junit["testsuite"] for case in suite["testcase"]}


def _runs(tenant: Tenant) -> dict[str, dict[str, Any]]:
    response = tenant.client.get("/v1/jobs/list")
    assert response.status_code == 200, response.text
    return {r["test_case"]["name"]: r for r in response.json()["test_runs"]}


def _wait_until(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def _no_control_characters(*texts: str) -> None:
    for text in texts:
        found = CONTROL.findall(text)
        assert not found, (found, text)


def _summary(result: Result) -> str:
    [line] = [line for line in result.stdout.splitlines() if " run(s): " in line and "(exit " in line]
    return line


# ------------------------------------------------------------------------- markup and control characters


def test_markup_and_control_characters_from_the_server_are_printed_as_text(cli: Cli, tenant: Tenant) -> None:
    app = _upload(cli)
    _sync(cli, {"odd/pass.yaml": MARKUP_PASSES, "odd/fail.yaml": MARKUP_FAILS})
    junit_path = cli.cwd / "junit.xml"
    done = cli(
        "run-all", "--category", "odd", "--device-name", ODD_DEVICE, "--app", app, "--wait", "--junit", str(junit_path)
    )
    assert done.code == 1, done  # a test failed: the verdict, not a crash
    _no_control_characters(done.stdout, done.stderr)
    assert f"FAILED [bold]x on {ODD_DEVICE} [test]: Step 2 (tapOn " in done.stdout, done.stdout
    assert "[31m]0;pwned[/x]" in done.stdout  # the escapes' printable rest, as text
    assert f"passed     [/x]  on {ODD_DEVICE}" in done.stdout  # the progress line of the passing run
    assert "FAILED 2 run(s): 1 failed, 1 passed (exit 1)" in _summary(done)

    # The JUnit file holds the same strings; what XML forbids is replaced, so it stays well-formed.
    written = junit_path.read_bytes()
    assert b"\x1b" not in written and b"\x07" not in written and b"\x0c" not in written
    cases = _cases(_junit(written))
    assert set(cases) == {"[/x]", "[bold]x"}
    [failure] = cases["[bold]x"]["failure"]
    assert 'tapOn "\ufffd[31m\ufffd]0;pwned\ufffd[/x]\ufffd"' in failure["@message"], failure["@message"]
    run_id = _runs(tenant)["[bold]x"]["id"]
    served_junit = tenant.client.get(f"/v1/jobs/{run_id}/junit")
    assert served_junit.status_code == 200
    assert "[bold]x" in _cases(_junit(served_junit.content))

    # Listings: tables of the server's values, markup and all, as text.
    listed = cli("test-cases", "list")
    assert listed.code == 0, listed
    assert "[/x]" in listed.stdout and "[bold]x" in listed.stdout
    jobs = cli("jobs", "list")
    assert jobs.code == 0, jobs
    assert "[bold]x" in jobs.stdout and "[/x]" in jobs.stdout and jobs.stdout.count(ODD_DEVICE) == 2
    _no_control_characters(jobs.stdout)
    report = cli("jobs", "report", run_id)
    assert report.code == 0, report
    _no_control_characters(report.stdout)
    assert f"{run_id} [bold]x on {ODD_DEVICE}: failed" in report.stdout
    assert '[failed] 2. tapOn "[31m]0;pwned[/x]"' in report.stdout, report.stdout
    status = cli("jobs", "status", run_id)
    assert status.code == 0 and "[bold]x" in status.stdout, status


def test_the_live_table_shows_markup_names_and_the_cli_still_cancels(cli: Cli, tenant: Tenant) -> None:
    """On a terminal the runs are a Rich table: a cell ``[/x]`` raised MarkupError there, the CLI died
    with exit 1 and its runs went on. Now the table shows the names, and --timeout still cancels."""
    app = _upload(cli)
    _sync(cli, {"tty/slow.yaml": long_flow(400, '"[/x] slow"'), "tty/fail.yaml": MARKUP_FAILS})
    code, text = cli.on_a_terminal(
        "run-all", "--category", "tty", "--device-name", ODD_DEVICE, "--app", app, "--wait", "--timeout", "6"
    )
    assert code == 1, text  # [bold]x failed; the slow one did not finish within --timeout
    assert "Traceback" not in text and "MarkupError" not in text, text
    assert "[/x] slow" in text and "[bold]x" in text and "/2 runs finished" in text, text
    assert "\x1b]0;pwned" not in text and "\x07" not in text and "\x0c" not in text  # no title set, no bell
    assert "cancelled 1 run(s)" in text, text
    runs = _runs(tenant)
    assert runs["[/x] slow"]["status"] == "cancelled" and runs["[bold]x"]["status"] == "failed", runs


def test_error_details_are_sentences(cli: Cli) -> None:
    done = cli("jobs", "list", "--status", "bogus")
    assert done.code == 3, done
    assert "(422 invalid_request)" in done.stderr
    assert "  - status: Input should be 'queued', 'running'" in done.stderr, done.stderr
    assert "{" not in done.stderr and "'field'" not in done.stderr


@pytest.mark.parametrize("command", [["run-all"], ["run"], ["jobs", "list"], ["test-cases", "sync"], ["serve"]])
def test_help_shows_no_type_after_a_flag(cli: Cli, command: list[str]) -> None:
    done = cli(*command, "--help")
    assert done.code == 0, done
    assert "--help" in done.stdout
    assert "<bool>" not in done.stdout, done.stdout
    flags = {"run-all": "--wait", "run": "--wait", "jobs": "--json", "test-cases": "--dry-run", "serve": "--migrate"}
    [flag_line] = [line for line in done.stdout.splitlines() if f" {flags[command[0]]} " in line]
    assert "<" not in flag_line, flag_line  # the flag's line carries its help, no value type


# ------------------------------------------------------------------------------ runs the CLI cancelled


@pytest.mark.parametrize("stop", ["timeout", "interrupted"])
def test_runs_the_cli_cancelled_are_reported_cancelled(cli: Cli, tenant: Tenant, stop: str) -> None:
    """One run is running when the CLI gives up (it stops at its agent's next heartbeat, up to 2 s
    later), one is queued. The CLI waits until the server shows both cancelled: the summary says so,
    never "INCOMPLETE … running"; the JUnit file says why the CLI stopped."""
    app = _upload(cli)
    _sync(cli, {"slow/a.yaml": long_flow(400, "Slow A"), "slow/b.yaml": long_flow(400, "Slow B")})
    junit_path = cli.cwd / "junit.xml"
    args = ["run-all", "--category", "slow", "--device", "Samsung Galaxy S23", "--app", app, "--junit", str(junit_path)]
    if stop == "timeout":
        done = cli(*args, "--timeout", "3")
    else:
        live = cli.popen(*args, "--wait")
        try:
            live.wait_for_output("Queued 2 run(s)")
            _wait_until("a run to start", lambda: any(r["status"] == "running" for r in _runs(tenant).values()))
            live.proc.send_signal(signal.SIGINT)
            done = live.wait(timeout=60)
        finally:
            live.kill()
    assert done.code == 2, done
    assert "INCOMPLETE 2 run(s): 2 cancelled (exit 2)" in _summary(done), done.stdout
    assert "running" not in _summary(done)
    runs = _runs(tenant)
    assert {r["status"] for r in runs.values()} == {"cancelled"}
    assert any(r["started_at"] for r in runs.values()), runs  # one was running when cancelled
    cases = _cases(_junit(junit_path.read_bytes()))
    assert {case["error"][0]["@type"] for case in cases.values()} == {stop}
    note = "--timeout 3" if stop == "timeout" else "received SIGINT"
    assert all(note in case["error"][0]["@message"] for case in cases.values())


def test_runs_no_device_fits_are_reported_no_device(cli: Cli, tenant: Tenant) -> None:
    app = _upload(cli)
    _sync(cli, {"login.yaml": LOGIN_FLOW})
    junit_path = cli.cwd / "junit.xml"
    done = cli(
        "run", "Login", "--platform", "android", "--os-version", ">=99", "--app", app, "--wait",
        "--no-device-grace", "1", "--junit", str(junit_path),
    )  # fmt: skip
    assert done.code == 3, done
    assert "INCOMPLETE 1 run(s): 1 cancelled (exit 3)" in _summary(done)
    [case] = _cases(_junit(junit_path.read_bytes())).values()
    assert case["error"][0]["@type"] == "no_device" and "no online device fits" in case["error"][0]["@message"]


# ----------------------------------------------------------------------------------------- JUnit files

# Every character XML 1.0 forbids (C0 but tab and line breaks, a lone surrogate, U+FFFE, U+FFFF), and
# the ones it allows that look alike (tab, line feed, DEL, C1, an astral character).
FORBIDDEN = "".join(chr(c) for c in range(0x20) if chr(c) not in "\t\n\r") + "\ud800\ufffe\uffff"
ALLOWED = "\t\x7f\x85\U0001f600"


@pytest.mark.parametrize("status", ["failed", "passed", "quarantined"])
def test_junit_of_any_text_is_well_formed(status: str) -> None:
    """Names, messages and logs come from test cases, flows and devices: what XML forbids in them is
    replaced by U+FFFD in every element and attribute, so the file parses and validates."""
    text = f"x{FORBIDDEN}{ALLOWED}y"
    step = JUnitStep(f"tapOn {text}", "failed", text, [text, text], "http://x/shot.png", 3, None, 2)
    rerun = JUnitRerun(1, f"Pixel {text}", "test", text, step)
    case = JUnitCase(
        name=f"case {text}",
        classname=f"device {text}",
        status="passed" if status == "passed" else "failed",
        seconds=1.5,
        link="http://127.0.0.1:8000/test-runs/run_x",
        failure_kind=None if status == "passed" else "test",
        failure_message=None if status == "passed" else f"Step 4 failed: {text}",
        steps=[step],
        reruns=[rerun],
        quarantined=status == "quarantined",
    )
    xml = render({f"suite {text}": [case]})
    _junit(xml)  # parses and validates
    written = "".join("".join(e.attrib.values()) + (e.text or "") for e in ET.fromstring(xml).iter())
    expected = "x" + "\ufffd" * len(FORBIDDEN) + ALLOWED + "y"
    assert f"case {expected}" in written and f"device {expected}" in written and f"suite {expected}" in written
    assert not any(c in written for c in FORBIDDEN)
    assert "http://127.0.0.1:8000/test-runs/run_x#step-2-3" in written  # the step's place, not the link


# ---------------------------------------------------------------------------------- screenshot links


def test_screenshot_links_lead_to_the_step_on_the_run_page(cli: Cli, tenant: Tenant, served: Served) -> None:
    """JUnit files and CI logs are read long after a signed screenshot link (5 minutes) has died: they
    link to the step's place on the run page, which shows its screenshot to whoever signs in."""
    app = _upload(cli)
    _sync(cli, {"shots/login.yaml": LOGIN_FLOW, "shots/logout.yaml": LOGOUT_FLOW})
    junit_path = cli.cwd / "junit.xml"
    done = cli(
        "run-all", "--category", "shots", "--device", "Pixel 7", "--app", app, "--wait", "--junit", str(junit_path)
    )
    assert done.code == 1, done
    runs = _runs(tenant)
    login, logout = runs["Login"], runs["Logout"]
    failing = f"{logout['link']}#step-1-4"  # attempt 1, step 5 (tapOn "Log out"): its screenshot
    taken = f"{login['link']}#step-1-5"  # attempt 1, step 6 (takeScreenshot)
    assert f"    screenshot: {failing}\n" in done.stdout, done.stdout
    assert "signature=" not in done.stdout and "/screenshots/" not in done.stdout

    written = junit_path.read_text()
    assert "signature=" not in written and "/screenshots/" not in written
    cases = _cases(_junit(junit_path.read_bytes()))
    assert f"screenshot: {failing}" in cases["Logout"]["failure"][0]["$"]
    assert f"screenshot: {taken}" in cases["Login"]["system-out"][0]
    served_junit = tenant.client.get(f"/v1/jobs/{logout['id']}/junit").text
    assert f"screenshot: {failing}" in served_junit and "signature=" not in served_junit
    report = cli("jobs", "report", logout["id"])
    assert f"      screenshot: {failing}\n" in report.stdout and "signature=" not in report.stdout, report.stdout

    # The links land: the run page has the step under that id, with its screenshot.
    set_password(served.db, tenant.user_email)
    with httpx.Client(base_url=served.server.url, timeout=30) as browser:
        sign_in(browser, tenant.user_email)
        for run, step in ((logout, 4), (login, 5)):
            page = browser.get(run["link"].removeprefix(served.server.url))
            assert page.status_code == 200, page.text
            start = page.text.index(f'id="step-1-{step}"')
            item = page.text[start : page.text.index("</li>", start)]
            assert f"/test-runs/{run['id']}/screenshots/1/{step}.png" in item, item


# ------------------------------------------------------------------------------------- test-cases sync


def test_sync_counts_a_flow_the_server_refuses_as_refused(cli: Cli, tenant: Tenant) -> None:
    """The name is read by the server only (a control character, 422): the flow is refused, not created,
    and the reason is a sentence naming the field."""
    folder = write_flows(
        cli.cwd / "flows",
        {
            "good.yaml": long_flow(2, "Good"),
            "bad.yaml": 'appId: com.qualgent.fixture\nname: "tab\\there"\n---\n- launchApp\n',
        },
    )
    done = cli("test-cases", "sync", str(folder))
    assert done.code == 3, done
    assert "Synced: 1 create, 1 refused" in done.stdout, done.stdout
    assert "refused          bad.yaml" in done.stdout
    [error] = [line for line in done.stdout.splitlines() if line.startswith("    error: bad.yaml")]
    assert "(name: " in error and "control characters" in error, error
    assert "{" not in done.stdout and "1 flow(s) refused" in done.stderr
    lines = {
        o["path"]: o for o in map(json.loads, cli("test-cases", "sync", str(folder), "--json").stdout.splitlines())
    }
    assert lines["bad.yaml"]["action"] == "refused" and lines["bad.yaml"]["test_case_id"] is None
    assert lines["good.yaml"]["action"] == "unchanged"
    assert [c["name"] for c in tenant.client.get("/v1/test-cases/list").json()] == ["Good"]


# ------------------------------------------------------------------------------------ agents and logs


def test_a_remote_agent_takes_its_step_time_from_the_environment(
    served: Served, cli: Cli, tenant: Tenant, tmp_path: Path
) -> None:
    """`qualgent agent` without --step-seconds: QUALGENT_SIMULATOR_STEP_SECONDS sets its simulated steps."""
    devices = tmp_path / "devices.yaml"
    entry = {"id": "paced-0", "name": "Paced Phone", "platform": "Android", "os_version": "14.0"}
    devices.write_text(yaml.safe_dump({"devices": [entry]}))
    token = agent_token(served.db, "paced agent")
    args = ["agent", "--server", served.server.url, "--token", token, "--devices", str(devices)]
    log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen(
        [sys.executable, "-m", "qualgent", *args, "--cache-dir", str(tmp_path / "cache")],
        env=clean_env({"QUALGENT_SIMULATOR_STEP_SECONDS": "0.7"}),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        app = _upload(cli)
        _sync(cli, {"paced.yaml": long_flow(3, "Paced")})
        done = cli("run", "Paced", "--device-name", "Paced Phone", "--app", app, "--wait", "--json")
        assert done.code == 0, done
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=15)
        log.close()
    [run] = done.json()["runs"]
    steps = tenant.client.get(f"/v1/jobs/{run['id']}/report").json()["steps"]
    assert len(steps) == 3 and all(s["duration_ms"] >= 650 for s in steps), steps  # not the default 0.2 s


def test_an_idle_server_logs_no_line_per_agent_poll(tmp_path: Path) -> None:
    """`qualgent serve` at the default log level with its embedded agent and another agent polling
    every 0.3 s: requests people make are in the access log, the agents' long polls are not."""
    with serve_env("sqlite", tmp_path) as (env, url), processes() as procs:
        server = procs.serve(env, tmp_path / "serve.log", "--log-level", "info")
        db = Database(url)
        try:
            token = agent_token(db, "polling agent")
        finally:
            db.close()
        devices = [DeviceConfig("poller-0", "Poller", "Android", "14.0")]
        with running_agent(server.url, token, devices, tmp_path / "agent", claim_wait=0.3) as agent:
            time.sleep(4)  # a dozen claims and more
            assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert not agent.errors, agent.errors
        time.sleep(0.5)
        server.stop()
        output = server.output()
    assert "Application startup complete" in output  # info level: uvicorn logs
    assert '"GET /healthz HTTP/1.1" 200' in output, output  # the access log is on
    assert '"POST /v1/agent/register HTTP/1.1" 200' in output  # agents' other requests are logged
    assert "/v1/agent/claim" not in output, output
    assert "Traceback" not in output
