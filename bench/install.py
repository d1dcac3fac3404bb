"""Installing qualgent, and the CI client's start-up.

Install: the package built once into a wheel, then installed into fresh venvs with an empty package cache
(every dependency downloaded), as `./dev` and the CI templates install (uv), and with pip:
- the CI client, `pip install qualgent` (goal: ≤ 25 MB installed);
- the baseline: the server and agent, `qualgent[server,agent]`, which is what the CI client installed
  before the extras (62 packages, 156–204 MB).
Size is the venv's site-packages less an empty venv's: as installed (uv writes no bytecode; Python
writes it on first import, for the modules a command imports), and with every module compiled (pip's
default).

Start-up: `qualgent --help` and `qualgent jobs status RUN` (one request to a live `qualgent serve`, whose
answer is a 404) in the client's venv, the minimum and median of 10 after a warm-up (goal: ≤ 0.3 s;
it was 1.0–1.6 s with the server's imports); the baseline is the interpreter's own start (`python -c pass`).

    ./dev bench install [--pip]     (--pip: pip's install times too, slower)
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.light_client import build_dists, uv
from tests.fixtures.servers import free_port

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUALGENT_", "PIP_", "UV_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra)
    return env


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _site(venv: Path) -> Path:
    (site,) = venv.glob("lib/python3*/site-packages")
    return site


@dataclass
class Installed:
    seconds: float  # to make the venv and install
    size: int  # bytes added to site-packages, as installed
    compiled: int  # the same with every module's bytecode compiled (pip's default)
    dists: int  # distributions installed


def _install(tool: str, venv: Path, requirement: str, cache: Path) -> Installed:
    env = _env(UV_CACHE_DIR=str(cache), PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    started = time.perf_counter()
    python = str(venv / "bin" / "python")
    if tool == "uv":
        subprocess.run([uv() or "uv", "venv", "-q", "--python", sys.executable, str(venv)], env=env, check=True)
        empty = _size(_site(venv))
        subprocess.run([uv() or "uv", "pip", "install", "-q", "--python", python, requirement], env=env, check=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], env=env, check=True)
        empty = _size(_site(venv))
        cmd = [python, "-m", "pip", "install", "-q", "--no-compile", requirement]
        subprocess.run(cmd, env=env, check=True)
    seconds = time.perf_counter() - started
    size = _size(_site(venv)) - empty
    subprocess.run([python, "-m", "compileall", "-q", "-j0", str(_site(venv))], env=env, capture_output=True)
    dists = len(list(_site(venv).glob("*.dist-info")))
    return Installed(seconds, size, _size(_site(venv)) - empty, dists)


def _times(cmd: list[str], env: dict[str, str], runs: int = 10) -> tuple[float, float, float]:
    """Wall seconds (min, median) and the median of CPU seconds (user + system), which other load on
    the machine barely moves."""
    subprocess.run(cmd, env=env, capture_output=True)  # warm-up: the page cache
    seconds, cpu = [], []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _pid, _status, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0
        seconds.append(time.perf_counter() - started)
        cpu.append(usage.ru_utime + usage.ru_stime)
    return min(seconds), statistics.median(seconds), statistics.median(cpu)


def _serve(tmp: Path) -> tuple[subprocess.Popen[str], str, str]:
    """`qualgent serve` from this venv (no embedded agent): its URL and the first start's API key."""
    port = free_port()
    env = _env(QUALGENT_DATA_DIR=str(tmp / "data"), QUALGENT_EMBEDDED_AGENT="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "qualgent", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        key = re.search(r"\bqg_[A-Za-z0-9_-]{43}", line)
        if key:
            break
    else:
        raise RuntimeError("qualgent serve printed no key")
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, url, key.group(0)


def main() -> None:
    with_pip = "--pip" in sys.argv
    tmp = Path(tempfile.mkdtemp(prefix="qualgent-bench-install-"))
    try:
        print("install into a fresh venv, empty package cache (uv unless noted):")
        wheel, _sdist = build_dists(tmp / "dist", tmp)
        tools = ["uv", "pip"] if with_pip else ["uv"]
        client_venv = tmp / "client-uv"
        for label, requirement in (("client", str(wheel)), ("server+agent", f"{wheel}[server,agent]")):
            for tool in tools:
                venv = tmp / f"{label}-{tool}"
                got = _install(tool, venv, requirement, tmp / f"cache-{label}-{tool}")
                note = "(goal ≤ 25 MB)" if label == "client" else "(baseline: what the client installed before)"
                print(
                    f"  {label:13} {tool:3}  {got.seconds:5.1f} s  {got.size / 1e6:6.1f} MB"
                    f" ({got.compiled / 1e6:5.1f} MB compiled)  {got.dists:3} distributions  {note}"
                )

        print("CI client start-up (wall min / median of 10, CPU median; goal ≤ 0.3 s):")
        env = _env()
        bin_ = client_venv / "bin"
        rows = [("python -c pass", [str(bin_ / "python"), "-c", "pass"], env, "(baseline: the interpreter)")]
        rows.append(("qualgent --help", [str(bin_ / "qualgent"), "--help"], env, ""))
        proc, url, key = _serve(tmp)
        try:
            run_env = _env(QUALGENT_URL=url, QUALGENT_API_KEY=key)
            status = [str(bin_ / "qualgent"), "jobs", "status", "run_0000000000000000000000000"]
            rows.append(("qualgent jobs status RUN", status, run_env, "(one request, answered 404)"))
            for label, cmd, cmd_env, note in rows:
                low, mid, cpu = _times(cmd, cmd_env)
                print(f"  {label:26} {low:5.3f} / {mid:5.3f} s   CPU {cpu:5.3f} s  {note}")
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
