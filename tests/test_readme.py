"""The README stays true: its quickstart runs as printed, its configuration table names every setting."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from qualgent.config import Settings
from tests.fixtures.agents import agent_token, running_agent, simulated_devices
from tests.fixtures.factories import Database, make_tenant
from tests.fixtures.servers import LiveServer
from tests.test_execution import exec_db, exec_server  # noqa: F401  (module fixtures: a server with fast leases)

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _quickstart_block() -> str:
    text = README.read_text()
    section = text.split("## Quickstart with curl", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    # The first block only exports the key and URL, which the test provides.
    return blocks[-1]


def test_quickstart_runs_as_printed(exec_server: LiveServer, exec_db: Database, tmp_path: Path) -> None:  # noqa: F811
    """The quickstart, run by bash from the repository's folder, against a server with a simulated
    device agent (as `./dev serve` has)."""
    assert shutil.which("jq"), "the quickstart uses jq; install it (apt-get install jq)"
    tenant = make_tenant(exec_db, exec_server.url)
    env = {**os.environ, "QUALGENT_API_KEY": tenant.key, "QG": exec_server.url}
    devices = simulated_devices(["Pixel 7", "Pixel 8"])
    with running_agent(exec_server.url, agent_token(exec_db), devices, tmp_path, step_seconds=0.01):
        # Twice: a person runs it again (the category exists by then), and it must still work, not loop.
        results = [
            subprocess.run(
                ["bash", "-euo", "pipefail", "-c", _quickstart_block()],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=90,
            )
            for _ in range(2)
        ]
    tenant.client.close()
    for result in results:
        assert result.returncode == 0, result.stderr + result.stdout
    out = results[-1].stdout
    assert '"package_id": "com.qualgent.fixture"' in out
    assert '"status": "passed"' in out and '"progress": 100' in out
    assert '"description": "tapOn \\"Log in\\""' in out or 'tapOn \\"Log in\\"' in out
    assert "<testsuites" in out and 'failures="0"' in out
    assert out.rstrip().endswith('"passed"')


def test_configuration_table_lists_every_setting() -> None:
    text = README.read_text()
    table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`QUALGENT_([A-Z0-9_]+)`", table))
    expected = {name.upper() for name in Settings.model_fields}
    assert documented == expected
