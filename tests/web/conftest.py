"""Browser tests drive Debian's chromium (installed by .ci/run) through Playwright.

Playwright's own browser download does not work here, and neither an environment variable nor
--browser-channel points it at another binary: overriding pytest-playwright's launch arguments does.
The host-resolver rule makes every host but 127.0.0.1 unresolvable, so a page that tried to load
anything from another host (a CDN, fonts) would fail visibly instead of reaching out.
"""

from __future__ import annotations

from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "headless": True, "args": ARGS}


@pytest.fixture(scope="session")
def base_url() -> str | None:
    """pytest-playwright's own base_url fixture is a method of a plugin class, which pytest 9 deprecates
    (an error under filterwarnings = error). These tests use absolute URLs, so none is needed."""
    return None
