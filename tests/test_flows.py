"""The flow language as written: every Maestro command in each of its forms, the header, refusals with
their line, hostile YAML, and bundles (a flow with the subflows, scripts and media it uses).

Plain unit tests of ``flows.parse`` and ``flows.bundle``: no server, no device.
"""

from __future__ import annotations

import json
import random
import re
import string
import time
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from qualgent.flows import commands as C
from qualgent.flows.bundle import check_bundle
from qualgent.flows.commands import Kind
from qualgent.flows.model import Command, Condition, Flow, FlowError
from qualgent.flows.parse import (
    MAX_COMMANDS,
    MAX_ENTRIES,
    MAX_FLOW_BYTES,
    MAX_NESTING,
    MAX_STEPS,
    MAX_TEXT_CHARS,
    MAX_TIMEOUT_MS,
    parse_file,
    parse_flow,
)
from qualgent.flows.paths import MAX_PARENT_SEGMENTS, MAX_PATH_CHARS, MAX_SCRIPT_BYTES, normalize_path, resolve


def flow(text: str, path: str = "") -> Flow:
    return parse_flow(dedent(text).lstrip("\n"), path=path)


def error(text: str, path: str = "") -> FlowError:
    with pytest.raises(FlowError) as caught:
        parse_flow(dedent(text).lstrip("\n"), path=path)
    return caught.value


def bundle_error(main: str, files: dict[str, bytes] | None = None) -> FlowError:
    with pytest.raises(FlowError) as caught:
        check_bundle(dedent(main).lstrip("\n"), files or {})
    return caught.value


# --- every command of the table, in each of its forms ------------------------------------------------

# For each kind of argument: a value as written in YAML (flow style, one line) and what the parser keeps.
# A new Kind without a sample here fails test_every_kind_has_a_sample, so no argument goes untested.
SAMPLES: dict[Kind, tuple[str, Any]] = {
    Kind.TEXT: ('"hello ${NAME}"', "hello ${NAME}"),
    Kind.INT: ("1_500", 1500),
    Kind.NUMBER: ("12.5", 12.5),
    Kind.BOOL: ("true", True),
    Kind.SELECTOR: ('{"id": "login_button", "index": 2}', {"id": "login_button", "index": 2}),
    Kind.SELECTORS: ('["Sign in", {"id": "username"}]', [{"text": "Sign in"}, {"id": "username"}]),
    Kind.COMMANDS: ('["back", {"tapOn": "Log in"}]', ("back", "tapOn")),
    Kind.CONDITION: ('{"platform": "ios", "true": "${READY}"}', ("iOS", "${READY}")),
    Kind.FLOW_FILE: ('"subflows/login.yaml"', "subflows/login.yaml"),
    Kind.SCRIPT_FILE: ('"scripts/seed.js"', "scripts/seed.js"),
    Kind.MEDIA_FILES: ('["media/a.png", "media/b.mp4"]', ["media/a.png", "media/b.mp4"]),
    Kind.REFERENCE_IMAGE: ('"screens/home"', "screens/home"),
    Kind.ENV: ('{"USER": "ada", "COUNT": 3}', {"USER": "ada", "COUNT": "3"}),
    Kind.PERMISSIONS: ('{"all": "DENY", "camera": "allow"}', {"all": "deny", "camera": "allow"}),
    Kind.ARGUMENTS: ('{"a": 1, "b": true, "c": "x", "d": 1.5}', {"a": 1, "b": True, "c": "x", "d": 1.5}),
    Kind.POINT: ('"50%, 25%"', "50%, 25%"),
    Kind.KEY: ('"volume-up"', "VOLUME_UP"),
    Kind.GEO_POINTS: ('["46.2,6.1", "-33.9, 151.2"]', ["46.2,6.1", "-33.9, 151.2"]),
    Kind.PATH: ('"shots/home"', "shots/home"),
}


def sample(arg: C.Arg) -> tuple[str, Any]:
    if arg.kind is Kind.ENUM:
        # The last choice, written in lower case where case does not matter; the parser keeps its spelling.
        written = arg.choices[-1] if arg.choices == C.ON_OFF else arg.choices[-1].lower()
        return json.dumps(written), arg.choices[-1]
    return SAMPLES[arg.kind]


def mapping_variants(spec: C.Spec) -> list[list[str]]:
    """Argument sets that together give every argument once, each set valid on its own."""
    names = list(spec.args)
    if spec.name == "swipe":  # start/end, or direction with from
        by_points = [n for n in names if n not in ("direction", "from")]
        by_direction = [n for n in names if n not in ("start", "end")]
        return [by_points, by_direction]
    variants = [names]
    for group in spec.one_of:
        if spec.exclusive:
            variants = [[n for n in v if n not in group or n == keep] for v in variants for keep in group]
    return variants


def expected_command(spec: C.Spec, line: int, given: dict[str, tuple[str, Any]], lines: dict[str, int]) -> Command:
    args: dict[str, Any] = {}
    label = None
    optional = False
    when = None
    file = None
    for name, (_, value) in given.items():
        kind = spec.args[name].kind
        if name == "label":
            label = value
        elif name == "optional":
            optional = value
        elif name == "when":
            when = Condition(line=lines[name], platform=value[0], script=value[1])
        elif kind is Kind.COMMANDS:
            continue
        elif kind in (Kind.FLOW_FILE, Kind.SCRIPT_FILE):
            file = value
        elif kind is Kind.CONDITION:
            args[name] = Condition(line=lines[name], platform=value[0], script=value[1])
        else:
            args[name] = value
    # Nested commands are compared by name by the caller.
    return Command(name=spec.name, line=line, args=args, label=label, optional=optional, when=when, file=file)


ACCEPTED = [spec for spec in C.SPECS.values() if spec.refused is None]
REFUSED = [spec for spec in C.SPECS.values() if spec.refused is not None]


def test_every_kind_has_a_sample() -> None:
    assert set(SAMPLES) | {Kind.ENUM} == set(Kind)


def test_the_table_has_maestro_s_commands() -> None:
    # Maestro's mainline command keys (the legacy `action` is a form here, not a command).
    assert len(C.SPECS) == 55
    assert {s.name for s in REFUSED} == {"assertWithAI", "assertNoDefectsWithAI", "extractTextWithAI"}
    language = {
        "setClipboard",
        "assertTrue",
        "runFlow",
        "repeat",
        "retry",
        "runScript",
        "evalScript",
    }
    assert language == C.LANGUAGE_COMMANDS
    for spec in C.SPECS.values():
        assert spec.shorthand is None or spec.shorthand in spec.args, spec.name
        assert {"label", "optional", "when"} <= set(spec.args), spec.name


@pytest.mark.parametrize("spec", [s for s in ACCEPTED if s.bare], ids=lambda s: s.name)
def test_bare_form(spec: C.Spec) -> None:
    parsed = flow(f"- back\n- {spec.name}\n- {spec.name}:\n")
    assert parsed.commands[1] == Command(name=spec.name, line=2)
    assert parsed.commands[2] == Command(name=spec.name, line=3)  # `- name:` with nothing is the bare form


@pytest.mark.parametrize("spec", [s for s in ACCEPTED if not s.bare], ids=lambda s: s.name)
def test_commands_that_need_arguments_refuse_the_bare_form(spec: C.Spec) -> None:
    caught = error(f"- back\n- {spec.name}\n")
    assert caught.line == 2
    assert caught.message.startswith(f"{spec.name} needs ")


@pytest.mark.parametrize("spec", [s for s in ACCEPTED if s.shorthand is not None], ids=lambda s: s.name)
def test_scalar_shorthand_form(spec: C.Spec) -> None:
    assert spec.shorthand is not None
    written, value = sample(spec.args[spec.shorthand])
    parsed = flow(f"- back\n- {spec.name}: {written}\n").commands[1]
    kind = spec.args[spec.shorthand].kind
    if kind in (Kind.FLOW_FILE, Kind.SCRIPT_FILE):
        assert parsed == Command(name=spec.name, line=2, file=value)
    else:
        assert parsed == Command(name=spec.name, line=2, args={spec.shorthand: value})


@pytest.mark.parametrize("spec", [s for s in ACCEPTED if s.shorthand is None], ids=lambda s: s.name)
def test_commands_without_shorthand_refuse_a_scalar(spec: C.Spec) -> None:
    caught = error(f"- back\n- {spec.name}: something\n")
    assert caught.line == 2
    assert caught.message.startswith(f"{spec.name} takes ") and caught.message.endswith("not a string")


@pytest.mark.parametrize("spec", ACCEPTED, ids=lambda s: s.name)
def test_mapping_form_with_every_argument(spec: C.Spec) -> None:
    variants = mapping_variants(spec)
    assert {name for variant in variants for name in variant} == set(spec.args)
    for variant in variants:
        given = {name: sample(spec.args[name]) for name in variant}
        lines = {name: 3 + i for i, name in enumerate(variant)}
        text = f"- back\n- {spec.name}:\n" + "".join(f"    {name}: {given[name][0]}\n" for name in variant)
        parsed = flow(text).commands[1]
        expected = expected_command(spec, 2, given, lines)
        assert parsed.name == spec.name and parsed.line == 2
        assert dict(parsed.args) == dict(expected.args), variant
        assert (parsed.label, parsed.optional, parsed.when, parsed.file) == (
            expected.label,
            expected.optional,
            expected.when,
            expected.file,
        )
        nested = [n for n in variant if spec.args[n].kind is Kind.COMMANDS]
        assert [c.name for c in parsed.commands] == (["back", "tapOn"] if nested else [])


@pytest.mark.parametrize("spec", REFUSED, ids=lambda s: s.name)
def test_ai_commands_are_refused_in_every_form(spec: C.Spec) -> None:
    forms = [f"- {spec.name}", f"- {spec.name}:\n    label: x"]
    if spec.shorthand:
        forms.append(f"- {spec.name}: is the screen fine")
    for form in forms:
        caught = error(f"appId: a\n---\n- back\n{form}\n")
        assert caught.line == 4, form
        assert caught.message == f"`{spec.name}`: AI commands are not supported: they need Maestro's cloud model"


# --- explicit examples: the Command each form gives ----------------------------------------------------


def test_selector_commands() -> None:
    parsed = flow(
        """
        appId: com.example.app
        ---
        - tapOn: Sign in
        - tapOn:
            id: login_button
            index: -1
            below:
              text: Email
            containsDescendants:
              - Log in
              - id: username
            point: 10%,90%
            repeat: 2
            delay: 50
            enabled: false
            label: Tap the button
            optional: true
        - longPressOn:
            point: 120,480
        - doubleTapOn:
            text: ${LABEL}
            optional: yes
        - copyTextFrom:
            id: username
            childOf: {id: form}
        """
    )
    assert parsed.commands == (
        Command(name="tapOn", line=3, args={"text": "Sign in"}),
        Command(
            name="tapOn",
            line=4,
            args={
                "id": "login_button",
                "index": -1,
                "below": {"text": "Email"},
                "containsDescendants": [{"text": "Log in"}, {"id": "username"}],
                "point": "10%,90%",
                "repeat": 2,
                "delay": 50,
                "enabled": False,
            },
            label="Tap the button",
            optional=True,
        ),
        Command(name="longPressOn", line=18, args={"point": "120,480"}),
        Command(name="doubleTapOn", line=20, args={"text": "${LABEL}"}, optional=True),
        Command(name="copyTextFrom", line=23, args={"id": "username", "childOf": {"id": "form"}}),
    )
    assert parsed.commands[1].describe() == "Tap the button"
    assert parsed.commands[0].describe() == 'tapOn "Sign in"'


def test_scalars_are_taken_as_written() -> None:
    """`inputText: 007` types "007" (Maestro keeps the scalar's text), dates and booleans too."""
    parsed = flow(
        """
        - inputText: 007
        - inputText: 2024-01-31
        - inputText: true
        - inputText: 3.0
        - inputText: "${USER}@example.com"
        - assertTrue: ${output.count > 2}
        - eraseText: 10
        - evalScript: ${output.n = 1}
        """
    )
    assert [dict(c.args) for c in parsed.commands] == [
        {"text": "007"},
        {"text": "2024-01-31"},
        {"text": "true"},
        {"text": "3.0"},
        {"text": "${USER}@example.com"},
        {"condition": "${output.count > 2}"},
        {"charactersToErase": 10},
        {"script": "${output.n = 1}"},
    ]


def test_app_commands_and_device_settings() -> None:
    parsed = flow(
        """
        - launchApp:
            appId: com.example.app
            clearState: true
            stopApp: false
            permissions: {all: deny, camera: ALLOW}
            arguments: {isE2E: true, retries: 3, mode: fast}
        - stopApp: com.example.other
        - setOrientation: landscapeLeft
        - setOrientation:
            orientation: ${WHICH}
        - pressKey: Volume Up
        - pressKey:
            key: enter
        - setAirplaneMode: enabled
        - setDarkMode:
            value: disabled
        - travel:
            points: ["46.2,6.1", "46.3,6.2"]
            speed: 7900
        - setLocation: {latitude: "${LAT}", longitude: -0.12}
        - swipe:
            start: 90%, 50%
            end: 10%, 50%
            duration: 300
        - swipe:
            direction: left
            from: {id: carousel}
        - scrollUntilVisible:
            element: Log in
            direction: up
            timeout: 5000
        - extendedWaitUntil:
            visible: Welcome
            notVisible: {id: spinner}
            timeout: 10_000
        """
    )
    by_line = {c.line: (c.name, dict(c.args)) for c in parsed.commands}
    assert by_line == {
        1: (
            "launchApp",
            {
                "appId": "com.example.app",
                "clearState": True,
                "stopApp": False,
                "permissions": {"all": "deny", "camera": "allow"},
                "arguments": {"isE2E": True, "retries": 3, "mode": "fast"},
            },
        ),
        7: ("stopApp", {"appId": "com.example.other"}),
        8: ("setOrientation", {"orientation": "LANDSCAPE_LEFT"}),
        9: ("setOrientation", {"orientation": "${WHICH}"}),
        11: ("pressKey", {"key": "VOLUME_UP"}),
        12: ("pressKey", {"key": "ENTER"}),
        14: ("setAirplaneMode", {"value": "enabled"}),
        15: ("setDarkMode", {"value": "disabled"}),
        17: ("travel", {"points": ["46.2,6.1", "46.3,6.2"], "speed": 7900}),
        20: ("setLocation", {"latitude": "${LAT}", "longitude": -0.12}),
        21: ("swipe", {"start": "90%, 50%", "end": "10%, 50%", "duration": 300}),
        25: ("swipe", {"direction": "LEFT", "from": {"id": "carousel"}}),
        28: ("scrollUntilVisible", {"element": {"text": "Log in"}, "direction": "UP", "timeout": 5000}),
        32: ("extendedWaitUntil", {"visible": {"text": "Welcome"}, "notVisible": {"id": "spinner"}, "timeout": 10000}),
    }


def test_flow_control_commands() -> None:
    parsed = flow(
        """
        appId: com.example.app
        ---
        - runFlow: subflows/login.yaml
        - runFlow:
            file: ../shared/logout.yaml
            env:
              USER: ada
            when:
              platform: Android
            label: Log out
            optional: true
        - runFlow:
            when:
              visible: Allow
            commands:
              - tapOn: Allow
        - repeat:
            times: 3
            commands:
              - scroll
        - repeat:
            while:
              notVisible: Done
            commands:
              - tapOn: Next
        - retry:
            maxRetries: 2
            commands:
              - tapOn: Log in
        - runScript:
            file: scripts/seed.js
            env: {COUNT: 2}
            when:
              true: ${output.ready}
        """
    )
    c = parsed.commands
    assert c[0] == Command(name="runFlow", line=3, file="subflows/login.yaml")
    assert c[1] == Command(
        name="runFlow",
        line=4,
        args={"env": {"USER": "ada"}},
        file="../shared/logout.yaml",
        when=Condition(line=9, platform="Android"),
        label="Log out",
        optional=True,
    )
    assert c[2] == Command(
        name="runFlow",
        line=12,
        when=Condition(line=14, visible={"text": "Allow"}),
        commands=(Command(name="tapOn", line=16, args={"text": "Allow"}),),
    )
    assert c[3] == Command(name="repeat", line=17, args={"times": 3}, commands=(Command(name="scroll", line=20),))
    assert c[4] == Command(
        name="repeat",
        line=21,
        args={"while": Condition(line=23, not_visible={"text": "Done"})},
        commands=(Command(name="tapOn", line=25, args={"text": "Next"}),),
    )
    assert c[5] == Command(
        name="retry",
        line=26,
        args={"maxRetries": 2},
        commands=(Command(name="tapOn", line=29, args={"text": "Log in"}),),
    )
    assert c[6] == Command(
        name="runScript",
        line=30,
        args={"env": {"COUNT": "2"}},
        file="scripts/seed.js",
        when=Condition(line=34, script="${output.ready}"),
    )
    assert c[4].describe() == 'repeat while "Done" is not visible'
    assert c[0].describe() == "runFlow subflows/login.yaml"


def test_commands_carry_their_file() -> None:
    parsed = flow("- runFlow:\n    commands:\n      - back\n", path="subflows/a.yaml")
    assert parsed.path == "subflows/a.yaml"
    assert parsed.commands[0].path == "subflows/a.yaml"
    assert parsed.commands[0].commands[0] == Command(name="back", line=3, path="subflows/a.yaml")


def test_aliases_and_the_legacy_action_form() -> None:
    parsed = flow("- hide keyboard\n- action: back\n- action: hideKeyboard\n- action: pasteText\n")
    assert parsed.commands == (
        Command(name="hideKeyboard", line=1),
        Command(name="back", line=2),
        Command(name="hideKeyboard", line=3),
        Command(name="pasteText", line=4),
    )
    caught = error("- back\n- action: launchApp\n")
    assert (caught.line, caught.message) == (
        2,
        "action must be one of back, hideKeyboard, scroll, clearKeychain, pasteText",
    )


def test_when_is_accepted_on_every_command() -> None:
    for spec in ACCEPTED:
        required = {n: sample(a) for n, a in spec.args.items() if a.required}
        if spec.selector:
            required["text"] = ('"Sign in"', "Sign in")
        for group in spec.one_of:
            required.setdefault(group[0], sample(spec.args[group[0]]))
        if spec.name == "swipe":
            required["direction"] = ('"UP"', "UP")
        body = "".join(f"    {n}: {w}\n" for n, (w, _) in required.items())
        parsed = flow(f"- {spec.name}:\n{body}    when:\n      platform: iOS\n").commands[0]
        assert parsed.when == Condition(line=len(required) + 3, platform="iOS"), spec.name


def test_conditions_in_when_and_while() -> None:
    parsed = flow(
        """
        - repeat:
            while:
              true: ${output.n < 3}
              visible: Sign in
              notVisible: {id: spinner}
              platform: ANDROID
              label: not done yet
            commands:
              - back
        - tapOn:
            text: Log in
            when:
              true: yes
        - back:
            when:
              "true": ${A}
              optional: true
        """
    )
    repeat, tap, back = parsed.commands
    assert repeat.args["while"] == Condition(
        line=3,
        platform="Android",
        visible={"text": "Sign in"},
        not_visible={"id": "spinner"},
        script="${output.n < 3}",
        label="not done yet",
    )
    assert repeat.describe() == "repeat while not done yet"
    # YAML reads an unquoted `true:` key as a boolean: its text is what counts, as for the quoted key.
    assert tap.when == Condition(line=13, script="yes")
    assert back.when == Condition(line=16, script="${A}")
    assert Condition(line=1, platform="iOS", script="${x}").describe() == "platform is iOS and ${x}"


@pytest.mark.parametrize(
    ("condition", "line", "message"),
    [
        ("when: android", 2, "tapOn when must be a mapping (platform, visible, notVisible, true), not a string"),
        ("when:\n      platfrom: android", 3, "tapOn when: unknown condition `platfrom`; did you mean `platform`?"),
        ("when:\n      platform: windows", 3, "tapOn when platform must be Android, iOS or Web, not 'windows'"),
        ("when:\n      visible: {colour: red}", 3, "tapOn when visible: unknown selector field `colour`"),
        ("when:\n      optional: maybe", 3, "tapOn when optional must be true or false, not a string 'maybe'"),
    ],
)
def test_bad_conditions(condition: str, line: int, message: str) -> None:
    caught = error(f"- tapOn:\n    {condition}\n    text: x\n")
    assert caught.line == line, caught
    assert message in caught.message


# --- the header ---------------------------------------------------------------------------------------


def test_header_keys() -> None:
    parsed = flow(
        """
        appId: ${APP_ID}
        name: Checkout
        tags:
          - smoke
          - pull-request
        env:
          USERNAME: someone
          COUNT: 3
          EMPTY: ""
          GREETING: Hello ${USERNAME}
        onFlowStart:
          - launchApp
        onFlowComplete: [stopApp, {tapOn: Log in}]
        jsEngine: GraalJS
        properties:
          team: payments
          priority: 1
        androidWebViewHierarchy: devtools
        someToolsKey: {nested: [1, 2]}
        ---
        - back
        """
    )
    assert parsed == Flow(
        app_id="${APP_ID}",
        name="Checkout",
        tags=("smoke", "pull-request"),
        commands=(Command(name="back", line=21),),
        env={"USERNAME": "someone", "COUNT": "3", "EMPTY": "", "GREETING": "Hello ${USERNAME}"},
        on_flow_start=(Command(name="launchApp", line=12),),
        on_flow_complete=(Command(name="stopApp", line=13), Command(name="tapOn", line=13, args={"text": "Log in"})),
        js_engine="graaljs",
        properties={"team": "payments", "priority": "1"},
    )
    assert parsed.count() == 4


def test_header_forms() -> None:
    assert flow("tags: smoke\n---\n- back\n").tags == ("smoke",)
    assert flow("appId: a\nonFlowStart:\nenv:\n---\n- back\n").on_flow_start == ()
    assert flow("jsEngine: rhino\n---\n- back\n").js_engine == "rhino"
    # Without a header, or with only a header marker.
    assert flow("- back\n").app_id is None
    assert flow("---\n- back\n").commands == (Command(name="back", line=2),)
    assert flow("---\nappId: a\n---\n- back\n").app_id == "a"


@pytest.mark.parametrize(
    ("header", "line", "message"),
    [
        ("appID: x", 2, "header: unknown key `appID`; did you mean `appId`?"),
        ("tag: [a]", 2, "header: unknown key `tag`; did you mean `tags`?"),
        ("envv: {A: b}", 2, "header: unknown key `envv`; did you mean `env`?"),
        ("onFlowStrat: [back]", 2, "header: unknown key `onFlowStrat`; did you mean `onFlowStart`?"),
        ("onflowcomplete: [back]", 2, "header: unknown key `onflowcomplete`; did you mean `onFlowComplete`?"),
        ("jsEngine: v8", 2, "jsEngine must be graaljs or rhino, not 'v8'"),
        ("url: https://example.com", 2, "web flows (url) are not supported: qualgent tests Android and iOS apps"),
        ("appId: [a]", 2, "appId must be a string, not a list"),
        ("name: {a: b}", 2, "name must be a string, not a mapping"),
        ("tags: {a: b}", 2, "tags must be a list of strings, not a mapping"),
        ("tags:\n  - a\n  - [b]", 4, "an entry of tags must be a string, not a list"),
        ("env: [a]", 2, "env must be a mapping of names to values, not a list"),
        ("env:\n  A:", 3, "env: `A` has no value"),
        ("env:\n  1A: x", 3, "env: `1A` is not a variable name"),
        ("env:\n  A-B: x", 3, "env: `A-B` is not a variable name"),
        ("properties: [a]", 2, "properties must be a mapping, not a list"),
        ("onFlowStart: back", 2, "onFlowStart must be a YAML list (each step starts with `- `), not a string"),
        ("onFlowStart:\n  - tapOnn: x", 3, "unknown command `tapOnn`; did you mean `tapOn`?"),
    ],
)
def test_header_refusals(header: str, line: int, message: str) -> None:
    caught = error(f"# the header\n{header}\n---\n- back\n")
    assert caught.line == line, caught
    assert message in caught.message


def test_unknown_header_keys_that_are_not_typos_are_accepted() -> None:
    parsed = flow("appId: a\nversion: 2\nowner: qa-team\nretries: {a: 1}\n---\n- back\n")
    assert parsed.app_id == "a" and parsed.commands == (Command(name="back", line=6),)


# --- refusals with their line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        # unknown commands, with a suggestion
        ("- launchApp\n- tapon: Login\n", 2, "unknown command `tapon`; did you mean `tapOn`?"),
        ("- back\n- assertVisable: x\n", 2, "unknown command `assertVisable`; did you mean `assertVisible`?"),
        ("- back\n- runflow:\n    file: a.yaml\n", 2, "unknown command `runflow`; did you mean `runFlow`?"),
        ("- frobnicate\n", 1, "unknown command `frobnicate`"),
        # wrong argument types
        (
            "- back\n- inputText: [a, b]\n",
            2,
            "inputText takes `text` as a string or a mapping of arguments, not a list",
        ),
        ("- tapOn:\n    text: [a]\n", 2, "tapOn text must be a string, not a list"),
        ("- inputText:\n    text: {a: b}\n", 2, "inputText text must be a string, not a mapping"),
        ("- back: now\n", 1, "back takes no arguments, not a string"),
        ("- swipe: LEFT\n", 1, "swipe takes a mapping of arguments, not a string"),
        ("- launchApp:\n    clearState: yes please\n", 2, "launchApp clearState must be true or false"),
        ("- tapOn:\n    text: a\n    optional: 1\n", 3, "tapOn optional must be true or false, not a number '1'"),
        ("- eraseText: lots\n", 1, "eraseText charactersToErase must be a whole number, not a string 'lots'"),
        (
            "- inputRandomText:\n    length: 2.5\n",
            2,
            "inputRandomText length must be a whole number, not a number '2.5'",
        ),
        ("- setLocation: {latitude: x, longitude: 2}\n", 1, "setLocation latitude must be a number, not a string 'x'"),
        ("- repeat:\n    times: x\n    commands: [back]\n", 2, "repeat times must be a whole number, not a string 'x'"),
        ("- repeat:\n    commands: back\n", 2, "repeat commands must be a YAML list"),
        ("- runFlow:\n    env: [A]\n    commands: [back]\n", 2, "runFlow env must be a mapping of names to values"),
        (
            "- launchApp:\n    permissions: [camera]\n",
            2,
            "launchApp permissions must be a mapping such as `all: allow`",
        ),
        ("- launchApp:\n    permissions: {camera: maybe}\n", 2, "permissions camera must be allow, deny or unset"),
        ("- addMedia: {a: b}\n", 1, "addMedia: unknown argument `a` (expected `files`, `label`, `optional`, `when`)"),
        ("- tapOn:\n    containsDescendants: a\n", 2, "tapOn containsDescendants must be a list of selectors"),
        # unknown arguments, with a suggestion
        ("- tapOn:\n    text: a\n    txt: b\n", 3, "tapOn: unknown argument `txt`; did you mean `text`?"),
        ("- tapOn:\n    below: {txt: x}\n    text: a\n", 2, "tapOn below: unknown selector field `txt`"),
        ("- tapOn:\n    text: a\n    text: b\n", 3, "tapOn: `text` is given twice"),
        # missing required arguments
        ("- inputText:\n    label: x\n", 1, "inputText needs `text`"),
        ("- tapOn:\n    optional: true\n", 1, "tapOn needs an element: `text`, `id` or another selector field"),
        ("- tapOn: {}\n", 1, "tapOn needs an element"),
        ("- tapOn:\n    below: ''\n", 2, "tapOn below must not be empty"),
        ("- setLocation: {latitude: 1}\n", 1, "setLocation needs `longitude`"),
        ("- extendedWaitUntil:\n    timeout: 100\n", 1, "extendedWaitUntil needs `visible` or `notVisible`"),
        ("- scrollUntilVisible:\n    direction: UP\n", 1, "scrollUntilVisible needs `element`"),
        ("- repeat:\n    times: 2\n", 1, "repeat needs `commands`"),
        ("- back\n- runFlow\n", 2, "runFlow needs `file`"),
        ("- back\n- runFlow:\n    label: x\n", 2, "runFlow needs `file` or `commands`"),
        ("- retry:\n    maxRetries: 2\n", 1, "retry needs `file` or `commands`"),
        # file and commands are exclusive
        (
            "- back\n- runFlow:\n    file: a.yaml\n    commands: [back]\n",
            2,
            "runFlow takes `file` or `commands`, not both",
        ),
        ("- retry:\n    file: a.yaml\n    commands: [back]\n", 1, "retry takes `file` or `commands`, not both"),
        # swipe rules
        ("- swipe:\n    start: 10%,10%\n", 1, "swipe needs both `start` and `end`"),
        (
            "- swipe:\n    start: 10%,10%\n    end: 20,20\n",
            1,
            "swipe `start` and `end` must both be percentages, or both",
        ),
        (
            "- swipe:\n    start: 10%,10%\n    end: 20%,20%\n    direction: UP\n",
            1,
            "swipe takes `start` and `end`, or `direction` (with `from`), not both",
        ),
        ("- swipe:\n    start: 1,1\n    end: 2,2\n    from: x\n", 1, "not both"),
        ("- swipe:\n    duration: 100\n", 1, "swipe needs `direction` (UP, DOWN, LEFT or RIGHT), or `start` and `end`"),
        (
            "- swipe:\n    direction: SIDEWAYS\n",
            2,
            "swipe direction must be one of UP, DOWN, LEFT, RIGHT, not 'SIDEWAYS'",
        ),
        # enum values
        ("- setOrientation: sideways\n", 1, "setOrientation orientation must be one of PORTRAIT, LANDSCAPE_LEFT,"),
        ("- setOrientation:\n    orientation: up\n", 2, "not 'up'"),
        ("- pressKey: volume upp\n", 1, "pressKey key: unknown key 'volume upp'; did you mean `Volume Up`?"),
        ("- pressKey:\n    key: ${KEY}\n", 2, "pressKey key cannot use variables"),
        ("- setAirplaneMode: Enabled\n", 1, "setAirplaneMode value must be one of enabled, disabled, not 'Enabled'"),
        ("- setAirplaneMode: on\n", 1, "setAirplaneMode value must be one of enabled, disabled, not 'on'"),
        ("- setDarkMode:\n    value: dark\n", 2, "setDarkMode value must be one of enabled, disabled"),
        (
            "- scrollUntilVisible:\n    element: a\n    direction: back\n",
            3,
            "scrollUntilVisible direction must be one of",
        ),
        # points
        ("- tapOn:\n    point: 50%,200\n", 2, "tapOn point: a point uses pixels or percentages for both x and y"),
        ("- tapOn:\n    point: 150%,20%\n", 2, "tapOn point: a percentage is at most 100, not '150%,20%'"),
        ("- tapOn:\n    point: 1,2,3\n", 2, "a point is `x,y` (pixels) or `x%,y%`, not '1,2,3'"),
        ("- tapOn:\n    point: 1.5,2\n", 2, "a point's coordinates are whole numbers, not '1.5,2'"),
        ("- tapOn:\n    point: -1,2\n", 2, "a point's coordinates are whole numbers"),
        ("- swipe:\n    start: 10,10\n    end: a,b\n", 3, "swipe end: a point's coordinates are whole numbers"),
        # travel points
        ("- travel:\n    points: ['1,2', 'x,3']\n", 2, "travel points: a point is \"latitude,longitude\", not 'x,3'"),
        ("- travel:\n    points: ['1,2,3']\n", 2, "not '1,2,3'"),
        ("- travel:\n    points: []\n", 2, 'travel points must be a list of points such as "46.2,6.1"'),
        ("- travel:\n    points: ['${A},3']\n", 2, "travel points: Maestro reads travel points when it loads the flow"),
        # ${} in file paths
        ("- runFlow: ${X}.yaml\n", 1, "runFlow file cannot use variables (${…}): Maestro reads the file when it loads"),
        ("- back\n- runScript:\n    file: ${X}.js\n", 3, "runScript file cannot use variables (${…})"),
        ("- retry:\n    file: flows/${N}.yaml\n", 2, "retry file cannot use variables"),
        ("- addMedia: ['${X}.png']\n", 1, "an entry of addMedia files cannot use variables (${…})"),
        # timeouts
        ("- assertVisible:\n    text: a\n    timeout: 0\n", 3, "assertVisible timeout must be more than 0 ms, not 0"),
        ("- assertVisible:\n    text: a\n    timeout: -5\n", 3, "must be more than 0 ms, not -5"),
        (
            f"- waitForAnimationToEnd:\n    timeout: {MAX_TIMEOUT_MS + 1}\n",
            2,
            f"waitForAnimationToEnd timeout is {MAX_TIMEOUT_MS + 1} ms; the limit is {MAX_TIMEOUT_MS} ms",
        ),
        ("- tapOn:\n    text: a\n    waitToSettleTimeoutMs: 0\n", 3, "tapOn waitToSettleTimeoutMs must be more than 0"),
        # screenshot and recording names
        ("- takeScreenshot: ../../etc/passwd\n", 1, "takeScreenshot path must be a relative name, without `..`"),
        ("- takeScreenshot:\n    path: /tmp/x\n", 1, "takeScreenshot path must be a relative name"),
        ("- startRecording: C:\\\\x\n", 1, "startRecording path must be a relative name"),
        # structure
        ("- tapOn:\n  text: Login\n", 1, "a step is one command, but this one has several keys (`tapOn`, `text`)"),
        ("tapOn: Login\n", 1, "the steps must be a YAML list"),
        ("- [back]\n", 1, "a step must be a command such as `- back` or `- tapOn: Login`, not a list"),
        ("- 42: x\n", 1, "a command name must be a name, not a number"),
        ("- back\n- 42\n", 2, "a step must be a command such as `- back` or `- tapOn: Login`, not a number"),
        ("appId: a\n---\n- back\n---\n- back\n", 4, "at most two YAML documents"),
        ("- [a, b]\n---\n- back\n", 1, "the header before `---` must be a mapping"),
        ("appId: a\n---\nback: x\n", 3, "the steps must be a YAML list"),
        # empty flows
        ("", 1, "the flow is empty"),
        ("# nothing here\n", 1, "the flow is empty"),
        ("appId: com.example.app\nname: x\n", 2, "the flow has no steps"),
        ("appId: com.example.app\n---\n", 2, "the flow has no steps"),
        ("appId: com.example.app\n---\n[]\n", 3, "the flow has no steps"),
        # invalid YAML: the line of the mark
        ("- launchApp\n- tapOn: [Login\n- back\n", 3, "(while parsing a flow sequence started on line 2)"),
        ("appId: a\n---\n- back\n  - tapOn: x\n", 4, "invalid YAML"),
        ("- back\n\t- scroll\n", 2, "invalid YAML"),
        # text too long
        (f"- back\n- inputText: {'x' * (MAX_TEXT_CHARS + 1)}\n", 2, f"the limit is {MAX_TEXT_CHARS}"),
    ],
)
def test_refusals_name_the_line_and_the_problem(text: str, line: int, message: str) -> None:
    with pytest.raises(FlowError) as caught:
        parse_flow(text)
    assert caught.value.line == line, caught.value
    assert message in caught.value.message, caught.value.message
    assert str(caught.value) == f"line {line}: {caught.value.message}"


def test_a_file_s_errors_carry_its_path() -> None:
    caught = error("- back\n- tapOnn: x\n", path="subflows/login.yaml")
    assert (caught.path, caught.line) == ("subflows/login.yaml", 2)
    assert str(caught) == "subflows/login.yaml line 2: unknown command `tapOnn`; did you mean `tapOn`?"


def test_parse_file_collects_scripts_and_references() -> None:
    parsed = parse_file(
        "appId: ${APP}\n---\n- inputText: ${A} and ${ B + 1 } and \\${not} ${}\n- runFlow: a.yaml\n"
        "- runScript: s.js\n- addMedia: [m.png]\n- assertScreenshot: ref\n- assertScreenshot: ${X}\n"
    )
    assert parsed.scripts == ((1, "APP"), (3, "A"), (3, " B + 1 "), (8, "X"))
    assert parsed.references == (
        (4, Kind.FLOW_FILE, "a.yaml"),
        (5, Kind.SCRIPT_FILE, "s.js"),
        (6, Kind.MEDIA_FILES, "m.png"),
        (7, Kind.REFERENCE_IMAGE, "ref"),
    )


# --- line numbers ---------------------------------------------------------------------------------------


LOGIN_STEPS = """\
# Log in and check the home screen.
- launchApp:
    clearState: true

- tapOn:
    id: email
- inputText: someone@example.com   # a comment
- tapOn: "Sign in"
-
  assertVisible: Home
- repeat:
    times: 2
    commands:
      - scroll
      - runFlow:
          when:
            true: ${output.more}
          commands:
            - back
"""


def _lines(commands: tuple[Command, ...]) -> list[tuple[str, int]]:
    out = []
    for c in commands:
        out.append((c.name, c.line))
        out.extend(_lines(c.commands))
    return out


EXPECTED_LINES = [
    ("launchApp", 2),
    ("tapOn", 5),
    ("inputText", 7),
    ("tapOn", 8),
    ("assertVisible", 10),
    ("repeat", 11),
    ("scroll", 14),
    ("runFlow", 15),
    ("back", 19),
]


def test_lines_with_and_without_a_header() -> None:
    assert _lines(parse_flow(LOGIN_STEPS).commands) == EXPECTED_LINES
    header = "appId: com.example.app\nname: Login\ntags: [smoke]\n---\n"
    assert _lines(parse_flow(header + LOGIN_STEPS).commands) == [(n, line + 4) for n, line in EXPECTED_LINES]


def test_lines_in_a_multi_document_flow_with_windows_line_endings() -> None:
    header = "appId: com.example.app\r\nenv:\r\n  A: b\r\n---\r\n"
    text = header + LOGIN_STEPS.replace("\n", "\r\n")
    assert _lines(parse_flow(text).commands) == [(n, line + 4) for n, line in EXPECTED_LINES]
    parsed = parse_flow(text)
    assert parsed.commands[5].commands[1].when == Condition(line=21, script="${output.more}")
    broken = header + "- back\r\n\r\n- tapOn:\r\n    text: x\r\n    colour: blue\r\n"
    with pytest.raises(FlowError) as caught:
        parse_flow(broken)
    assert caught.value.line == 9 and "unknown argument `colour`" in caught.value.message
    with pytest.raises(FlowError) as caught:
        parse_flow("appId: a\r\n---\r\n- back\r\n- tapOn: [x\r\n- back\r\n")
    assert caught.value.line == 5


# --- hostile input ----------------------------------------------------------------------------------------


def test_a_document_over_the_size_limit_is_refused_before_parsing() -> None:
    # Not valid YAML: the size message proves the text was never parsed.
    caught = error("[" + "x" * MAX_FLOW_BYTES)
    assert caught.line is None
    assert caught.message == f"the flow is larger than {MAX_FLOW_BYTES // 1024} KB"
    # The limit counts UTF-8 bytes, not characters.
    caught = error("- inputText: " + "é" * (MAX_FLOW_BYTES // 2))
    assert "larger than 256 KB" in caught.message
    assert flow("- inputText: " + "x" * (MAX_TEXT_CHARS - 10) + "\n").commands[0].name == "inputText"


def test_billion_laughs_is_refused_quickly() -> None:
    bomb = dedent(
        """
        a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
        b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
        c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
        d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
        e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
        f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
        g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
        h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
        i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
        ---
        - tapOn: *i
        """
    ).lstrip()
    started = time.process_time()
    with pytest.raises(FlowError) as caught:
        parse_flow(bomb)
    assert time.process_time() - started < 10.0  # bounded work, with room for a busy machine
    assert caught.value.line == 2
    assert caught.value.message == "YAML aliases (*name) are not supported: write each value out in full"


def test_every_alias_is_refused() -> None:
    caught = error("- tapOn: &login Sign in\n- back\n- tapOn: *login\n")
    assert caught.line == 3 and "YAML aliases (*name) are not supported" in caught.message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("- tapOn:\n    text: a\n    ? !!merge <<\n    : {id: b}\n", 3),
        ("- tapOn:\n    text: a\n    <<: {id: b}\n", 3),
        # The header keeps unknown keys (as Maestro does), so only the merge-key check can refuse this one.
        ("appId: a\nname: x\n<<: {tags: [smoke]}\n---\n- back\n", 3),
        ("appId: a\nproperties:\n  team: x\n  <<: {owner: y}\n---\n- back\n", 4),
    ],
)
def test_merge_keys_are_refused(text: str, line: int) -> None:
    """`<<` is YAML 1.1's merge key; a flow has no use for it, and the parser says so wherever it is written."""
    caught = error(text)
    assert (caught.line, caught.message) == (line, "YAML merge keys (<<) are not supported")


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("- tapOn: !!python/object/apply:os.system ['true']\n", "tag:yaml.org,2002:python/object/apply:os.system"),
        ("- tapOn: !!python/name:os.system\n", "tag:yaml.org,2002:python/name:os.system"),
        ("appId: !!python/object/new:str [x]\n---\n- back\n", "tag:yaml.org,2002:python/object/new:str"),
        ("- inputText: !!binary aGVsbG8=\n", "tag:yaml.org,2002:binary"),
        ("- tapOn: !!set {a}\n", "tag:yaml.org,2002:set"),
        ("- tapOn: !custom x\n", "!custom"),
        ("%TAG !e! tag:example.com,2000:\n---\n- tapOn: !e!x y\n", "tag:example.com,2000:x"),
    ],
)
def test_tags_other_than_yaml_s_plain_ones_are_refused(text: str, tag: str) -> None:
    caught = error(text)
    assert caught.message == f"the YAML tag {tag!r} is not supported"


def test_yaml_s_plain_tags_are_accepted() -> None:
    parsed = flow('- inputText: !!str 42\n- eraseText: !!int "3"\n- tapOn: ! Sign in\n')
    assert [dict(c.args) for c in parsed.commands] == [{"text": "42"}, {"charactersToErase": 3}, {"text": "Sign in"}]


def test_deep_nesting_is_refused_quickly() -> None:
    depth = 100_000
    started = time.process_time()
    caught = error("- back\n- tapOn: " + "[" * depth + "]" * depth + "\n")
    assert time.process_time() - started < 10.0  # bounded work, with room for a busy machine
    assert caught.line == 2
    assert "nest" in caught.message
    # Block style (indentation) is counted by the parser's own scan.
    block = "- back\n- tapOn:\n" + "".join("  " * (i + 2) + f"k{i}:\n" for i in range(MAX_NESTING + 5))
    caught = error(block)
    assert caught.message == f"the YAML is nested more than {MAX_NESTING} levels deep"
    assert caught.line == MAX_NESTING + 1  # the list and tapOn's mapping, then k0 on line 3 at depth 3, …


def test_nesting_a_flow_needs_is_accepted() -> None:
    """Ten nested repeats (about three YAML levels each) are within the limit."""
    text = "- back\n"
    for _ in range(10):
        indented = "".join("      " + line + "\n" for line in text.splitlines())
        text = f"- repeat:\n    times: 2\n    commands:\n{indented}"
    parsed = parse_flow(text)
    depth = 0
    command = parsed.commands[0]
    while command.commands:
        command = command.commands[0]
        depth += 1
    assert depth == 10 and command.name == "back"


def test_a_long_list_is_refused_as_it_is_read() -> None:
    text = "- back\n" * (MAX_FLOW_BYTES // 8)
    started = time.process_time()
    caught = error(text)
    assert time.process_time() - started < 10.0
    assert caught.line == 2 * MAX_ENTRIES + 1
    assert caught.message == f"a YAML list or mapping has more than {MAX_ENTRIES} entries"


def test_step_and_command_limits() -> None:
    caught = error("appId: a\n---\n" + "- back\n" * (MAX_STEPS + 1))
    assert caught.line == 2 + MAX_STEPS + 1
    assert caught.message == f"the steps has more than {MAX_STEPS} steps"
    assert len(flow("- back\n" * MAX_STEPS).commands) == MAX_STEPS
    # Nested lists count towards the whole file's limit.
    inner = "".join("      - back\n" for _ in range(MAX_STEPS - 1))
    repeat = f"- repeat:\n    times: 1\n    commands:\n{inner}"
    per_repeat = MAX_STEPS
    copies = MAX_COMMANDS // per_repeat + 1
    caught = error(repeat * copies)
    assert caught.message == f"the flow has more than {MAX_COMMANDS} commands"
    assert caught.line == (MAX_COMMANDS // per_repeat) * (MAX_STEPS + 2) + 1


@pytest.mark.parametrize(
    ("character", "line"),
    [("\x00", 2), ("\x07", 2), ("\x1b", 2), ("\x7f", 2), ("\ufffe", 2)],
)
def test_control_characters_are_refused_with_their_line(character: str, line: int) -> None:
    caught = error(f"- back\n- tapOn: a{character}b\n- back\n")
    assert caught.line == line
    assert caught.message == f"invalid YAML: the character U+{ord(character):04X} is not allowed"


def test_a_lone_surrogate_is_a_flow_error() -> None:
    """JSON can carry "\\ud800", which Python decodes to a lone surrogate: that is bad text, not a crash."""
    with pytest.raises(FlowError) as caught:
        parse_flow("- back\n- inputText: a\ud800b\n")
    assert caught.value.line in (2, None)


LANGUAGE_FLOW = (
    """\
appId: com.example.app
name: Login
tags: [smoke]
env:
  USER: ${NAME || 'ada'}
onFlowStart:
  - launchApp
onFlowComplete:
  - stopApp
---
"""
    + LOGIN_STEPS
    + """\
- retry:
    maxRetries: 2
    commands:
      - tapOn:
          text: Log in
          when: {platform: iOS}
- swipe:
    start: 10%, 50%
    end: 90%, 50%
- runScript:
    file: s.js
    env: {A: "${USER}"}
"""
)


def test_mangled_flows_only_ever_raise_flow_error() -> None:
    """Random damage to a valid flow gives a Flow or a FlowError, never a YAML error or a KeyError."""
    assert parse_flow(LANGUAGE_FLOW).name == "Login"
    alphabet = "-:[]{}&*!|>'\"#%@`,?\t\n ~x0\\$\r\x00\x85\u2028é"
    rng = random.Random(20240601)
    outcomes = {"flow": 0, "error": 0}
    for _ in range(1500):
        chars = list(LANGUAGE_FLOW)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(chars))
            action = rng.random()
            if action < 0.4:
                del chars[position]
            elif action < 0.8:
                chars.insert(position, rng.choice(alphabet))
            else:
                chars[position] = rng.choice(alphabet)
        try:
            parse_flow("".join(chars))
            outcomes["flow"] += 1
        except FlowError as caught:
            assert caught.line is None or caught.line >= 1
            outcomes["error"] += 1
    assert outcomes["flow"] > 100 and outcomes["error"] > 100, outcomes


def test_random_text_only_ever_raises_flow_error() -> None:
    rng = random.Random(7)
    pieces = ["- ", "tapOn", ": ", "\n", "  ", "runFlow", "commands", "when", "true", "${", "}", "[", "{", "'", "---"]
    for _ in range(800):
        text = "".join(rng.choice(pieces + list(string.printable)) for _ in range(rng.randint(0, 60)))
        try:
            parse_flow(text)
        except FlowError as caught:
            assert caught.line is None or 1 <= caught.line <= text.count("\n") + 2


def test_every_example_in_the_docs_parses() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "flows.md").read_text(encoding="utf-8")
    examples = re.findall(r"```yaml\n(.*?)```", docs, flags=re.DOTALL)
    assert len(examples) >= 5
    for example in examples:
        assert parse_flow(example).commands, example


# --- bundles: a flow with its files --------------------------------------------------------------------------


def test_subflows_resolve_relative_to_the_file_that_names_them() -> None:
    files = {
        "flows/login.yaml": b"appId: com.example.app\n---\n- runFlow: ../common/wait.yaml\n- runScript: seed.js\n",
        "flows/seed.js": b"output.seeded = true;\n",
        "common/wait.yaml": b"- runFlow: ./deeper/last.yaml\n",
        "common/deeper/last.yaml": b"- back\n",
        "../shared/outside.yaml": b"- scroll\n",
        "media/logo.png": b"\x89PNG",
        "screens/home.png": b"\x89PNG",
    }
    main = (
        "appId: com.example.app\n---\n- runFlow: flows/login.yaml\n- retry:\n    file: ../shared/outside.yaml\n"
        "- addMedia: [media/logo.png]\n- assertScreenshot: screens/home\n"
    )
    bundle = check_bundle(main, files)
    assert sorted(bundle.flows) == [
        "../shared/outside.yaml",
        "common/deeper/last.yaml",
        "common/wait.yaml",
        "flows/login.yaml",
    ]
    assert bundle.scripts == {"flows/seed.js": "output.seeded = true;\n"}
    assert bundle.flows["common/wait.yaml"].commands[0].file == "./deeper/last.yaml"
    assert bundle.flows["common/wait.yaml"].path == "common/wait.yaml"
    assert bundle.files == files
    assert bundle.command_count() == 4 + 2 + 1 + 1 + 1


def test_a_subflow_used_twice_is_loaded_once() -> None:
    files = {"a.yaml": b"- runFlow: common.yaml\n", "b.yaml": b"- runFlow: common.yaml\n", "common.yaml": b"- back\n"}
    bundle = check_bundle("- runFlow: a.yaml\n- runFlow: b.yaml\n- runFlow: common.yaml\n", files)
    assert sorted(bundle.flows) == ["a.yaml", "b.yaml", "common.yaml"]


def test_a_missing_subflow_names_the_referencing_file_and_line() -> None:
    caught = bundle_error("appId: a\n---\n- back\n- runFlow: subflows/login.yaml\n", {"other.yaml": b"- back\n"})
    assert (caught.path, caught.line) == (None, 4)
    assert caught.message == (
        "flow file 'subflows/login.yaml' is not among the test case's files "
        "(looked for 'subflows/login.yaml'; files: other.yaml)"
    )
    # Relative to the subflow, not to the main flow.
    caught = bundle_error(
        "- runFlow: sub/a.yaml\n", {"sub/a.yaml": b"- back\n- runFlow: b.yaml\n", "b.yaml": b"- back\n"}
    )
    assert (caught.path, caught.line) == ("sub/a.yaml", 2)
    assert "looked for 'sub/b.yaml'" in caught.message
    assert str(caught).startswith("sub/a.yaml line 2: flow file 'b.yaml'")


@pytest.mark.parametrize(
    ("main", "files", "path", "line", "message"),
    [
        ("- back\n- runScript: s.js\n", {}, None, 2, "script 's.js' is not among the test case's files"),
        ("- back\n- addMedia: [m/a.png]\n", {}, None, 2, "media file 'm/a.png' is not among the test case's files"),
        (
            "- back\n- assertScreenshot: ref/home\n",
            {"ref/home": b"x"},
            None,
            2,
            "reference image 'ref/home.png' is not among the test case's files (looked for 'ref/home.png'",
        ),
        ("- runFlow: /etc/x.yaml\n", {}, None, 1, "flow file '/etc/x.yaml': a file path must be relative"),
        ("- runFlow: a\\b.yaml\n", {}, None, 1, "a file path uses `/` between folders"),
        (
            "- runFlow: " + "../" * (MAX_PARENT_SEGMENTS + 1) + "x.yaml\n",
            {},
            None,
            1,
            f"a file path may go up at most {MAX_PARENT_SEGMENTS} folders",
        ),
        ("- runFlow: sub/..\n", {}, None, 1, "names a folder, not a file"),
        (
            "- runFlow:\n    file: a.yaml\n",
            {"a.yaml": b"- runFlow: a.yaml\n"},
            "a.yaml",
            1,
            "a flow cannot run itself ('a.yaml')",
        ),
        (
            "- runFlow: a.yaml\n",
            {"a.yaml": b"- back\n- runFlow: ./x/../a.yaml\n"},
            "a.yaml",
            2,
            "a flow cannot run itself",
        ),
        (
            "- runFlow: a.yaml\n",
            {"a.yaml": b"- back\n- runFlow: b.yaml\n", "b.yaml": b"- retry:\n    file: a.yaml\n"},
            "b.yaml",
            2,
            "runFlow goes round in a circle: a.yaml \u2192 b.yaml \u2192 a.yaml",
        ),
        (
            "- runFlow: a.yaml\n",
            {"a.yaml": b"- runFlow: sub/b.yaml\n", "sub/b.yaml": b"- runFlow:\n    file: ../a.yaml\n"},
            "sub/b.yaml",
            2,
            "runFlow goes round in a circle: a.yaml \u2192 sub/b.yaml \u2192 a.yaml",
        ),
        ("- back\n- runFlow: a.yaml\n", {"a.yaml": b"- back\xff\n"}, None, 2, "the flow 'a.yaml' is not UTF-8 text"),
        ("- back\n- runScript: a.js\n", {"a.js": b"\xff\xfe1"}, None, 2, "the script 'a.js' is not UTF-8 text"),
        (
            "- back\n- runFlow: sub/a.yaml\n",
            {"sub/a.yaml": b"- back\n- runFlow: b.yaml\n", "sub/b.yaml": "- inputText: caf\u00e9\n".encode("latin-1")},
            "sub/a.yaml",
            2,
            "the flow 'sub/b.yaml' is not UTF-8 text",
        ),
        ("- runFlow: a.yaml\n", {"a.yaml": b"- back\n- tapOnn: x\n"}, "a.yaml", 2, "unknown command `tapOnn`"),
        (
            "- runScript: big.js\n",
            {"big.js": b"//" + b"x" * MAX_SCRIPT_BYTES},
            None,
            1,
            f"big.js is larger than {MAX_SCRIPT_BYTES // 1024} KB",
        ),
    ],
)
def test_bundle_refusals(main: str, files: dict[str, bytes], path: str | None, line: int, message: str) -> None:
    caught = bundle_error(main, files)
    assert (caught.path, caught.line) == (path, line), caught
    assert message in caught.message, caught.message


def test_a_script_with_a_syntax_error_names_the_script_and_its_line() -> None:
    files = {"scripts/seed.js": b"var a = 1;\n\nvar b = ;\n"}
    caught = bundle_error("- back\n- runScript: scripts/seed.js\n", files)
    assert (caught.path, caught.line) == ("scripts/seed.js", 3)
    assert caught.message.startswith("JavaScript SyntaxError: ")
    assert str(caught).startswith("scripts/seed.js line 3: JavaScript SyntaxError")


def test_an_expression_with_a_syntax_error_names_its_file_and_line() -> None:
    caught = bundle_error("appId: a\n---\n- back\n- inputText: ok ${A} then ${a +}\n")
    assert (caught.path, caught.line) == (None, 4)
    assert caught.message.startswith("JavaScript SyntaxError in ${a +}: ")
    files = {"sub/a.yaml": b"appId: a\nenv:\n  B: ${ (( }\n---\n- back\n"}
    caught = bundle_error("- runFlow: sub/a.yaml\n", files)
    assert (caught.path, caught.line) == ("sub/a.yaml", 3)
    assert caught.message.startswith("JavaScript SyntaxError in ${((}: ")
    # Every kind of place an expression can be: condition, label, selector.
    for text, line in (
        ("- back\n- tapOn:\n    text: x\n    when:\n      true: ${)}\n", 5),
        ("- back\n- tapOn:\n    text: x\n    label: ${ 'a' 'b' }\n", 4),
        ("- back\n- tapOn:\n    below: {id: '${[}'}\n", 3),
        ("- evalScript: ${output.x = }\n", 1),
    ):
        caught = bundle_error(text)
        assert caught.line == line and caught.message.startswith("JavaScript SyntaxError in $"), (text, caught)


def test_valid_javascript_passes_the_check() -> None:
    check_bundle(
        "- evalScript: ${output.n = (output.n || 0) + 1}\n- assertTrue: ${output.n === 1 && json('{\"a\":1}').a === 1}\n"
        "- runScript: s.js\n",
        {"s.js": b"const r = http.get('http://127.0.0.1:1/x');\nif (r.ok) { output.v = r.body; }\n"},
    )


def test_normalize_path_rules() -> None:
    assert normalize_path("a/b.yaml") == "a/b.yaml"
    assert normalize_path("./a//b.yaml") == "a/b.yaml"
    assert normalize_path("a/./b/../c.yaml") == "a/c.yaml"
    assert normalize_path("../a.yaml") == "../a.yaml"
    assert normalize_path("../../a/../b.yaml") == "../../b.yaml"
    assert normalize_path("a/./../../x") == "../x"
    assert normalize_path("../" * MAX_PARENT_SEGMENTS + "a") == "../" * MAX_PARENT_SEGMENTS + "a"
    assert normalize_path("dir with space/é.yaml") == "dir with space/é.yaml"
    for bad, reason in (
        ("", "a file path must be a non-empty string"),
        ("/etc/passwd", "must be relative to the flow's folder, not absolute"),
        ("C:/Windows/win.ini", "not absolute"),
        ("c:x", "not absolute"),
        ("a\\b.yaml", "a file path uses `/` between folders, not `\\`"),
        ("a\x00b", "may not contain control characters"),
        ("a\nb", "may not contain control characters"),
        ("a/b?.yaml", 'any of \\:*?"<>|'),
        ("ab:c", 'any of \\:*?"<>|'),
        ("../" * (MAX_PARENT_SEGMENTS + 1) + "a", f"may go up at most {MAX_PARENT_SEGMENTS} folders"),
        ("..", "names a folder, not a file"),
        ("a/..", "names a folder, not a file"),
        (".", "names a folder, not a file"),
        ("x" * (MAX_PATH_CHARS + 1), f"at most {MAX_PATH_CHARS} characters"),
    ):
        with pytest.raises(ValueError) as caught:
            normalize_path(bad)
        assert reason in str(caught.value), (bad, caught.value)
    assert normalize_path("x" * MAX_PATH_CHARS) == "x" * MAX_PATH_CHARS


def test_resolve_is_relative_to_the_referencing_file_s_folder() -> None:
    assert resolve("", "a.yaml") == "a.yaml"
    assert resolve("", "./sub/../a.yaml") == "a.yaml"
    assert resolve("flows/login.yaml", "common.yaml") == "flows/common.yaml"
    assert resolve("flows/login.yaml", "../common.yaml") == "common.yaml"
    assert resolve("flows/login.yaml", "../../common.yaml") == "../common.yaml"
    assert resolve("../shared/x.yaml", "../y.yaml") == "../y.yaml"
    with pytest.raises(ValueError):
        resolve("flows/login.yaml", "/abs.yaml")
