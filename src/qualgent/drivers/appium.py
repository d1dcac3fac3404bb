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

Waits poll ``find elements`` until their timeout and never use the server's implicit wait, which is
set to 0 so an absent element answers at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from qualgent.drivers.base import AppUnderTest, DeviceConfig, InfrastructureError, StepResult
from qualgent.flows.commands import RANDOM_INPUTS
from qualgent.flows.model import Flow, Selector, Step

log = logging.getLogger(__name__)

DEFAULT_SERVER_URL = "http://127.0.0.1:4723"
DEFAULT_NEW_SESSION_TIMEOUT_S = 300.0
DEFAULT_COMMAND_TIMEOUT_S = 60.0
QUIT_TIMEOUT_S = 30.0
DEFAULT_WAIT_MS = 5000  # tapOn, assertVisible, assertNotVisible
DEFAULT_SETTLE_MS = 3000  # waitForAnimationToEnd
POLL_INTERVAL_S = 0.25
MAX_CANDIDATES = 5  # elements checked for visibility per strategy and attempt

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
RETRYABLE_CLICK_ERRORS = frozenset(
    {"stale element reference", "element not interactable", "element click intercepted", "invalid element state"}
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


def xpath_literal(text: str) -> str:
    """``text`` as an XPath 1.0 string literal, which has no escapes: quotes go through concat()."""
    if '"' not in text:
        return f'"{text}"'
    if "'" not in text:
        return f"'{text}'"
    return "concat(" + ", '\"', ".join(f'"{part}"' for part in text.split('"')) + ")"


def text_xpath(text: str, platform: str) -> str:
    """An XPath matching elements that show ``text``, in the attributes the platform's drivers expose."""
    literal = xpath_literal(text)
    lowered = platform.lower()
    if lowered == "ios":
        return f"//*[@label={literal} or @name={literal} or @value={literal}]"
    if lowered == "android":
        return f"//*[@text={literal} or @content-desc={literal}]"
    return f"//*[@text={literal}]"


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
    """One Appium session: runs steps, and is always quit by ``close()``."""

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
        self._app = app
        self._flow = flow
        self.capabilities = capabilities
        self._temp_folder = temp_folder
        self._logs = logs  # the next step's log; the session's creation shows in the first step
        self._closing: asyncio.Task[None] | None = None
        # Appium launches the app when it creates the session, unless told not to.
        self._app_fresh = capabilities.get("appium:autoLaunch") is not False
        self._last_tapped: str | None = None
        self._displayed_supported = True
        self._handlers: dict[str, Callable[[Step], Awaitable[StepResult]]] = {
            "launchApp": self._launch_app,
            "stopApp": self._stop_app,
            "tapOn": self._tap_on,
            "inputText": self._input_text,
            "assertVisible": self._assert_visible,
            "assertNotVisible": self._assert_not_visible,
            "back": self._back,
            "scroll": self._scroll,
            "swipe": self._swipe,
            "waitForAnimationToEnd": self._wait_for_animation,
            "takeScreenshot": self._take_screenshot,
            "pasteText": self._input_text,
            "killApp": self._stop_app,
            "clearState": self._clear_state,
            "copyTextFrom": self._copy_text_from,
            **{name: self._input_text for name in RANDOM_INPUTS},
        }

    # -- lifecycle ---------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Turn the server's implicit wait off: our waits poll, and an absent element must answer at once."""
        try:
            await self._call("POST", "/timeouts", {"implicit": 0})
        except WebDriverError as exc:
            self._logs.append(f"could not set the implicit wait to 0 ({exc}); going on")

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

    # -- steps -------------------------------------------------------------------------------------

    async def run_step(self, step: Step) -> StepResult:
        if self.session_id is None:
            raise InfrastructureError("the Appium session is closed")
        handler = self._handlers.get(step.command)
        try:
            if handler is None:
                raise _StepFailure(f"{step.command} is not supported by the appium driver")
            result = await handler(step)
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
        screenshot = await self._failure_screenshot()
        logs, self._logs = self._logs, []
        if step.optional:
            return StepResult("skipped", f"optional step did not pass: {message}", logs, screenshot)
        return StepResult("failed", message, logs, screenshot)

    async def _launch_app(self, step: Step) -> StepResult:
        no_reset = self.capabilities.get("appium:noReset") is True
        if self._app_fresh and not (step.clear_state and no_reset):
            self._logs.append("the app was launched when the session was created; nothing to do")
            return StepResult("passed")
        app_id = self._app_id(step)
        await self._terminate(app_id)
        if step.clear_state:
            await self._call("POST", "/execute/sync", {"script": "mobile: clearApp", "args": [{"appId": app_id}]})
        await self._call("POST", "/appium/device/activate_app", {"appId": app_id})
        return StepResult("passed")

    async def _stop_app(self, step: Step) -> StepResult:
        await self._terminate(self._app_id(step))
        return StepResult("passed")

    async def _clear_state(self, step: Step) -> StepResult:
        app_id = self._app_id(step)
        await self._call("POST", "/execute/sync", {"script": "mobile: clearApp", "args": [{"appId": app_id}]})
        return StepResult("passed")

    async def _copy_text_from(self, step: Step) -> StepResult:
        selector = self._selector(step)
        element = await self._wait_for_element(selector, self._deadline(step, DEFAULT_WAIT_MS))
        if element is None:
            raise _StepFailure(f"no visible element matches {selector.describe()} (waited {self._waited(step)})")
        text = await self._call("GET", f"/element/{element}/text")
        return StepResult("passed", value=str(text) if text is not None else None)

    async def _terminate(self, app_id: str) -> None:
        was_running = await self._call("POST", "/appium/device/terminate_app", {"appId": app_id})
        if was_running is False:
            self._logs.append(f"{app_id} was not running")

    async def _tap_on(self, step: Step) -> StepResult:
        selector = self._selector(step)
        deadline = self._deadline(step, DEFAULT_WAIT_MS)
        while True:
            element = await self._wait_for_element(selector, deadline)
            if element is None:
                raise _StepFailure(f"no visible element matches {selector.describe()} (waited {self._waited(step)})")
            try:
                await self._call("POST", f"/element/{element}/click", {})
            except WebDriverError as exc:
                # The element moved or was covered between finding it and tapping it: look again.
                if exc.error not in RETRYABLE_CLICK_ERRORS or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(POLL_INTERVAL_S)
                continue
            self._last_tapped = element
            return StepResult("passed")

    async def _input_text(self, step: Step) -> StepResult:
        text = step.text or ""
        element: str | None = None
        try:
            element = _element_id(await self._call("GET", "/element/active"))
        except WebDriverError as exc:
            if not exc.unsupported and exc.error != "no such element":
                raise
        if element is None:
            element = self._last_tapped
            if element is None:
                raise _StepFailure("no focused element to type into: tap a text field first")
            self._logs.append(f"no active element from the server; typing into the last tapped element {element}")
        await self._call("POST", f"/element/{element}/value", {"text": text, "value": list(text)})
        return StepResult("passed")

    async def _assert_visible(self, step: Step) -> StepResult:
        selector = self._selector(step)
        if await self._wait_for_element(selector, self._deadline(step, DEFAULT_WAIT_MS)) is None:
            raise _StepFailure(f"{selector.describe()} is not visible (waited {self._waited(step)})")
        return StepResult("passed")

    async def _assert_not_visible(self, step: Step) -> StepResult:
        selector = self._selector(step)
        deadline = self._deadline(step, DEFAULT_WAIT_MS)
        attempts = 0
        while True:
            attempts += 1
            element = await self._find_visible(selector, quiet=attempts > 1)
            if element is None:
                if attempts > 1:
                    self._logs.append(f"looked {attempts} times; gone")
                return StepResult("passed")
            if time.monotonic() >= deadline:
                raise _StepFailure(f"{selector.describe()} is still visible (waited {self._waited(step)})")
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _back(self, step: Step) -> StepResult:
        try:
            await self._call("POST", "/back", {})
        except WebDriverError as exc:
            if exc.unsupported:
                raise _StepFailure(f"back: this Appium driver does not implement it ({exc})") from exc
            raise
        return StepResult("passed")

    async def _scroll(self, step: Step) -> StepResult:
        await self._swipe_finger(SCROLL_SWIPE.get((step.direction or "DOWN").upper(), "UP"))
        return StepResult("passed")

    async def _swipe(self, step: Step) -> StepResult:
        direction = (step.direction or "").upper()
        if direction not in SWIPES:
            raise _StepFailure(f"swipe needs a direction (UP, DOWN, LEFT or RIGHT), not {step.direction!r}")
        await self._swipe_finger(direction)
        return StepResult("passed")

    async def _swipe_finger(self, direction: str) -> None:
        rect = await self._call("GET", "/window/rect")
        width = int(rect.get("width") or 0) if isinstance(rect, dict) else 0
        height = int(rect.get("height") or 0) if isinstance(rect, dict) else 0
        if width <= 0 or height <= 0:
            raise _StepFailure(f"the window has no size to swipe in: {_summary(rect)}")
        x1, y1, x2, y2 = SWIPES[direction]
        finger = [
            {"type": "pointerMove", "duration": 0, "x": int(width * x1), "y": int(height * y1), "origin": "viewport"},
            {"type": "pointerDown", "button": 0},
            {"type": "pause", "duration": 100},
            {"type": "pointerMove", "duration": 400, "x": int(width * x2), "y": int(height * y2), "origin": "viewport"},
            {"type": "pointerUp", "button": 0},
        ]
        pointer = {"type": "pointer", "id": "finger1", "parameters": {"pointerType": "touch"}, "actions": finger}
        self._logs.append(
            f"swipe {direction}: ({finger[0]['x']}, {finger[0]['y']}) -> ({finger[3]['x']}, {finger[3]['y']})"
        )
        await self._call("POST", "/actions", {"actions": [pointer]})
        try:
            await self._call("DELETE", "/actions")
        except WebDriverError as exc:
            self._logs.append(f"could not release actions ({exc}); going on")

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

    async def _take_screenshot(self, step: Step) -> StepResult:
        png = await self._screenshot()
        if not png.startswith(PNG_SIGNATURE):
            self._logs.append("the server's screenshot is not a PNG")
        return StepResult("passed", screenshot=png)

    # -- helpers -----------------------------------------------------------------------------------

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
            described = "base64 image" if suffix == "/screenshot" else _summary(value)
            self._logs.append(f"{shown} -> {status} {described}")
        return value

    async def _find_visible(self, selector: Selector, *, quiet: bool = False) -> str | None:
        """One look for a displayed element matching ``selector``: its id, or None."""
        strategies = self._strategies(selector)
        refused: WebDriverError | None = None
        for using, value in strategies:
            try:
                found = await self._call("POST", "/elements", {"using": using, "value": value}, quiet=quiet)
            except WebDriverError as exc:
                # A driver without this locator strategy: the next one may do.
                if exc.error != "invalid selector" and not exc.unsupported:
                    raise
                refused = exc
                continue
            for candidate in (found if isinstance(found, list) else [])[:MAX_CANDIDATES]:
                element = _element_id(candidate)
                if element is not None and await self._displayed(element, quiet=quiet):
                    return element
        if refused is not None and len(strategies) == 1:
            raise refused
        return None

    async def _wait_for_element(self, selector: Selector, deadline: float) -> str | None:
        """Poll for a displayed element until ``deadline``; the first look is logged in full, the rest summed up."""
        attempts = 0
        while True:
            attempts += 1
            element = await self._find_visible(selector, quiet=attempts > 1)
            if element is not None or time.monotonic() >= deadline:
                if attempts > 1:
                    outcome = f"found element {element}" if element is not None else "not found"
                    self._logs.append(f"looked {attempts} times for {selector.describe()}: {outcome}")
                return element
            await asyncio.sleep(min(POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))

    async def _displayed(self, element: str, *, quiet: bool) -> bool:
        if not self._displayed_supported:
            return True
        try:
            return bool(await self._call("GET", f"/element/{element}/displayed", quiet=quiet))
        except WebDriverError as exc:
            if exc.unsupported:
                self._displayed_supported = False
                self._logs.append("the server has no /displayed; a found element counts as visible")
                return True
            if exc.error == "stale element reference":
                return False
            raise

    def _strategies(self, selector: Selector) -> list[tuple[str, str]]:
        if selector.id is not None:
            return [("id", selector.id), ("accessibility id", selector.id)]
        return [("xpath", text_xpath(selector.text or "", self._device.platform))]

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

    def _selector(self, step: Step) -> Selector:
        if step.selector is None or (step.selector.id is None and step.selector.text is None):
            raise _StepFailure(f"{step.command} needs an element: text or id")
        return step.selector

    def _app_id(self, step: Step) -> str:
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
        raise _StepFailure(f"{step.command}: no app id (give appId in the flow)")

    @staticmethod
    def _deadline(step: Step, default_ms: int) -> float:
        return time.monotonic() + (step.timeout_ms if step.timeout_ms is not None else default_ms) / 1000

    @staticmethod
    def _waited(step: Step) -> str:
        return f"{step.timeout_ms if step.timeout_ms is not None else DEFAULT_WAIT_MS} ms"
