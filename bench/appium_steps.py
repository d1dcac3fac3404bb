"""The agent's own time per step on Appium: everything but the Appium server's answers.

A real Appium server with its fake driver (installed by ``bash tests/appium/install.sh``) plays the
device. Each step's wall time is measured, and so is the time spent waiting for every HTTP answer of
that step; the difference is the agent's overhead (building requests, reading the hierarchy,
matching selectors, logging). Goal: ≤ 2 ms p50.

The fake driver's screen is small; real screens are larger hierarchies. The second figure is what
reading and matching a 1,000-element Android hierarchy costs, the part that grows with the screen.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from qualgent.drivers import appium as appium_driver
from qualgent.drivers.base import AppUnderTest, DeviceConfig
from qualgent.drivers.hierarchy import find, parse_source
from qualgent.flows.model import Flow, Selector, Step

ROOT = Path(__file__).resolve().parents[1]
APPIUM_DIR = ROOT / "tests" / "appium"
APPIUM_BIN = APPIUM_DIR / "node_modules" / ".bin" / "appium"
ROUNDS = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_appium() -> tuple[subprocess.Popen[bytes], str]:
    if not APPIUM_BIN.exists():
        raise SystemExit("Appium is not installed: run `bash tests/appium/install.sh` first")
    port = _free_port()
    proc = subprocess.Popen(
        [str(APPIUM_BIN), "server", "--address", "127.0.0.1", "--port", str(port), "--log-level", "error"],
        cwd=APPIUM_DIR,
        env={**os.environ, "APPIUM_HOME": str(APPIUM_DIR)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/status", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the Appium server did not start")


class _Timed(appium_driver._WebDriverClient):
    """The driver's HTTP client, adding up the time spent waiting for answers."""

    waited = 0.0

    async def request(self, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        started = time.perf_counter()
        try:
            return await super().request(*args, **kwargs)
        finally:
            _Timed.waited += time.perf_counter() - started


async def _measure(url: str) -> dict[str, list[float]]:
    device = DeviceConfig(
        id="fake",
        name="Fake phone",
        platform="Fake",
        os_version="1",
        driver="appium",
        options={"server_url": url, "capabilities": {"appium:automationName": "Fake"}},
    )
    app = AppUnderTest(str(APPIUM_DIR / "app.xml"), "ab" * 32, "android", "com.example.fake")
    steps = {
        "tapOn text (regex)": Step(0, 1, "tapOn", selector=Selector(text="sign.*")),
        "assertVisible below": Step(
            0, 1, "assertVisible", selector=Selector(text="Sign in", below=Selector(id="email"))
        ),
        "tapOn id": Step(0, 1, "tapOn", selector=Selector(id="email")),
        "inputText": Step(0, 1, "inputText", text="me@example.com"),  # into the field tapped just before
    }
    appium_driver._WebDriverClient = _Timed  # type: ignore[misc]
    session = await appium_driver.AppiumDriver().open(device, app, Flow(app_id="com.example.fake"))
    out: dict[str, list[float]] = {name: [] for name in steps}
    try:
        for _ in range(ROUNDS):
            for name, step in steps.items():
                _Timed.waited = 0.0
                started = time.perf_counter()
                result = await session.run_step(step)
                total = time.perf_counter() - started
                assert result.status == "passed", (name, result.message)
                out[name].append((total - _Timed.waited) * 1000)
    finally:
        await session.close()
    return out


def _android_hierarchy(elements: int) -> str:
    rows = "".join(
        f'<android.widget.TextView class="android.widget.TextView" text="Row {i}" resource-id="com.x:id/row_{i}" '
        f'clickable="{str(i % 3 == 0).lower()}" enabled="true" displayed="true" bounds="[0,{i * 10}][1080,{i * 10 + 9}]"/>'
        for i in range(elements)
    )
    return f'<hierarchy rotation="0"><android.widget.FrameLayout bounds="[0,0][1080,20000]">{rows}</android.widget.FrameLayout></hierarchy>'


def _p50(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main(*_: Any) -> None:
    proc, url = _start_appium()
    try:
        figures = asyncio.run(_measure(url))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"agent overhead per step on Appium (fake driver), {ROUNDS} rounds; goal ≤ 2 ms p50")
    everything = [v for values in figures.values() for v in values]
    for name, values in figures.items():
        print(f"  {name:<22} p50 {_p50(values):5.2f} ms   p95 {sorted(values)[int(len(values) * 0.95)]:5.2f} ms")
    print(f"  {'all steps':<22} p50 {_p50(everything):5.2f} ms")
    for elements in (100, 300, 1000):
        source = _android_hierarchy(elements)
        times = []
        for _ in range(30):
            started = time.perf_counter()
            find(parse_source(source, "Android"), Selector(text="Row 7.*", below=Selector(id="row_50")))
            times.append((time.perf_counter() - started) * 1000)
        print(
            f"  reading and matching a {elements:,}-element Android hierarchy ({len(source) // 1024} KB): "
            f"p50 {_p50(times):.2f} ms"
        )


if __name__ == "__main__":
    main()
