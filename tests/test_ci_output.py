"""CI-native output, by running the CLI as a pipeline does (a subprocess against a `qualgent serve`
subprocess whose simulated devices really pass and fail) with GitHub's or GitLab's variables set:
the step summary file's Markdown, the ``::error`` workflow commands (escaped as the runner reads
them), GitLab's collapsible sections and its JUnit report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
import xmlschema

from qualgent.cli import ci_output
from tests.fixtures.cli import HELLO_APK, LOGIN_FLOW, LOGOUT_FLOW, Cli, Result, write_flows
from tests.fixtures.factories import Database, Tenant, make_tenant
from tests.fixtures.processes import processes, serve_env
from tests.fixtures.servers import ServeProcess

JUNIT_XSD = xmlschema.XMLSchema(str(Path(__file__).parent / "fixtures" / "junit-10.xsd"))
# A name with what Markdown, HTML and workflow-command properties read as syntax.
ODD_NAME = "Logout, 100%: <b>a|b</b> *x*"
ODD_FLOW = LOGOUT_FLOW.replace("name: Logout", f"name: '{ODD_NAME}'")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, Database]]:
    tmp = tmp_path_factory.mktemp("ci-output")
    settings = {"simulator_step_seconds": "0.05", "heartbeat_seconds": "0.3", "reaper_interval": "0.2"}
    with serve_env("sqlite", tmp, **settings) as (env, url), processes() as procs:
        server = procs.serve(env, tmp / "serve.log")
        db = Database(url)
        try:
            yield server, db
        finally:
            db.close()
        assert "Traceback" not in server.output(), server.output()


@pytest.fixture
def tenant(served: tuple[ServeProcess, Database]) -> Iterator[Tenant]:
    server, db = served
    t = make_tenant(db, server.url)
    yield t
    t.client.close()


@pytest.fixture
def cli(served: tuple[ServeProcess, Database], tenant: Tenant, tmp_path: Path) -> Cli:
    return Cli(served[0].url, tenant.key, tmp_path)


def ci_run(cli: Cli, ci: dict[str, str], *args: str) -> Result:
    """The CLI with the CI system's variables (and no others of a CI the tests themselves run in)."""
    done = subprocess.run(
        [sys.executable, "-m", "qualgent", *args],
        env={**cli.env(), **ci},
        cwd=cli.cwd,
        capture_output=True,  # bytes: text mode would read GitLab's \r as a line break
        timeout=120,
    )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


def _prepare(cli: Cli) -> str:
    """The suite `ci`: a passing flow (Login) and one failing at step 5 (the odd name); returns the app."""
    done = cli("apps", "upload", str(HELLO_APK), "--name", "Hello", "--version", "1.0.0", "--json")
    assert done.code == 0, done
    flows = {"config.yaml": 'flows:\n  - "**"\n', "ci/login.yaml": LOGIN_FLOW, "ci/logout.yaml": ODD_FLOW}
    synced = cli("test-cases", "sync", str(write_flows(cli.cwd / "flows", flows)))
    assert synced.code == 0, synced
    app_id: str = done.json()["id"]
    return app_id


def _commands(text: str) -> list[tuple[str, dict[str, str], str]]:
    """Workflow commands in a log, decoded as the runner decodes them."""
    found = []
    for line in text.splitlines():
        match = re.fullmatch(r"::(\w+)(?: ([^:]*))?::(.*)", line)
        if match is None:
            continue
        name, props, data = match.groups()
        properties = {}
        for pair in (props or "").split(","):
            key, _, value = pair.partition("=")
            properties[key] = unquote(value)
        found.append((name, properties, unquote(data)))
    return found


def test_github_actions_summary_and_annotations(cli: Cli, tmp_path: Path) -> None:
    app = _prepare(cli)
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step's summary\n")
    github = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}

    failed = ci_run(cli, github, "run-all", "--category", "ci", "--device", "Pixel 7", "--app", app, "--wait")
    assert failed.code == 1, failed
    text = summary.read_text()
    assert text.startswith("earlier step's summary\n## ❌ QualGent: failed\n")  # appended, not replaced
    assert "2 run(s): 1 failed, 1 passed (exit 1)" in text
    assert "| | Test case | Device | Result | Duration | Run |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ✅") or line.startswith("| ❌")]
    assert len(rows) == 2, text
    [passed_row] = [r for r in rows if "Login" in r]
    [failed_row] = [r for r in rows if r.startswith("| ❌")]
    assert "passed" in passed_row and "Pixel 7" in passed_row
    # The name's Markdown and HTML are text: escaped, never markup, and the table keeps its columns.
    assert r"Logout, 100%: &lt;b&gt;a\|b&lt;/b&gt; \*x\*" in failed_row
    assert "<b>" not in text
    assert failed_row.count(" | ") == 5 and "failed (test)" in failed_row
    run_links = re.findall(r"\[run\\_\w+\]\((http://[^)]+)\)", text)
    assert len(run_links) == 2 and all("/test-runs/run_" in link for link in run_links), text
    # The failing step: its place on the run page (never a signed screenshot link), its log.
    assert "### Failing steps" in text
    [step_line] = [line for line in text.splitlines() if line.startswith("- [Step 5:")]
    assert re.search(r"\]\(http://[^)]+/test-runs/run_\w+#step-1-4\)", step_line), step_line
    assert "Log out" in step_line
    assert "<details><summary>Log</summary>" in text and "text not found" in text
    assert "signature" not in text and "expires" not in text

    # One ::error for the failed run; the title's `:` and `,` and the message's `%` and line break escaped.
    commands = _commands(failed.stdout)
    assert [(name, props["title"]) for name, props, _ in commands] == [
        ("error", f"QualGent: {ODD_NAME} on Pixel 7 failed (test)")
    ]
    raw = next(line for line in failed.stdout.splitlines() if line.startswith("::error"))
    assert "title=QualGent%3A Logout%2C 100%25%3A" in raw
    message = commands[0][2]
    assert message.startswith("Step 5") and "Log out" in message
    assert re.search(r"\nRun: http://\S+/test-runs/run_\w+#step-1-4$", message), message
    assert "%0A" in raw and "\n" not in raw

    # A passing run: a green summary appended after the first, no annotation. Under --json the
    # commands would go to stderr; stdout stays JSON.
    passed = ci_run(cli, github, "run", "Login", "--device", "Pixel 7", "--app", app, "--wait", "--json")
    assert passed.code == 0, passed
    assert json.loads(passed.stdout)["exit_code"] == 0
    assert _commands(passed.stdout + passed.stderr) == []
    text = summary.read_text()
    assert (
        len(re.findall("^## ", text, re.MULTILINE)) == 2
        and "## ✅ QualGent: passed\n\n1 run(s): 1 passed (exit 0)" in text
    )
    assert text.split("## ✅")[1].count("Failing steps") == 0

    # Under --json a failure's annotation is on stderr (the runner reads both), stdout is JSON.
    again = ci_run(cli, github, "run", ODD_NAME, "--device", "Pixel 7", "--app", app, "--wait", "--json")
    assert again.code == 1, again
    assert json.loads(again.stdout)["exit_code"] == 1
    assert [name for name, _, _ in _commands(again.stderr)] == ["error"]

    # Outside CI: neither.
    text = summary.read_text()
    plain = cli("run", "Login", "--device", "Pixel 7", "--app", app, "--wait")
    assert plain.code == 0 and "::" not in plain.stdout and summary.read_text() == text


def test_gitlab_sections_and_junit_report(cli: Cli, tmp_path: Path) -> None:
    app = _prepare(cli)
    project = tmp_path / "project"
    project.mkdir()
    gitlab = {"GITLAB_CI": "true", "CI_PROJECT_DIR": str(project)}

    done = ci_run(cli, gitlab, "run-all", "--category", "ci", "--device", "Pixel 7", "--app", app, "--wait")
    assert done.code == 1, done
    out = done.stdout
    start = re.search(r"\x1b\[0Ksection_start:(\d+):qualgent_results\[collapsed=true\]\r\x1b\[0K(.*)\n", out)
    assert start is not None, out
    assert start.group(2) == "QualGent: failed, 2 run(s): 1 failed, 1 passed (exit 1)"
    assert re.search(r"\x1b\[0Ksection_end:\d+:qualgent_results\r\x1b\[0K", out)
    results = out[start.end() : out.index("section_end:", start.end())]
    assert "passed" in results and "failed (test)" in results and "/test-runs/run_" in results
    # The failed run's own section, open (it gates), with its steps, the failing step's log and place.
    failed = re.search(r"section_start:\d+:(qualgent_run_\w+)\r\x1b\[0K(FAILED .*)\n", out)
    assert failed is not None, out
    assert failed.group(2) == f"FAILED {ODD_NAME} on Pixel 7 (test)"
    body = out[failed.end() : out.index("section_end:", failed.end())]
    assert '[failed] step 5: tapOn "Log out"' in body and "text not found" in body
    assert re.search(r"step: http://\S+/test-runs/run_\w+#step-1-4", body)
    assert "::error" not in out

    # No --junit: GitLab still gets its report, in the project folder, valid and with the failure.
    report = project / "qualgent-junit.xml"
    assert f"JUnit report (for artifacts:reports:junit): {report}" in out
    JUNIT_XSD.validate(str(report))
    junit = JUNIT_XSD.to_dict(str(report))
    assert isinstance(junit, dict)
    assert (junit["@tests"], junit["@failures"]) == ("2", "1")

    # --junit given: that file, and no other.
    report.unlink()
    mine = tmp_path / "mine.xml"
    done = ci_run(cli, gitlab, "run", "Login", "--device", "Pixel 7", "--app", app, "--wait", "--junit", str(mine))
    assert done.code == 0, done
    assert mine.is_file() and not report.exists()
    assert "QualGent: passed, 1 run(s): 1 passed (exit 0)" in done.stdout
    assert "qualgent_run_" not in done.stdout


def test_escaping_follows_the_runner() -> None:
    """actions/toolkit's escapeData and escapeProperty."""
    assert ci_output.escape_data("100% done\r\nnext: a, b") == "100%25 done%0D%0Anext: a, b"
    assert ci_output.escape_property("100% done\nnext: a, b") == "100%25 done%0Anext%3A a%2C b"
    assert ci_output.command("error", "x\ny", title="a:b,c") == "::error title=a%3Ab%2Cc::x%0Ay"
    assert ci_output.detect({"GITHUB_ACTIONS": "true"}) == "github"
    assert ci_output.detect({"GITLAB_CI": "true"}) == "gitlab"
    assert ci_output.detect({"CI": "true"}) is None
