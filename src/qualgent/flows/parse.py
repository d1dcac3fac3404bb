"""Parse a Maestro flow (the subset in ``docs/flows.md``) into a typed ``Flow``.

A flow is uploaded by a client and parsed on the server, so the text is hostile until proven otherwise:
the size is checked before any parsing, the YAML is composed into nodes by PyYAML's safe loader (no
Python object tags) with aliases refused and nesting capped, and no Python object is ever constructed
from the YAML. Every problem is a ``FlowError`` naming the 1-based line of the node it is about.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, NoReturn

import yaml
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from qualgent.flows.model import COMMANDS, Flow, FlowError, Selector, Step

MAX_FLOW_BYTES: Final = 256 * 1024
MAX_STEPS: Final = 500
MAX_TEXT_CHARS: Final = 1000
MAX_TIMEOUT_MS: Final = 600_000  # ten minutes: a wait longer than that holds a device for nothing
# A flow needs four levels (steps list, step, arguments, value); the cap stops "[[[[..." from
# recursing the composer to the interpreter's limit.
MAX_NESTING: Final = 16

SWIPE_DIRECTIONS: Final = ("UP", "DOWN", "LEFT", "RIGHT")

HEADER_KEYS: Final = ("appId", "name", "tags", "env")
# Header keys Maestro knows that would change what a run does; refused rather than silently ignored.
UNSUPPORTED_HEADER_KEYS: Final = {
    "onFlowStart": "the onFlowStart hook is not supported: put its steps at the start of the flow",
    "onFlowComplete": "the onFlowComplete hook is not supported",
    "jsEngine": "jsEngine is not supported: qualgent runs no JavaScript",
    "androidWebViewHierarchy": "androidWebViewHierarchy is not supported",
    "url": "web flows (url) are not supported: qualgent tests Android and iOS apps",
}

# Maestro commands outside the subset, so that they are reported as unsupported rather than unknown.
MAESTRO_UNSUPPORTED_COMMANDS: Final = frozenset(
    {
        "addMedia",
        "assertNoDefectsWithAI",
        "assertScreenshot",
        "assertTrue",
        "assertWithAI",
        "clearKeychain",
        "clearState",
        "copyTextFrom",
        "doubleTapOn",
        "eraseText",
        "evalScript",
        "extendedWaitUntil",
        "extractTextWithAI",
        "hideKeyboard",
        "inputRandomCityName",
        "inputRandomColorName",
        "inputRandomCountryName",
        "inputRandomEmail",
        "inputRandomNumber",
        "inputRandomPersonName",
        "inputRandomText",
        "killApp",
        "longPressOn",
        "openLink",
        "pasteText",
        "pressKey",
        "repeat",
        "retry",
        "runFlow",
        "runScript",
        "scrollUntilVisible",
        "setAirplaneMode",
        "setClipboard",
        "setLocation",
        "setOrientation",
        "setPermissions",
        "startRecording",
        "stopRecording",
        "toggleAirplaneMode",
        "travel",
    }
)

# Selector fields Maestro accepts beside text and id; the simulator cannot judge them.
_MAESTRO_SELECTOR_KEYS: Final = frozenset(
    {
        "above",
        "below",
        "checked",
        "childOf",
        "containsChild",
        "containsDescendants",
        "css",
        "enabled",
        "focused",
        "height",
        "index",
        "leftOf",
        "rightOf",
        "selected",
        "tolerance",
        "traits",
        "width",
    }
)
# Maestro arguments we recognise but do not implement, per command (``label`` is common to all).
_MAESTRO_UNSUPPORTED_KEYS: Final[dict[str, frozenset[str]]] = {
    "launchApp": frozenset({"clearKeychain", "stopApp", "permissions", "arguments"}),
    "tapOn": _MAESTRO_SELECTOR_KEYS
    | {"point", "repeat", "delay", "retryTapIfNoChange", "waitToSettleTimeoutMs", "longPress"},
    "assertVisible": _MAESTRO_SELECTOR_KEYS,
    "assertNotVisible": _MAESTRO_SELECTOR_KEYS,
    "swipe": frozenset({"from", "duration"}),
    "takeScreenshot": frozenset({"cropOn"}),
}

_TAG: Final = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP = (
    _TAG + name for name in ("str", "int", "float", "bool", "null", "timestamp")
)
_SCALAR_TAGS: Final = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP})
_ALLOWED_TAGS: Final = _SCALAR_TAGS | {_TAG + "seq", _TAG + "map"}
# Scalars whose source text is taken as a string: `inputText: 1234` types "1234", as in Maestro.
_TEXT_TAGS: Final = frozenset({_STR, _INT, _FLOAT, _BOOL, _TIMESTAMP})
_BOOL_VALUES: Final = {"yes": True, "true": True, "on": True, "no": False, "false": False, "off": False}


def parse_flow(text: str) -> Flow:
    """Parse a flow's YAML text; raise ``FlowError`` naming the line of the first problem."""
    # len() bounds the UTF-8 size from below, so a huge text is refused without encoding it.
    if len(text) > MAX_FLOW_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FLOW_BYTES:
        raise FlowError(None, f"the flow is larger than {MAX_FLOW_BYTES // 1024} KB")
    documents = _compose(text)
    if not documents or all(_is_null(doc) for doc in documents):
        raise FlowError(1, "the flow is empty: write a list of steps, e.g. `- launchApp`")

    header: Node | None
    body: Node | None
    if len(documents) == 2:
        header, body = documents
    elif isinstance(documents[0], MappingNode) and not _names_a_command(documents[0]):
        header, body = documents[0], None
    else:
        header, body = None, documents[0]

    app_id, name, tags = _parse_header(header) if header is not None else (None, None, ())
    if body is None or _is_null(body):
        # Where the header ends, or the empty document after `---` starts: at the next token, so at
        # column 0 the line the reader sees last is the one before.
        mark = body.start_mark if body is not None else header.end_mark if header is not None else None
        line = max(1, mark.line + (1 if mark.column > 0 else 0)) if mark is not None else 1
        raise FlowError(line, "the flow has no steps: after the header write `---` and then a list of steps")
    return Flow(app_id=app_id, name=name, tags=tags, steps=_parse_steps(body))


# --- YAML -----------------------------------------------------------------------------------------


class _FlowLoader(yaml.SafeLoader):
    """The safe loader's composer, refusing aliases, unknown tags and deep nesting as nodes are built."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            # Refusing every alias is what makes "billion laughs" harmless: nothing can be repeated.
            raise FlowError(
                _next_event_line(self),
                "YAML aliases (*name) are not supported: write each value out in full",
            )
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise FlowError(_next_event_line(self), f"the YAML is nested more than {MAX_NESTING} levels deep")
            # Counted while composing, so a 256 KB list of steps is refused at step 501, not after.
            if isinstance(parent, SequenceNode) and index >= MAX_STEPS:
                what = "steps" if self._depth == 2 else "entries in a YAML list"
                raise FlowError(_next_event_line(self), f"the flow has more than {MAX_STEPS} {what}")
            if isinstance(parent, MappingNode) and len(parent.value) >= MAX_STEPS:
                raise FlowError(_next_event_line(self), f"a YAML mapping has more than {MAX_STEPS} entries")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None and node.tag not in _ALLOWED_TAGS:
            if node.tag == _TAG + "merge":
                raise FlowError(_line(node), "YAML merge keys (<<) are not supported")
            raise FlowError(_line(node), f"the YAML tag {node.tag!r} is not supported")
        return node


def _compose(text: str) -> list[Node]:
    """The documents of the text as nodes (at most two: a header and the steps)."""
    loader: _FlowLoader | None = None
    try:
        loader = _FlowLoader(text)
        documents: list[Node] = []
        while loader.check_node():
            if len(documents) == 2:
                raise FlowError(
                    _next_event_line(loader),
                    "a flow has at most two YAML documents: a header, `---`, then the steps",
                )
            node = loader.get_node()
            if node is not None:
                documents.append(node)
        return documents
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = f"invalid YAML: {exc.problem or exc.context or 'not valid YAML'}"
        if exc.problem and exc.context and exc.context_mark is not None:
            message += f" ({exc.context} started on line {_mark_line(exc.context_mark)})"
        # A problem found at the end of the text is marked on the line after the last one.
        last_line = text.count("\n") + (0 if text.endswith("\n") else 1)
        line = min(_mark_line(mark), max(last_line, 1)) if mark is not None else None
        raise FlowError(line, message) from None
    except ReaderError as exc:
        position = exc.position if isinstance(exc.position, int) else 0
        line = text.count("\n", 0, position) + 1
        character = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise FlowError(line, f"invalid YAML: the character {character} is not allowed") from None
    except yaml.YAMLError as exc:
        raise FlowError(None, f"invalid YAML: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _mark_line(mark: Mark) -> int:
    return mark.line + 1


def _line(node: Node) -> int:
    return _mark_line(node.start_mark)


def _next_event_line(loader: yaml.SafeLoader) -> int | None:
    event = loader.peek_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
    mark = getattr(event, "start_mark", None)
    return _mark_line(mark) if isinstance(mark, Mark) else None


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _kind(node: Node) -> str:
    """What a node is, for messages: "a list", "a number", …"""
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    return {
        _NULL: "nothing",
        _BOOL: "a boolean",
        _INT: "a number",
        _FLOAT: "a number",
        _TIMESTAMP: "a date",
    }.get(node.tag, "a string")


def _names_a_command(node: MappingNode) -> bool:
    """Whether a mapping is a step written without its `- `, rather than a header without steps."""
    return any(
        isinstance(key, ScalarNode) and (key.value in COMMANDS or key.value in MAESTRO_UNSUPPORTED_COMMANDS)
        for key, _ in node.value
    )


def _suggest(word: str, choices: Sequence[str]) -> str:
    """ "; did you mean `x`?" for the closest choice (case-insensitive), or ""."""
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean `{by_lower[close[0]]}`?" if close else ""


def _fail(node: Node, message: str) -> NoReturn:
    raise FlowError(_line(node), message)


# --- values ---------------------------------------------------------------------------------------


def _string(node: Node, what: str) -> str:
    """A non-empty string of at most MAX_TEXT_CHARS characters; a plain number is taken as written."""
    if not isinstance(node, ScalarNode) or node.tag not in _TEXT_TAGS:
        _fail(node, f"{what} must be a string, not {_kind(node)}")
    value: str = node.value
    if not value:
        _fail(node, f"{what} must not be empty")
    if len(value) > MAX_TEXT_CHARS:
        _fail(node, f"{what} is {len(value)} characters long; the limit is {MAX_TEXT_CHARS}")
    if "${" in value:
        _fail(node, f"{what}: variables and JavaScript (${{...}}) are not supported; write the value itself")
    return value


def _bool(node: Node, what: str) -> bool:
    if not isinstance(node, ScalarNode) or node.tag != _BOOL:
        _fail(node, f"{what} must be true or false, not {_kind(node)}")
    value = _BOOL_VALUES.get(node.value.lower())
    if value is None:
        _fail(node, f"{what} must be true or false, not {node.value!r}")
    return value


def _timeout(node: Node, what: str) -> int:
    # Plain decimal digits only: YAML 1.1 would also read 0x10, 0o17 and 1:30 as integers.
    if not isinstance(node, ScalarNode):
        _fail(node, f"{what} must be a positive whole number of milliseconds, not {_kind(node)}")
    if node.tag != _INT or not re.fullmatch(r"\+?[0-9]+", node.value):
        _fail(node, f"{what} must be a positive whole number of milliseconds, not {_kind(node)} {node.value!r}")
    value = int(node.value)
    if value <= 0:
        _fail(node, f"{what} must be a positive whole number of milliseconds, not {value}")
    if value > MAX_TIMEOUT_MS:
        _fail(node, f"{what} is {value} ms; the limit is {MAX_TIMEOUT_MS} ms")
    return value


def _mapping(
    node: MappingNode, where: str, allowed: Sequence[str], unsupported: Callable[[str], str | None]
) -> dict[str, tuple[ScalarNode, Node]]:
    """The entries of a mapping by key, refusing non-string, repeated, unsupported and unknown keys."""
    entries: dict[str, tuple[ScalarNode, Node]] = {}
    for key, value in node.value:
        if not isinstance(key, ScalarNode) or key.tag != _STR:
            _fail(key, f"{where}: keys must be names, not {_kind(key)}")
        name: str = key.value
        if name in entries:
            _fail(key, f"{where}: `{name}` is given twice")
        if name not in allowed:
            reason = unsupported(name)
            if reason is not None:
                _fail(key, f"{where}: {reason}")
            expected = ", ".join(f"`{key_name}`" for key_name in allowed)
            _fail(key, f"{where}: unknown key `{name}`{_suggest(name, allowed)} (expected {expected})")
        entries[name] = (key, value)
    return entries


# --- header ---------------------------------------------------------------------------------------


def _parse_header(node: Node) -> tuple[str | None, str | None, tuple[str, ...]]:
    if _is_null(node):  # an empty document before `---`
        return None, None, ()
    if not isinstance(node, MappingNode):
        _fail(node, f"the header before `---` must be a mapping (appId, name, tags), not {_kind(node)}")
    entries = _mapping(node, "header", HEADER_KEYS, UNSUPPORTED_HEADER_KEYS.get)
    app_id = _string(entries["appId"][1], "appId") if "appId" in entries else None
    name = _string(entries["name"][1], "name") if "name" in entries else None
    tags: list[str] = []
    if "tags" in entries:
        tags_node = entries["tags"][1]
        if not isinstance(tags_node, SequenceNode):
            _fail(tags_node, f"tags must be a list of strings, not {_kind(tags_node)}")
        tags = [_string(tag, "a tag") for tag in tags_node.value]
    # env is accepted so that Maestro flows load, and ignored: `${...}` in a value is refused instead.
    if "env" in entries and not (isinstance(entries["env"][1], MappingNode) or _is_null(entries["env"][1])):
        _fail(entries["env"][1], f"env must be a mapping of names to values, not {_kind(entries['env'][1])}")
    return app_id, name, tuple(tags)


# --- steps ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """One step as written: the command and its argument node (None for a bare `- back`)."""

    index: int
    line: int
    command: str
    argument: Node | None


def _parse_steps(node: Node) -> tuple[Step, ...]:
    if not isinstance(node, SequenceNode):
        _fail(node, f"the steps must be a YAML list (each step starts with `- `), not {_kind(node)}")
    if not node.value:
        _fail(node, "the flow has no steps")
    if len(node.value) > MAX_STEPS:
        _fail(node.value[MAX_STEPS], f"the flow has more than {MAX_STEPS} steps")
    return tuple(_parse_step(index, item) for index, item in enumerate(node.value))


def _parse_step(index: int, node: Node) -> Step:
    argument: Node | None
    if isinstance(node, ScalarNode) and node.tag == _STR:
        name_node, argument = node, None
    elif isinstance(node, MappingNode) and len(node.value) == 1:
        name_node, argument = node.value[0]
        if _is_null(argument):  # `- back:` is `- back`
            argument = None
    elif isinstance(node, MappingNode) and node.value:
        keys = ", ".join(f"`{key.value}`" for key, _ in node.value if isinstance(key, ScalarNode))
        _fail(
            node,
            f"a step is one command, but this one has several keys ({keys}); indent a command's arguments under it",
        )
    else:
        _fail(node, f"a step must be a command such as `- back` or `- tapOn: Login`, not {_kind(node)}")

    if not isinstance(name_node, ScalarNode) or name_node.tag != _STR:
        _fail(name_node, f"a command name must be a name, not {_kind(name_node)}")
    command: str = name_node.value
    parser = _PARSERS.get(command)
    if parser is None:
        if command in MAESTRO_UNSUPPORTED_COMMANDS:
            _fail(name_node, f"`{command}` is a Maestro command that qualgent does not support")
        _fail(name_node, f"unknown command `{command}`{_suggest(command, COMMANDS)}")
    return parser(_Call(index=index, line=_line(node), command=command, argument=argument))


def _unsupported_key(command: str) -> Callable[[str], str | None]:
    def reason(key: str) -> str | None:
        if command == "tapOn" and key == "timeout":
            return "`timeout` is not supported on tapOn; put an `assertVisible` with a `timeout` before it"
        if key == "label" or key in _MAESTRO_UNSUPPORTED_KEYS.get(command, frozenset()):
            return f"`{key}` is a Maestro option that qualgent does not support"
        return None

    return reason


def _arguments(call: _Call, *, allowed: Sequence[str], shorthand: str | None, bare: bool) -> dict[str, Node]:
    """The command's arguments by name, from any of its forms.

    ``shorthand`` names the argument a plain string stands for (``tapOn: Login`` is ``text: Login``);
    ``bare`` says whether the command may be written with no argument at all.
    """
    argument = call.argument
    if argument is None:
        if not bare:
            needs = f"`{shorthand}`" if shorthand is not None else "arguments"
            raise FlowError(call.line, f"{call.command} needs {needs}")
        return {}
    if isinstance(argument, MappingNode) and allowed:
        entries = _mapping(argument, call.command, allowed, _unsupported_key(call.command))
        return {name: value for name, (_, value) in entries.items()}
    if isinstance(argument, ScalarNode) and shorthand is not None:
        return {shorthand: argument}
    if not allowed:
        if shorthand is not None:
            _fail(argument, f"{call.command} takes `{shorthand}` as a string, not {_kind(argument)}")
        _fail(argument, f"{call.command} takes no arguments")
    forms = "a string or a mapping" if shorthand is not None else "a mapping"
    _fail(argument, f"{call.command} takes {forms}, not {_kind(argument)}")


def _optional_string(arguments: dict[str, Node], name: str, call: _Call) -> str | None:
    node = arguments.get(name)
    return _string(node, f"{call.command} {name}") if node is not None else None


def _optional(arguments: dict[str, Node], call: _Call) -> bool:
    node = arguments.get("optional")
    return _bool(node, f"{call.command} optional") if node is not None else False


def _timeout_ms(arguments: dict[str, Node], call: _Call) -> int | None:
    node = arguments.get("timeout")
    return _timeout(node, f"{call.command} timeout") if node is not None else None


def _selector(arguments: dict[str, Node], call: _Call) -> Selector:
    text = _optional_string(arguments, "text", call)
    element_id = _optional_string(arguments, "id", call)
    if text is None and element_id is None:
        raise FlowError(call.line, f"{call.command} needs `text` or `id`")
    return Selector(text=text, id=element_id)


def _launch_app(call: _Call) -> Step:
    arguments = _arguments(call, allowed=("appId", "clearState", "optional"), shorthand="appId", bare=True)
    clear_state = arguments.get("clearState")
    return Step(
        call.index,
        call.line,
        call.command,
        app_id=_optional_string(arguments, "appId", call),
        clear_state=_bool(clear_state, "launchApp clearState") if clear_state is not None else False,
        optional=_optional(arguments, call),
    )


def _stop_app(call: _Call) -> Step:
    arguments = _arguments(call, allowed=(), shorthand="appId", bare=True)
    return Step(call.index, call.line, call.command, app_id=_optional_string(arguments, "appId", call))


def _tap_on(call: _Call) -> Step:
    arguments = _arguments(call, allowed=("text", "id", "optional"), shorthand="text", bare=False)
    return Step(
        call.index,
        call.line,
        call.command,
        selector=_selector(arguments, call),
        optional=_optional(arguments, call),
    )


def _input_text(call: _Call) -> Step:
    arguments = _arguments(call, allowed=("text", "optional"), shorthand="text", bare=False)
    text = _optional_string(arguments, "text", call)
    if text is None:
        raise FlowError(call.line, "inputText needs `text`")
    return Step(call.index, call.line, call.command, text=text, optional=_optional(arguments, call))


def _assert(call: _Call) -> Step:
    arguments = _arguments(call, allowed=("text", "id", "optional", "timeout"), shorthand="text", bare=False)
    return Step(
        call.index,
        call.line,
        call.command,
        selector=_selector(arguments, call),
        optional=_optional(arguments, call),
        timeout_ms=_timeout_ms(arguments, call),
    )


def _no_arguments(call: _Call) -> Step:
    _arguments(call, allowed=(), shorthand=None, bare=True)
    # The model records a scroll as moving the content DOWN (Maestro performs it as an upward swipe).
    return Step(call.index, call.line, call.command, direction="DOWN" if call.command == "scroll" else None)


def _swipe(call: _Call) -> Step:
    argument = call.argument
    if isinstance(argument, ScalarNode):
        _fail(argument, f"swipe takes a mapping such as `direction: LEFT`, not {_kind(argument)}")
    if isinstance(argument, MappingNode):
        for key, _ in argument.value:
            if isinstance(key, ScalarNode) and key.value in ("start", "end"):
                _fail(key, "swipe by coordinates (`start`/`end`) is not supported; use `direction: UP|DOWN|LEFT|RIGHT`")
    arguments = _arguments(call, allowed=("direction", "optional"), shorthand=None, bare=False)
    node = arguments.get("direction")
    if node is None:
        raise FlowError(call.line, "swipe needs `direction` (UP, DOWN, LEFT or RIGHT)")
    direction = _string(node, "swipe direction").upper()
    if direction not in SWIPE_DIRECTIONS:
        _fail(node, f"swipe direction must be UP, DOWN, LEFT or RIGHT, not {node.value!r}")
    return Step(call.index, call.line, call.command, direction=direction, optional=_optional(arguments, call))


def _wait_for_animation(call: _Call) -> Step:
    arguments = _arguments(call, allowed=("timeout", "optional"), shorthand=None, bare=True)
    return Step(
        call.index,
        call.line,
        call.command,
        timeout_ms=_timeout_ms(arguments, call),
        optional=_optional(arguments, call),
    )


def _take_screenshot(call: _Call) -> Step:
    arguments = _arguments(call, allowed=("path", "optional"), shorthand="path", bare=False)
    node = arguments.get("path")
    if node is None:
        raise FlowError(call.line, "takeScreenshot needs `path` (the screenshot's name)")
    path = _string(node, "takeScreenshot path")
    # The name may become a file name on an agent: keep it a relative path that stays where it is put.
    parts = re.split(r"[/\\]", path)
    if path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", path) or ".." in parts or "\0" in path:
        _fail(node, "takeScreenshot path must be a relative name, without `..` or a leading `/`")
    return Step(call.index, call.line, call.command, label=path, optional=_optional(arguments, call))


_PARSERS: Final[dict[str, Callable[[_Call], Step]]] = {
    "launchApp": _launch_app,
    "stopApp": _stop_app,
    "tapOn": _tap_on,
    "inputText": _input_text,
    "assertVisible": _assert,
    "assertNotVisible": _assert,
    "back": _no_arguments,
    "scroll": _no_arguments,
    "swipe": _swipe,
    "waitForAnimationToEnd": _wait_for_animation,
    "takeScreenshot": _take_screenshot,
}
assert set(_PARSERS) == set(COMMANDS), "every command of the model needs a parser"
