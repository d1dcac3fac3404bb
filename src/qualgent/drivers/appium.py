"""The ``appium`` driver: a flow's steps as W3C WebDriver commands over HTTP to an Appium 2/3 server.

A device's ``options`` name the server and the capabilities::

    {"server_url": "http://127.0.0.1:4723",
     "capabilities": {"appium:automationName": "UiAutomator2", "appium:udid": "emulator-5554"}}

Optional: ``new_session_timeout_s`` (default 300: a first session may install the app and the
driver's own server on the device) and ``command_timeout_s`` (default 60, for every other call).

Capabilities sent are the configured ones, with an ``appium:`` prefix added to any key that is neither
a W3C capability nor vendor-prefixed; ``platformName`` from the device unless configured;
``appium:app`` = the app file on this machine unless configured (``null`` there sends none, for an
app already installed). The app path is given the extension Appium needs (``.apk``, ``.ipa``, …)
through a symlink when the cached file has none.

Elements are looked up as Maestro does, in the screen's view hierarchy (``GET /source``, with
Maestro's selector rules, ``drivers.hierarchy``), polled until the step's timeout (17 s, 7 s for an
optional step); the server's implicit wait is set to 0. Taps and swipes are W3C pointer actions at
the element's place. ``docs/flows.md`` lists the Appium call behind every command.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import itertools
import json
import logging
import math
import os
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from PIL import Image, ImageChops

from qualgent.drivers.base import AppUnderTest, Artifact, DeviceConfig, InfrastructureError, StepResult
from qualgent.drivers.hierarchy import Node, find, parse_source
from qualgent.flows.commands import RANDOM_INPUTS
from qualgent.flows.model import Flow, Selector, Step

log = logging.getLogger(__name__)

DEFAULT_SERVER_URL = "http://127.0.0.1:4723"
DEFAULT_NEW_SESSION_TIMEOUT_S = 300.0
DEFAULT_COMMAND_TIMEOUT_S = 60.0
QUIT_TIMEOUT_S = 30.0
DEFAULT_WAIT_MS = 17_000  # Maestro's lookup timeout
OPTIONAL_WAIT_MS = 7_000  # … for an optional step
DEFAULT_SETTLE_MS = 15_000  # waitForAnimationToEnd
MAX_SETTLE_MS = 30_000  # waitToSettleTimeoutMs is capped here, as in Maestro
SCROLL_UNTIL_VISIBLE_MS = 20_000
CENTRE_EXTRA_SWIPES = 4  # centerElement: at most this many more swipes to bring the element to the middle
POLL_INTERVAL_S = 0.25
TAP_HOLD_MS = 50
LONG_PRESS_MS = 3_000
DEFAULT_SWIPE_MS = 400
MAX_RECORDING_S = 1_800  # Appium's own cap on a screen recording
MAX_DEVICE_LOG_LINES = 5_000  # kept per run (the newest)
MAX_LOG_LINE_CHARS = 2_000
PIXEL_TOLERANCE = 8  # per channel, for assertScreenshot (compression noise)
TRAVEL_MAX_UPDATES = 120  # location updates per leg of a travel

ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Capabilities W3C defines; every other key must carry a vendor prefix.
W3C_CAPABILITIES = frozenset(
    {
        "browserName",
        "browserVersion",
        "platformName",
        "acceptInsecureCerts",
        "pageLoadStrategy",
        "proxy",
        "setWindowRect",
        "timeouts",
        "strictFileInteractability",
        "unhandledPromptBehavior",
        "userAgent",
        "webSocketUrl",
    }
)

# Appium's drivers pick how to install an app by its file extension; our cache names files by hash.
APP_SUFFIXES = {"apk": ".apk", "aab": ".aab", "ipa": ".ipa", "app.zip": ".zip"}

# Errors by which a server says "this command does not exist here", not "the command failed".
UNSUPPORTED_ERRORS = frozenset({"unknown command", "unknown method", "unsupported operation"})
# "unknown error" messages by which Appium's drivers report that the device or its agent went away.
DEVICE_GONE_HINTS = (
    "instrumentation process is not running",
    "could not proxy command",
    "socket hang up",
    "econnrefused",
    "econnreset",
    "device offline",
    "device not found",
    "session is either terminated or not started",
)
# Where a swipe's finger starts and ends, as fractions of the window's width and height.
SWIPES: dict[str, tuple[float, float, float, float]] = {
    "UP": (0.5, 0.7, 0.5, 0.3),
    "DOWN": (0.5, 0.3, 0.5, 0.7),
    "LEFT": (0.8, 0.5, 0.2, 0.5),
    "RIGHT": (0.2, 0.5, 0.8, 0.5),
}
# Scrolling the content one way moves the finger the other way.
SCROLL_SWIPE = {"DOWN": "UP", "UP": "DOWN", "LEFT": "RIGHT", "RIGHT": "LEFT"}

# pressKey on Android: Maestro's key names (flows.commands.KEYS) to Android key codes.
ANDROID_KEYCODES = {
    "ENTER": 66,
    "BACKSPACE": 67,
    "BACK": 4,
    "HOME": 3,
    "LOCK": 223,  # KEYCODE_SLEEP: turns the screen off, locked
    "VOLUME_UP": 24,
    "VOLUME_DOWN": 25,
    "REMOTE_UP": 19,
    "REMOTE_DOWN": 20,
    "REMOTE_LEFT": 21,
    "REMOTE_RIGHT": 22,
    "REMOTE_CENTER": 23,
    "REMOTE_PLAY_PAUSE": 85,
    "REMOTE_STOP": 86,
    "REMOTE_NEXT": 87,
    "REMOTE_PREVIOUS": 88,
    "REMOTE_REWIND": 89,
    "REMOTE_FAST_FORWARD": 90,
    "ESCAPE": 111,
    "POWER": 26,
    "TAB": 61,
    "REMOTE_SYSTEM_NAVIGATION_UP": 280,
    "REMOTE_SYSTEM_NAVIGATION_DOWN": 281,
    "REMOTE_BUTTON_A": 96,
    "REMOTE_BUTTON_B": 97,
    "REMOTE_MENU": 82,
    "TV_INPUT": 178,
    "TV_INPUT_HDMI_1": 243,
    "TV_INPUT_HDMI_2": 244,
    "TV_INPUT_HDMI_3": 245,
}
# pressKey on iOS: hardware buttons (`mobile: pressButton`), and keys typed into the focused field.
IOS_BUTTONS = {"HOME": "home", "VOLUME_UP": "volumeUp", "VOLUME_DOWN": "volumeDown"}
IOS_KEYS = {"ENTER": "\n", "BACKSPACE": "\b", "TAB": "\t"}

# Maestro's permission names to Android permissions (`mobile: changePermissions`) and iOS services
# (`mobile: setPermission`); other names are passed as written (e.g. android.permission.CAMERA).
ANDROID_PERMISSIONS = {
    "camera": ["android.permission.CAMERA"],
    "contacts": ["android.permission.READ_CONTACTS", "android.permission.WRITE_CONTACTS"],
    "calendar": ["android.permission.READ_CALENDAR", "android.permission.WRITE_CALENDAR"],
    "location": ["android.permission.ACCESS_FINE_LOCATION", "android.permission.ACCESS_COARSE_LOCATION"],
    "microphone": ["android.permission.RECORD_AUDIO"],
    "phone": ["android.permission.CALL_PHONE", "android.permission.READ_PHONE_STATE"],
    "sms": ["android.permission.SEND_SMS", "android.permission.READ_SMS", "android.permission.RECEIVE_SMS"],
    "storage": ["android.permission.READ_EXTERNAL_STORAGE", "android.permission.WRITE_EXTERNAL_STORAGE"],
    "medialibrary": ["android.permission.READ_MEDIA_IMAGES", "android.permission.READ_MEDIA_VIDEO"],
    "photos": ["android.permission.READ_MEDIA_IMAGES"],
    "notifications": ["android.permission.POST_NOTIFICATIONS"],
    "bluetooth": ["android.permission.BLUETOOTH_CONNECT", "android.permission.BLUETOOTH_SCAN"],
}
IOS_PERMISSIONS = {
    "calendar": "calendar",
    "camera": "camera",
    "contacts": "contacts",
    "health": "health",
    "homekit": "homekit",
    "location": "location-always",
    "medialibrary": "media-library",
    "microphone": "microphone",
    "motion": "motion",
    "notifications": "notifications",
    "photos": "photos",
    "reminders": "reminders",
    "siri": "siri",
    "speech": "speech-recognition",
    "usertracking": "user-tracking",
}
IOS_ACCESS = {"allow": "yes", "deny": "no", "unset": "unset"}
# openLink with `browser: true`: the system browser's app.
BROWSERS = {"android": {"package": "com.android.chrome"}, "ios": {"bundleId": "com.apple.mobilesafari"}}


class WebDriverError(Exception):
    """A W3C error answer for one command, while the session itself is still alive."""

    def __init__(self, status: int, error: str, message: str) -> None:
        self.status = status
        self.error = error
        self.message = message
        super().__init__(f"{error}: {message}" if message else error)

    @property
    def unsupported(self) -> bool:
        return self.error in UNSUPPORTED_ERRORS


class _StepFailure(Exception):
    """The step did not do what it says (an element missing, still visible, …): a failed result."""


def merge_capabilities(device: DeviceConfig, configured: dict[str, Any], app_path: str) -> dict[str, Any]:
    """The capabilities for POST /session (the rules are in the module docstring)."""
    caps: dict[str, Any] = {}
    for key, value in configured.items():
        caps[key if key in W3C_CAPABILITIES or ":" in key else f"appium:{key}"] = value
    caps.setdefault("platformName", device.platform)
    if "appium:app" not in caps:
        caps["appium:app"] = app_path
    elif caps["appium:app"] is None:
        del caps["appium:app"]
    return caps


@dataclass(frozen=True)
class AppiumOptions:
    server_url: str
    capabilities: dict[str, Any]
    new_session_timeout_s: float
    command_timeout_s: float

    @classmethod
    def from_device(cls, device: DeviceConfig) -> AppiumOptions:
        """Read a device's ``options``; a wrong one is the device's fault, so an InfrastructureError."""
        options = device.options
        server_url = options.get("server_url", DEFAULT_SERVER_URL)
        capabilities = options.get("capabilities", {})
        if not isinstance(server_url, str) or not server_url.startswith(("http://", "https://")):
            raise InfrastructureError(f"device {device.id}: options.server_url must be an http(s) URL")
        if not isinstance(capabilities, dict) or not all(isinstance(k, str) for k in capabilities):
            raise InfrastructureError(f"device {device.id}: options.capabilities must be a mapping")
        timeouts: list[float] = []
        for name, default in (
            ("new_session_timeout_s", DEFAULT_NEW_SESSION_TIMEOUT_S),
            ("command_timeout_s", DEFAULT_COMMAND_TIMEOUT_S),
        ):
            value = options.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise InfrastructureError(f"device {device.id}: options.{name} must be a positive number")
            timeouts.append(float(value))
        return cls(server_url.rstrip("/"), dict(capabilities), timeouts[0], timeouts[1])


def _session_capabilities(
    device: DeviceConfig, options: AppiumOptions, app: AppUnderTest
) -> tuple[dict[str, Any], str | None]:
    """The merged capabilities, and a temporary folder to remove with the session (if one was made)."""
    local_path = os.path.abspath(app.path)
    caps = merge_capabilities(device, options.capabilities, local_path)
    if caps.get("appium:app") != local_path:
        return caps, None
    try:
        caps["appium:app"], temp_folder = _app_path_with_suffix(local_path, app)
    except OSError as exc:
        raise InfrastructureError(f"cannot give the app file an extension Appium accepts: {exc}") from exc
    return caps, temp_folder


def _app_path_with_suffix(path: str, app: AppUnderTest) -> tuple[str, str | None]:
    """The app's path as Appium needs it, and a temporary folder to remove afterwards (if one was made)."""
    suffix = APP_SUFFIXES.get(str(app.metadata.get("package_type", "")))
    if suffix is None or path.lower().endswith(suffix):
        return path, None
    folder = tempfile.mkdtemp(prefix="qualgent-appium-")
    link = os.path.join(folder, f"{app.sha256[:16] or 'app'}{suffix}")
    os.symlink(path, link)
    return link, folder


def _summary(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


def _element_id(value: Any) -> str | None:
    if isinstance(value, dict):
        found = value.get(ELEMENT_KEY, value.get("ELEMENT"))
        return str(found) if found is not None else None
    return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


class _WebDriverClient:
    """HTTP to one Appium server: W3C answers in, WebDriverError or InfrastructureError out."""

    def __init__(self, options: AppiumOptions) -> None:
        self.server_url = options.server_url
        self.command_timeout_s = options.command_timeout_s
        self.http = httpx.AsyncClient(base_url=options.server_url, timeout=options.command_timeout_s)

    async def request(
        self, method: str, path: str, payload: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> tuple[int, Any]:
        timeout = timeout_s or self.command_timeout_s
        try:
            response = await self.http.request(method, path, json=payload, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise InfrastructureError(
                f"Appium server at {self.server_url} did not answer {method} {path} within {timeout:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise InfrastructureError(
                f"Appium server at {self.server_url} is unreachable ({method} {path}): {exc or type(exc).__name__}"
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "value" not in body:
            raise InfrastructureError(
                f"Appium server at {self.server_url} answered {method} {path} with HTTP {response.status_code} "
                f"and no WebDriver body: {_summary(response.text, 200)!r}"
            )
        value = body["value"]
        if response.status_code >= 400 or (isinstance(value, dict) and isinstance(value.get("error"), str)):
            error = str(value.get("error", "unknown error")) if isinstance(value, dict) else "unknown error"
            message = _first_line(str(value.get("message", ""))) if isinstance(value, dict) else ""
            raise WebDriverError(response.status_code, error, message)
        return response.status_code, value

    async def aclose(self) -> None:
        await self.http.aclose()


class AppiumDriver:
    """Opens an Appium session per run on the device's Appium server."""

    name = "appium"

    async def open(self, device: DeviceConfig, app: AppUnderTest, flow: Flow) -> AppiumSession:
        options = AppiumOptions.from_device(device)
        caps, temp_folder = _session_capabilities(device, options, app)
        client = _WebDriverClient(options)
        try:
            session_id, logs = await _create_session(client, caps, options.new_session_timeout_s)
        except BaseException:
            await client.aclose()
            if temp_folder is not None:
                shutil.rmtree(temp_folder, ignore_errors=True)
            raise
        session = AppiumSession(client, session_id, device, app, flow, caps, temp_folder, logs)
        try:
            await session.prepare()
        except BaseException:
            await session.close()
            raise
        return session


async def _create_session(client: _WebDriverClient, caps: dict[str, Any], timeout_s: float) -> tuple[str, list[str]]:
    shown = {k: v for k, v in caps.items() if k in ("platformName", "appium:automationName", "appium:app")}
    try:
        status, value = await client.request(
            "POST", "/session", {"capabilities": {"alwaysMatch": caps, "firstMatch": [{}]}}, timeout_s=timeout_s
        )
    except WebDriverError as exc:
        raise InfrastructureError(
            f"Appium server at {client.server_url} could not create a session (HTTP {exc.status}, {exc.error}): "
            f"{exc.message or 'no message'}"
        ) from exc
    except InfrastructureError as exc:
        raise InfrastructureError(f"could not create an Appium session: {exc}") from exc
    session_id = value.get("sessionId") if isinstance(value, dict) else None
    if not isinstance(session_id, str) or not session_id:
        raise InfrastructureError(
            f"Appium server at {client.server_url} answered POST /session without a session id: {_summary(value)}"
        )
    return session_id, [f"POST /session {_summary(shown)} -> {status} session {session_id}"]


class AppiumSession:
    """One Appium session: runs steps, and is always quit by ``close()``.

    Elements are found as Maestro finds them, in the screen's hierarchy (``GET /source``, see
    ``drivers.hierarchy``), and touched where they are (W3C pointer actions at their centre); text
    goes to the focused element. Everything else is one Appium call, or a ``mobile:`` extension of
    UiAutomator2 (Android) or XCUITest (iOS); ``docs/flows.md`` lists them per command.
    """

    def __init__(
        self,
        client: _WebDriverClient,
        session_id: str,
        device: DeviceConfig,
        app: AppUnderTest,
        flow: Flow,
        capabilities: dict[str, Any],
        temp_folder: str | None,
        logs: list[str],
    ) -> None:
        self._client = client
        self.session_id: str | None = session_id
        self._device = device
        self._platform = device.platform.lower()  # android | ios | anything else (the fake driver)
        self._app = app
        self._flow = flow
        self.capabilities = capabilities
        self._temp_folder = temp_folder
        self._logs = logs  # the next step's log; the session's creation shows in the first step
        self._closing: asyncio.Task[None] | None = None
        # Appium launches the app when it creates the session, unless told not to.
        self._app_fresh = capabilities.get("appium:autoLaunch") is not False
        self._last_tapped: Node | None = None
        self._window: tuple[int, int] | None = None
        self._recording = False
        self._log_type = {"android": "logcat", "ios": "syslog"}.get(self._platform)
        self._device_log: list[str] = []
        self._device_log_dropped = 0
        self._handlers: dict[str, Callable[[Step], Awaitable[StepResult]]] = {
            "launchApp": self._launch_app,
            "stopApp": self._stop_app,
            "killApp": self._kill_app,
            "clearState": self._clear_state,
            "clearKeychain": self._clear_keychain,
            "setPermissions": self._set_permissions,
            "tapOn": self._tap_on,
            "doubleTapOn": self._tap_on,
            "longPressOn": self._tap_on,
            "inputText": self._input_text,
            "pasteText": self._input_text,
            **{name: self._input_text for name in RANDOM_INPUTS},
            "eraseText": self._erase_text,
            "copyTextFrom": self._copy_text_from,
            "hideKeyboard": self._hide_keyboard,
            "pressKey": self._press_key,
            "back": self._back,
            "assertVisible": self._assert_visible,
            "assertNotVisible": self._assert_not_visible,
            "scroll": self._scroll,
            "swipe": self._swipe,
            "scrollUntilVisible": self._scroll_until_visible,
            "openLink": self._open_link,
            "setLocation": self._set_location,
            "travel": self._travel,
            "setOrientation": self._set_orientation,
            "setAirplaneMode": self._airplane_mode,
            "toggleAirplaneMode": self._airplane_mode,
            "setDarkMode": self._dark_mode,
            "toggleDarkMode": self._dark_mode,
            "assertDarkMode": self._assert_mode,
            "assertLightMode": self._assert_mode,
            "addMedia": self._add_media,
            "waitForAnimationToEnd": self._wait_for_animation,
            "takeScreenshot": self._take_screenshot,
            "assertScreenshot": self._assert_screenshot,
            "startRecording": self._start_recording_step,
            "stopRecording": self._stop_recording_step,
        }

    # -- lifecycle ---------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Turn the server's implicit wait off (our waits poll) and start reading the device's log."""
        try:
            await self._call("POST", "/timeouts", {"implicit": 0})
        except WebDriverError as exc:
            self._logs.append(f"could not set the implicit wait to 0 ({exc}); going on")
        if self._log_type is not None:
            # The first read returns what came before the session; the run's log starts after it.
            await self._read_device_log(keep=False)

    async def close(self) -> None:
        """Quit the session (DELETE /session/{id}); safe to call again, and never raises."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._quit())
        # Shielded so a cancelled caller still lets the quit reach the server.
        await asyncio.shield(self._closing)

    async def _quit(self) -> None:
        session_id, self.session_id = self.session_id, None
        try:
            if session_id is not None:
                await self._client.request("DELETE", f"/session/{session_id}", timeout_s=QUIT_TIMEOUT_S)
        except (WebDriverError, InfrastructureError) as exc:
            log.warning("could not quit Appium session %s: %s", session_id, exc)
        except Exception:
            log.exception("could not quit Appium session %s", session_id)
        try:
            await self._client.aclose()
        except Exception:
            log.exception("could not close the HTTP client for Appium session %s", session_id)
        if self._temp_folder is not None:
            shutil.rmtree(self._temp_folder, ignore_errors=True)

    async def start_recording(self) -> None:
        try:
            await self._start_recording()
        except (WebDriverError, _StepFailure) as exc:
            self._logs.append(f"could not start recording the screen: {exc}")

    async def stop_recording(self) -> Artifact | None:
        if not self._recording:
            return None
        try:
            return await self._stop_recording("run")
        except (WebDriverError, _StepFailure) as exc:
            log.warning("could not stop the screen recording: %s", exc)
            return None

    async def device_log(self) -> Artifact | None:
        if self._log_type is not None and self.session_id is not None:
            with contextlib.suppress(WebDriverError, InfrastructureError):
                await self._read_device_log(keep=True)
        if not self._device_log:
            return None
        head = f"… {self._device_log_dropped} earlier lines dropped\n" if self._device_log_dropped else ""
        text = head + "\n".join(self._device_log) + "\n"
        return Artifact(f"{self._log_type or 'device'}.log", "log", "text/plain; charset=utf-8", text.encode())

    # -- steps -------------------------------------------------------------------------------------

    async def run_step(self, step: Step) -> StepResult:
        if self.session_id is None:
            raise InfrastructureError("the Appium session is closed")
        handler = self._handlers.get(step.command)
        try:
            if handler is None:
                raise _StepFailure(f"{step.command} is not supported by the appium driver")
            result = await handler(step)
            await self._check_for_crash()
        except _StepFailure as exc:
            message = str(exc)
        except WebDriverError as exc:
            message = f"{step.describe()}: the Appium server answered {exc}"
        else:
            result.logs = self._logs + result.logs
            self._logs = []
            return result
        finally:
            self._app_fresh = False
        with contextlib.suppress(_StepFailure):
            await self._check_for_crash()
        screenshot = await self._failure_screenshot()
        logs, self._logs = self._logs, []
        if step.optional:
            return StepResult("skipped", f"optional step did not pass: {message}", logs, screenshot)
        return StepResult("failed", message, logs, screenshot)

    # app and device ------------------------------------------------------------------------------

    async def _launch_app(self, step: Step) -> StepResult:
        args = step.args
        no_reset = self.capabilities.get("appium:noReset") is True
        extra = any(args.get(key) for key in ("clearKeychain", "permissions", "arguments"))
        stop_first = args.get("stopApp", True) is not False
        if self._app_fresh and not extra and not (step.clear_state and no_reset):
            self._logs.append("the app was launched when the session was created; nothing to do")
            return StepResult("passed")
        app_id = self._app_id(step)
        if stop_first:
            await self._terminate(app_id)
        if args.get("clearKeychain"):
            await self._clear_keychain(step)
        if step.clear_state:
            await self._mobile("clearApp", {"appId": app_id, "bundleId": app_id})
        if args.get("permissions"):
            await self._apply_permissions(app_id, args["permissions"])
        arguments = args.get("arguments")
        if arguments and self._platform == "ios":
            flat = [item for key, value in arguments.items() for item in (f"-{key}", _extra_value(value))]
            await self._mobile("launchApp", {"bundleId": app_id, "arguments": flat})
            return StepResult("passed")
        if arguments and self._platform == "android":
            activity = self._app.metadata.get("launchable_activity") or self._app.metadata.get("main_activity")
            if not activity:
                raise _StepFailure("launchApp arguments: the build names no launchable activity to start with extras")
            extras = [[_extra_type(v), str(k), _extra_value(v)] for k, v in arguments.items()]
            await self._mobile("startActivity", {"intent": f"{app_id}/{activity}", "extras": extras, "wait": True})
            return StepResult("passed")
        await self._call("POST", "/appium/device/activate_app", {"appId": app_id})
        return StepResult("passed")

    async def _stop_app(self, step: Step) -> StepResult:
        await self._terminate(self._app_id(step))
        return StepResult("passed")

    async def _kill_app(self, step: Step) -> StepResult:
        # Maestro kills the process as the system would (so the app restores its state on next launch);
        # Appium's nearest is terminating it.
        app_id = self._app_id(step)
        if self._platform == "android":
            try:
                await self._mobile("shell", {"command": "am", "args": ["kill", app_id]})
                return StepResult("passed")
            except WebDriverError as exc:
                self._logs.append(f"`am kill` needs the server's adb_shell feature ({exc}); terminating instead")
        await self._terminate(app_id)
        return StepResult("passed")

    async def _clear_state(self, step: Step) -> StepResult:
        app_id = self._app_id(step)
        await self._mobile("clearApp", {"appId": app_id, "bundleId": app_id})
        return StepResult("passed")

    async def _clear_keychain(self, step: Step) -> StepResult:
        if self._platform != "ios":
            self._logs.append("clearKeychain: there is no keychain on Android; nothing to do (as in Maestro)")
            return StepResult("passed")
        await self._mobile("clearKeychains", {})
        return StepResult("passed")

    async def _set_permissions(self, step: Step) -> StepResult:
        await self._apply_permissions(self._app_id(step), step.args.get("permissions") or {})
        return StepResult("passed")

    async def _apply_permissions(self, app_id: str, permissions: dict[str, str]) -> None:
        if self._platform == "ios":
            access = {
                IOS_PERMISSIONS.get(name, name): IOS_ACCESS[value]
                for name, value in permissions.items()
                if name != "all"
            }
            if "all" in permissions:
                access = {**{service: IOS_ACCESS[permissions["all"]] for service in IOS_PERMISSIONS.values()}, **access}
            await self._mobile("setPermission", {"bundleId": app_id, "access": access})
            return
        for name, value in permissions.items():
            names: str | list[str] = "all" if name == "all" else ANDROID_PERMISSIONS.get(name, [name])
            if value == "unset":
                self._logs.append(f"permission {name}: Android has no 'unset'; revoking")
            action = "grant" if value == "allow" else "revoke"
            await self._mobile("changePermissions", {"permissions": names, "appPackage": app_id, "action": action})

    async def _terminate(self, app_id: str) -> None:
        was_running = await self._call("POST", "/appium/device/terminate_app", {"appId": app_id})
        if was_running is False:
            self._logs.append(f"{app_id} was not running")

    async def _open_link(self, step: Step) -> StepResult:
        link = str(step.args.get("link", ""))
        app_id = self._app_id(step, required=False)
        if step.args.get("autoVerify"):
            self._logs.append("autoVerify: the link opens in the app that verified it, as the system decides")
        params: dict[str, Any] = {"url": link}
        if step.args.get("browser"):
            params.update(BROWSERS.get(self._platform, {}))
        elif app_id is not None:
            params["package" if self._platform == "android" else "bundleId"] = app_id
        await self._mobile("deepLink", params)
        return StepResult("passed")

    async def _set_location(self, step: Step) -> StepResult:
        await self._location(float(step.args["latitude"]), float(step.args["longitude"]))
        return StepResult("passed")

    async def _location(self, latitude: float, longitude: float) -> None:
        if self._platform == "android":
            await self._mobile("setGeolocation", {"latitude": latitude, "longitude": longitude})
        elif self._platform == "ios":
            await self._mobile("setSimulatedLocation", {"latitude": latitude, "longitude": longitude})
        else:
            location = {"latitude": latitude, "longitude": longitude, "altitude": 0}
            await self._call("POST", "/location", {"location": location})

    async def _travel(self, step: Step) -> StepResult:
        points = [tuple(float(p) for p in str(point).split(",")) for point in step.args.get("points", [])]
        speed = float(step.args.get("speed") or 4.0)
        if not points:
            raise _StepFailure("travel needs points")
        await self._location(*points[0])
        updates = 1
        for (lat1, lng1), (lat2, lng2) in itertools.pairwise(points):
            seconds = _metres(lat1, lng1, lat2, lng2) / speed if speed > 0 else 0.0
            moves = max(1, min(int(seconds), TRAVEL_MAX_UPDATES))
            for i in range(1, moves + 1):
                await asyncio.sleep(seconds / moves)
                fraction = i / moves
                await self._location(lat1 + (lat2 - lat1) * fraction, lng1 + (lng2 - lng1) * fraction)
                updates += 1
        self._logs.append(f"travelled through {len(points)} points at {speed:g} m/s ({updates} location updates)")
        return StepResult("passed")

    async def _set_orientation(self, step: Step) -> StepResult:
        orientation = str(step.args.get("orientation", "PORTRAIT"))
        if orientation in ("PORTRAIT", "LANDSCAPE_LEFT"):
            await self._call(
                "POST", "/orientation", {"orientation": "PORTRAIT" if orientation == "PORTRAIT" else "LANDSCAPE"}
            )
        else:
            degrees = {"LANDSCAPE_RIGHT": 270, "UPSIDE_DOWN": 180}[orientation]
            await self._call("POST", "/rotation", {"x": 0, "y": 0, "z": degrees})
        self._window = None
        return StepResult("passed")

    async def _airplane_mode(self, step: Step) -> StepResult:
        if self._platform != "android":
            self._logs.append(f"{step.command}: airplane mode is Android only; nothing to do (as in Maestro)")
            return StepResult("passed")
        if step.command == "toggleAirplaneMode":
            state = await self._mobile("getConnectivity", {"services": ["airplaneMode"]})
            on = not bool(state.get("airplaneMode")) if isinstance(state, dict) else True
        else:
            on = step.args.get("value") == "enabled"
        await self._mobile("setConnectivity", {"airplaneMode": on})
        return StepResult("passed")

    async def _dark_mode(self, step: Step) -> StepResult:
        dark = (not await self._is_dark()) if step.command == "toggleDarkMode" else step.args.get("value") == "enabled"
        if self._platform == "ios":
            await self._mobile("setAppearance", {"style": "dark" if dark else "light"})
        else:
            await self._mobile("setUiMode", {"mode": "night", "value": "yes" if dark else "no"})
        return StepResult("passed")

    async def _assert_mode(self, step: Step) -> StepResult:
        dark = await self._is_dark()
        if dark != (step.command == "assertDarkMode"):
            raise _StepFailure(f"the device is in {'dark' if dark else 'light'} mode")
        return StepResult("passed")

    async def _is_dark(self) -> bool:
        if self._platform == "ios":
            answer = await self._mobile("getAppearance", {})
            return isinstance(answer, dict) and answer.get("style") == "dark"
        answer = await self._mobile("getUiMode", {"mode": "night"})
        return str(answer).strip().lower() == "yes"

    async def _add_media(self, step: Step) -> StepResult:
        for path, data in step.attachments.items():
            name = os.path.basename(path)
            # iOS: a path without an app container (`@bundle/…`) puts the file in the Photos library.
            remote = f"/sdcard/Pictures/{name}" if self._platform == "android" else name
            await self._mobile("pushFile", {"remotePath": remote, "payload": base64.b64encode(data).decode()})
            if self._platform == "android":
                with contextlib.suppress(WebDriverError):
                    await self._mobile(
                        "broadcast",
                        {"action": "android.intent.action.MEDIA_SCANNER_SCAN_FILE", "uri": f"file://{remote}"},
                    )
        return StepResult("passed")

    # touching the screen ------------------------------------------------------------------------

    async def _tap_on(self, step: Step) -> StepResult:
        selector = self._selector(step, allow_point=True)
        args = step.args
        if selector.point is not None and not _has_element(selector):
            x, y = await self._screen_point(selector.point)
            node = None
        else:
            node = await self._wait_for(selector, self._deadline(step))
            if node is None:
                raise _StepFailure(f"no visible element matches {selector.describe()} (waited {self._waited(step)})")
            x, y = self._point_in(node, selector.point)
        count = 2 if step.command == "doubleTapOn" else max(1, int(args.get("repeat") or 1))
        delay = int(args["delay"]) if isinstance(args.get("delay"), int) and args["delay"] >= 0 else 100
        hold = LONG_PRESS_MS if step.command == "longPressOn" else TAP_HOLD_MS
        before = await self._source_text(quiet=True) if args.get("retryTapIfNoChange") else None
        await self._tap(x, y, count=count, delay_ms=delay, hold_ms=hold)
        if before is not None:
            await asyncio.sleep(POLL_INTERVAL_S)
            if await self._source_text(quiet=True) == before:
                self._logs.append("the screen did not change; tapping again (retryTapIfNoChange)")
                await self._tap(x, y, count=count, delay_ms=delay, hold_ms=hold)
        settle = args.get("waitToSettleTimeoutMs")
        if isinstance(settle, int):
            await self._settle(settle)
        self._last_tapped = node
        return StepResult("passed")

    async def _tap(self, x: int, y: int, *, count: int = 1, delay_ms: int = 100, hold_ms: int = TAP_HOLD_MS) -> None:
        actions: list[dict[str, Any]] = []
        for i in range(count):
            if i:
                actions.append({"type": "pause", "duration": delay_ms})
            actions += [
                {"type": "pointerMove", "duration": 0, "x": x, "y": y, "origin": "viewport"},
                {"type": "pointerDown", "button": 0},
                {"type": "pause", "duration": hold_ms},
                {"type": "pointerUp", "button": 0},
            ]
        await self._perform(actions)

    async def _perform(self, finger: list[dict[str, Any]]) -> None:
        pointer = {"type": "pointer", "id": "finger1", "parameters": {"pointerType": "touch"}, "actions": finger}
        await self._call("POST", "/actions", {"actions": [pointer]})
        try:
            await self._call("DELETE", "/actions", quiet=True)
        except WebDriverError as exc:
            self._logs.append(f"could not release actions ({exc}); going on")

    async def _drag(self, start: tuple[int, int], end: tuple[int, int], duration_ms: int) -> None:
        self._logs.append(f"swipe ({start[0]}, {start[1]}) -> ({end[0]}, {end[1]}) in {duration_ms} ms")
        await self._perform(
            [
                {"type": "pointerMove", "duration": 0, "x": start[0], "y": start[1], "origin": "viewport"},
                {"type": "pointerDown", "button": 0},
                {"type": "pause", "duration": 100},
                {"type": "pointerMove", "duration": duration_ms, "x": end[0], "y": end[1], "origin": "viewport"},
                {"type": "pointerUp", "button": 0},
            ]
        )

    async def _swipe_direction(
        self, direction: str, duration_ms: int = DEFAULT_SWIPE_MS, within: Node | None = None
    ) -> None:
        width, height = await self._window_size()
        x1, y1, x2, y2 = SWIPES[direction]
        if within is not None and within.bounds is not None:
            # From the element's centre, as far as the screen's swipe would go.
            cx, cy = within.center()
            dx, dy = int((x2 - x1) * width), int((y2 - y1) * height)
            start = (cx, cy)
            end = (min(max(cx + dx, 1), width - 1), min(max(cy + dy, 1), height - 1))
        else:
            start = (int(width * x1), int(height * y1))
            end = (int(width * x2), int(height * y2))
        await self._drag(start, end, duration_ms)

    async def _scroll(self, step: Step) -> StepResult:
        await self._swipe_direction(SCROLL_SWIPE["DOWN"])
        return StepResult("passed")

    async def _swipe(self, step: Step) -> StepResult:
        args = step.args
        duration = int(args.get("duration") or DEFAULT_SWIPE_MS)
        if "start" in args and "end" in args:
            start = await self._screen_point(str(args["start"]))
            end = await self._screen_point(str(args["end"]))
            await self._drag(start, end, duration)
            return StepResult("passed")
        direction = (step.direction or "").upper()
        if direction not in SWIPES:
            raise _StepFailure(f"swipe needs a direction (UP, DOWN, LEFT or RIGHT), not {step.direction!r}")
        origin = args.get("from")
        node = None
        if isinstance(origin, Selector):
            node = await self._wait_for(origin, self._deadline(step))
            if node is None:
                raise _StepFailure(f"no visible element matches {origin.describe()} to swipe from")
        await self._swipe_direction(direction, duration, node)
        return StepResult("passed")

    async def _scroll_until_visible(self, step: Step) -> StepResult:
        selector = self._selector(step)
        args = step.args
        timeout = int(args.get("timeout") or SCROLL_UNTIL_VISIBLE_MS)
        speed = float(args["speed"]) if isinstance(args.get("speed"), int | float) else 40.0
        duration = max(1, int(1000 * (100 - min(max(speed, 0), 100)) / 100) + 1)
        direction = (step.direction or "DOWN").upper()
        center = bool(args.get("centerElement"))
        deadline = time.monotonic() + timeout / 1000
        swipes = 0
        while True:
            root = await self._hierarchy(quiet=swipes > 0)
            width, height = await self._window_size()
            node = next((n for n in find(root, selector) if n.bounds is not None), None)
            shown = node is not None and _visible_part(node, width, height) > 0
            centred = node is not None and (
                not center or swipes >= CENTRE_EXTRA_SWIPES or _near_centre(node, width, height)
            )
            if shown and centred:
                self._logs.append(f"{selector.describe()} visible after {swipes} swipes")
                return StepResult("passed")
            if time.monotonic() >= deadline:
                raise _StepFailure(f"{selector.describe()} did not show after {swipes} swipes ({timeout} ms)")
            await self._swipe_direction(SCROLL_SWIPE[direction], duration)
            swipes += 1

    async def _screen_point(self, point: str) -> tuple[int, int]:
        """A point on the screen: `x,y` pixels or `x%,y%` of the window."""
        xs, ys = (p.strip() for p in point.split(","))
        if xs.endswith("%"):
            width, height = await self._window_size()
            return int(width * float(xs[:-1]) / 100), int(height * float(ys[:-1]) / 100)
        return int(xs), int(ys)

    def _point_in(self, node: Node, point: str | None) -> tuple[int, int]:
        if point is None or node.bounds is None:
            return node.center()
        x, y, width, height = node.bounds
        xs, ys = (p.strip() for p in point.split(","))
        if xs.endswith("%"):
            return x + int(width * float(xs[:-1]) / 100), y + int(height * float(ys[:-1]) / 100)
        return x + int(xs), y + int(ys)

    async def _window_size(self) -> tuple[int, int]:
        if self._window is None:
            rect = await self._call("GET", "/window/rect", quiet=True)
            width = int(rect.get("width") or 0) if isinstance(rect, dict) else 0
            height = int(rect.get("height") or 0) if isinstance(rect, dict) else 0
            if width <= 0 or height <= 0:
                raise _StepFailure(f"the window has no size: {_summary(rect)}")
            self._window = (width, height)
        return self._window

    # typing ----------------------------------------------------------------------------------------

    async def _input_text(self, step: Step) -> StepResult:
        text = step.text or ""
        element = await self._focused_element()
        await self._call("POST", f"/element/{element}/value", {"text": text, "value": list(text)})
        return StepResult("passed")

    async def _focused_element(self) -> str:
        try:
            element = _element_id(await self._call("GET", "/element/active"))
        except WebDriverError as exc:
            if not exc.unsupported and exc.error != "no such element":
                raise
            element = None
        if element is not None:
            return element
        node = self._last_tapped
        ident = node.attributes.get("resource-id") if node is not None else None
        if ident:
            found = await self._call("POST", "/element", {"using": "id", "value": ident})
            element = _element_id(found)
            if element is not None:
                self._logs.append(f"no active element from the server; typing into the last tapped element ({ident})")
                return element
        raise _StepFailure("no focused element to type into: tap a text field first")

    async def _erase_text(self, step: Step) -> StepResult:
        count = int(step.args.get("charactersToErase") or 50)
        element = await self._focused_element()
        current = str(await self._call("GET", f"/element/{element}/text") or "")
        await self._call("POST", f"/element/{element}/clear", {})
        keep = current[: max(0, len(current) - count)]
        if keep:
            await self._call("POST", f"/element/{element}/value", {"text": keep, "value": list(keep)})
        self._logs.append(f"erased {len(current) - len(keep)} characters")
        return StepResult("passed")

    async def _hide_keyboard(self, step: Step) -> StepResult:
        await self._mobile("hideKeyboard", {})
        return StepResult("passed")

    async def _press_key(self, step: Step) -> StepResult:
        key = str(step.args.get("key", ""))
        if self._platform == "ios":
            button = IOS_BUTTONS.get(key)
            if button is not None:
                await self._mobile("pressButton", {"name": button})
            elif key == "LOCK":
                await self._mobile("lock", {})
            elif key in IOS_KEYS:
                element = await self._focused_element()
                await self._call("POST", f"/element/{element}/value", {"text": IOS_KEYS[key], "value": [IOS_KEYS[key]]})
            else:
                raise _StepFailure(f"pressKey {key}: iOS has no such key")
            return StepResult("passed")
        code = ANDROID_KEYCODES.get(key)
        if code is None:
            raise _StepFailure(f"pressKey {key}: not a key this driver knows")
        await self._mobile("pressKey", {"keycode": code})
        return StepResult("passed")

    async def _back(self, step: Step) -> StepResult:
        try:
            await self._call("POST", "/back", {})
        except WebDriverError as exc:
            if exc.unsupported:
                raise _StepFailure(f"back: this Appium driver does not implement it ({exc})") from exc
            raise
        return StepResult("passed")

    async def _copy_text_from(self, step: Step) -> StepResult:
        selector = self._selector(step)
        node = await self._wait_for(selector, self._deadline(step))
        if node is None:
            raise _StepFailure(f"no visible element matches {selector.describe()} (waited {self._waited(step)})")
        if node.text is None:
            raise _StepFailure(f"{selector.describe()} has no text to copy")
        return StepResult("passed", value=node.text)

    # looking ---------------------------------------------------------------------------------------

    async def _assert_visible(self, step: Step) -> StepResult:
        selector = self._selector(step)
        if await self._wait_for(selector, self._deadline(step)) is None:
            raise _StepFailure(f"{selector.describe()} is not visible (waited {self._waited(step)})")
        return StepResult("passed")

    async def _assert_not_visible(self, step: Step) -> StepResult:
        selector = self._selector(step)
        deadline = self._deadline(step)
        attempts = 0
        while True:
            attempts += 1
            root = await self._hierarchy(quiet=attempts > 1)
            if not any(node.bounds is not None for node in find(root, selector)):
                if attempts > 1:
                    self._logs.append(f"looked {attempts} times; gone")
                return StepResult("passed")
            if time.monotonic() >= deadline:
                raise _StepFailure(f"{selector.describe()} is still visible (waited {self._waited(step)})")
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _wait_for(self, selector: Selector, deadline: float) -> Node | None:
        """Look in the hierarchy until ``deadline``; the first look is logged in full, the rest summed up."""
        attempts = 0
        while True:
            attempts += 1
            root = await self._hierarchy(quiet=attempts > 1)
            node = next((n for n in find(root, selector) if n.bounds is not None), None)
            if node is not None or time.monotonic() >= deadline:
                outcome = f"found {node.describe()}" if node is not None else "not found"
                looks = f"looked {attempts} times for " if attempts > 1 else ""
                self._logs.append(f"{looks}{selector.describe()}: {outcome}")
                return node
            await asyncio.sleep(min(POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))

    async def _hierarchy(self, *, quiet: bool = False) -> Node:
        text = await self._source_text(quiet=quiet)
        try:
            return parse_source(text, self._platform)
        except ET.ParseError as exc:
            raise _StepFailure(f"the screen's hierarchy is not XML: {exc}") from exc

    async def _source_text(self, *, quiet: bool = False) -> str:
        value = await self._call("GET", "/source", quiet=True)
        if not quiet:
            self._logs.append(f"GET /session/{self.session_id}/source -> {len(str(value))} characters")
        return str(value)

    async def _settle(self, timeout_ms: int) -> None:
        """Wait until the hierarchy is the same twice in a row, for at most ``timeout_ms``."""
        deadline = time.monotonic() + min(timeout_ms, MAX_SETTLE_MS) / 1000
        previous = await self._source_text(quiet=True)
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_INTERVAL_S)
            current = await self._source_text(quiet=True)
            if current == previous:
                return
            previous = current

    async def _wait_for_animation(self, step: Step) -> StepResult:
        """Wait until two screenshots in a row are the same, for at most the step's timeout."""
        cap_ms = step.timeout_ms if step.timeout_ms is not None else DEFAULT_SETTLE_MS
        started = time.monotonic()
        deadline = started + cap_ms / 1000
        previous = await self._screenshot()
        shots = 1
        while time.monotonic() < deadline:
            await asyncio.sleep(min(POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))
            current = await self._screenshot(quiet=True)
            shots += 1
            if current == previous:
                self._logs.append(f"screen settled: {shots} screenshots in {time.monotonic() - started:.2f} s")
                return StepResult("passed")
            previous = current
        self._logs.append(f"screen still changing after {cap_ms} ms ({shots} screenshots); going on")
        return StepResult("passed")

    # pictures and videos ---------------------------------------------------------------------------

    async def _take_screenshot(self, step: Step) -> StepResult:
        png = await self._screenshot()
        if not png.startswith(PNG_SIGNATURE):
            self._logs.append("the server's screenshot is not a PNG")
        crop = step.args.get("cropOn")
        if isinstance(crop, Selector):
            png = await self._cropped(png, crop, step)
        return StepResult("passed", screenshot=png)

    async def _cropped(self, png: bytes, selector: Selector, step: Step) -> bytes:
        node = await self._wait_for(selector, self._deadline(step))
        if node is None or node.bounds is None or node.bounds[2] <= 0 or node.bounds[3] <= 0:
            raise _StepFailure(f"cropOn: no visible element matches {selector.describe()}")
        width, _ = await self._window_size()
        return await asyncio.to_thread(crop_png, png, node.bounds, width)

    async def _assert_screenshot(self, step: Step) -> StepResult:
        png = await self._screenshot()
        crop = step.args.get("cropOn")
        if isinstance(crop, Selector):
            png = await self._cropped(png, crop, step)
        reference = next(iter(step.attachments.values()), None)
        if reference is None:
            raise _StepFailure("assertScreenshot: the reference image is missing")
        threshold = float(step.args.get("thresholdPercentage") or 95)
        match, diff = await asyncio.to_thread(compare_images, png, reference)
        self._logs.append(f"screen matches the reference at {match:.2f}% (threshold {threshold:g}%)")
        if match < threshold:
            return StepResult(
                "failed", f"the screen matches the reference at {match:.2f}%, below {threshold:g}%", screenshot=diff
            )
        return StepResult("passed", screenshot=png)

    async def _start_recording_step(self, step: Step) -> StepResult:
        await self._start_recording()
        self._recording_name = str(step.args.get("path") or "recording")
        return StepResult("passed")

    async def _stop_recording_step(self, step: Step) -> StepResult:
        if not self._recording:
            raise _StepFailure("stopRecording: no recording was started")
        video = await self._stop_recording(getattr(self, "_recording_name", "recording"))
        return StepResult("passed", artifacts=[video] if video is not None else [])

    async def _start_recording(self) -> None:
        if self._recording:
            return
        await self._call("POST", "/appium/start_recording_screen", {"options": {"timeLimit": MAX_RECORDING_S}})
        self._recording = True

    async def _stop_recording(self, name: str) -> Artifact | None:
        encoded = await self._call("POST", "/appium/stop_recording_screen", {})
        self._recording = False
        try:
            data = base64.b64decode(str(encoded or ""), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _StepFailure(f"the server's recording is not base64: {exc}") from exc
        if not data:
            return None
        return Artifact(f"{os.path.basename(name)}.mp4", "video", "video/mp4", data)

    # the device's log --------------------------------------------------------------------------------

    async def _read_device_log(self, *, keep: bool) -> list[str]:
        if self._log_type is None:
            return []
        try:
            entries = await self._call("POST", "/se/log", {"type": self._log_type}, quiet=True)
        except WebDriverError as exc:
            self._log_type = None  # this server keeps no such log: stop asking
            self._logs.append(f"no device log from the server ({exc})")
            return []
        lines = [_log_line(entry) for entry in (entries if isinstance(entries, list) else [])]
        if keep:
            self._device_log.extend(lines)
            if len(self._device_log) > MAX_DEVICE_LOG_LINES:
                extra = len(self._device_log) - MAX_DEVICE_LOG_LINES
                self._device_log_dropped += extra
                del self._device_log[:extra]
        return lines

    async def _check_for_crash(self) -> None:
        """A crash or ANR of the app under test in the log since the last step fails the step."""
        if self._log_type is None:
            return
        lines = await self._read_device_log(keep=True)
        package = self._app.package_id or self._flow.app_id or ""
        problem = crash_in(lines, package)
        if problem is not None:
            raise _StepFailure(f"the app crashed: {problem}")

    # helpers ---------------------------------------------------------------------------------------

    async def _mobile(self, name: str, params: dict[str, Any]) -> Any:
        return await self._call("POST", "/execute/sync", {"script": f"mobile: {name}", "args": [params]})

    async def _call(
        self, method: str, suffix: str, payload: dict[str, Any] | None = None, *, quiet: bool = False
    ) -> Any:
        """One command on this session; logged unless ``quiet``. A session or device gone raises InfrastructureError."""
        if self.session_id is None:
            raise InfrastructureError("the Appium session is closed")
        path = f"/session/{self.session_id}{suffix}"
        shown = f"{method} {path}" + (f" {_summary(payload)}" if payload else "")
        try:
            status, value = await self._client.request(method, path, payload)
        except WebDriverError as exc:
            if not quiet:
                self._logs.append(f"{shown} -> {exc.status} {exc}")
            lowered = exc.message.lower()
            if exc.error == "invalid session id" or (
                exc.error == "unknown error" and any(hint in lowered for hint in DEVICE_GONE_HINTS)
            ):
                raise InfrastructureError(
                    f"the Appium session or its device is gone ({method} {suffix}): {exc}"
                ) from exc
            raise
        except InfrastructureError as exc:
            self._logs.append(f"{shown} -> {exc}")
            raise
        if not quiet:
            described = "base64 data" if suffix in ("/screenshot", "/appium/stop_recording_screen") else _summary(value)
            self._logs.append(f"{shown} -> {status} {described}")
        return value

    async def _screenshot(self, *, quiet: bool = False) -> bytes:
        encoded = await self._call("GET", "/screenshot", quiet=quiet)
        try:
            return base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _StepFailure(f"the server's screenshot is not base64: {exc}") from exc

    async def _failure_screenshot(self) -> bytes | None:
        """Best effort: a picture of the screen the step failed on, for the report."""
        try:
            return await self._screenshot()
        except Exception as exc:
            self._logs.append(f"no screenshot of the failure: {exc}")
            return None

    def _selector(self, step: Step, *, allow_point: bool = False) -> Selector:
        selector = step.selector
        if selector is None or not (_has_element(selector) or (allow_point and selector.point is not None)):
            raise _StepFailure(f"{step.command} needs an element: text, id or another selector field")
        return selector

    def _app_id(self, step: Step, *, required: bool = True) -> str:
        candidates = (
            step.app_id,
            self._flow.app_id,
            self._app.package_id,
            self.capabilities.get("appium:appPackage"),
            self.capabilities.get("appium:bundleId"),
        )
        for candidate in candidates:
            if isinstance(candidate, str) and candidate:
                return candidate
        if not required:
            return None  # type: ignore[return-value]
        raise _StepFailure(f"{step.command}: no app id (give appId in the flow)")

    @staticmethod
    def _deadline(step: Step) -> float:
        return time.monotonic() + _wait_ms(step) / 1000

    @staticmethod
    def _waited(step: Step) -> str:
        return f"{_wait_ms(step)} ms"


def _wait_ms(step: Step) -> int:
    """Maestro's lookup: 17 s, or 7 s for an optional step, unless the step says otherwise."""
    if step.timeout_ms is not None:
        return step.timeout_ms
    return OPTIONAL_WAIT_MS if step.optional else DEFAULT_WAIT_MS


def _has_element(selector: Selector) -> bool:
    return any(value is not None and value != () for key, value in vars(selector).items() if key != "point")


def _visible_part(node: Node, width: int, height: int) -> float:
    assert node.bounds is not None
    x, y, w, h = node.bounds
    if w <= 0 or h <= 0:
        return 0.0
    seen_w = max(0, min(x + w, width) - max(x, 0))
    seen_h = max(0, min(y + h, height) - max(y, 0))
    return (seen_w * seen_h) / (w * h)


def _near_centre(node: Node, width: int, height: int) -> bool:
    cx, cy = node.center()
    return abs(cx - width / 2) <= width * 0.1 and abs(cy - height / 2) <= height * 0.1


def _metres(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance (haversine)."""
    earth = 6_371_000.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = math.radians(lat2 - lat1), math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * earth * math.asin(min(1.0, math.sqrt(a)))


def _extra_type(value: Any) -> str:
    if isinstance(value, bool):
        return "z"
    if isinstance(value, int):
        return "i"
    if isinstance(value, float):
        return "f"
    return "s"


def _extra_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _log_line(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry.get("message", ""))[:MAX_LOG_LINE_CHARS]
    return str(entry)[:MAX_LOG_LINE_CHARS]


def crash_in(lines: list[str], package: str) -> str | None:
    """The first sign in log lines that ``package`` crashed or stopped answering (Android), or None."""
    for i, line in enumerate(lines):
        if "FATAL EXCEPTION" in line:
            window = " ".join(lines[i : i + 4])
            if not package or package in window:
                return line.strip()
        if "ANR in " in line and (not package or package in line):
            return line.strip()
    return None


def crop_png(png: bytes, bounds: tuple[int, int, int, int], window_width: int) -> bytes:
    """The part of a screenshot under an element (the screenshot may be larger than the window)."""
    with Image.open(io.BytesIO(png)) as image:
        scale = image.width / window_width if window_width else 1.0
        x, y, width, height = bounds
        box = (int(x * scale), int(y * scale), int((x + width) * scale), int((y + height) * scale))
        out = io.BytesIO()
        image.crop(box).save(out, format="PNG")
        return out.getvalue()


def compare_images(actual: bytes, reference: bytes) -> tuple[float, bytes]:
    """How much of ``actual`` matches ``reference``, in percent of pixels, and a picture of the difference.

    A pixel matches when no channel differs by more than a small tolerance (compression noise); images
    of different sizes match at 0 %.
    """
    with Image.open(io.BytesIO(actual)) as a_image, Image.open(io.BytesIO(reference)) as r_image:
        a = a_image.convert("RGB")
        r = r_image.convert("RGB")
        if a.size != r.size:
            out = io.BytesIO()
            a.save(out, format="PNG")
            return 0.0, out.getvalue()
        diff = ImageChops.difference(a, r)
        mask = diff.convert("L").point(lambda value: 255 if value > PIXEL_TOLERANCE else 0)
        differing = sum(mask.histogram()[255:])
        total = a.size[0] * a.size[1]
        picture = Image.composite(Image.new("RGB", a.size, (255, 0, 64)), a, mask)
        out = io.BytesIO()
        picture.save(out, format="PNG")
        return 100.0 * (total - differing) / total if total else 100.0, out.getvalue()
