"""The appium driver against a real Appium server (pinned in tests/appium) with Appium's fake driver.

The fake driver loads tests/appium/app.xml as its "app": it finds ``id``/accessibility id on ``@id``,
static text only through XPath on ``@text``, has no back / activate_app / active element, and returns
a fixed PNG for screenshots. Install it with ``bash tests/appium/install.sh``; the server is the
one in tests/fixtures/appium.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from qualgent.drivers.appium import AppiumDriver, AppiumSession, merge_capabilities, text_xpath, xpath_literal
from qualgent.drivers.base import (
    AppUnderTest,
    DeviceConfig,
    DeviceSession,
    Driver,
    InfrastructureError,
    StepResult,
)
from qualgent.flows.model import Flow, Selector, Step
from tests.fixtures.appium import APPIUM_DIR, FAKE_APP, AppiumServer, appium_server
from tests.fixtures.servers import free_port

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def appium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppiumServer]:
    with appium_server(tmp_path_factory.mktemp("appium")) as server:
        yield server


def fake_device(url: str, **capabilities: Any) -> DeviceConfig:
    caps: dict[str, Any] = {"appium:automationName": "Fake", **capabilities}
    return DeviceConfig(
        id="fake-1",
        name="Fake phone",
        platform="Fake",  # the fake driver's only platformName
        os_version="1",
        driver="appium",
        options={"server_url": url, "capabilities": caps},
    )


def fake_app(path: Path = FAKE_APP, **metadata: Any) -> AppUnderTest:
    return AppUnderTest(
        path=str(path), sha256="ab" * 32, platform="android", package_id="com.example.fake", metadata=metadata
    )


def step(command: str, index: int = 0, **fields: Any) -> Step:
    return Step(index=index, line=index + 1, command=command, **fields)


def flow(*steps: Step) -> Flow:
    """The flow a session is opened for: drivers read only its appId (steps are given one by one)."""
    return Flow(app_id="com.example.fake", name="fake")


async def run_flow(
    device: DeviceConfig, steps: list[Step], app: AppUnderTest | None = None
) -> tuple[str, list[StepResult]]:
    session = await AppiumDriver().open(device, app or fake_app(), flow(*steps))
    try:
        assert session.session_id is not None
        return session.session_id, [await session.run_step(s) for s in steps]
    finally:
        await session.close()


def test_a_flow_passes_through_webdriver(appium: AppiumServer) -> None:
    steps = [
        step("launchApp"),
        step("tapOn", selector=Selector(id="sign_in")),
        step("tapOn", selector=Selector(text='Say "hi" & it\'s done')),  # both kinds of quote
        step("tapOn", selector=Selector(id="email")),
        step("inputText", text="me@example.com"),
        step("assertVisible", selector=Selector(text="Welcome")),
        step("assertNotVisible", selector=Selector(id="nowhere")),
        step("assertNotVisible", selector=Selector(id="hidden_button")),  # there, but not displayed
        step("swipe", direction="UP"),
        step("scroll"),
        step("waitForAnimationToEnd"),
        step("takeScreenshot", label="home"),
    ]
    steps = [replace(s, index=i, line=i + 1) for i, s in enumerate(steps)]
    device = fake_device(appium.url)

    async def scenario() -> None:
        session = await AppiumDriver().open(device, fake_app(), flow(*steps))
        try:
            sid = session.session_id
            results = [await session.run_step(s) for s in steps]
            for s, r in zip(steps, results, strict=True):
                assert r.status == "passed", (s.describe(), r.message, r.logs)
                assert r.logs, s.describe()
            # What the server saw: each tapped element was clicked once, the text landed in the field.
            for element_id in ("sign_in", "quote", "email"):
                found = appium.command("POST", f"/session/{sid}/element", {"using": "id", "value": element_id})
                element = found["element-6066-11e4-a52e-4f735466cecf"]
                assert appium.command("GET", f"/session/{sid}/element/{element}/attribute/clicks") == "1"
                if element_id == "email":
                    assert appium.command("GET", f"/session/{sid}/element/{element}/text") == "me@example.com"
            actions = appium.command("POST", f"/session/{sid}/se/log", {"type": "actions"})
            moves = [[a for a in seq[0]["actions"] if a["type"] == "pointerMove"] for seq in actions]
            # The app window is 400x852: a swipe UP and a scroll DOWN both move the finger up the middle.
            assert [(m[0]["x"], m[0]["y"], m[1]["x"], m[1]["y"]) for m in moves] == [(200, 596, 200, 255)] * 2
        finally:
            await session.close()
        assert results[0].logs[0].startswith("POST /session ")  # the session's creation shows in the first step
        assert any("/element/active" in line for line in results[4].logs)  # tried the focused element first
        assert results[-1].screenshot is not None and results[-1].screenshot.startswith(PNG)
        assert sid not in appium.session_ids()

    asyncio.run(scenario())


def test_a_missing_element_fails_within_its_timeout_with_a_screenshot(appium: AppiumServer) -> None:
    steps = [step("assertVisible", selector=Selector(text="Not on screen"), timeout_ms=1000)]
    started = time.monotonic()
    sid, [result] = asyncio.run(run_flow(fake_device(appium.url), steps))
    elapsed = time.monotonic() - started
    assert result.status == "failed"
    assert '"Not on screen" is not visible (waited 1000 ms)' in result.message
    assert 1.0 <= elapsed < 5.0
    assert result.screenshot is not None and result.screenshot.startswith(PNG)
    assert any(line.startswith("looked ") and "not found" in line for line in result.logs)
    assert sid not in appium.session_ids()  # quit after a failed step too


def test_tapping_something_not_displayed_or_absent_fails(appium: AppiumServer) -> None:
    steps = [
        step("tapOn", selector=Selector(id="hidden_button"), timeout_ms=300),
        step("tapOn", 1, selector=Selector(text="No such button"), timeout_ms=300),
        step("assertNotVisible", 2, selector=Selector(id="sign_in"), timeout_ms=300),
    ]
    _, results = asyncio.run(run_flow(fake_device(appium.url), steps))
    assert [r.status for r in results] == ["failed", "failed", "failed"]
    assert results[0].message == 'no visible element matches id "hidden_button" (waited 300 ms)'
    assert results[2].message == 'id "sign_in" is still visible (waited 300 ms)'


def test_an_optional_step_that_fails_is_skipped_and_the_flow_goes_on(appium: AppiumServer) -> None:
    steps = [
        step("assertVisible", selector=Selector(id="nowhere"), timeout_ms=300, optional=True),
        step("back", 1, optional=True),  # the fake driver has no back
        step("assertVisible", 2, selector=Selector(id="sign_in")),
    ]
    _, results = asyncio.run(run_flow(fake_device(appium.url), steps))
    assert [r.status for r in results] == ["skipped", "skipped", "passed"]
    assert results[0].message.startswith('optional step did not pass: id "nowhere" is not visible')
    assert "does not implement it" in results[1].message
    assert any(line.startswith("POST /session/") and line.split()[1].endswith("/back") for line in results[1].logs)
    assert results[0].screenshot is not None and results[0].screenshot.startswith(PNG)


def test_steps_the_server_cannot_do_fail_with_a_clear_message(appium: AppiumServer) -> None:
    steps = [
        step("back"),
        step("stopApp", 1),
        step("inputText", 2, text="no field tapped yet"),
        step("pressKey", 3),
        step("swipe", 4, direction="SIDEWAYS"),
    ]
    _, results = asyncio.run(run_flow(fake_device(appium.url), steps))
    assert [r.status for r in results] == ["failed"] * 5
    assert "back: this Appium driver does not implement it (unknown method" in results[0].message
    assert "unknown method" in results[1].message
    assert any('terminate_app {"appId":"com.example.fake"}' in line for line in results[1].logs)
    assert results[2].message == "no focused element to type into: tap a text field first"
    assert results[3].message == "pressKey is not supported by the appium driver"
    assert results[4].message == "swipe needs a direction (UP, DOWN, LEFT or RIGHT), not 'SIDEWAYS'"


def test_no_server_at_the_url_is_an_infrastructure_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(InfrastructureError, match=r"could not create an Appium session: .*unreachable"):
        asyncio.run(AppiumDriver().open(fake_device(url), fake_app(), flow()))


def test_a_server_that_never_answers_is_an_infrastructure_error() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # connections queue up; nobody answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        device = fake_device(url)
        device = replace(device, options={**device.options, "new_session_timeout_s": 0.5})
        with pytest.raises(InfrastructureError, match=r"did not answer POST /session within 0.5 s"):
            asyncio.run(AppiumDriver().open(device, fake_app(), flow()))


def test_capabilities_the_server_refuses_are_an_infrastructure_error(appium: AppiumServer) -> None:
    with pytest.raises(InfrastructureError, match=r"could not create a session .*Could not find a driver"):
        asyncio.run(
            AppiumDriver().open(
                fake_device(appium.url, **{"appium:automationName": "NoSuchDriver"}), fake_app(), flow()
            )
        )
    with pytest.raises(InfrastructureError, match=r"could not create a session .*ENOENT"):
        asyncio.run(AppiumDriver().open(fake_device(appium.url), fake_app(APPIUM_DIR / "missing.xml"), flow()))
    assert appium.session_ids() == []


def test_close_quits_the_session_once_and_never_raises(appium: AppiumServer) -> None:
    async def scenario() -> None:
        session = await AppiumDriver().open(fake_device(appium.url), fake_app(), flow())
        sid = session.session_id
        assert sid is not None and sid in appium.session_ids()
        await session.close()
        assert sid not in appium.session_ids()
        await session.close()  # again: nothing to do, no error
        with pytest.raises(InfrastructureError, match="closed"):
            await session.run_step(step("takeScreenshot"))

    asyncio.run(scenario())


def test_a_session_that_died_is_an_infrastructure_error(appium: AppiumServer) -> None:
    async def scenario() -> None:
        session = await AppiumDriver().open(fake_device(appium.url), fake_app(), flow())
        try:
            appium.command("DELETE", f"/session/{session.session_id}")  # as if the device went away
            with pytest.raises(InfrastructureError, match=r"session or its device is gone .*invalid session id"):
                await session.run_step(step("tapOn", selector=Selector(id="sign_in")))
        finally:
            await session.close()  # the server no longer knows the session: still no error

    asyncio.run(scenario())


def test_an_app_file_without_extension_is_given_one(appium: AppiumServer, tmp_path: Path) -> None:
    cached = tmp_path / ("ab" * 32)  # how an agent caches builds: by hash, no extension
    shutil.copyfile(FAKE_APP, cached)

    async def scenario() -> tuple[str, StepResult]:
        session = await AppiumDriver().open(fake_device(appium.url), fake_app(cached, package_type="apk"), flow())
        try:
            return session.capabilities["appium:app"], await session.run_step(
                step("assertVisible", selector=Selector(id="sign_in"))
            )
        finally:
            await session.close()

    app_path, result = asyncio.run(scenario())
    assert result.status == "passed", result.message  # the fake driver read the app through the link
    assert app_path.endswith(".apk") and app_path != str(cached)
    assert not os.path.exists(app_path)  # removed with the session


def test_capability_merge_rules() -> None:
    device = DeviceConfig(id="d", name="Pixel", platform="Android", os_version="14", driver="appium")
    caps = merge_capabilities(device, {"automationName": "UiAutomator2", "appium:udid": "emulator-5554"}, "/a.apk")
    assert caps == {
        "appium:automationName": "UiAutomator2",  # unprefixed extension capabilities get appium:
        "appium:udid": "emulator-5554",
        "platformName": "Android",  # from the device
        "appium:app": "/a.apk",  # the app under test
    }
    configured = merge_capabilities(device, {"platformName": "Fake", "appium:app": "/other.apk"}, "/a.apk")
    assert configured == {"platformName": "Fake", "appium:app": "/other.apk"}  # configured ones win
    assert "appium:app" not in merge_capabilities(device, {"appium:app": None}, "/a.apk")  # null: installed already


def test_xpath_string_quoting() -> None:
    assert xpath_literal("Sign in") == '"Sign in"'
    assert xpath_literal('Say "hi"') == "'Say \"hi\"'"
    assert xpath_literal("""it's "x\"""") == """concat("it's ", '"', "x", '"', "")"""
    assert text_xpath("OK", "iOS") == '//*[@label="OK" or @name="OK" or @value="OK"]'
    assert text_xpath("OK", "Android") == '//*[@text="OK" or @content-desc="OK"]'


def test_bad_device_options_are_an_infrastructure_error() -> None:
    device = DeviceConfig(
        id="d", name="n", platform="Fake", os_version="1", driver="appium", options={"server_url": 4723}
    )
    with pytest.raises(InfrastructureError, match="server_url must be an http"):
        asyncio.run(AppiumDriver().open(device, fake_app(), flow()))


def _implements_the_protocols(session: AppiumSession) -> tuple[Driver, DeviceSession]:
    """Never called: mypy checks here that the appium driver and its sessions fit drivers.base."""
    return AppiumDriver(), session
