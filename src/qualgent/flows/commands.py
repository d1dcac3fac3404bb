"""Every Maestro command: its forms and arguments, as one table the parser, the engine and the docs read.

Sources: Maestro's YAML command classes (``YamlFluentCommand`` and friends) and its documentation.
A command is written bare (``- back``), with a scalar that stands for one argument (``- tapOn: Login``
is ``text: Login``), or with a mapping of arguments. Every mapping form also takes ``label``,
``optional`` and ``when`` (Maestro has ``when`` on runFlow and runScript only; here it works on any
command: a false condition skips the step).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Final


class Kind(Enum):
    TEXT = "text"  # a string; any scalar is taken as written (`inputText: 1234` types "1234")
    INT = "int"  # a whole number, or a string holding ${…} resolved when the step runs
    NUMBER = "number"  # a number (whole or not), or ${…}
    BOOL = "bool"  # true or false (never ${…}: Maestro reads booleans when it loads the flow)
    ENUM = "enum"  # one of ``choices`` (case-insensitive), or ${…}
    SELECTOR = "selector"  # a string (the text) or a mapping of selector fields
    SELECTORS = "selectors"  # a list of selectors
    COMMANDS = "commands"  # a list of commands
    CONDITION = "condition"  # platform / visible / notVisible / true
    FLOW_FILE = "flow file"  # a flow file of the test case's files (runFlow, retry)
    SCRIPT_FILE = "script file"  # a JavaScript file of the test case's files (runScript)
    MEDIA_FILES = "media files"  # a list of files of the test case's files (addMedia)
    REFERENCE_IMAGE = "reference image"  # an image of the test case's files (assertScreenshot)
    ENV = "env"  # a mapping of variable names to values
    PERMISSIONS = "permissions"  # a mapping of permission names to allow | deny | unset
    ARGUMENTS = "arguments"  # a mapping of launch arguments to strings, numbers or booleans
    POINT = "point"  # "x,y" pixels or "x%,y%"
    KEY = "key"  # a pressKey key name
    GEO_POINTS = "geo points"  # travel: ["lat,lng", …]
    PATH = "path"  # a relative file name an agent writes (takeScreenshot, startRecording)


@dataclass(frozen=True)
class Arg:
    kind: Kind
    required: bool = False
    choices: tuple[str, ...] = ()
    summary: str = ""


@dataclass(frozen=True)
class Spec:
    name: str
    summary: str
    args: Mapping[str, Arg] = field(default_factory=dict)
    shorthand: str | None = None  # the argument a scalar stands for
    bare: bool = False  # may be written without arguments
    # Groups of arguments of which exactly one (``exclusive``) or at least one must be given.
    one_of: tuple[tuple[str, ...], ...] = ()
    exclusive: bool = False
    selector: bool = False  # the mapping itself is a selector (tapOn, assertVisible, …)
    device: bool = True  # handed to a device driver (False: the engine runs it)
    refused: str | None = None  # why a flow using it is refused


# --- values ---------------------------------------------------------------------------------------

PLATFORMS: Final = ("Android", "iOS", "Web")
SWIPE_DIRECTIONS: Final = ("UP", "DOWN", "LEFT", "RIGHT")
ORIENTATIONS: Final = ("PORTRAIT", "LANDSCAPE_LEFT", "LANDSCAPE_RIGHT", "UPSIDE_DOWN")
ON_OFF: Final = ("enabled", "disabled")
PERMISSION_VALUES: Final = ("allow", "deny", "unset")
JS_ENGINES: Final = ("graaljs", "rhino")

# pressKey: Maestro's key names (KeyCode.kt) as they are written in flows, by enum name.
KEYS: Final[dict[str, str]] = {
    "ENTER": "Enter",
    "BACKSPACE": "Backspace",
    "BACK": "Back",
    "HOME": "Home",
    "LOCK": "Lock",
    "VOLUME_UP": "Volume Up",
    "VOLUME_DOWN": "Volume Down",
    "REMOTE_UP": "Remote Dpad Up",
    "REMOTE_DOWN": "Remote Dpad Down",
    "REMOTE_LEFT": "Remote Dpad Left",
    "REMOTE_RIGHT": "Remote Dpad Right",
    "REMOTE_CENTER": "Remote Dpad Center",
    "REMOTE_PLAY_PAUSE": "Remote Media Play Pause",
    "REMOTE_STOP": "Remote Media Stop",
    "REMOTE_NEXT": "Remote Media Next",
    "REMOTE_PREVIOUS": "Remote Media Previous",
    "REMOTE_REWIND": "Remote Media Rewind",
    "REMOTE_FAST_FORWARD": "Remote Media Fast Forward",
    "ESCAPE": "Escape",
    "POWER": "Power",
    "TAB": "Tab",
    "REMOTE_SYSTEM_NAVIGATION_UP": "Remote System Navigation Up",
    "REMOTE_SYSTEM_NAVIGATION_DOWN": "Remote System Navigation Down",
    "REMOTE_BUTTON_A": "Remote Button A",
    "REMOTE_BUTTON_B": "Remote Button B",
    "REMOTE_MENU": "Remote Menu",
    "TV_INPUT": "TV Input",
    "TV_INPUT_HDMI_1": "TV Input HDMI 1",
    "TV_INPUT_HDMI_2": "TV Input HDMI 2",
    "TV_INPUT_HDMI_3": "TV Input HDMI 3",
}


def key_code(name: str) -> str | None:
    """The enum name of a pressKey key as Maestro matches it (``volume up``, ``VOLUME_UP``, ``Volume-Up``)."""
    spaced = re.sub(r"[_-]", " ", name.strip().lower())
    for code, description in KEYS.items():
        if description.lower() == spaced:
            return code
    code = re.sub(r"[ -]", "_", name.strip().upper())
    return code if code in KEYS else None


def orientation(value: str) -> str | None:
    """PORTRAIT, LANDSCAPE_LEFT, …: case and underscores do not matter (``landscapeLeft``)."""
    squashed = value.replace("_", "").lower()
    return next((o for o in ORIENTATIONS if o.replace("_", "").lower() == squashed), None)


# --- arguments common to many commands ------------------------------------------------------------

COMMON: Final[dict[str, Arg]] = {
    "label": Arg(Kind.TEXT, summary="shown in reports instead of the command"),
    "optional": Arg(Kind.BOOL, summary="a failure is a warning, not a failed run"),
    "when": Arg(Kind.CONDITION, summary="run only when the condition holds (otherwise skipped)"),
}

# Element selector fields (Maestro's YamlElementSelector).
SELECTOR_FIELDS: Final[dict[str, Arg]] = {
    "text": Arg(
        Kind.TEXT, summary="regular expression matched against the whole text (or hint, or accessibility text)"
    ),
    "id": Arg(Kind.TEXT, summary="regular expression matched against the whole resource id / accessibility id"),
    "index": Arg(Kind.INT, summary="the n-th match, top to bottom (negative: from the end)"),
    "point": Arg(Kind.POINT, summary="a point inside the element (or, alone, on the screen): `x,y` or `x%,y%`"),
    "below": Arg(Kind.SELECTOR, summary="an element below this one"),
    "above": Arg(Kind.SELECTOR),
    "leftOf": Arg(Kind.SELECTOR),
    "rightOf": Arg(Kind.SELECTOR),
    "childOf": Arg(Kind.SELECTOR, summary="look only inside this element"),
    "containsChild": Arg(Kind.SELECTOR, summary="an element with a direct child like this"),
    "containsDescendants": Arg(Kind.SELECTORS, summary="an element containing every one of these"),
    "enabled": Arg(Kind.BOOL),
    "checked": Arg(Kind.BOOL),
    "focused": Arg(Kind.BOOL),
    "selected": Arg(Kind.BOOL),
    "width": Arg(Kind.INT, summary="element width in pixels"),
    "height": Arg(Kind.INT),
    "tolerance": Arg(Kind.INT, summary="how far width and height may differ"),
    "traits": Arg(Kind.TEXT, summary="space-separated: text, square, long-text"),
    "css": Arg(Kind.TEXT, summary="web views only: a CSS selector"),
    # Legacy fields Maestro still reads in every selector and ignores.
    "start": Arg(Kind.TEXT),
    "end": Arg(Kind.TEXT),
}
SELECTOR_KEYS: Final = frozenset(k for k in SELECTOR_FIELDS if k not in ("start", "end"))
TRAITS: Final = ("text", "square", "long-text")

TAP_OPTIONS: Final[dict[str, Arg]] = {
    "repeat": Arg(Kind.INT, summary="tap this many times"),
    "delay": Arg(Kind.INT, summary="milliseconds between repeated taps (default 100)"),
    "retryTapIfNoChange": Arg(Kind.BOOL, summary="tap again when the screen did not change"),
    "waitUntilVisible": Arg(Kind.BOOL),
    "waitToSettleTimeoutMs": Arg(Kind.INT, summary="wait at most this long for the screen to settle after the tap"),
}


def _selector_command(name: str, summary: str, extra: Mapping[str, Arg] | None = None) -> Spec:
    return Spec(
        name,
        summary,
        {**SELECTOR_FIELDS, **TAP_OPTIONS, **(extra or {}), **COMMON},
        shorthand="text",
        selector=True,
    )


def _spec(
    name: str,
    summary: str,
    args: Mapping[str, Arg] | None = None,
    *,
    shorthand: str | None = None,
    bare: bool = False,
    one_of: tuple[tuple[str, ...], ...] = (),
    exclusive: bool = False,
    device: bool = True,
    refused: str | None = None,
) -> Spec:
    return Spec(
        name,
        summary,
        {**(args or {}), **COMMON},
        shorthand=shorthand,
        bare=bare,
        one_of=one_of,
        exclusive=exclusive,
        device=device,
        refused=refused,
    )


_APP_ID = {"appId": Arg(Kind.TEXT, summary="the app (default: the flow's appId)")}
_AI = "AI commands are not supported: they need Maestro's cloud model"
_FLOW_BODY = {
    "file": Arg(Kind.FLOW_FILE, summary="a flow file, relative to this one"),
    "commands": Arg(Kind.COMMANDS, summary="commands written inline"),
    "env": Arg(Kind.ENV, summary="variables for the commands"),
}

SPECS: Final[dict[str, Spec]] = {
    spec.name: spec
    for spec in (
        # interaction
        _selector_command("tapOn", "Tap an element (or a point)."),
        _selector_command("doubleTapOn", "Tap an element twice."),
        _selector_command("longPressOn", "Press an element for a while."),
        _spec(
            "inputText",
            "Type text into the focused field.",
            {"text": Arg(Kind.TEXT, required=True)},
            shorthand="text",
        ),
        _spec(
            "inputRandomText",
            "Type random letters.",
            {"length": Arg(Kind.INT, summary="how many (default 8)")},
            bare=True,
        ),
        _spec(
            "inputRandomNumber",
            "Type random digits.",
            {"length": Arg(Kind.INT, summary="how many (default 8)")},
            bare=True,
        ),
        _spec("inputRandomEmail", "Type a random email address.", bare=True),
        _spec("inputRandomPersonName", "Type a random person's name.", bare=True),
        _spec("inputRandomCityName", "Type a random city name.", bare=True),
        _spec("inputRandomCountryName", "Type a random country name.", bare=True),
        _spec("inputRandomColorName", "Type a random colour name.", bare=True),
        _spec(
            "eraseText",
            "Erase characters from the focused field.",
            {"charactersToErase": Arg(Kind.INT, summary="how many (default 50)")},
            shorthand="charactersToErase",
            bare=True,
        ),
        _spec("pasteText", "Type the text copied by copyTextFrom or setClipboard.", bare=True),
        _selector_command("copyTextFrom", "Copy an element's text (to `maestro.copiedText`)."),
        _spec(
            "setClipboard",
            "Set the text pasteText types (and `maestro.copiedText`).",
            {"text": Arg(Kind.TEXT, required=True)},
            shorthand="text",
            device=False,
        ),
        _spec(
            "swipe",
            "Swipe across the screen or an element.",
            {
                "direction": Arg(Kind.ENUM, choices=SWIPE_DIRECTIONS),
                "start": Arg(Kind.POINT, summary="`x,y` or `x%,y%`; with `end`"),
                "end": Arg(Kind.POINT),
                "from": Arg(Kind.SELECTOR, summary="start on this element (with `direction`)"),
                "duration": Arg(Kind.INT, summary="milliseconds (default 400)"),
                "waitToSettleTimeoutMs": Arg(Kind.INT),
            },
        ),
        _spec("scroll", "Scroll down (swipe up from the middle).", bare=True),
        _spec(
            "scrollUntilVisible",
            "Scroll until an element shows.",
            {
                "element": Arg(Kind.SELECTOR, required=True),
                "direction": Arg(Kind.ENUM, choices=SWIPE_DIRECTIONS, summary="default DOWN"),
                "timeout": Arg(Kind.INT, summary="milliseconds (default 20000)"),
                "speed": Arg(Kind.NUMBER, summary="0–100 (default 40)"),
                "visibilityPercentage": Arg(Kind.INT, summary="0–100 (default 100)"),
                "centerElement": Arg(Kind.BOOL),
                "waitToSettleTimeoutMs": Arg(Kind.INT),
            },
        ),
        _spec(
            "pressKey",
            "Press a hardware or remote key.",
            {"key": Arg(Kind.KEY, required=True)},
            shorthand="key",
        ),
        _spec("back", "Press the back button (Android).", bare=True),
        _spec("hideKeyboard", "Hide the software keyboard.", bare=True),
        # assertions and waits
        _selector_command(
            "assertVisible",
            "Check that an element is on screen (waiting for it).",
            {"timeout": Arg(Kind.INT, summary="qualgent extension: milliseconds to keep looking")},
        ),
        _selector_command(
            "assertNotVisible",
            "Check that an element is not on screen (waiting for it to go).",
            {"timeout": Arg(Kind.INT, summary="qualgent extension: milliseconds to keep looking")},
        ),
        _spec(
            "assertTrue",
            "Check that a JavaScript condition is true.",
            {"condition": Arg(Kind.TEXT, required=True)},
            shorthand="condition",
            device=False,
        ),
        _spec(
            "extendedWaitUntil",
            "Wait until an element shows or goes.",
            {
                "visible": Arg(Kind.SELECTOR),
                "notVisible": Arg(Kind.SELECTOR),
                "timeout": Arg(Kind.INT, summary="milliseconds (default 17000)"),
            },
            one_of=(("visible", "notVisible"),),
        ),
        _spec(
            "waitForAnimationToEnd",
            "Wait until the screen stops changing.",
            {"timeout": Arg(Kind.INT, summary="at most this many milliseconds (default 15000)")},
            bare=True,
        ),
        _spec(
            "assertScreenshot",
            "Compare the screen with a reference image of the test case.",
            {
                "path": Arg(Kind.REFERENCE_IMAGE, required=True),
                "thresholdPercentage": Arg(Kind.NUMBER, summary="how similar, in percent (default 95)"),
                "cropOn": Arg(Kind.SELECTOR, summary="compare only this element"),
            },
            shorthand="path",
        ),
        _spec("assertDarkMode", "Check that the device is in dark mode.", bare=True),
        _spec("assertLightMode", "Check that the device is in light mode.", bare=True),
        _spec(
            "assertWithAI",
            "(AI) Check the screen against a sentence.",
            {"assertion": Arg(Kind.TEXT, required=True)},
            shorthand="assertion",
            refused=_AI,
        ),
        _spec("assertNoDefectsWithAI", "(AI) Look for visual defects.", bare=True, refused=_AI),
        _spec(
            "extractTextWithAI",
            "(AI) Read text off the screen.",
            {"query": Arg(Kind.TEXT, required=True), "outputVariable": Arg(Kind.TEXT)},
            shorthand="query",
            refused=_AI,
        ),
        # app and device
        _spec(
            "launchApp",
            "Launch the app.",
            {
                **_APP_ID,
                "url": Arg(Kind.TEXT, summary="another name for appId"),
                "clearState": Arg(Kind.BOOL, summary="clear the app's data first"),
                "clearKeychain": Arg(Kind.BOOL, summary="clear the iOS keychain first"),
                "stopApp": Arg(Kind.BOOL, summary="stop the app first (default true)"),
                "permissions": Arg(Kind.PERMISSIONS, summary="default: all allowed"),
                "arguments": Arg(Kind.ARGUMENTS, summary="launch arguments"),
            },
            shorthand="appId",
            bare=True,
        ),
        _spec("stopApp", "Stop the app.", _APP_ID, shorthand="appId", bare=True),
        _spec("killApp", "Kill the app (as the system would).", _APP_ID, shorthand="appId", bare=True),
        _spec("clearState", "Clear the app's data.", _APP_ID, shorthand="appId", bare=True),
        _spec("clearKeychain", "Clear the iOS keychain.", bare=True),
        _spec(
            "setPermissions",
            "Set the app's permissions.",
            {
                **_APP_ID,
                "url": Arg(Kind.TEXT),
                "permissions": Arg(Kind.PERMISSIONS, required=True),
            },
        ),
        _spec(
            "openLink",
            "Open a link (deep link or web page).",
            {
                "link": Arg(Kind.TEXT, required=True),
                "autoVerify": Arg(Kind.BOOL, summary="Android: verify the app link"),
                "browser": Arg(Kind.BOOL, summary="open in the browser"),
            },
            shorthand="link",
        ),
        _spec(
            "setLocation",
            "Set the device's location.",
            {"latitude": Arg(Kind.NUMBER, required=True), "longitude": Arg(Kind.NUMBER, required=True)},
        ),
        _spec(
            "travel",
            "Move the device's location along points.",
            {
                "points": Arg(Kind.GEO_POINTS, required=True, summary='["lat,lng", …]'),
                "speed": Arg(Kind.NUMBER, summary="metres per second (default 4)"),
            },
        ),
        _spec(
            "setOrientation",
            "Rotate the device.",
            {"orientation": Arg(Kind.ENUM, required=True, choices=ORIENTATIONS)},
            shorthand="orientation",
        ),
        _spec(
            "setAirplaneMode",
            "Turn airplane mode on or off.",
            {"value": Arg(Kind.ENUM, required=True, choices=ON_OFF)},
            shorthand="value",
        ),
        _spec("toggleAirplaneMode", "Flip airplane mode.", bare=True),
        _spec(
            "setDarkMode",
            "Turn dark mode on or off.",
            {"value": Arg(Kind.ENUM, required=True, choices=ON_OFF)},
            shorthand="value",
        ),
        _spec("toggleDarkMode", "Flip dark mode.", bare=True),
        _spec(
            "addMedia",
            "Add images or videos of the test case to the device's gallery.",
            {"files": Arg(Kind.MEDIA_FILES, required=True)},
            shorthand="files",
        ),
        _spec(
            "takeScreenshot",
            "Save a screenshot.",
            {"path": Arg(Kind.PATH, required=True), "cropOn": Arg(Kind.SELECTOR)},
            shorthand="path",
        ),
        _spec(
            "startRecording", "Start recording the screen.", {"path": Arg(Kind.PATH, required=True)}, shorthand="path"
        ),
        _spec("stopRecording", "Stop recording the screen.", bare=True),
        # flow control and scripts
        _spec(
            "runFlow",
            "Run another flow file, or commands written inline.",
            _FLOW_BODY,
            shorthand="file",
            one_of=(("file", "commands"),),
            exclusive=True,
            device=False,
        ),
        _spec(
            "repeat",
            "Run commands several times, or while a condition holds.",
            {
                "times": Arg(Kind.INT, summary="at most this many times"),
                "while": Arg(Kind.CONDITION, summary="checked before every iteration"),
                "commands": Arg(Kind.COMMANDS, required=True),
            },
            device=False,
        ),
        _spec(
            "retry",
            "Run commands again when they fail.",
            {"maxRetries": Arg(Kind.INT, summary="0–3 (default 1)"), **_FLOW_BODY},
            one_of=(("file", "commands"),),
            exclusive=True,
            device=False,
        ),
        _spec(
            "runScript",
            "Run a JavaScript file.",
            {"file": Arg(Kind.SCRIPT_FILE, required=True), "env": Arg(Kind.ENV)},
            shorthand="file",
            device=False,
        ),
        _spec(
            "evalScript",
            "Run JavaScript written inline (`${…}`).",
            {"script": Arg(Kind.TEXT, required=True)},
            shorthand="script",
            device=False,
        ),
    )
}

# Maestro's legacy `- action: back` form: the value names one of these commands.
ACTIONS: Final = ("back", "hideKeyboard", "scroll", "clearKeychain", "pasteText")
# Written with a space in Maestro's bare form.
ALIASES: Final = {"hide keyboard": "hideKeyboard"}

COMMAND_NAMES: Final = tuple(SPECS)
# Commands that only the engine runs (never a driver).
LANGUAGE_COMMANDS: Final = frozenset(name for name, spec in SPECS.items() if not spec.device)
# Commands that type text the engine makes up.
RANDOM_INPUTS: Final = frozenset(name for name in SPECS if name.startswith("inputRandom"))

HEADER_KEYS: Final = (
    "appId",
    "name",
    "tags",
    "env",
    "onFlowStart",
    "onFlowComplete",
    "jsEngine",
    "properties",
    "androidWebViewHierarchy",
)
