"""A newcomer's first start: from a fresh clone with no package cache, `./dev serve` to the README
quickstart's first passed run (goal: ≤ 30 s wall time; it was 37 s on a quiet machine, 128 s on a busy
one, with pip).

The clone is of this repository's last commit; uv's cache and the bootstrap uv are empty temporary
folders (so uv itself is fetched with pip, and every package downloaded). The time runs from starting
`./dev serve` to the quickstart (README.md, run by bash with the key the first start printed) printing
its passed run. Phases: install (./dev, to the server process's start), the server's own start (its
"Ready in N s" log line) and the quickstart.

    ./dev bench first-start [--pip]   (--pip: the same with pip, QUALGENT_NO_UV=1: the baseline)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.fixtures.servers import free_port

ROOT = Path(__file__).resolve().parents[1]


def _quickstart(readme: str) -> str:
    section = readme.split("## Quickstart with curl", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)[-1]


def first_start(tmp: Path, *, pip: bool) -> dict[str, float]:
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUALGENT_", "PIP_", "UV_", "VIRTUAL_ENV"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        UV_CACHE_DIR=str(tmp / "uv-cache"),
        QUALGENT_UV_HOME=str(tmp / "uv-home"),
        PIP_NO_CACHE_DIR="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    if pip:
        env["QUALGENT_NO_UV"] = "1"
    port = free_port()
    lines: list[str] = []
    started = time.perf_counter()
    proc = subprocess.Popen(
        ["./dev", "serve", "--port", str(port)],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    key: list[str] = []
    ready: list[float] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            found = re.search(r"\bqg_[A-Za-z0-9_-]{43}", line)
            if found and not key:
                key.append(found.group(0))
            seconds = re.search(r"Ready in (\d+\.\d+) s", line)
            if seconds:
                ready.append(time.perf_counter() - started)
                ready.append(float(seconds.group(1)))

    threading.Thread(target=read, daemon=True).start()
    try:
        while not ready:
            if proc.poll() is not None or time.perf_counter() - started > 600:
                raise RuntimeError("./dev serve did not start:\n" + "".join(lines))
            time.sleep(0.05)
        listening, serve_seconds = ready
        qs_env = {**env, "QUALGENT_API_KEY": key[0], "QG": f"http://127.0.0.1:{port}"}
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", _quickstart((clone / "README.md").read_text())],
            cwd=clone,
            env=qs_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        total = time.perf_counter() - started
        if done.returncode != 0 or not done.stdout.rstrip().endswith('"passed"'):
            raise RuntimeError(f"the quickstart did not pass:\n{done.stdout}\n{done.stderr}")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    return {
        "install": listening - serve_seconds,
        "serve": serve_seconds,
        "quickstart": total - listening,
        "total": total,
    }


def main() -> None:
    pip = "--pip" in sys.argv
    tmp = Path(tempfile.mkdtemp(prefix="qualgent-bench-first-start-"))
    try:
        figures = first_start(tmp, pip=pip)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    how = "pip (QUALGENT_NO_UV=1)" if pip else "uv, fetched with pip first"
    print(f"fresh clone, no package cache, {how}: ./dev serve to the quickstart's passed run")
    print(f"  install            {figures['install']:6.1f} s")
    print(f"  server start       {figures['serve']:6.1f} s   (its 'Ready in' line)")
    print(f"  quickstart         {figures['quickstart']:6.1f} s   (upload, test case, run, wait, report)")
    print(f"  total              {figures['total']:6.1f} s   (goal ≤ 30 s; baseline with pip: 37 s quiet, 128 s busy)")
