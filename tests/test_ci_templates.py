"""The GitHub Action (action.yml) and the GitLab CI template (ci/gitlab/qualgent.gitlab-ci.yml), run
as their CI systems run them: each step's or script's shell commands in bash, with the variables those
systems set (GITHUB_OUTPUT, GITHUB_PATH, RUNNER_TEMP, …; CI_PROJECT_DIR, CI_COMMIT_SHORT_SHA, …), the
inputs put where the runner puts them, against a live `qualgent serve` with simulated devices. Both
install the light client into a venv of their own, then gate on `qualgent run-all`."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.cli import HELLO_APK, LOGIN_FLOW, LOGOUT_FLOW, Cli, write_flows
from tests.fixtures.factories import Database, Tenant, make_tenant
from tests.fixtures.light_client import ROOT, uv
from tests.fixtures.processes import clean_env, processes, serve_env
from tests.fixtures.servers import ServeProcess

ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
GITLAB = yaml.safe_load((ROOT / "ci" / "gitlab" / "qualgent.gitlab-ci.yml").read_text())
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@dataclass
class Served:
    server: ServeProcess
    db: Database


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("ci-serve")
    with serve_env("sqlite", tmp, simulator_step_seconds="0.05") as (env, url), processes() as procs:
        server = procs.serve(env, tmp / "serve.log")
        db = Database(url)
        try:
            yield Served(server, db)
        finally:
            db.close()
        assert "Traceback" not in server.output(), server.output()


@pytest.fixture
def tenant(served: Served, tmp_path: Path) -> Iterator[Tenant]:
    """An organisation whose "smoke" category passes and whose "broken" category fails."""
    t = make_tenant(served.db, served.server.url)
    flows = {"config.yaml": 'flows:\n  - "**"\n', "smoke/login.yaml": LOGIN_FLOW, "broken/logout.yaml": LOGOUT_FLOW}
    done = Cli(served.server.url, t.key, tmp_path)("test-cases", "sync", str(write_flows(tmp_path / "flows", flows)))
    assert done.code == 0, done
    yield t
    t.client.close()


def _runs(tenant: Tenant, ids: list[str]) -> dict[str, dict[str, Any]]:
    response = tenant.client.get("/v1/jobs/list", params={"ids": ",".join(ids)})
    assert response.status_code == 200, response.text
    return {r["id"]: r for r in response.json()["test_runs"]}


# ------------------------------------------------------------------------------------- GitHub Actions


@dataclass
class ActionRun:
    code: int  # the first failing step's exit code, else 0
    outputs: dict[str, str]
    log: str


@dataclass
class GitHubRunner:
    """What a runner does with a composite action: inputs with their defaults, `${{ }}` expressions, one
    bash per step (`bash --noprofile --norc -eo pipefail`), GITHUB_OUTPUT read after each step,
    GITHUB_PATH's folders put on PATH for the later steps."""

    tmp: Path
    runs: int = 0  # steps run: each gets a GITHUB_OUTPUT file of its own
    system_path: list[str] = field(default_factory=list)  # folders already on the runner's PATH
    paths: list[str] = field(default_factory=list)  # those the steps added (GITHUB_PATH)

    def env(self, step: int) -> dict[str, str]:
        workspace = self.tmp / "workspace"
        workspace.mkdir(exist_ok=True)
        (self.tmp / "runner").mkdir(exist_ok=True)
        base = clean_env()
        base["PATH"] = ":".join([*reversed(self.paths), *self.system_path, base["PATH"]])
        return {
            **base,
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_ACTION_PATH": str(ROOT),
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
            "GITHUB_OUTPUT": str(self.tmp / f"output-{self.runs}-{step}"),
            "GITHUB_PATH": str(self.tmp / "path"),
            "GITHUB_ENV": str(self.tmp / "env"),
            "GITHUB_STEP_SUMMARY": str(self.tmp / "summary.md"),
            "RUNNER_TEMP": str(self.tmp / "runner"),
        }

    def run(self, inputs: dict[str, str], steps: list[int] | None = None) -> ActionRun:
        unknown = set(inputs) - set(ACTION["inputs"])
        assert not unknown, f"no such inputs: {unknown}"
        values = {name: str(spec.get("default", "")) for name, spec in ACTION["inputs"].items()} | inputs
        for name, spec in ACTION["inputs"].items():
            assert not spec.get("required") or values[name], f"input {name} is required"
        outputs: dict[str, dict[str, str]] = {}

        def render(text: str) -> str:
            def one(match: re.Match[str]) -> str:
                parts = match.group(1).split(".")
                if parts[0] == "inputs":
                    return values[parts[1]]
                if parts[0] == "steps" and parts[2] == "outputs":
                    return outputs.get(parts[1], {}).get(parts[3], "")
                raise AssertionError(f"the test runner knows no {match.group(0)}")

            return EXPRESSION.sub(one, text)

        code, log = 0, []
        for index, step in enumerate(ACTION["runs"]["steps"]):
            if steps is not None and index not in steps:
                continue
            assert step["shell"] == "bash", step
            self.runs += 1
            env = self.env(index) | {k: render(str(v)) for k, v in step.get("env", {}).items()}
            script = self.tmp / f"step-{index}.sh"
            script.write_text(render(step["run"]))
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                env=env,
                cwd=env["GITHUB_WORKSPACE"],
                capture_output=True,
                text=True,
                timeout=300,
            )
            log.append(f"--- {step['name']} (exit {done.returncode})\n{done.stdout}{done.stderr}")
            output_file = Path(env["GITHUB_OUTPUT"])
            lines = output_file.read_text().splitlines() if output_file.exists() else []
            outputs[step.get("id", str(index))] = dict(line.split("=", 1) for line in lines if "=" in line)
            path_file = Path(env["GITHUB_PATH"])
            if path_file.exists():
                self.paths = [p for p in path_file.read_text().splitlines() if p]
            if done.returncode != 0:
                code = done.returncode
                break
        action_outputs = {name: render(spec["value"]) for name, spec in ACTION["outputs"].items()}
        return ActionRun(code, action_outputs, "\n".join(log))


@pytest.fixture(scope="module")
def github(tmp_path_factory: pytest.TempPathFactory) -> GitHubRunner:
    """A runner whose first step (the client's install) has run once: the later tests run the other steps."""
    # uv on PATH, as after astral-sh/setup-uv (without one the step fetches it with pip first).
    tool = uv()
    assert tool is not None, "uv comes with the dev extra"
    runner = GitHubRunner(tmp_path_factory.mktemp("github"), system_path=[str(Path(tool).parent)])
    done = runner.run({"url": "http://127.0.0.1:1", "api-key": "qg_x"}, steps=[0])
    assert done.code == 0, done.log
    return runner


def test_the_action_installs_the_light_client(github: GitHubRunner) -> None:
    (venv_bin,) = github.paths  # the step's GITHUB_PATH: the client's venv
    assert Path(venv_bin, "qualgent").exists() and venv_bin.startswith(str(github.tmp / "runner"))
    probe = "import importlib.util as u; print([m for m in ('fastapi', 'sqlalchemy', 'av') if u.find_spec(m)])"
    done = subprocess.run([f"{venv_bin}/python", "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done


def test_the_action_uploads_runs_and_passes(github: GitHubRunner, served: Served, tenant: Tenant) -> None:
    inputs = {
        "url": served.server.url,
        "api-key": tenant.key,
        "build": str(HELLO_APK),
        "app-name": "Hello",
        "category": "smoke",
        "devices": "Pixel 7, Pixel 8",
        "timeout": "120",
    }
    done = github.run(inputs, steps=[1])
    assert done.code == 0, done.log
    out = done.outputs
    assert (out["verdict"], out["exit-code"]) == ("passed", "0"), done.log
    run_ids = out["run-ids"].split(",")
    runs = _runs(tenant, run_ids)
    assert len(run_ids) == 2 and {r["status"] for r in runs.values()} == {"passed"}
    assert {r["device"] for r in runs.values()} == {"Pixel 7", "Pixel 8"}
    # Both devices' runs are one batch; the app was uploaded as the commit's version.
    assert re.fullmatch(r"batch_\w+", out["batch-ids"]), out
    assert tenant.client.get(f"/v1/batches/{out['batch-ids']}").json()["verdict"] == "passed"
    apps = tenant.client.get("/v1/apps").json()
    assert [a["version"] for a in apps] == ["0123456789abcdef0123456789abcdef01234567"], apps
    junit = Path(github.env(1)["GITHUB_WORKSPACE"], out["junit"])
    assert junit.read_text().count("<testcase") == 2
    assert json.loads(Path(out["results"]).read_text())["exit_code"] == 0


def test_the_action_fails_the_step_on_a_failed_test(github: GitHubRunner, served: Served, tenant: Tenant) -> None:
    upload = github.run(
        {
            "url": served.server.url,
            "api-key": tenant.key,
            "build": str(HELLO_APK),
            "category": "smoke",
            "platform": "android",
            "wait": "false",
        },
        steps=[1],
    )
    # wait false: queued, the IDs out, the step green.
    assert (upload.code, upload.outputs["verdict"]) == (0, "queued"), upload.log
    assert upload.outputs["run-ids"].startswith("run_") and upload.outputs["batch-ids"].startswith("batch_")
    assert upload.outputs["junit"] == ""

    done = github.run(
        {"url": served.server.url, "api-key": tenant.key, "category": "broken", "platform": "android",
         "args": "--retries 0", "timeout": "120"},
        steps=[1],
    )  # fmt: skip
    assert done.code == 1, done.log
    assert (done.outputs["verdict"], done.outputs["exit-code"]) == ("failed", "1")
    (run_id,) = done.outputs["run-ids"].split(",")
    assert _runs(tenant, [run_id])[run_id]["status"] == "failed"


def test_the_action_reports_a_configuration_error(github: GitHubRunner, served: Served, tenant: Tenant) -> None:
    done = github.run({"url": served.server.url, "api-key": "qg_wrong", "platform": "android"}, steps=[1])
    assert done.code == 3, done.log
    assert done.outputs | {"results": ""} == {
        "verdict": "error",
        "exit-code": "3",
        "batch-ids": "",
        "run-ids": "",
        "junit": "",
        "results": "",
    }


# ----------------------------------------------------------------------------------------- GitLab CI


def _gitlab_job(
    project: Path, variables: dict[str, str], path: str, *, first: int = 0
) -> subprocess.CompletedProcess[str]:
    """The template's job as a GitLab runner runs it: its variables (expanded against the predefined
    ones), the job's variables on top, then every script entry (from ``first``) in one bash with
    `-eo pipefail`."""
    job = GITLAB[".qualgent"]
    predefined = {
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_PROJECT_DIR": str(project),
        "CI_COMMIT_SHORT_SHA": "0123abcd",
        "CI_JOB_ID": "1",
        "CI_PIPELINE_ID": "1",
        "TMPDIR": str(project.parent / "tmp"),
    }
    Path(predefined["TMPDIR"]).mkdir(exist_ok=True)
    expanded = {
        name: re.sub(r"\$\{?(\w+)\}?", lambda m: predefined.get(m.group(1), ""), str(value))
        for name, value in job["variables"].items()
    }
    env = clean_env() | predefined | expanded | variables
    env["PATH"] = f"{path}:{env['PATH']}"
    script = "\n".join([*job.get("before_script", []), *job["script"]][first:])
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script], env=env, cwd=project, capture_output=True, text=True, timeout=300
    )


def test_the_gitlab_template_gates_on_the_verdict(served: Served, tenant: Tenant, tmp_path: Path) -> None:
    job = GITLAB[".qualgent"]
    assert job["artifacts"]["reports"] == {"junit": "qualgent-junit.xml", "dotenv": "qualgent.env"}
    assert job["retry"]["exit_codes"] == [2]
    project = tmp_path / "project"
    project.mkdir()
    tool = uv()
    assert tool is not None, "uv comes with the dev extra"
    common = {"QUALGENT_URL": served.server.url, "QUALGENT_API_KEY": tenant.key, "QUALGENT_INSTALL": str(ROOT)}
    # uv on PATH (as in an image that has it): the template uses it rather than fetching one.
    done = _gitlab_job(
        project,
        common
        | {"QUALGENT_BUILD": str(HELLO_APK), "QUALGENT_CATEGORY": "smoke", "QUALGENT_PLATFORM": "android",
           "QUALGENT_TIMEOUT": "120"},
        str(Path(tool).parent),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    dotenv = dict(line.split("=", 1) for line in (project / "qualgent.env").read_text().splitlines())
    assert dotenv["QUALGENT_VERDICT"] == "passed" and dotenv["QUALGENT_EXIT_CODE"] == "0", dotenv
    (run_id,) = dotenv["QUALGENT_RUN_IDS"].split(",")
    assert _runs(tenant, [run_id])[run_id]["status"] == "passed"
    assert dotenv["QUALGENT_BATCH_IDS"].startswith("batch_")
    assert (project / "qualgent-junit.xml").read_text().count("<testcase") == 1
    apps = tenant.client.get("/v1/apps").json()
    assert [a["version"] for a in apps] == ["0123abcd"]  # QUALGENT_APP_VERSION: $CI_COMMIT_SHORT_SHA

    done = _gitlab_job(
        project,
        common | {"QUALGENT_CATEGORY": "broken", "QUALGENT_DEVICES": "Pixel 7", "QUALGENT_ARGS": "--retries 0"},
        str(tmp_path / "tmp" / "qualgent-client" / "bin"),
        first=1,  # the client the first job installed
    )
    assert done.returncode == 1, done.stdout + done.stderr
    dotenv = dict(line.split("=", 1) for line in (project / "qualgent.env").read_text().splitlines())
    assert (dotenv["QUALGENT_VERDICT"], dotenv["QUALGENT_EXIT_CODE"]) == ("failed", "1")
    assert "<failure" in (project / "qualgent-junit.xml").read_text()
