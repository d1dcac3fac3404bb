"""The light client (issue 16): the wheel built from the sdist installs the CLI and SDK without the
server's or a device agent's dependencies, and that install runs a pipeline's commands against a live
`qualgent serve`; the server's commands say in one line which extra they need; the client never imports
a server module, even where the server's dependencies are installed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.cli import HELLO_APK, LOGIN_FLOW, write_flows
from tests.fixtures.factories import Database, Tenant, make_tenant
from tests.fixtures.light_client import AGENT_DISTRIBUTIONS, SERVER_DISTRIBUTIONS, build_dists, fresh_venv
from tests.fixtures.processes import clean_env, processes, serve_env
from tests.fixtures.servers import ServeProcess

# Modules of this package a client may load: the CLI, the SDK, the flow parser (test-cases sync bundles a
# workspace) and the JUnit writer. Any other (qualgent.db, qualgent.app, qualgent.config, …) is the server's.
CLIENT_PACKAGES = {"qualgent", "qualgent.cli", "qualgent.client", "qualgent.flows", "qualgent.reports"}
SERVER_FLOW_MODULES = {"qualgent.flows.engine", "qualgent.flows.scripts", "qualgent.flows.js_worker"}


@dataclass
class Light:
    bin: Path  # the fresh venv's bin folder: python and qualgent
    wheel: Path
    sdist: Path

    def __call__(
        self, *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "qualgent"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )


@pytest.fixture(scope="module")
def light(tmp_path_factory: pytest.TempPathFactory) -> Light:
    """The wheel and sdist, and a fresh venv with the wheel only (no extra)."""
    tmp = tmp_path_factory.mktemp("light")
    wheel, sdist = build_dists(tmp / "dist", tmp)
    return Light(fresh_venv(tmp / "venv", str(wheel)), wheel, sdist)


@dataclass
class Served:
    server: ServeProcess
    db: Database


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`qualgent serve` from the full install (SQLite, the embedded agent's simulated devices)."""
    tmp = tmp_path_factory.mktemp("light-serve")
    with serve_env("sqlite", tmp, simulator_step_seconds="0.05") as (env, url), processes() as procs:
        # At info, the log has the start-up's "Ready in N s" (and every request).
        server = procs.serve(env, tmp / "serve.log", "--log-level", "info")
        db = Database(url)
        try:
            yield Served(server, db)
        finally:
            db.close()
        assert "Traceback" not in server.output(), server.output()


@pytest.fixture
def tenant(served: Served) -> Iterator[Tenant]:
    t = make_tenant(served.db, served.server.url)
    yield t
    t.client.close()


def _modules(python: Path, code: str) -> set[str]:
    """The modules loaded after ``code`` runs in ``python``."""
    done = subprocess.run(
        [str(python), "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def _server_modules(loaded: set[str]) -> list[str]:
    third_party = {m for m in loaded if m.split(".")[0] in (*SERVER_DISTRIBUTIONS, *AGENT_DISTRIBUTIONS)}
    ours = {
        m
        for m in loaded
        if m.startswith("qualgent.") and (".".join(m.split(".")[:2]) not in CLIENT_PACKAGES or m in SERVER_FLOW_MODULES)
    }
    return sorted(third_party | ours)


def test_the_base_install_is_the_client_only(light: Light) -> None:
    # The sdist carries what the wheel needs (the wheel was built from it).
    assert light.sdist.stat().st_size > 0 and light.wheel.name.endswith("-py3-none-any.whl")
    probe = "import importlib.util; print(','.join(m for m in {mods!r} if importlib.util.find_spec(m)))"
    mods = (*SERVER_DISTRIBUTIONS, *AGENT_DISTRIBUTIONS)
    done = subprocess.run(
        [str(light.bin / "python"), "-c", probe.format(mods=mods)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"the base install brought {done.stdout.strip()}"


@pytest.mark.parametrize("where", ["light", "full"])
def test_the_client_never_imports_a_server_module(light: Light, where: str) -> None:
    """Importing the CLI and the SDK loads nothing of the server's, also where it is installed (the dev venv)."""
    python = light.bin / "python" if where == "light" else Path(sys.executable)
    loaded = _modules(
        python, "import qualgent.cli.main, qualgent.client, qualgent.client.aio, qualgent.client.testsync"
    )
    assert _server_modules(loaded) == []
    assert "qualgent.cli.client_commands" in loaded  # the probe did import the client


@pytest.mark.parametrize("args", [["--help"], ["run-all", "--help"], ["jobs", "status"]], ids=" ".join)
def test_help_and_usage_errors_load_no_sdk(light: Light, args: list[str]) -> None:
    """The SDK (httpx, the models, TLS) loads when a command talks to a server, not to print help or to
    refuse a usage error (`jobs status` without a run ID): a CLI's start-up is mostly its imports."""
    code = f"import sys\nsys.argv = ['qualgent', *{args!r}]\nfrom qualgent.cli.main import app\n"
    code += "try:\n    app()\nexcept SystemExit:\n    pass"
    loaded = _modules(light.bin / "python", code)
    assert "qualgent.cli.client_commands" in loaded  # the command ran
    sdk = {"httpx", "httpcore", "certifi", "qualgent.client.sync", "qualgent.client.models", "qualgent.client.tls"}
    assert sorted(sdk & loaded) == []


def test_the_cli_does_not_import_httpx_command_line_client() -> None:
    """httpx imports its command-line client (pygments, rich.syntax) where click is installed, as it is
    with the server's extra (uvicorn needs it): the full install, this venv."""
    code = "import qualgent.cli.main\nfrom qualgent.client import Client\nClient(api_key='qg_x', base_url='http://x')"
    loaded = _modules(Path(sys.executable), code)
    assert "click" in _modules(Path(sys.executable), "import click")  # the case this test is about
    assert "httpx" in loaded and "qualgent.client.sync" in loaded
    # The CLI leaves `httpx._main` refused (None) in sys.modules; these are what it imports.
    assert "pygments" not in loaded and "rich.syntax" not in loaded


def test_commands_without_their_extra_say_what_to_install(light: Light, tmp_path: Path) -> None:
    env = clean_env({"QUALGENT_DATA_DIR": str(tmp_path / "data")})
    expected = {
        ("serve",): "qualgent serve needs the server: pip install 'qualgent[server]'",
        ("db", "upgrade"): "qualgent db needs the server: pip install 'qualgent[server]'",
        ("admin", "list-orgs"): "qualgent admin needs the server: pip install 'qualgent[server]'",
        ("agent", "--server", "http://127.0.0.1:1", "--token", "qga_x"): (
            "qualgent agent needs the agent extra: pip install 'qualgent[agent]'"
        ),
    }
    for args, line in expected.items():
        done = light(*args, env=env, cwd=tmp_path)
        assert (done.returncode, done.stderr.strip(), done.stdout) == (3, line, ""), args
    assert not (tmp_path / "data").exists()  # nothing was started or created
    # Help still lists and describes every command, the server's included.
    done = light("--help", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for command in ("serve", "admin", "agent", "run-all", "jobs"):
        assert re.search(rf"\b{command}\b", done.stdout), command


def test_the_light_client_runs_a_pipeline_against_a_live_server(
    light: Light, served: Served, tenant: Tenant, tmp_path: Path
) -> None:
    """Sync flows (the client's flow parser), upload, run-all --wait with JUnit, then jobs status."""
    env = clean_env({"QUALGENT_URL": served.server.url, "QUALGENT_API_KEY": tenant.key, "COLUMNS": "200"})
    flows = write_flows(tmp_path / "flows", {"config.yaml": 'flows:\n  - "**"\n', "smoke/login.yaml": LOGIN_FLOW})
    done = light("test-cases", "sync", str(flows), env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    done = light(
        "run-all",
        "--upload",
        str(HELLO_APK),
        "--name",
        "Hello",
        "--version",
        "1.0.0",
        "--category",
        "smoke",
        "--platform",
        "android",
        "--wait",
        "--timeout",
        "120",
        "--junit",
        "junit.xml",
        "--json",
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["exit_code"] == 0 and result["summary"] == {"passed": 1}
    assert "<testcase" in (tmp_path / "junit.xml").read_text()
    run_id = result["runs"][0]["id"]

    done = light("jobs", "status", run_id, "--json", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in json.loads(done.stdout)] == ["passed"]


def test_serve_logs_when_it_is_ready(served: Served) -> None:
    """`qualgent serve` logs the seconds from its start to listening (the figure a first start is read by)."""
    output = served.server.output()
    ready = re.search(
        r"Ready in (\d+\.\d\d) s since qualgent serve started \((\d+\.\d\d) s since its process did\)", output
    )
    assert ready, output
    command, process = float(ready.group(1)), float(ready.group(2))
    assert 0 < command <= process + 0.05 < 60
