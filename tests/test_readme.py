"""The README stays true: its quickstart runs as printed, its configuration table names every setting."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from qualgent.config import Settings
from tests.fixtures.factories import Tenant
from tests.fixtures.servers import LiveServer

README = Path(__file__).resolve().parent.parent / "README.md"


def _quickstart_block() -> str:
    text = README.read_text()
    section = text.split("## Quickstart with curl", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    # The first block only exports the key and URL, which the test provides.
    return blocks[-1]


def test_quickstart_runs_as_printed(tenant: Tenant, server: LiveServer, tmp_path: Path) -> None:
    assert shutil.which("jq"), "the quickstart uses jq; install it (apt-get install jq)"
    env = {**os.environ, "QUALGENT_API_KEY": tenant.key, "QG": server.url}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _quickstart_block()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert '"success": true' in out
    assert out.count('"status": "queued"') >= 3  # one run, the category's run, and the status call
    assert '"name": "Login Flow Test"' in out
    runs = tenant.client.get("/v1/jobs/list").json()["test_runs"]
    assert len(runs) == 2


def test_configuration_table_lists_every_setting() -> None:
    text = README.read_text()
    table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`QUALGENT_([A-Z_]+)`", table))
    expected = {name.upper() for name in Settings.model_fields}
    assert documented == expected
