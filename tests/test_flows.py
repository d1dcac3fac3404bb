"""Parsing Maestro flow YAML into typed steps: plain unit tests, no server."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from textwrap import dedent

import pytest

from qualgent.flows.model import COMMANDS, Flow, FlowError, Selector, Step
from qualgent.flows.parse import MAX_FLOW_BYTES, MAX_STEPS, MAX_TEXT_CHARS, parse_flow


def flow(text: str) -> Flow:
    return parse_flow(dedent(text).lstrip("\n"))


def only_step(text: str) -> Step:
    parsed = flow(text)
    assert len(parsed.steps) == 1
    return parsed.steps[0]


def error(text: str) -> FlowError:
    with pytest.raises(FlowError) as caught:
        parse_flow(dedent(text).lstrip("\n"))
    return caught.value


# --- the header -------------------------------------------------------------------------------------


def test_header_is_read() -> None:
    parsed = flow(
        """
        appId: com.example.shop
        name: Checkout
        tags:
          - smoke
          - pull-request
        env:
          USERNAME: someone
        ---
        - launchApp
        """
    )
    assert parsed.app_id == "com.example.shop"
    assert parsed.name == "Checkout"
    assert parsed.tags == ("smoke", "pull-request")
    assert parsed.steps == (Step(index=0, line=9, command="launchApp"),)


def test_a_list_without_header_is_a_flow_without_app_id() -> None:
    parsed = flow("- launchApp\n- back\n")
    assert parsed.app_id is None
    assert parsed.name is None
    assert parsed.tags == ()
    assert [step.command for step in parsed.steps] == ["launchApp", "back"]


def test_a_leading_document_marker_without_header_is_accepted() -> None:
    parsed = flow("---\n- back\n")
    assert parsed.app_id is None
    assert parsed.steps == (Step(index=0, line=2, command="back"),)


def test_header_without_app_id_is_accepted() -> None:
    parsed = flow("name: Just a name\n---\n- back\n")
    assert parsed.app_id is None
    assert parsed.name == "Just a name"


# --- one valid example per command ------------------------------------------------------------------


def test_launch_app_bare_and_with_arguments() -> None:
    parsed = flow(
        """
        appId: com.example.app
        ---
        - launchApp
        - launchApp: com.example.other
        - launchApp:
            appId: com.example.app
            clearState: true
            optional: true
        """
    )
    bare, shorthand, mapping = parsed.steps
    assert bare == Step(index=0, line=3, command="launchApp")
    assert shorthand == Step(index=1, line=4, command="launchApp", app_id="com.example.other")
    assert mapping == Step(
        index=2, line=5, command="launchApp", app_id="com.example.app", clear_state=True, optional=True
    )


def test_stop_app_bare_and_with_app_id() -> None:
    bare, named = flow("- stopApp\n- stopApp: com.example.other\n").steps
    assert bare == Step(index=0, line=1, command="stopApp")
    assert named == Step(index=1, line=2, command="stopApp", app_id="com.example.other")


def test_tap_on_text_id_and_optional() -> None:
    shorthand, by_id, optional = flow(
        """
        - tapOn: Sign in
        - tapOn:
            id: login_button
        - tapOn:
            text: Maybe later
            optional: true
        """
    ).steps
    assert shorthand.selector == Selector(text="Sign in")
    assert shorthand.optional is False
    assert by_id.selector == Selector(id="login_button")
    assert (by_id.index, by_id.line) == (1, 2)
    assert optional.selector == Selector(text="Maybe later")
    assert optional.optional is True
    assert optional.describe() == 'tapOn "Maybe later"'


def test_tap_on_text_and_id_together() -> None:
    step = only_step("- tapOn:\n    text: OK\n    id: ok_button\n")
    assert step.selector == Selector(text="OK", id="ok_button")


def test_input_text_string_number_and_mapping() -> None:
    typed, digits, mapping = flow(
        """
        - inputText: someone@example.com
        - inputText: 007
        - inputText:
            text: secret
            optional: true
        """
    ).steps
    assert typed == Step(index=0, line=1, command="inputText", text="someone@example.com")
    # A plain number is typed as written (Maestro does the same), not as the integer 7.
    assert digits.text == "007"
    assert (mapping.text, mapping.optional) == ("secret", True)


@pytest.mark.parametrize("command", ["assertVisible", "assertNotVisible"])
def test_assertions(command: str) -> None:
    shorthand, mapping = flow(
        f"""
        - {command}: Welcome
        - {command}:
            id: spinner
            optional: true
            timeout: 15000
        """
    ).steps
    assert shorthand == Step(index=0, line=1, command=command, selector=Selector(text="Welcome"))
    assert mapping == Step(
        index=1, line=2, command=command, selector=Selector(id="spinner"), optional=True, timeout_ms=15000
    )


def test_back() -> None:
    assert only_step("- back\n") == Step(index=0, line=1, command="back")
    assert only_step("- back:\n") == Step(index=0, line=1, command="back")


def test_scroll() -> None:
    step = only_step("- scroll\n")
    assert step == Step(index=0, line=1, command="scroll", direction="DOWN")


@pytest.mark.parametrize("direction", ["UP", "DOWN", "LEFT", "RIGHT", "left"])
def test_swipe(direction: str) -> None:
    step = only_step(f"- swipe:\n    direction: {direction}\n")
    assert step == Step(index=0, line=1, command="swipe", direction=direction.upper())
    assert step.describe() == f"swipe {direction.upper()}"


def test_wait_for_animation_to_end() -> None:
    bare, timed = flow("- waitForAnimationToEnd\n- waitForAnimationToEnd:\n    timeout: 5000\n").steps
    assert bare == Step(index=0, line=1, command="waitForAnimationToEnd")
    assert timed == Step(index=1, line=2, command="waitForAnimationToEnd", timeout_ms=5000)


def test_take_screenshot() -> None:
    shorthand, mapping = flow("- takeScreenshot: MainScreen\n- takeScreenshot:\n    path: screens/Login\n").steps
    assert shorthand == Step(index=0, line=1, command="takeScreenshot", label="MainScreen")
    assert mapping == Step(index=1, line=2, command="takeScreenshot", label="screens/Login")


def test_every_command_of_the_model_parses() -> None:
    examples = {
        "launchApp": "- launchApp",
        "stopApp": "- stopApp",
        "tapOn": "- tapOn: x",
        "inputText": "- inputText: x",
        "assertVisible": "- assertVisible: x",
        "assertNotVisible": "- assertNotVisible: x",
        "back": "- back",
        "scroll": "- scroll",
        "swipe": "- swipe: {direction: UP}",
        "waitForAnimationToEnd": "- waitForAnimationToEnd",
        "takeScreenshot": "- takeScreenshot: x",
    }
    assert set(examples) == set(COMMANDS)
    parsed = flow("\n".join(examples.values()) + "\n")
    assert [step.command for step in parsed.steps] == list(examples)
    assert [step.index for step in parsed.steps] == list(range(len(examples)))


# --- line numbers -------------------------------------------------------------------------------------


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
"""


def test_lines_without_header() -> None:
    parsed = parse_flow(LOGIN_STEPS)
    assert [(step.index, step.line, step.command) for step in parsed.steps] == [
        (0, 2, "launchApp"),
        (1, 5, "tapOn"),
        (2, 7, "inputText"),
        (3, 8, "tapOn"),
        (4, 10, "assertVisible"),
    ]


def test_lines_with_header_count_the_header() -> None:
    parsed = parse_flow("appId: com.example.app\nname: Login\ntags: [smoke]\n---\n" + LOGIN_STEPS)
    assert [step.line for step in parsed.steps] == [6, 9, 11, 12, 14]
    assert [step.index for step in parsed.steps] == [0, 1, 2, 3, 4]


def test_lines_with_windows_line_endings() -> None:
    parsed = parse_flow("appId: a\r\n---\r\n- back\r\n\r\n- tapOn: x\r\n")
    assert [step.line for step in parsed.steps] == [3, 5]


def test_error_lines_count_the_header() -> None:
    caught = error(
        """
        appId: com.example.app
        ---
        - launchApp
        - tapOn:
            text: Sign in
            colour: blue
        """
    )
    assert caught.line == 6
    assert "colour" in caught.message
    assert str(caught).startswith("line 6: ")


# --- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        # unknown commands, with a suggestion
        ("- launchApp\n- tapon: Login\n", 2, "unknown command `tapon`; did you mean `tapOn`?"),
        ("- back\n- assertVisable: x\n", 2, "did you mean `assertVisible`?"),
        ("- frobnicate\n", 1, "unknown command `frobnicate`"),
        ("- runFlow: login.yaml\n", 1, "`runFlow` is a Maestro command that qualgent does not support"),
        # wrong argument types
        ("- inputText: [a, b]\n", 1, "inputText takes a string or a mapping, not a list"),
        ("- tapOn:\n    text: [a]\n", 2, "tapOn text must be a string, not a list"),
        ("- stopApp:\n    appId: x\n", 2, "stopApp takes `appId` as a string, not a mapping"),
        ("- back: now\n", 1, "back takes no arguments"),
        ("- scroll:\n    direction: UP\n", 2, "scroll takes no arguments"),
        ("- swipe: LEFT\n", 1, "swipe takes a mapping such as `direction: LEFT`"),
        ("- launchApp:\n    clearState: yes please\n", 2, "launchApp clearState must be true or false"),
        ("appId: [a]\n---\n- back\n", 1, "appId must be a string, not a list"),
        ("tags: smoke\n---\n- back\n", 1, "tags must be a list of strings, not a string"),
        ("tags:\n  - smoke\n  - {a: b}\n---\n- back\n", 3, "a tag must be a string, not a mapping"),
        ("env: [a]\n---\n- back\n", 1, "env must be a mapping"),
        # unknown and unsupported keys
        ("- tapOn:\n    txt: Login\n", 2, "unknown key `txt`; did you mean `text`?"),
        ("- tapOn:\n    text: a\n    retryTapIfNoChange: true\n", 3, "`retryTapIfNoChange` is a Maestro option"),
        ("- tapOn:\n    text: a\n    timeout: 10\n", 3, "`timeout` is not supported on tapOn"),
        ("- tapOn:\n    text: a\n    label: Tap it\n", 3, "`label` is a Maestro option that qualgent does not support"),
        ("- launchApp:\n    permissions: {all: deny}\n", 2, "`permissions` is a Maestro option"),
        ("- tapOn:\n    text: a\n    text: b\n", 3, "`text` is given twice"),
        ("appId: a\nversion: 2\n---\n- back\n", 2, "header: unknown key `version`"),
        ("appId: a\nonFlowStart:\n  - back\n---\n- back\n", 2, "onFlowStart hook is not supported"),
        ("appId: a\nonFlowComplete:\n  - back\n---\n- back\n", 2, "onFlowComplete hook is not supported"),
        # swipe by coordinates
        (
            "- swipe:\n    start: 90%, 50%\n    end: 10%, 50%\n",
            2,
            "swipe by coordinates (`start`/`end`) is not supported",
        ),
        ("- swipe:\n    direction: SIDEWAYS\n", 2, "swipe direction must be UP, DOWN, LEFT or RIGHT, not 'SIDEWAYS'"),
        # missing required arguments
        ("- back\n- tapOn\n", 2, "tapOn needs `text`"),
        ("- tapOn:\n    optional: true\n", 1, "tapOn needs `text` or `id`"),
        ("- inputText:\n", 1, "inputText needs `text`"),
        ("- assertVisible: {timeout: 100}\n", 1, "assertVisible needs `text` or `id`"),
        ("- swipe:\n    optional: true\n", 1, "swipe needs `direction`"),
        ("- swipe\n", 1, "swipe needs arguments"),
        ("- takeScreenshot\n", 1, "takeScreenshot needs `path`"),
        ("- tapOn: ''\n", 1, "tapOn text must not be empty"),
        # optional and timeout values
        ("- tapOn:\n    text: a\n    optional: 'yes'\n", 3, "tapOn optional must be true or false, not a string"),
        ("- tapOn:\n    text: a\n    optional: 1\n", 3, "tapOn optional must be true or false, not a number"),
        ("- assertVisible:\n    text: a\n    timeout: 0\n", 3, "assertVisible timeout must be a positive whole number"),
        ("- assertVisible:\n    text: a\n    timeout: -5\n", 3, "timeout must be a positive whole number"),
        ("- assertVisible:\n    text: a\n    timeout: 1.5\n", 3, "timeout must be a positive whole number"),
        ("- assertVisible:\n    text: a\n    timeout: '100'\n", 3, "timeout must be a positive whole number"),
        ("- waitForAnimationToEnd:\n    timeout: true\n", 2, "timeout must be a positive whole number"),
        ("- waitForAnimationToEnd:\n    timeout: 99999999\n", 2, "the limit is 600000 ms"),
        # invalid YAML: the line of the mark
        ("- launchApp\n- tapOn: [Login\n- back\n", 3, "(while parsing a flow sequence started on line 2)"),
        ("appId: a\n---\n- back\n  - tapOn: x\n", 4, "invalid YAML"),
        ("- back\n\t- scroll\n", 2, "invalid YAML"),
        ("- back\n- tapOn: \x07\n", 2, "the character U+0007 is not allowed"),
        # structure
        ("- tapOn:\n  text: Login\n", 1, "a step is one command, but this one has several keys (`tapOn`, `text`)"),
        ("tapOn: Login\n", 1, "the steps must be a YAML list"),
        ("- [back]\n", 1, "a step must be a command"),
        ("- 42: x\n", 1, "a command name must be a name, not a number"),
        ("appId: a\n---\n- back\n---\n- back\n", 4, "at most two YAML documents"),
        ("- [a, b]\n---\n- back\n", 1, "the header before `---` must be a mapping"),
        # empty flows
        ("", 1, "the flow is empty"),
        ("# nothing here\n", 1, "the flow is empty"),
        ("appId: com.example.app\nname: x\n", 2, "the flow has no steps"),
        ("appId: com.example.app\n---\n", 2, "the flow has no steps"),
        ("appId: com.example.app\n---\n[]\n", 3, "the flow has no steps"),
        # text too long
        (f"- inputText: {'x' * (MAX_TEXT_CHARS + 1)}\n", 1, f"the limit is {MAX_TEXT_CHARS}"),
        (f"appId: a\nname: {'n' * (MAX_TEXT_CHARS + 1)}\n---\n- back\n", 2, "name is 1001 characters long"),
        # what the parser refuses for safety
        ("- tapOn: !!python/object/apply:os.system ['true']\n", 1, "YAML tag"),
        ("- tapOn: !custom x\n", 1, "the YAML tag '!custom' is not supported"),
        ("- tapOn:\n    <<: {text: a}\n", 2, "merge keys (<<) are not supported"),
        ("- tapOn: &login Login\n- tapOn: *login\n", 2, "YAML aliases (*name) are not supported"),
        ("appId: ${APP_ID}\n---\n- back\n", 1, "variables and JavaScript (${...}) are not supported"),
        ("- takeScreenshot: ../../etc/passwd\n", 1, "takeScreenshot path must be a relative name"),
        ("- takeScreenshot:\n    path: /tmp/x\n", 2, "takeScreenshot path must be a relative name"),
    ],
)
def test_errors_name_the_line_and_the_problem(text: str, line: int, expected: str) -> None:
    with pytest.raises(FlowError) as caught:
        parse_flow(text)
    assert caught.value.line == line, caught.value
    assert expected in caught.value.message


def test_more_than_the_step_limit_names_the_first_step_too_many() -> None:
    text = "appId: a\n---\n" + "- back\n" * (MAX_STEPS + 1)
    caught = error(text)
    assert caught.line == 2 + MAX_STEPS + 1  # the header's two lines, then step 501
    assert f"more than {MAX_STEPS} steps" in caught.message
    assert len(flow("- back\n" * MAX_STEPS).steps) == MAX_STEPS


def test_a_document_over_the_size_limit_is_refused_before_parsing() -> None:
    # Not valid YAML: the size message proves the text was never parsed.
    caught = error("[" + "x" * MAX_FLOW_BYTES)
    assert caught.line is None
    assert "larger than 256 KB" in caught.message
    # The limit counts UTF-8 bytes, not characters.
    caught = error("- inputText: " + "é" * (MAX_FLOW_BYTES // 2))
    assert "larger than 256 KB" in caught.message


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
    assert "aliases" in caught.value.message


def test_deep_nesting_is_refused_quickly() -> None:
    depth = 100_000
    started = time.process_time()
    caught = error("- tapOn: " + "[" * depth + "]" * depth + "\n")
    assert time.process_time() - started < 10.0  # bounded work, with room for a busy machine
    assert caught.line == 1
    assert "nested more than" in caught.message


def test_a_long_list_is_refused_as_it_is_read() -> None:
    text = "- back\n" * (MAX_FLOW_BYTES // 8)
    started = time.process_time()
    caught = error(text)
    assert time.process_time() - started < 10.0  # bounded work, with room for a busy machine
    assert caught.line == MAX_STEPS + 1


def test_mangled_flows_only_ever_raise_flow_error() -> None:
    """Random damage to a valid flow gives a Flow or a FlowError, never a YAML error or a KeyError."""
    valid = "appId: com.example.app\nname: Login\ntags: [smoke]\n---\n" + LOGIN_STEPS
    alphabet = "-:[]{}&*!|>'\"#%@`,?\t\n ~x0\\"
    rng = random.Random(20240601)
    for _ in range(2000):
        chars = list(valid)
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
        except FlowError as caught:
            assert caught.line is None or caught.line >= 1


def test_every_example_in_the_docs_parses() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "flows.md").read_text(encoding="utf-8")
    examples = re.findall(r"```yaml\n(.*?)```", docs, flags=re.DOTALL)
    assert len(examples) >= len(COMMANDS)
    for example in examples:
        assert parse_flow(example).steps, example
