"""The appium driver against a real Appium server (pinned in tests/appium) with Appium's fake driver.

The fake driver loads tests/appium/app.xml as its "app": its page source is that XML, it logs pointer
actions (which the tests read back to see where each tap landed), keeps a location and an orientation,
has no back / activate_app / active element and few `mobile:` extensions, and returns a fixed PNG for
screenshots. Where it cannot carry out a command, a recording relay in front of it answers and the
test asserts the exact request. Install it with ``bash tests/appium/install.sh``; the server is the
one in tests/fixtures/appium.py.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from qualgent.drivers.appium import AppiumDriver, AppiumSession, merge_capabilities
from qualgent.drivers.base import (
    AppUnderTest,
    DeviceConfig,
    DeviceSession,
    Driver,
    InfrastructureError,
    StepResult,
)
from qualgent.flows.model import Flow, Selector, Step
from tests.fixtures.appium import APPIUM_DIR, FAKE_APP, AppiumServer, RecordingRelay, appium_server, recording_relay
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


def actions_of(appium: AppiumServer, sid: str) -> list[list[dict[str, Any]]]:
    """The pointer actions the fake driver received, one list per POST /actions."""
    return [seq[0]["actions"] for seq in appium.command("POST", f"/session/{sid}/se/log", {"type": "actions"})]


def taps(actions: list[list[dict[str, Any]]]) -> list[tuple[int, int]]:
    """Where each tap landed (a pointerDown right after a move), in order."""
    out = []
    for sequence in actions:
        for move, down in itertools.pairwise(sequence):
            pressed = move["type"] == "pointerMove" and down["type"] == "pointerDown"
            dragged = any(a["type"] == "pointerMove" and a.get("duration") for a in sequence)
            if pressed and not dragged:
                out.append((move["x"], move["y"]))
    return out


def test_a_flow_passes_through_webdriver(appium: AppiumServer) -> None:
    steps = [
        step("launchApp"),
        step("tapOn", selector=Selector(id="sign_in")),
        step("tapOn", selector=Selector(text='Say "hi" & it\'s done')),  # both kinds of quote
        step("tapOn", selector=Selector(id="email")),
        step("inputText", text="me@example.com"),
        step("eraseText", args={"charactersToErase": 4}),
        step("assertVisible", selector=Selector(text="Welcome")),
        step("assertNotVisible", selector=Selector(id="nowhere")),
        step("assertNotVisible", selector=Selector(id="hidden_button")),  # there, but not displayed
        step("copyTextFrom", selector=Selector(id="title")),
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
            assert sid is not None
            results = [await session.run_step(s) for s in steps]
            for s, r in zip(steps, results, strict=True):
                assert r.status == "passed", (s.describe(), r.message, r.logs)
                assert r.logs or s.command in ("swipe",), s.describe()
            # What the server saw: a tap at the middle of each element, the text in the field, two swipes.
            actions = actions_of(appium, sid)
            assert taps(actions) == [(200, 180), (200, 240), (200, 120)]
            swipes = [[(a["x"], a["y"]) for a in seq if a["type"] == "pointerMove"] for seq in actions[3:]]
            # The app window is 400x852: a swipe UP and a scroll DOWN both move the finger up the middle.
            assert swipes == [[(200, 596), (200, 255)]] * 2
            found = appium.command("POST", f"/session/{sid}/element", {"using": "id", "value": "email"})
            element = found["element-6066-11e4-a52e-4f735466cecf"]
            assert appium.command("GET", f"/session/{sid}/element/{element}/text") == "me@example"
            assert results[9].value == "Welcome"
        finally:
            await session.close()
        assert results[0].logs[0].startswith("POST /session ")  # the session's creation shows in the first step
        assert any("/element/active" in line for line in results[4].logs)  # tried the focused element first
        assert any("/source" in line for line in results[1].logs)  # looked in the screen's hierarchy
        assert results[-1].screenshot is not None and results[-1].screenshot.startswith(PNG)
        assert sid not in appium.session_ids()

    asyncio.run(scenario())


def test_selectors_and_taps_as_maestro_does_them(appium: AppiumServer) -> None:
    """Real calls: the fake driver logs each pointer sequence, so the test reads where every tap landed."""
    steps = [
        step("tapOn", selector=Selector(text="say.*DONE")),  # a regular expression, case ignored: "quote"
        step("tapOn", selector=Selector(text="Sign in", below=Selector(id="email"))),
        step("tapOn", selector=Selector(id="sign_in", point="10%,50%")),  # a point inside the element
        step("tapOn", selector=Selector(point="50%,50%")),  # a point on the screen
        step("tapOn", selector=Selector(point="12,34")),
        step("tapOn", selector=Selector(id="title", child_of=Selector(id="nav"))),
        step("tapOn", selector=Selector(id="nav", contains_child=Selector(id="title"))),
        step("tapOn", selector=Selector(text=".*", index=-1)),  # the lowest element on the screen: "quote"
        step("doubleTapOn", selector=Selector(id="email")),
        step("tapOn", selector=Selector(id="email"), args={"repeat": 3, "delay": 20}),
        step("longPressOn", selector=Selector(id="sign_in")),
    ]
    steps = [replace(s, index=i, line=i + 1) for i, s in enumerate(steps)]

    async def scenario() -> None:
        session = await AppiumDriver().open(fake_device(appium.url), fake_app(), flow(*steps))
        try:
            results = [await session.run_step(s) for s in steps]
            for s, r in zip(steps, results, strict=True):
                assert r.status == "passed", (s.describe(), r.message, r.logs)
            assert session.session_id is not None
            actions = actions_of(appium, session.session_id)
        finally:
            await session.close()
        downs = [[(a["x"], a["y"]) for a in seq if a["type"] == "pointerMove"] for seq in actions]
        assert downs[:8] == [
            [(200, 240)],
            [(200, 180)],
            [(56, 180)],
            [(200, 426)],
            [(12, 34)],
            [(200, 30)],
            [(200, 30)],
            [(200, 240)],
        ]
        assert downs[8] == [(200, 120)] * 2  # doubleTapOn: two taps in one sequence
        assert downs[9] == [(200, 120)] * 3
        assert [a["duration"] for a in actions[9] if a["type"] == "pause" and a["duration"] == 20] == [20, 20]
        holds = [a["duration"] for a in actions[10] if a["type"] == "pause"]
        assert holds == [3000]  # a long press holds for 3 s

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
        step("tapOn", 3, selector=Selector(text="Sign"), timeout_ms=300),  # a part of the text is not a match
    ]
    _, results = asyncio.run(run_flow(fake_device(appium.url), steps))
    assert [r.status for r in results] == ["failed"] * 4
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


def test_an_optional_lookup_waits_7_s_and_a_plain_one_17_s() -> None:
    from qualgent.drivers.appium import _wait_ms

    assert _wait_ms(step("tapOn")) == 17_000
    assert _wait_ms(step("tapOn", optional=True)) == 7_000
    assert _wait_ms(step("tapOn", timeout_ms=250)) == 250


def test_steps_the_server_cannot_do_fail_with_a_clear_message(appium: AppiumServer) -> None:
    steps = [
        step("back"),
        step("stopApp", 1),
        step("inputText", 2, text="no field tapped yet"),
        step("pressKey", 3, args={"key": "ENTER"}),
        step("swipe", 4, direction="SIDEWAYS"),
        step("stopRecording", 5),
    ]
    _, results = asyncio.run(run_flow(fake_device(appium.url), steps))
    assert [r.status for r in results] == ["failed"] * 6
    assert "back: this Appium driver does not implement it (unknown method" in results[0].message
    assert "unknown method" in results[1].message
    assert any('terminate_app {"appId":"com.example.fake"}' in line for line in results[1].logs)
    assert results[2].message == "no focused element to type into: tap a text field first"
    assert "the Appium server answered" in results[3].message  # the fake driver has no mobile: pressKey
    assert any('"script":"mobile: pressKey","args":[{"keycode":66}]' in line for line in results[3].logs)
    assert results[4].message == "swipe needs a direction (UP, DOWN, LEFT or RIGHT), not 'SIDEWAYS'"
    assert results[5].message == "stopRecording: no recording was started"


def test_location_travel_and_orientation_reach_the_device(appium: AppiumServer) -> None:
    steps = [
        step("setLocation", args={"latitude": 46.2, "longitude": 6.1}),
        step("travel", 1, args={"points": ["46.2,6.1", "46.2001,6.1001"], "speed": 10_000}),
        step("setOrientation", 2, args={"orientation": "LANDSCAPE_LEFT"}),
    ]

    async def scenario() -> tuple[list[StepResult], Any, Any]:
        session = await AppiumDriver().open(fake_device(appium.url), fake_app(), flow())
        try:
            results = [await session.run_step(s) for s in steps]
            sid = session.session_id
            return (
                results,
                appium.command("GET", f"/session/{sid}/location"),
                appium.command("GET", f"/session/{sid}/orientation"),
            )
        finally:
            await session.close()

    results, location, orientation = asyncio.run(scenario())
    assert [r.status for r in results] == ["passed"] * 3, [r.message for r in results]
    assert location["latitude"] == pytest.approx(46.2001) and location["longitude"] == pytest.approx(6.1001)
    assert orientation == "LANDSCAPE"
    assert any("travelled through 2 points" in line for line in results[1].logs)


def test_screenshots_cropped_and_compared_with_a_reference(appium: AppiumServer) -> None:
    async def scenario() -> list[StepResult]:
        session = await AppiumDriver().open(fake_device(appium.url), fake_app(), flow())
        try:
            shot = await session.run_step(step("takeScreenshot", label="full"))
            assert shot.screenshot is not None
            changed = _paint(shot.screenshot)
            return [
                shot,
                await session.run_step(step("takeScreenshot", 1, label="b", args={"cropOn": Selector(id="sign_in")})),
                await session.run_step(step("assertScreenshot", 2, attachments={"ref.png": shot.screenshot})),
                await session.run_step(
                    step("assertScreenshot", 3, attachments={"ref.png": changed}, args={"thresholdPercentage": 99.9})
                ),
                await session.run_step(
                    step("assertScreenshot", 4, attachments={"ref.png": changed}, args={"thresholdPercentage": 90})
                ),
                await session.run_step(
                    step("assertScreenshot", 5, attachments={"ref.png": _paint(shot.screenshot, (10, 10))})
                ),
            ]
        finally:
            await session.close()

    _full, cropped, same, strict, loose, smaller = asyncio.run(scenario())
    assert cropped.status == "passed" and cropped.screenshot is not None
    with Image.open(io.BytesIO(cropped.screenshot)) as picture:
        assert picture.size == (360, 40)  # the sign_in button's bounds; the screen is as large as the window
    assert same.status == "passed" and any("at 100.00%" in line for line in same.logs)
    assert strict.status == "failed" and "below 99.9%" in strict.message
    assert strict.screenshot is not None  # the difference, painted
    assert loose.status == "passed"
    assert smaller.status == "failed" and "at 0.00%" in smaller.message


def _paint(png: bytes, size: tuple[int, int] | None = None) -> bytes:
    """The picture with a black square on it (about 1 % of a 400x852 screen), or resized."""
    with Image.open(io.BytesIO(png)) as image:
        picture = image.convert("RGB")
        if size is not None:
            picture = picture.resize(size)
        else:
            ImageDraw.Draw(picture).rectangle((0, 0, 59, 59), fill=(0, 0, 0))
        out = io.BytesIO()
        picture.save(out, format="PNG")
        return out.getvalue()


# -- the Appium calls behind each command, on Android and iOS --------------------------------------
#
# Appium's fake driver plays neither platform and implements few `mobile:` extensions. These tests put
# a recording relay in front of the real server: every request the driver sends is recorded exactly,
# and the relay answers in the server's place only the commands the fake driver cannot carry out (each
# named in ``answers``). A wrong mapping (path, extension or arguments) fails the assertions.

ANDROID_SOURCE = """<hierarchy rotation="0">
  <android.widget.FrameLayout class="android.widget.FrameLayout" bounds="[0,0][1080,2400]" displayed="true">
    <android.widget.EditText class="android.widget.EditText" text="hello world" resource-id="com.example.fake:id/field"
        clickable="true" enabled="true" focused="true" displayed="true" bounds="[40,300][1040,400]"/>
  </android.widget.FrameLayout>
</hierarchy>"""


def platform_device(url: str, platform: str) -> DeviceConfig:
    """A device the driver treats as Android or iOS, on a server that plays the fake driver."""
    return replace(fake_device(url, platformName="Fake"), platform=platform)


def requests_of(
    relay: RecordingRelay, ignore: tuple[str, ...] = ("/source", "/screenshot", "/se/log")
) -> list[tuple[str, str, Any]]:
    return [(r.method, r.path, r.body) for r in relay.requests if r.path not in ignore and r.path != "/timeouts"]


def run_with_relay(
    appium: AppiumServer, platform: str, steps: list[Step], answers: dict[str, Any], app: AppUnderTest | None = None
) -> tuple[list[StepResult], RecordingRelay, Any]:
    with recording_relay(appium.url, answers) as relay:

        async def scenario() -> tuple[list[StepResult], Any]:
            session = await AppiumDriver().open(platform_device(relay.url, platform), app or fake_app(), flow())
            try:
                relay.clear()
                results = []
                for s in steps:
                    results.append(await session.run_step(s))
                return results, await session.device_log()
            finally:
                await session.close()

        results, device_log = asyncio.run(scenario())
    return results, relay, device_log


def test_android_device_actions_are_these_appium_calls(appium: AppiumServer) -> None:
    answers: dict[str, Any] = {
        "clearApp": True,
        "changePermissions": None,
        "startActivity": None,
        "shell": "",
        "setUiMode": None,
        "getUiMode": "no",
        "pressKey": None,
        "hideKeyboard": True,
        "pushFile": None,
        "deepLink": None,
        "getConnectivity": {"airplaneMode": True},
        "setConnectivity": None,
        "POST /appium/device/terminate_app": True,
        "POST /appium/device/activate_app": None,
        "broadcast": None,
        "POST /rotation": None,
        "POST /appium/start_recording_screen": None,
        "POST /appium/stop_recording_screen": base64.b64encode(b"an mp4").decode(),
    }
    app = fake_app(launchable_activity=".MainActivity")
    steps = [
        step(
            "launchApp", args={"clearState": True, "permissions": {"all": "deny", "camera": "allow"}}, clear_state=True
        ),
        step("launchApp", 1, args={"arguments": {"debug": True, "user": "ada", "retries": 3}, "stopApp": False}),
        step("stopApp", 2),
        step("killApp", 3),
        step("clearState", 4),
        step("clearKeychain", 5),
        step("setPermissions", 6, args={"permissions": {"location": "allow", "android.permission.CAMERA": "deny"}}),
        step("openLink", 7, args={"link": "shop://cart"}),
        step("setAirplaneMode", 8, args={"value": "enabled"}),
        step("toggleAirplaneMode", 9),
        step("setDarkMode", 10, args={"value": "enabled"}),
        step("toggleDarkMode", 11),
        step("pressKey", 12, args={"key": "VOLUME_UP"}),
        step("pressKey", 13, args={"key": "REMOTE_CENTER"}),
        step("hideKeyboard", 14),
        step("addMedia", 15, attachments={"media/cat.png": b"\x89PNG cat"}),
        step("setOrientation", 16, args={"orientation": "LANDSCAPE_RIGHT"}),
        step("startRecording", 17, args={"path": "login"}),
        step("stopRecording", 18),
    ]
    results, relay, _ = run_with_relay(appium, "Android", steps, answers, app)
    assert [r.status for r in results] == ["passed"] * len(steps), [
        (r.message, r.logs) for r in results if r.status != "passed"
    ]
    app_id = {"appId": "com.example.fake"}

    def mobile(name: str, args: dict[str, Any]) -> tuple[str, str, Any]:
        return ("POST", "/execute/sync", {"script": f"mobile: {name}", "args": [args]})

    assert requests_of(relay) == [
        ("POST", "/appium/device/terminate_app", app_id),
        mobile("clearApp", {"appId": "com.example.fake", "bundleId": "com.example.fake"}),
        mobile("changePermissions", {"permissions": "all", "appPackage": "com.example.fake", "action": "revoke"}),
        mobile(
            "changePermissions",
            {"permissions": ["android.permission.CAMERA"], "appPackage": "com.example.fake", "action": "grant"},
        ),
        ("POST", "/appium/device/activate_app", app_id),
        mobile(
            "startActivity",
            {
                "intent": "com.example.fake/.MainActivity",
                "extras": [["z", "debug", "true"], ["s", "user", "ada"], ["i", "retries", "3"]],
                "wait": True,
            },
        ),
        ("POST", "/appium/device/terminate_app", app_id),
        mobile("shell", {"command": "am", "args": ["kill", "com.example.fake"]}),
        mobile("clearApp", {"appId": "com.example.fake", "bundleId": "com.example.fake"}),
        # clearKeychain: nothing on Android
        mobile(
            "changePermissions",
            {
                "permissions": ["android.permission.ACCESS_FINE_LOCATION", "android.permission.ACCESS_COARSE_LOCATION"],
                "appPackage": "com.example.fake",
                "action": "grant",
            },
        ),
        mobile(
            "changePermissions",
            {"permissions": ["android.permission.CAMERA"], "appPackage": "com.example.fake", "action": "revoke"},
        ),
        mobile("deepLink", {"url": "shop://cart", "package": "com.example.fake"}),
        mobile("setConnectivity", {"airplaneMode": True}),
        mobile("getConnectivity", {"services": ["airplaneMode"]}),
        mobile("setConnectivity", {"airplaneMode": False}),
        mobile("setUiMode", {"mode": "night", "value": "yes"}),
        mobile("getUiMode", {"mode": "night"}),
        mobile("setUiMode", {"mode": "night", "value": "yes"}),
        mobile("pressKey", {"keycode": 24}),
        mobile("pressKey", {"keycode": 23}),
        mobile("hideKeyboard", {}),
        mobile(
            "pushFile", {"remotePath": "/sdcard/Pictures/cat.png", "payload": base64.b64encode(b"\x89PNG cat").decode()}
        ),
        mobile(
            "broadcast",
            {"action": "android.intent.action.MEDIA_SCANNER_SCAN_FILE", "uri": "file:///sdcard/Pictures/cat.png"},
        ),
        ("POST", "/rotation", {"x": 0, "y": 0, "z": 270}),
        ("POST", "/appium/start_recording_screen", {"options": {"timeLimit": 1800}}),
        ("POST", "/appium/stop_recording_screen", {}),
    ]
    video = results[-1].artifacts
    assert [(a.name, a.kind, a.content_type, a.data) for a in video] == [("login.mp4", "video", "video/mp4", b"an mp4")]


def test_ios_device_actions_are_these_appium_calls(appium: AppiumServer) -> None:
    answers: dict[str, Any] = {
        "clearKeychains": None,
        "setPermission": None,
        "pressButton": None,
        "setAppearance": None,
        "getAppearance": {"style": "light"},
        "deepLink": None,
        "launchApp": None,
        "lock": None,
        "POST /appium/device/terminate_app": True,
    }
    steps = [
        step("clearKeychain"),
        step("setPermissions", 1, args={"permissions": {"camera": "allow", "location": "deny", "photos": "unset"}}),
        step("pressKey", 2, args={"key": "HOME"}),
        step("pressKey", 3, args={"key": "LOCK"}),
        step("setAirplaneMode", 4, args={"value": "enabled"}),  # Android only: nothing to do
        step("setDarkMode", 5, args={"value": "enabled"}),
        step("assertLightMode", 6),
        step("assertDarkMode", 7),
        step("openLink", 8, args={"link": "https://example.com", "browser": True}),
        step("launchApp", 9, args={"arguments": {"debug": True}}),
    ]
    results, relay, _ = run_with_relay(appium, "iOS", steps, answers)
    assert [r.status for r in results] == ["passed"] * 7 + ["failed", "passed", "passed"]
    assert results[7].message == "the device is in light mode"

    def mobile(name: str, args: dict[str, Any]) -> tuple[str, str, Any]:
        return ("POST", "/execute/sync", {"script": f"mobile: {name}", "args": [args]})

    assert requests_of(relay) == [
        mobile("clearKeychains", {}),
        mobile(
            "setPermission",
            {"bundleId": "com.example.fake", "access": {"camera": "yes", "location-always": "no", "photos": "unset"}},
        ),
        mobile("pressButton", {"name": "home"}),
        mobile("lock", {}),
        mobile("setAppearance", {"style": "dark"}),
        mobile("getAppearance", {}),
        mobile("getAppearance", {}),
        mobile("deepLink", {"url": "https://example.com", "bundleId": "com.apple.mobilesafari"}),
        ("POST", "/appium/device/terminate_app", {"appId": "com.example.fake"}),
        mobile("launchApp", {"bundleId": "com.example.fake", "arguments": ["-debug", "true"]}),
    ]
    assert any("Android only" in line for line in results[4].logs)


def test_a_crash_in_the_device_log_fails_the_step_and_the_log_is_kept(appium: AppiumServer) -> None:
    reads = iter(
        [
            # Read when the session starts: what came before the run (a crash of another run) is left out.
            [{"message": "E AndroidRuntime: FATAL EXCEPTION: main (an earlier run)", "timestamp": 1}],
            [{"message": "I ActivityManager: Start proc com.example.fake", "timestamp": 2}],
            [
                {"message": "E AndroidRuntime: FATAL EXCEPTION: main", "timestamp": 3},
                {"message": "E AndroidRuntime: Process: com.example.fake, PID: 4242", "timestamp": 3},
                {"message": "E AndroidRuntime: java.lang.IllegalStateException: boom", "timestamp": 3},
            ],
        ]
    )
    answers: dict[str, Any] = {
        "POST /se/log": lambda body: next(reads, []),
        "GET /source": ANDROID_SOURCE,
    }
    steps = [
        step("assertVisible", selector=Selector(id="field")),
        step("tapOn", 1, selector=Selector(text="hello world")),
        step("assertVisible", 2, selector=Selector(id="field")),
    ]
    results, relay, device_log = run_with_relay(appium, "Android", steps, answers)
    assert [r.status for r in results] == ["passed", "failed", "passed"]
    assert results[1].message == "the app crashed: E AndroidRuntime: FATAL EXCEPTION: main"
    assert device_log is not None and device_log.kind == "log"
    text = device_log.data.decode()
    assert "java.lang.IllegalStateException: boom" in text and "an earlier run" not in text
    assert ("POST", "/se/log", {"type": "logcat"}) in [(r.method, r.path, r.body) for r in relay.requests]
    # The tap landed in the middle of the field's Android bounds [40,300][1040,400].
    tap = next(r.body for r in relay.requests if r.path == "/actions")
    assert tap["actions"][0]["actions"][0] == {
        "type": "pointerMove",
        "duration": 0,
        "x": 540,
        "y": 350,
        "origin": "viewport",
    }


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


def test_bad_device_options_are_an_infrastructure_error() -> None:
    device = DeviceConfig(
        id="d", name="n", platform="Fake", os_version="1", driver="appium", options={"server_url": 4723}
    )
    with pytest.raises(InfrastructureError, match="server_url must be an http"):
        asyncio.run(AppiumDriver().open(device, fake_app(), flow()))


def _implements_the_protocols(session: AppiumSession) -> tuple[Driver, DeviceSession]:
    """Never called: mypy checks here that the appium driver and its sessions fit drivers.base."""
    return AppiumDriver(), session


def test_swipes_scrolls_and_taps_that_wait_for_the_screen(appium: AppiumServer) -> None:
    """Real calls on the fake driver, whose screen never changes (so a retried tap is retried)."""
    steps = [
        step("swipe", args={"start": "90%, 50%", "end": "10%, 50%", "duration": 300}),
        step("swipe", 1, args={"start": "300, 400", "end": "100, 400"}),
        step("swipe", 2, direction="UP", args={"from": Selector(id="sign_in")}),
        step("scrollUntilVisible", 3, selector=Selector(text="Sign in"), direction="DOWN", args={"timeout": 2000}),
        step(
            "scrollUntilVisible",
            4,
            selector=Selector(text="Terms"),
            direction="DOWN",
            args={"timeout": 600, "speed": 90},
        ),
        step("tapOn", 5, selector=Selector(id="sign_in"), args={"retryTapIfNoChange": True}),
        step("tapOn", 6, selector=Selector(id="quote"), args={"waitToSettleTimeoutMs": 500}),
    ]

    async def scenario() -> tuple[list[StepResult], list[list[dict[str, Any]]]]:
        session = await AppiumDriver().open(fake_device(appium.url), fake_app(), flow())
        try:
            results = [await session.run_step(s) for s in steps]
            assert session.session_id is not None
            return results, actions_of(appium, session.session_id)
        finally:
            await session.close()

    results, actions = asyncio.run(scenario())
    assert [r.status for r in results] == ["passed"] * 4 + ["failed", "passed", "passed"], [r.message for r in results]
    moves = [[(a["x"], a["y"], a["duration"]) for a in seq if a["type"] == "pointerMove"] for seq in actions]
    assert moves[0] == [(360, 426, 0), (40, 426, 300)]  # percentages of the 400x852 window
    assert moves[1] == [(300, 400, 0), (100, 400, 400)]  # pixels, default duration
    assert moves[2] == [(200, 180, 0), (200, 1, 400)]  # from the element's centre, upwards
    assert any("visible after 0 swipes" in line for line in results[3].logs)
    # Not on screen: swiped up (to see content below), with the speed's duration, until the timeout.
    assert results[4].message.startswith('"Terms" did not show after ') and "(600 ms)" in results[4].message
    scroll_moves = moves[3 : len(moves) - 3]
    assert scroll_moves and all(m == [(200, 596, 0), (200, 255, 101)] for m in scroll_moves)
    # retryTapIfNoChange: the screen did not change, so the tap was done again.
    assert moves[-3:-1] == [[(200, 180, 0)], [(200, 180, 0)]]
    assert any("tapping again" in line for line in results[5].logs)
