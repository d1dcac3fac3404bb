"""Parse one Maestro flow file into a ``Flow`` (the commands and their forms are in ``flows.commands``).

A flow is uploaded by a client and parsed on the server, so the text is hostile until proven otherwise:
its size is checked before any parsing; libyaml's event stream is read first, refusing aliases, tags
other than YAML's plain ones, deep nesting and huge collections before any tree is built; then the
nodes are composed (still by libyaml) and no Python object is ever constructed from YAML tags. Every
problem is a ``FlowError`` naming the 1-based line of the node it is about.

Arguments are kept as written: strings may hold ``${…}``, which the engine resolves when the step
runs. What can be checked now is checked now: names, types, allowed values of literal arguments,
required and exclusive arguments, the syntax of every piece of JavaScript (``flows.bundle`` checks the
scripts in one batch), and the files a command refers to (``flows.bundle`` checks they exist).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import yaml
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from qualgent.flows import commands as C
from qualgent.flows.commands import Arg, Kind, Spec
from qualgent.flows.model import Command, Condition, Flow, FlowError, Value

MAX_FLOW_BYTES: Final = 256 * 1024
MAX_STEPS: Final = 1000  # commands in one list
MAX_COMMANDS: Final = 5000  # commands in one file, nested ones included
MAX_TEXT_CHARS: Final = 10_000
MAX_TIMEOUT_MS: Final = 600_000  # ten minutes: a wait longer than that holds a device for nothing
# The YAML's depth: a flow needs about three levels per nested `commands:` list.
MAX_NESTING: Final = 48
MAX_ENTRIES: Final = 1000  # entries in any YAML list or mapping

_TAG: Final = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP = (
    _TAG + name for name in ("str", "int", "float", "bool", "null", "timestamp")
)
_ALLOWED_TAGS: Final = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP, _TAG + "seq", _TAG + "map"})
_BOOL_VALUES: Final = {"yes": True, "true": True, "on": True, "no": False, "false": False, "off": False}
# Maestro's ${…}: greedy up to the last `}` before the next `$` (Env.kt); `\${` is literal.
TEMPLATE: Final = re.compile(r"(?<!\\)\$\{([^$]*)}")
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9][0-9_]*")
_NUMBER = re.compile(r"[+-]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_template(value: object) -> bool:
    return isinstance(value, str) and TEMPLATE.search(value) is not None


@dataclass
class _Context:
    """What parsing one file collects beside the Flow: its scripts to compile and files to find."""

    path: str
    scripts: list[tuple[int, str]] = field(default_factory=list)  # (line, JavaScript) to syntax-check
    references: list[tuple[int, Kind, str]] = field(default_factory=list)  # (line, kind, path as written)
    count: int = 0


@dataclass(frozen=True)
class ParsedFile:
    flow: Flow
    scripts: tuple[tuple[int, str], ...]
    references: tuple[tuple[int, Kind, str], ...]


def parse_flow(text: str, *, path: str = "") -> Flow:
    """Parse a flow file's YAML text (without checking the files it refers to or its JavaScript)."""
    return parse_file(text, path=path).flow


def parse_file(text: str, *, path: str = "") -> ParsedFile:
    context = _Context(path)
    try:
        flow = _parse(text, context)
    except FlowError as exc:
        exc.path = path or None
        raise
    return ParsedFile(flow, tuple(context.scripts), tuple(context.references))


def _parse(text: str, context: _Context) -> Flow:
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

    flow_header = _parse_header(header, context) if header is not None and not _is_null(header) else {}
    if body is None or _is_null(body):
        # Where the header ends, or the empty document after `---` starts: at the next token, so at
        # column 0 the line the reader sees last is the one before.
        mark = body.start_mark if body is not None else header.end_mark if header is not None else None
        line = max(1, mark.line + (1 if mark.column > 0 else 0)) if mark is not None else 1
        raise FlowError(line, "the flow has no steps: after the header write `---` and then a list of steps")
    commands = _parse_commands(body, context, "the steps")
    if not commands:
        _fail(body, "the flow has no steps")
    return Flow(commands=commands, path=context.path, **flow_header)


# --- YAML -----------------------------------------------------------------------------------------


def _compose(text: str) -> list[Node]:
    """The documents of the text as nodes (at most two: a header and the steps)."""
    try:
        _scan(text)
        # libyaml composes in C; the scan above refused everything that could make that costly.
        documents = [node for node in yaml.compose_all(text, Loader=yaml.CSafeLoader) if node is not None]
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
    except UnicodeEncodeError as exc:
        line = text.count("\n", 0, exc.start) + 1 if isinstance(exc.object, str) and exc.object == text else None
        raise FlowError(line, "the flow holds a character that is not valid Unicode (a lone surrogate)") from None
    return documents


def _scan(text: str) -> None:
    """Refuse aliases, merge keys, unknown tags, deep nesting, large collections and a third document,
    reading libyaml's events (no tree is built yet)."""
    depth = 0
    documents = 0
    counts: list[int] = []  # events seen directly in each open collection
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 2:
                raise FlowError(line, "a flow has at most two YAML documents: a header, `---`, then the steps")
            continue
        if isinstance(event, yaml.AliasEvent):
            # Refusing every alias is what makes "billion laughs" harmless: nothing can be repeated.
            raise FlowError(line, "YAML aliases (*name) are not supported: write each value out in full")
        if isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            counts.pop()
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue
        if counts:
            counts[-1] += 1
            if counts[-1] > 2 * MAX_ENTRIES:
                raise FlowError(line, f"a YAML list or mapping has more than {MAX_ENTRIES} entries")
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in ("!", *_ALLOWED_TAGS):
            if isinstance(event, yaml.ScalarEvent) and tag == _TAG + "merge":
                raise FlowError(line, "YAML merge keys (<<) are not supported")
            raise FlowError(line, f"the YAML tag {tag!r} is not supported")
        if isinstance(event, yaml.ScalarEvent) and event.value == "<<" and not event.style:
            raise FlowError(line, "YAML merge keys (<<) are not supported")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            counts.append(0)
            if depth > MAX_NESTING:
                raise FlowError(line, f"the YAML is nested more than {MAX_NESTING} levels deep")


def _mark_line(mark: Mark) -> int:
    return mark.line + 1


def _line(node: Node) -> int:
    return _mark_line(node.start_mark)


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
    return any(isinstance(key, ScalarNode) and _canonical(key.value) in C.SPECS for key, _ in node.value)


def _canonical(name: str) -> str:
    return C.ALIASES.get(name, name)


def suggest(word: str, choices: Sequence[str]) -> str:
    """ "; did you mean `x`?" for the closest choice (case-insensitive), or ""."""
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean `{by_lower[close[0]]}`?" if close else ""


def _fail(node: Node, message: str) -> NoReturn:
    raise FlowError(_line(node), message)


def _entries(node: MappingNode, where: str) -> Iterator[tuple[str, ScalarNode, Node]]:
    """A mapping's entries with their key names; keys must be scalars, each given once."""
    seen: set[str] = set()
    for key, value in node.value:
        if not isinstance(key, ScalarNode) or _is_null(key):
            _fail(key, f"{where}: keys must be names, not {_kind(key)}")
        name: str = key.value
        if name in seen:
            _fail(key, f"{where}: `{name}` is given twice")
        seen.add(name)
        yield name, key, value


# --- values ---------------------------------------------------------------------------------------


def _text(node: Node, what: str, context: _Context, *, allow_empty: bool = False) -> str:
    """A string as written; a plain number or boolean is taken as written (`inputText: 1234` types "1234")."""
    if not isinstance(node, ScalarNode) or node.tag == _NULL:
        _fail(node, f"{what} must be a string, not {_kind(node)}")
    value: str = node.value
    if not value and not allow_empty:
        _fail(node, f"{what} must not be empty")
    if len(value) > MAX_TEXT_CHARS:
        _fail(node, f"{what} is {len(value)} characters long; the limit is {MAX_TEXT_CHARS}")
    _collect_templates(value, _line(node), context)
    return value


def _collect_templates(value: str, line: int, context: _Context) -> None:
    for match in TEMPLATE.finditer(value):
        if match.group(1).strip():
            context.scripts.append((line, match.group(1)))


def _bool(node: Node, what: str) -> bool:
    if isinstance(node, ScalarNode) and node.tag in (_BOOL, _STR):
        value = (
            _BOOL_VALUES.get(node.value.lower())
            if node.tag == _BOOL
            else {"true": True, "false": False}.get(node.value)
        )
        if value is not None:
            return value
    shown = f" {node.value!r}" if isinstance(node, ScalarNode) else ""
    _fail(node, f"{what} must be true or false, not {_kind(node)}{shown}")


def _whole_number(node: Node, what: str, context: _Context) -> int | str:
    """A whole number (decimal digits, `_` allowed as Maestro allows), or a string holding ${…}."""
    if isinstance(node, ScalarNode) and node.tag in (_INT, _STR, _FLOAT):
        if node.tag == _STR and is_template(node.value):
            return _text(node, what, context)
        if _WHOLE_NUMBER.fullmatch(node.value):
            return int(node.value.replace("_", ""))
        if node.tag == _FLOAT and _NUMBER.fullmatch(node.value) and float(node.value.replace("_", "")).is_integer():
            return int(float(node.value.replace("_", "")))
    shown = f" {node.value!r}" if isinstance(node, ScalarNode) else ""
    _fail(node, f"{what} must be a whole number, not {_kind(node)}{shown}")


def _number(node: Node, what: str, context: _Context) -> int | float | str:
    if isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT, _STR):
        if node.tag == _STR and is_template(node.value):
            return _text(node, what, context)
        if _NUMBER.fullmatch(node.value.strip()):
            number = float(node.value.strip().replace("_", ""))
            return (
                int(number)
                if number.is_integer() and "." not in node.value and "e" not in node.value.lower()
                else number
            )
    shown = f" {node.value!r}" if isinstance(node, ScalarNode) else ""
    _fail(node, f"{what} must be a number, not {_kind(node)}{shown}")


def check_timeout(value: int, what: str) -> str | None:
    if value <= 0:
        return f"{what} must be more than 0 ms, not {value}"
    if value > MAX_TIMEOUT_MS:
        return f"{what} is {value} ms; the limit is {MAX_TIMEOUT_MS} ms"
    return None


def enum_value(value: str, arg: Arg) -> str | None:
    """The canonical spelling of an allowed value, or None."""
    if arg.choices == C.ORIENTATIONS:
        return C.orientation(value)
    if arg.choices == C.ON_OFF:
        return value if value in C.ON_OFF else None
    return next((c for c in arg.choices if c.lower() == value.strip().lower()), None)


def point_problem(value: str) -> str | None:
    """Why ``value`` is not a point (`x,y` in pixels or `x%,y%`), or None."""
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2:
        return f"a point is `x,y` (pixels) or `x%,y%`, not {value!r}"
    percent = ["%" in p for p in parts]
    if any(percent) and not all(percent):
        return f"a point uses pixels or percentages for both x and y, not {value!r}"
    for part in parts:
        digits = part.rstrip("%").strip()
        if not re.fullmatch(r"[0-9]+", digits):
            return f"a point's coordinates are whole numbers, not {value!r}"
        if part.endswith("%") and int(digits) > 100:
            return f"a percentage is at most 100, not {value!r}"
    return None


def _path_text(node: Node, what: str, context: _Context) -> str:
    value = _text(node, what, context)
    if is_template(value):
        _fail(node, f"{what} cannot use variables (${{…}}): Maestro reads the file when it loads the flow")
    return value


# --- header ---------------------------------------------------------------------------------------


def _parse_header(node: Node, context: _Context) -> dict[str, Any]:
    if not isinstance(node, MappingNode):
        _fail(node, f"the header before `---` must be a mapping (appId, name, tags, …), not {_kind(node)}")
    out: dict[str, Any] = {"app_id": None, "name": None}
    for name, key, value in _entries(node, "header"):
        if name == "url":
            _fail(key, "web flows (url) are not supported: qualgent tests Android and iOS apps")
        if name == "appId":
            out["app_id"] = _text(value, "appId", context)
        elif name == "name":
            out["name"] = _text(value, "name", context)
        elif name == "tags":
            out["tags"] = tuple(_string_list(value, "tags", context))
        elif name == "env":
            out["env"] = _env(value, "env", context)
        elif name in ("onFlowStart", "onFlowComplete"):
            if _is_null(value):
                continue
            hook = _parse_commands(value, context, name)
            out["on_flow_start" if name == "onFlowStart" else "on_flow_complete"] = hook
        elif name == "jsEngine":
            engine = _text(value, "jsEngine", context).lower()
            if engine not in C.JS_ENGINES:
                _fail(value, f"jsEngine must be graaljs or rhino, not {value.value!r}")
            out["js_engine"] = engine
        elif name == "properties":
            if not isinstance(value, MappingNode):
                _fail(value, f"properties must be a mapping, not {_kind(value)}")
            out["properties"] = {
                prop: _text(item, f"properties {prop}", context, allow_empty=True)
                for prop, _, item in _entries(value, "properties")
            }
        elif name == "androidWebViewHierarchy":
            _text(value, name, context)
        else:
            # Maestro keeps unknown header keys and ignores them; a near-miss of a known one is a typo.
            near = suggest(name, C.HEADER_KEYS) or next(
                (f"; did you mean `{k}`?" for k in C.HEADER_KEYS if sorted(k.lower()) == sorted(name.lower())), ""
            )
            lowered = name.lower()
            close = difflib.get_close_matches(lowered, [k.lower() for k in C.HEADER_KEYS], n=1, cutoff=0.8) or [
                k
                for k in C.HEADER_KEYS
                if sorted(k.lower()) == sorted(lowered)  # swapped letters: `nmae`
            ]
            if close:
                _fail(key, f"header: unknown key `{name}`{near}")
    return out


def _string_list(node: Node, what: str, context: _Context) -> list[str]:
    if isinstance(node, ScalarNode) and node.tag != _NULL:
        return [_text(node, what, context)]
    if not isinstance(node, SequenceNode):
        _fail(node, f"{what} must be a list of strings, not {_kind(node)}")
    return [_text(item, f"an entry of {what}", context) for item in node.value]


def _env(node: Node, what: str, context: _Context) -> dict[str, str]:
    if _is_null(node):
        return {}
    if not isinstance(node, MappingNode):
        _fail(node, f"{what} must be a mapping of names to values, not {_kind(node)}")
    out: dict[str, str] = {}
    for name, key, value in _entries(node, what):
        if not _VARIABLE.fullmatch(name):
            _fail(key, f"{what}: `{name}` is not a variable name (letters, digits and _, not starting with a digit)")
        if _is_null(value):
            _fail(value, f"{what}: `{name}` has no value")
        out[name] = _text(value, f"{what} {name}", context, allow_empty=True)
    return out


# --- commands -------------------------------------------------------------------------------------


def _parse_commands(node: Node, context: _Context, what: str) -> tuple[Command, ...]:
    if not isinstance(node, SequenceNode):
        _fail(node, f"{what} must be a YAML list (each step starts with `- `), not {_kind(node)}")
    if len(node.value) > MAX_STEPS:
        _fail(node.value[MAX_STEPS], f"{what} has more than {MAX_STEPS} steps")
    return tuple(_parse_command(item, context) for item in node.value)


def _parse_command(node: Node, context: _Context) -> Command:
    context.count += 1
    if context.count > MAX_COMMANDS:
        _fail(node, f"the flow has more than {MAX_COMMANDS} commands")
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
    name = _canonical(name_node.value)
    if name == "action":
        if argument is None or not isinstance(argument, ScalarNode) or argument.value not in C.ACTIONS:
            _fail(name_node, f"action must be one of {', '.join(C.ACTIONS)}")
        name, argument = argument.value, None
    spec = C.SPECS.get(name)
    if spec is None:
        _fail(name_node, f"unknown command `{name}`{suggest(name, C.COMMAND_NAMES)}")
    if spec.refused is not None:
        _fail(name_node, f"`{name}`: {spec.refused}")
    return _parse_arguments(spec, _line(node), argument, context)


def _parse_arguments(spec: Spec, line: int, argument: Node | None, context: _Context) -> Command:
    """A command from any of its forms (bare, scalar shorthand, mapping)."""
    if argument is None:
        if not spec.bare:
            needs = f"`{spec.shorthand}`" if spec.shorthand is not None else "arguments"
            raise FlowError(line, f"{spec.name} needs {needs}")
        return _finish(spec, line, {}, {}, context)
    if isinstance(argument, MappingNode):
        raw: dict[str, tuple[ScalarNode, Node]] = {}
        for name, key, value in _entries(argument, spec.name):
            if name not in spec.args:
                expected = ", ".join(f"`{n}`" for n in spec.args)
                _fail(
                    key, f"{spec.name}: unknown argument `{name}`{suggest(name, list(spec.args))} (expected {expected})"
                )
            raw[name] = (key, value)
        return _finish(spec, line, raw, {}, context)
    if spec.shorthand is None:
        forms = "a mapping of arguments" if spec.args.keys() - C.COMMON.keys() else "no arguments"
        _fail(argument, f"{spec.name} takes {forms}, not {_kind(argument)}")
    arg = spec.args[spec.shorthand]
    if isinstance(argument, SequenceNode) and arg.kind not in (Kind.MEDIA_FILES, Kind.COMMANDS):
        _fail(argument, f"{spec.name} takes `{spec.shorthand}` as a string or a mapping of arguments, not a list")
    key = ScalarNode(_STR, spec.shorthand, argument.start_mark, argument.end_mark)
    return _finish(spec, line, {spec.shorthand: (key, argument)}, {"shorthand": True}, context)


def _finish(
    spec: Spec, line: int, raw: Mapping[str, tuple[ScalarNode, Node]], form: Mapping[str, bool], context: _Context
) -> Command:
    args: dict[str, Value] = {}
    label: str | None = None
    optional = False
    when: Condition | None = None
    commands: tuple[Command, ...] = ()
    file: str | None = None
    for name, (_key, node) in raw.items():
        arg = spec.args[name]
        what = f"{spec.name} {name}"
        if name == "label":
            label = _text(node, what, context)
        elif name == "optional":
            optional = _bool(node, what)
        elif name == "when":
            when = _condition(node, what, context)
        elif arg.kind is Kind.COMMANDS:
            commands = _parse_commands(node, context, what)
        elif arg.kind in (Kind.FLOW_FILE, Kind.SCRIPT_FILE):
            file = _path_text(node, what, context)
            context.references.append((_line(node), arg.kind, file))
        else:
            args[name] = _value(arg, node, what, context)
    if spec.selector:
        for key in ("text", "id"):
            if args.get(key) == "":
                raise FlowError(line, f"{spec.name} {key} must not be empty")
        selector_keys = C.SELECTOR_KEYS & args.keys()
        if not selector_keys:
            raise FlowError(line, f"{spec.name} needs an element: `text`, `id` or another selector field")
        if "point" in args and not is_template(args["point"]):
            problem = point_problem(str(args["point"]))
            if problem:
                raise FlowError(line, f"{spec.name} point: {problem}")
    present = set(args) | ({"commands"} if commands else set()) | ({"file"} if file is not None else set())
    for name, arg in spec.args.items():
        if arg.required and name not in present:
            raise FlowError(line, f"{spec.name} needs `{name}`")
    for group in spec.one_of:
        given = [name for name in group if name in present]
        if not given:
            raise FlowError(line, f"{spec.name} needs {' or '.join(f'`{n}`' for n in group)}")
        if spec.exclusive and len(given) > 1:
            raise FlowError(line, f"{spec.name} takes {' or '.join(f'`{n}`' for n in group)}, not both")
    _check_command(spec, line, args, raw, context)
    return Command(
        name=spec.name,
        line=line,
        path=context.path,
        args=args,
        label=label,
        optional=optional,
        when=when,
        commands=commands,
        file=file,
    )


def _check_command(
    spec: Spec, line: int, args: dict[str, Value], raw: Mapping[str, tuple[ScalarNode, Node]], context: _Context
) -> None:
    """Rules that involve several arguments, or that only some commands have."""
    name = spec.name
    if name == "swipe":
        has_points = "start" in args or "end" in args
        if has_points and not ("start" in args and "end" in args):
            raise FlowError(line, "swipe needs both `start` and `end`")
        if has_points and ("direction" in args or "from" in args):
            raise FlowError(line, "swipe takes `start` and `end`, or `direction` (with `from`), not both")
        if not has_points and "direction" not in args:
            raise FlowError(line, "swipe needs `direction` (UP, DOWN, LEFT or RIGHT), or `start` and `end`")
        literal = has_points and not (is_template(args["start"]) or is_template(args["end"]))
        if literal and ("%" in str(args["start"])) != ("%" in str(args["end"])):
            raise FlowError(line, "swipe `start` and `end` must both be percentages, or both pixels")
    elif name in ("takeScreenshot", "startRecording"):
        path = args.get("path")
        if isinstance(path, str) and not is_template(path):
            parts = re.split(r"[/\\]", path)
            if path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", path) or ".." in parts or "\0" in path:
                raise FlowError(line, f"{name} path must be a relative name, without `..` or a leading `/`")
    for key in ("timeout", "waitToSettleTimeoutMs"):
        value = args.get(key)
        if isinstance(value, int):
            problem = check_timeout(value, f"{name} {key}")
            if problem:
                raise FlowError(_line(raw[key][1]), problem)


def _value(arg: Arg, node: Node, what: str, context: _Context) -> Value:
    kind = arg.kind
    if kind is Kind.TEXT:
        return _text(node, what, context, allow_empty=True)
    if kind is Kind.INT:
        return _whole_number(node, what, context)
    if kind is Kind.NUMBER:
        return _number(node, what, context)
    if kind is Kind.BOOL:
        return _bool(node, what)
    if kind is Kind.ENUM:
        value = _text(node, what, context)
        if not is_template(value):
            canonical = enum_value(value, arg)
            if canonical is None:
                _fail(node, f"{what} must be one of {', '.join(arg.choices)}, not {value!r}")
            return canonical
        return value
    if kind is Kind.SELECTOR:
        return _selector(node, what, context)
    if kind is Kind.SELECTORS:
        if not isinstance(node, SequenceNode):
            _fail(node, f"{what} must be a list of selectors, not {_kind(node)}")
        return [_selector(item, what, context) for item in node.value]
    if kind is Kind.CONDITION:
        return _condition(node, what, context)
    if kind is Kind.ENV:
        return _env(node, what, context)
    if kind is Kind.PERMISSIONS:
        if not isinstance(node, MappingNode):
            _fail(node, f"{what} must be a mapping such as `all: allow`, not {_kind(node)}")
        permissions: dict[str, str] = {}
        for name, _, item in _entries(node, what):
            text = _text(item, f"{what} {name}", context)
            if not is_template(text) and text.lower() not in C.PERMISSION_VALUES:
                _fail(item, f"{what} {name} must be allow, deny or unset, not {text!r}")
            permissions[name] = text if is_template(text) else text.lower()
        return permissions
    if kind is Kind.ARGUMENTS:
        if not isinstance(node, MappingNode):
            _fail(node, f"{what} must be a mapping of names to values, not {_kind(node)}")
        arguments: dict[str, Value] = {}
        for name, _, item in _entries(node, what):
            if isinstance(item, ScalarNode) and item.tag == _BOOL:
                arguments[name] = _bool(item, what)
            elif isinstance(item, ScalarNode) and item.tag in (_INT, _FLOAT):
                arguments[name] = _number(item, what, context)
            else:
                arguments[name] = _text(item, f"{what} {name}", context, allow_empty=True)
        return arguments
    if kind is Kind.POINT:
        value = _text(node, what, context)
        if not is_template(value):
            problem = point_problem(value)
            if problem:
                _fail(node, f"{what}: {problem}")
        return value
    if kind is Kind.KEY:
        value = _path_text(node, what, context)
        code = C.key_code(value)
        if code is None:
            _fail(node, f"{what}: unknown key {value!r}{suggest(value, list(C.KEYS.values()))}")
        return code
    if kind is Kind.GEO_POINTS:
        if not isinstance(node, SequenceNode) or not node.value:
            _fail(node, f'{what} must be a list of points such as "46.2,6.1", not {_kind(node)}')
        points = []
        for item in node.value:
            point = _text(item, f"an entry of {what}", context)
            if is_template(point):
                _fail(item, f"{what}: Maestro reads travel points when it loads the flow, so they cannot use ${{…}}")
            parts = point.split(",")
            if len(parts) != 2 or not all(_NUMBER.fullmatch(p.strip()) for p in parts):
                _fail(item, f'{what}: a point is "latitude,longitude", not {point!r}')
            points.append(point)
        return points
    if kind in (Kind.MEDIA_FILES,):
        items = node.value if isinstance(node, SequenceNode) else [node]
        if not items:
            _fail(node, f"{what}: list at least one file")
        files = []
        for item in items:
            path = _path_text(item, f"an entry of {what}", context)
            context.references.append((_line(item), Kind.MEDIA_FILES, path))
            files.append(path)
        return files
    if kind is Kind.REFERENCE_IMAGE:
        path = _text(node, what, context)
        if not is_template(path):
            context.references.append((_line(node), Kind.REFERENCE_IMAGE, path))
        return path
    if kind is Kind.PATH:
        return _text(node, what, context)
    raise AssertionError(f"no parser for {kind}")  # pragma: no cover - every Kind is handled above


def _selector(node: Node, what: str, context: _Context) -> dict[str, Value]:
    """A selector: a string (its text) or a mapping of selector fields."""
    if isinstance(node, ScalarNode) and node.tag != _NULL:
        return {"text": _text(node, what, context)}
    if not isinstance(node, MappingNode):
        _fail(node, f"{what} must be a text or a mapping of selector fields, not {_kind(node)}")
    out: dict[str, Value] = {}
    for name, key, value in _entries(node, what):
        arg = C.SELECTOR_FIELDS.get(name)
        if arg is None:
            if name in ("optional", "label") or name in C.TAP_OPTIONS:
                continue  # accepted in every selector by Maestro, meaningless here
            _fail(key, f"{what}: unknown selector field `{name}`{suggest(name, list(C.SELECTOR_FIELDS))}")
        out[name] = _value(arg, value, f"{what} {name}", context)
    if not C.SELECTOR_KEYS & out.keys():
        _fail(node, f"{what}: give at least one of `text`, `id` or another selector field")
    return out


def _condition(node: Node, what: str, context: _Context) -> Condition:
    if not isinstance(node, MappingNode):
        _fail(node, f"{what} must be a mapping (platform, visible, notVisible, true), not {_kind(node)}")
    parts: dict[str, Any] = {}
    for name, key, value in _entries(node, what):
        if name == "platform":
            platform = _text(value, f"{what} platform", context)
            canonical = next((p for p in C.PLATFORMS if p.lower() == platform.lower()), None)
            if canonical is None:
                _fail(value, f"{what} platform must be Android, iOS or Web, not {platform!r}")
            parts["platform"] = canonical
        elif name in ("visible", "notVisible"):
            parts["visible" if name == "visible" else "not_visible"] = _selector(value, f"{what} {name}", context)
        elif name == "true":  # YAML reads the key `true` as a boolean; its text is what counts
            # Its ${…} parts are JavaScript; the text that results is then tested for truth.
            parts["script"] = _text(value, f"{what} true", context, allow_empty=True)
        elif name == "label":
            parts["label"] = _text(value, f"{what} label", context)
        elif name == "optional":
            _bool(value, f"{what} optional")
        else:
            _fail(
                key, f"{what}: unknown condition `{name}`{suggest(name, ['platform', 'visible', 'notVisible', 'true'])}"
            )
    return Condition(line=_line(node), **parts)
