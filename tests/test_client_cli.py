"""The CI client end to end: `qualgent` client commands in subprocesses, as a pipeline runs them,
against a `qualgent serve` subprocess (real HTTP, simulated devices that really pass and fail).

Every exit code comes from a real scenario: 0 a passing flow, 1 a failing flow, 2 a run timed out on
the server, the CLI's --timeout, an agent that dies, SIGTERM; 3 a bad key, an empty category, an
unknown device, bad usage. The JUnit file is validated against the Jenkins junit-10.xsd."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from qualgent.client import Client
from tests.fixtures.agents import agent_token
from tests.fixtures.cli import HELLO_APK, LOGIN_FLOW, LOGOUT_FLOW, Cli, long_flow, write_flows
from tests.fixtures.factories import Database, Tenant, make_tenant
from tests.fixtures.processes import processes, serve_env, write_devices_file
from tests.fixtures.servers import ServeProcess

JUNIT_XSD = xmlschema.XMLSchema(str(Path(__file__).parent / "fixtures" / "junit-10.xsd"))
STEP_SECONDS = "0.05"


@dataclass
class Served:
    server: ServeProcess
    env: dict[str, str]
    db: Database


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `qualgent serve` (SQLite, embedded agent with the catalogue's simulated devices)."""
    tmp = tmp_path_factory.mktemp("client-cli")
    settings = {
        "simulator_step_seconds": STEP_SECONDS,
        "lease_seconds": "3",
        "heartbeat_seconds": "0.3",
        "reaper_interval": "0.2",
    }
    with serve_env("sqlite", tmp, **settings) as (env, url), processes() as procs:
        server = procs.serve(env, tmp / "serve.log")
        db = Database(url)
        try:
            yield Served(server, env, db)
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


def _upload(cli: Cli, version: str = "1.0.0") -> str:
    done = cli("apps", "upload", str(HELLO_APK), "--name", "Hello", "--version", version, "--json")
    assert done.code == 0, done
    app_id: str = done.json()["id"]
    return app_id


ALL_FLOWS = 'flows:\n  - "**"\n'  # a workspace config: every flow file, in any folder, is a test case


def _sync(cli: Cli, flows: dict[str, str]) -> None:
    # Flows in <category>/ folders are test cases when the workspace's config says so (Maestro's default
    # is the top-level folder only).
    done = cli("test-cases", "sync", str(write_flows(cli.cwd / "flows", {"config.yaml": ALL_FLOWS, **flows})))
    assert done.code == 0, done


def _sync_lines(result: Any) -> list[dict[str, Any]]:
    """`test-cases sync --json`: one JSON object per line."""
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _junit(path: Path) -> dict[str, Any]:
    JUNIT_XSD.validate(str(path))  # raises with the offending element when invalid
    decoded: dict[str, Any] = JUNIT_XSD.to_dict(str(path))  # type: ignore[assignment]
    return decoded


def _cases(junit: dict[str, Any]) -> list[dict[str, Any]]:
    return [case for suite in junit["testsuite"] for case in suite["testcase"]]


def _runs(tenant: Tenant, ids: list[str]) -> dict[str, dict[str, Any]]:
    response = tenant.client.get("/v1/jobs/list", params={"ids": ",".join(ids)})
    assert response.status_code == 200, response.text
    return {r["id"]: r for r in response.json()["test_runs"]}


def _wait_until(what: str, check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# ------------------------------------------------------------------------------------ exit code 0


def test_upload_run_all_wait_passes_with_exit_0_and_a_valid_junit(cli: Cli, tenant: Tenant) -> None:
    app = _upload(cli)
    _sync(cli, {"smoke/login.yaml": LOGIN_FLOW, "smoke/launch.yaml": long_flow(3, "Launch")})
    junit_path = cli.cwd / "reports" / "qualgent.xml"
    done = cli(
        "run-all",
        "--category",
        "smoke",
        "--device",
        "Pixel 7",
        "--device",
        "Pixel 8@14",
        "--app",
        app,
        "--wait",
        "--junit",
        str(junit_path),
        "--json",
    )
    assert done.code == 0, done
    result = done.json()
    assert result["exit_code"] == 0 and result["summary"] == {"passed": 4}
    assert sorted((r["test_case"]["name"], r["device"]) for r in result["runs"]) == [
        ("Launch", "Pixel 7"),
        ("Launch", "Pixel 8"),
        ("Login", "Pixel 7"),
        ("Login", "Pixel 8"),
    ]
    # Not a TTY: plain lines, one per change of a run's status, on stderr beside the JSON.
    assert "passed" in done.stderr and "Login" in done.stderr

    junit = _junit(junit_path)
    assert sorted(s["@name"] for s in junit["testsuite"]) == ["Pixel 7 (Android 14.0)", "Pixel 8 (Android 14.0)"]
    assert (junit["@tests"], junit["@failures"], junit["@errors"]) == ("4", "0", "0")
    for case in _cases(junit):
        assert "failure" not in case and "error" not in case
        assert "/test-runs/run_" in case["system-out"][0]  # the run page
    login = [c for c in _cases(junit) if c["@name"] == "Login"]
    # The takeScreenshot step's place on the run page (a screenshot's own link is signed for minutes).
    assert all(re.search(r"screenshot: http://\S+/test-runs/run_\w+#step-1-5\n", c["system-out"][0]) for c in login)


def test_run_by_test_case_name_on_the_latest_app(cli: Cli) -> None:
    _upload(cli, "1.0.0")
    _sync(cli, {"login.yaml": LOGIN_FLOW})
    done = cli("run", "Login", "--platform", "android", "--latest", "--wait")
    assert done.code == 0, done
    assert "PASSED 1 run(s)" in done.stdout


# ------------------------------------------------------------------------------------ exit code 1


def test_a_failing_flow_exits_1_with_the_failing_step_in_the_junit(cli: Cli, tenant: Tenant) -> None:
    _sync(cli, {"regression/login.yaml": LOGIN_FLOW, "regression/logout.yaml": LOGOUT_FLOW})
    junit_path = cli.cwd / "junit.xml"
    done = cli(
        "run-all",
        "--upload",
        str(HELLO_APK),
        "--name",
        "Hello",
        "--version",
        "2.0.0",
        "--category",
        "regression",
        "--platform",
        "android",
        "--wait",
        "--junit",
        str(junit_path),
    )
    assert done.code == 1, done
    assert "FAILED Logout" in done.stdout and "Log out" in done.stdout
    junit = _junit(junit_path)
    assert (junit["@tests"], junit["@failures"], junit["@errors"]) == ("2", "1", "0")
    [failed] = [c for c in _cases(junit) if "failure" in c]
    assert failed["@name"] == "Logout"
    [failure] = failed["failure"]
    assert failure["@type"] == "test" and "Step 5" in failure["@message"] and "Log out" in failure["@message"]
    text = failure["$"]
    assert '[failed] step 5: tapOn "Log out"' in text  # the failing step
    assert "text not found" in text  # its log
    assert "screenshot: http" in text  # and its screenshot
    [passed] = [c for c in _cases(junit) if c["@name"] == "Login"]
    assert "failure" not in passed

    # `run` by name gives the same verdicts.
    assert cli("run", "Logout", "--device", "Pixel 7", "--latest", "--wait").code == 1
    assert cli("run", "Login", "--device", "Pixel 7", "--latest", "--wait").code == 0


# ------------------------------------------------------------------------------------ exit code 2


def test_a_run_that_times_out_on_the_server_exits_2(cli: Cli) -> None:
    app = _upload(cli)
    _sync(cli, {"slow.yaml": long_flow(400, "Slow")})  # 20 s of steps; the run may take 10
    started = time.monotonic()
    done = cli("run", "Slow", "--device", "Pixel 6", "--app", app, "--run-timeout", "10", "--wait", "--json")
    assert done.code == 2, done
    [run] = done.json()["runs"]
    assert run["status"] == "failed" and run["failure"]["kind"] == "timeout", run
    assert time.monotonic() - started < 30


def test_the_cli_timeout_cancels_its_runs_and_exits_2(cli: Cli, tenant: Tenant) -> None:
    app = _upload(cli)
    _sync(cli, {"slow/a.yaml": long_flow(400, "Slow A"), "slow/b.yaml": long_flow(400, "Slow B")})
    junit_path = cli.cwd / "junit.xml"
    started = time.monotonic()
    done = cli(
        "run-all",
        "--category",
        "slow",
        "--device",
        "Samsung Galaxy S23",
        "--app",
        app,
        "--timeout",
        "2",
        "--junit",
        str(junit_path),
        "--json",
    )
    elapsed = time.monotonic() - started
    assert done.code == 2, done
    assert elapsed < 20, elapsed
    result = done.json()
    assert "--timeout 2" in result["note"]
    run_ids = [r["id"] for r in result["runs"]]
    assert sorted(result["cancelled"]) == sorted(run_ids)
    # One was running (cancelled at its agent's next heartbeat), one queued (cancelled at once).
    _wait_until("both runs cancelled", lambda: all(r["status"] == "cancelled" for r in _runs(tenant, run_ids).values()))
    junit = _junit(junit_path)
    assert junit["@errors"] == "2"  # never a pass, never a skip
    assert all(c["error"][0]["@type"] == "timeout" for c in _cases(junit))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_waiting_cancels_the_runs_and_exits_2(cli: Cli, tenant: Tenant, signum: int) -> None:
    app = _upload(cli)
    _sync(cli, {"long/a.yaml": long_flow(400, "Long A"), "long/b.yaml": long_flow(400, "Long B")})
    live = cli.popen("run-all", "--category", "long", "--device", "Pixel Tablet", "--app", app, "--wait", "--json")
    try:
        live.wait_for_output("Queued 2 run(s)")
        time.sleep(1.0)  # let one start
        live.proc.send_signal(signum)
        done = live.wait(timeout=30)
    finally:
        live.kill()
    assert done.code == 2, done
    result = done.json()
    assert signal.Signals(signum).name in result["note"]
    run_ids = [r["id"] for r in result["runs"]]
    assert len(run_ids) == 2 and sorted(result["cancelled"]) == sorted(run_ids)
    _wait_until("both runs cancelled", lambda: all(r["status"] == "cancelled" for r in _runs(tenant, run_ids).values()))


def test_an_agent_that_dies_exits_2(tmp_path: Path) -> None:
    """Its own server: no embedded agent, one attempt per run, a lease of 2 s."""
    settings = {
        "embedded_agent": "false",
        "max_attempts": "1",
        "lease_seconds": "2",
        "heartbeat_seconds": "0.5",
        "reaper_interval": "0.2",
    }
    with serve_env("sqlite", tmp_path, **settings) as (env, url), processes() as procs:
        server = procs.serve(env, tmp_path / "serve.log")
        db = Database(url)
        try:
            tenant = make_tenant(db, server.url)
            token = agent_token(db, "doomed agent")
        finally:
            db.close()
        devices = write_devices_file(tmp_path / "devices.yaml", [("Pixel 7", "Android", "14.0")])
        agent = procs.agent(server.url, token, devices, tmp_path / "agent", step_seconds=0.2).start()
        cli = Cli(server.url, tenant.key, tmp_path)
        app = _upload(cli)
        _sync(cli, {"doomed.yaml": long_flow(100, "Doomed")})
        live = cli.popen("run", "Doomed", "--device", "Pixel 7", "--app", app, "--wait", "--json")
        try:
            live.wait_for_output("Queued 1 run(s)")
            with Client(tenant.key, server.url) as sdk:
                _wait_until("the run to start", lambda: sdk.list_runs(status="running"))
            agent.kill()
            done = live.wait(timeout=60)
        finally:
            live.kill()
            tenant.client.close()
        assert done.code == 2, done
        [run] = done.json()["runs"]
        assert run["status"] == "failed" and run["failure"]["kind"] == "infrastructure", run


# ------------------------------------------------------------------------------------ exit code 3


def test_usage_authentication_and_validation_errors_exit_3(cli: Cli, tenant: Tenant) -> None:
    bad_key = "qg_" + "x" * 43
    done = cli("run-all", "--platform", "android", "--latest", "--wait", key=bad_key)
    assert done.code == 3 and "invalid_api_key" in done.stderr, done
    assert cli("devices", key="not-a-key").code == 3

    # An empty category: the server refuses to queue nothing, and so does the CLI.
    app = _upload(cli)
    assert tenant.client.post("/v1/categories", json={"name": "Empty"}).status_code == 201
    done = cli("run-all", "--category", "Empty", "--platform", "android", "--app", app, "--wait")
    assert done.code == 3 and "no_test_cases" in done.stderr, done

    _sync(cli, {"login.yaml": LOGIN_FLOW})
    done = cli("run-all", "--device", "Nokia 3310", "--app", app, "--wait")  # no such device
    assert done.code == 3 and "No device 'Nokia 3310'" in done.stderr, done
    done = cli("run", "Login", "--device", "iPhone 15", "--app", app, "--wait")  # an Android build on iOS
    assert done.code == 3, done
    assert cli("run", "No such test", "--platform", "android", "--app", app, "--wait").code == 3
    assert cli("run-all", "--app", app, "--wait").code == 3  # neither --device nor --platform
    assert cli("run-all", "--upload", str(HELLO_APK), "--platform", "android", "--wait").code == 3  # no --version
    assert cli("run-all", "--platform", "android", "--no-such-option").code == 3
    assert cli("jobs", "status", "run_01jd2f3g4h5j6k7m8n9p0q1r2s").code == 3
    assert cli("apps", "upload", str(cli.cwd / "missing.apk"), "--name", "X", "--version", "1").code == 3
    assert tenant.client.get("/v1/jobs/list").json()["test_runs"] == []  # nothing was queued by any of these
    # One run-all per device: when a later device is refused, the runs queued for the earlier go too.
    done = cli("run-all", "--device", "Pixel 7", "--device", "iPhone 15", "--app", app, "--wait")
    assert done.code == 3 and "cancelled 1 run(s)" in done.stderr, done
    # The embedded agent may have started it already; a running run stops at its next heartbeat.
    deadline = time.monotonic() + 20
    while (statuses := [r["status"] for r in tenant.client.get("/v1/jobs/list").json()["test_runs"]]) == ["running"]:
        assert time.monotonic() < deadline, statuses
        time.sleep(0.1)
    assert statuses == ["cancelled"]


# ---------------------------------------------------------------------------------- 429 storm


def test_a_429_storm_does_not_fail_the_pipeline(served: Served, cli: Cli, tenant: Tenant) -> None:
    """Three pipelines share one key limited to 2 requests/second and poll every 0.2 s: the server
    answers 429 many times, every pipeline still passes."""
    import subprocess
    import sys

    from tests.fixtures.processes import clean_env

    app = _upload(cli)
    _sync(cli, {f"storm/case{n}.yaml": long_flow(3, f"Storm {n}") for n in range(4)})
    limited = subprocess.run(
        [sys.executable, "-m", "qualgent", "admin", "set-rate-limit", tenant.key_id, "2"],
        env=clean_env(served.env),
        cwd=cli.cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert limited.returncode == 0, limited.stdout + limited.stderr
    time.sleep(2.5)  # the server's key cache (2 s) picks up the new limit
    pipelines = [
        cli.popen(
            "run-all",
            "--category",
            "storm",
            "--platform",
            "android",
            "--app",
            app,
            "--wait",
            "--poll-interval",
            "0.2",
            "--json",
        )
        for _ in range(3)
    ]
    results = []
    try:
        for live in pipelines:
            results.append(live.wait(timeout=180))
    finally:
        for live in pipelines:
            live.kill()
    for done in results:
        assert done.code == 0, done
        assert done.json()["summary"] == {"passed": 4}
    waited_out = sum(done.json()["rate_limited"] for done in results)
    assert waited_out > 0, "the storm produced no 429 at all"
    print(f"\n429 storm: 3 pipelines on a 2/s key waited out {waited_out} 429s, all passed")
    # The limit really held: a burst on the same key is refused.
    burst = [tenant.client.get("/v1/devices/list").status_code for _ in range(5)]
    assert 429 in burst


# ---------------------------------------------------------------------------------- listings


def test_listing_commands(cli: Cli, tenant: Tenant) -> None:
    app = _upload(cli)
    _sync(cli, {"smoke/login.yaml": LOGIN_FLOW})
    done = cli("run", "Login", "--device", "Pixel 7", "--app", app, "--wait", "--json")
    assert done.code == 0, done
    [run] = done.json()["runs"]

    devices = cli("devices", "--json")
    assert devices.code == 0 and {"Pixel 7", "iPhone 15"} <= {d["name"] for d in devices.json()}
    assert [c["name"] for c in cli("categories", "--json").json()] == ["smoke"]
    cases = cli("test-cases", "list", "--category", "smoke", "--json").json()
    assert [c["name"] for c in cases] == ["Login"]
    assert [a["id"] for a in cli("apps", "list", "--json").json()] == [app]
    listed = cli("jobs", "list", "--status", "passed", "--json").json()
    assert [r["id"] for r in listed] == [run["id"]]
    status = cli("jobs", "status", run["id"])
    assert status.code == 0 and run["id"] in status.stdout and "passed" in status.stdout
    report = cli("jobs", "report", run["id"], "--junit", str(cli.cwd / "one.xml"))
    assert report.code == 0 and 'tapOn "Log in"' in report.stdout
    assert _junit(cli.cwd / "one.xml")["@tests"] == "1"
    cancel = cli("jobs", "cancel", run["id"])  # a finished run cannot be cancelled: a validation error
    assert cancel.code == 3 and "run_finished" in cancel.stderr

    # Without --wait: queue, print the runs, exit 0 at once; `jobs cancel` stops them.
    _sync(cli, {"smoke/login.yaml": LOGIN_FLOW, "smoke/slow.yaml": long_flow(400, "Slow")})
    queued = cli("run", "Slow", "--device", "Pixel Tablet", "--latest", "--json")
    assert queued.code == 0, queued
    [job] = queued.json()["runs"]
    assert job["status"] == "queued" and job["link"].endswith(job["id"])
    cancelled = cli("jobs", "cancel", job["id"])
    assert cancelled.code == 0 and job["id"] in cancelled.stdout, cancelled
    _wait_until("the run cancelled", lambda: _runs(tenant, [job["id"]])[job["id"]]["status"] == "cancelled")


# ---------------------------------------------------------------------------------- tests as code


def test_sync_makes_a_folder_of_flows_the_test_cases(cli: Cli, tenant: Tenant) -> None:
    folder = write_flows(
        cli.cwd / "flows",
        {
            "config.yaml": ALL_FLOWS,
            "smoke/login.yaml": LOGIN_FLOW,
            "smoke/launch.yml": long_flow(2),
            "regression/payments/logout.yaml": LOGOUT_FLOW,
            "root.yaml": long_flow(3, "Root flow"),
            ".github/ci.yaml": "on: push\n",  # not a test: dot-folders are skipped
            "smoke/notes.txt": "not a flow",
        },
    )
    by_hand = tenant.client.post("/v1/test-cases", json={"name": "Made by hand", "flow": long_flow(2)}).json()

    def cases() -> dict[str, dict[str, Any]]:
        listed = tenant.client.get("/v1/test-cases/list").json()
        return {c["name"]: c for c in listed}

    plan = cli("test-cases", "sync", str(folder), "--dry-run", "--json")
    assert plan.code == 0, plan
    assert sorted((c["action"], c["path"], c["category"]) for c in _sync_lines(plan)) == [
        ("create", "regression/payments/logout.yaml", "regression/payments"),
        ("create", "root.yaml", None),
        ("create", "smoke/launch.yml", "smoke"),
        ("create", "smoke/login.yaml", "smoke"),
    ]
    assert list(cases()) == ["Made by hand"]  # a dry run changes nothing

    done = cli("test-cases", "sync", str(folder))
    assert done.code == 0, done
    assert "Synced: 4 create" in done.stdout
    now = cases()
    assert set(now) == {"Made by hand", "Login", "launch", "Logout", "Root flow"}  # flow name:, else file name
    assert now["Login"]["category"]["name"] == "smoke" and now["launch"]["category"]["name"] == "smoke"
    assert now["Logout"]["category"]["name"] == "regression/payments" and now["Root flow"]["category"] is None
    flow = tenant.client.get(f"/v1/test-cases/{now['Login']['id']}").json()["flow"]
    assert flow == LOGIN_FLOW

    # Edit one flow, move one to another folder, delete one, add one.
    (folder / "smoke" / "login.yaml").write_text(LOGIN_FLOW.replace("- back", "- back\n- back"))
    (folder / "regression" / "payments" / "logout.yaml").unlink()
    (folder / "root.yaml").rename(folder / "smoke" / "root.yaml")
    (folder / "smoke" / "search.yaml").write_text(long_flow(2, "Search"))
    plan = cli("test-cases", "sync", str(folder), "--prune", "--dry-run", "--json")
    assert sorted((c["action"], c["path"], c["fields"]) for c in _sync_lines(plan)) == [
        ("create", "smoke/root.yaml", []),
        ("create", "smoke/search.yaml", []),
        ("deactivate", "regression/payments/logout.yaml", []),
        ("deactivate", "root.yaml", []),
        ("unchanged", "smoke/launch.yml", []),
        ("update", "smoke/login.yaml", ["flow"]),
    ]
    assert cases()["Logout"]["status"] == "active"

    without_prune = cli("test-cases", "sync", str(folder), "--json")
    assert {c["action"] for c in _sync_lines(without_prune)} == {"create", "update", "unchanged"}
    assert cases()["Logout"]["status"] == "active"  # nothing is deactivated without --prune
    pruned = cli("test-cases", "sync", str(folder), "--prune")
    assert pruned.code == 0, pruned
    now = {(c["name"], c["status"]) for c in tenant.client.get("/v1/test-cases/list").json()}
    assert ("Logout", "inactive") in now and ("Made by hand", "active") in now  # hand-made: untouched
    assert ("Search", "active") in now
    login = tenant.client.get(f"/v1/test-cases/{cases()['Login']['id']}").json()
    assert login["flow"].endswith("- back\n- back\n")
    assert tenant.client.get(f"/v1/test-cases/{by_hand['id']}").json()["status"] == "active"

    # A refused flow is reported with its file and line; the others are applied; exit 3.
    (folder / "smoke" / "broken.yaml").write_text("appId: com.qualgent.fixture\n---\n- launchApp\n- flyTo: moon\n")
    (folder / "smoke" / "later.yaml").write_text(long_flow(2, "Later"))
    broken = cli("test-cases", "sync", str(folder))
    assert broken.code == 3, broken
    assert "error: smoke/broken.yaml line 4:" in broken.stdout
    assert "Later" in cases()


def test_a_terminal_gets_a_live_table(cli: Cli) -> None:
    """On a TTY (a pseudo-terminal here) the runs are a live table, redrawn in place."""

    app = _upload(cli)
    _sync(cli, {"tty/login.yaml": LOGIN_FLOW})
    code, text = cli.on_a_terminal(
        "run-all", "--category", "tty", "--device", "Pixel 8", "--app", app, "--wait", timeout=60
    )
    assert code == 0, text
    assert "0/1 runs finished" in text and "1/1 runs finished" in text, text  # the table's title, redrawn
    assert "\x1b[" in text  # cursor movement / colours: a live display, not plain lines
    assert "PASSED\x1b[0m 1 run(s): 1 passed (exit 0)" in text  # in colour
