"""Flows as parsed (``Command``, ``Flow``) and device steps as executed (``Step``, ``Selector``).

``flows.parse`` turns a Maestro flow's YAML into a ``Flow``: its header and a tree of ``Command``s,
whose arguments are kept as written (strings may hold ``${…}``, resolved when the step runs).
``flows.engine`` walks that tree on an agent, runs the language itself (variables, JavaScript,
``runFlow``, ``repeat``, ``retry``, conditions, hooks) and hands each device action to a driver as a
``Step``: one command with its arguments resolved and typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# ``Value``: what a parsed argument holds: str | int | float | bool | None | list[Value] | dict[str, Value].
Value = Any


@dataclass(frozen=True)
class Condition:
    """``when:`` of runFlow/runScript, ``while:`` of repeat: every given part must hold."""

    line: int
    platform: str | None = None  # Android | iOS | Web (case-insensitive)
    visible: Mapping[str, Value] | None = None  # a selector, arguments as written
    not_visible: Mapping[str, Value] | None = None
    script: str | None = None  # `true:` — a JavaScript condition, usually written `${…}`
    label: str | None = None

    def describe(self) -> str:
        if self.label:
            return self.label
        parts = []
        if self.platform is not None:
            parts.append(f"platform is {self.platform}")
        if self.script is not None:
            parts.append(self.script)
        for key, selector in (("visible", self.visible), ("not visible", self.not_visible)):
            if selector is not None:
                parts.append(f"{describe('', selector).strip()} is {key}")
        return " and ".join(parts) or "always"


@dataclass(frozen=True)
class Command:
    """One command of a flow, as written: its Maestro name and its arguments (not yet interpolated)."""

    name: str
    line: int  # 1-based line of the command in its file
    path: str = ""  # the file it is written in: "" for the test case's own flow, else its bundle path
    args: Mapping[str, Value] = field(default_factory=dict)
    label: str | None = None
    optional: bool = False
    when: Condition | None = None
    commands: tuple[Command, ...] = ()  # runFlow `commands:`, repeat and retry bodies
    file: str | None = None  # runFlow / retry / runScript / addMedia…: the referenced file's bundle path

    def describe(self) -> str:
        """One line a person reads in a report, e.g. ``tapOn "Sign in"`` (the label when there is one)."""
        if self.label:
            return self.label
        return describe(self.name, self.args, self.file)


def describe(name: str, args: Mapping[str, Value], file: str | None = None) -> str:
    if file is not None and name in ("runFlow", "retry", "runScript"):
        return f"{name} {file}"
    for key in ("text", "id", "link", "appId", "script", "condition", "key", "direction", "path"):
        value = args.get(key)
        if isinstance(value, str) and value:
            shown = value if len(value) <= 80 else value[:77] + "…"
            return f'{name} "{shown}"' if key in ("text", "link", "script", "condition") else f"{name} {key} {shown}"
    for key in ("visible", "notVisible", "element"):
        inner = args.get(key)
        if isinstance(inner, Mapping):
            return f"{name} {key} {describe('', inner).strip()}"
    if name == "repeat":
        parts = [name]
        if args.get("times") is not None:
            parts.append(f"{args['times']} times")
        condition = args.get("while")
        if isinstance(condition, Condition):
            parts.append(f"while {condition.describe()}")
        return " ".join(parts)
    return name


@dataclass(frozen=True)
class Flow:
    """A parsed flow file: its header and its commands."""

    app_id: str | None = None
    name: str | None = None
    tags: tuple[str, ...] = ()
    commands: tuple[Command, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # as written; values may hold ${…}
    on_flow_start: tuple[Command, ...] = ()
    on_flow_complete: tuple[Command, ...] = ()
    path: str = ""  # bundle path ("" for the test case's own flow)
    js_engine: str | None = None  # accepted: one engine serves both `rhino` and `graaljs`
    properties: Mapping[str, str] = field(default_factory=dict)

    @property
    def steps(self) -> tuple[Command, ...]:
        return self.commands

    def count(self) -> int:
        """Commands written in this file (hooks and nested bodies included, subflow files not)."""

        def walk(commands: tuple[Command, ...]) -> int:
            return sum(1 + walk(c.commands) for c in commands)

        return walk(self.on_flow_start) + walk(self.commands) + walk(self.on_flow_complete)


@dataclass(frozen=True)
class Selector:
    """What a device step points at, resolved: Maestro's element selector.

    ``text`` and ``id`` are regular expressions matched against the whole value (as Maestro does);
    the relative selectors hold selectors of their own.
    """

    text: str | None = None
    id: str | None = None
    index: int | None = None
    point: str | None = None  # "50%,50%" or "120,480"
    below: Selector | None = None
    above: Selector | None = None
    left_of: Selector | None = None
    right_of: Selector | None = None
    child_of: Selector | None = None
    contains_child: Selector | None = None
    contains_descendants: tuple[Selector, ...] = ()
    enabled: bool | None = None
    checked: bool | None = None
    focused: bool | None = None
    selected: bool | None = None
    width: int | None = None
    height: int | None = None
    tolerance: int | None = None
    traits: str | None = None
    css: str | None = None

    def describe(self) -> str:
        parts = []
        if self.id is not None:
            parts.append(f'id "{self.id}"')
        if self.text is not None:
            parts.append(f'"{self.text}"')
        if self.point is not None and not parts:
            parts.append(f"point {self.point}")
        if self.index is not None:
            parts.append(f"index {self.index}")
        for name in ("below", "above", "left_of", "right_of", "child_of", "contains_child"):
            other = getattr(self, name)
            if other is not None:
                parts.append(f"{name.replace('_', ' ')} {other.describe()}")
        for name in ("enabled", "checked", "focused", "selected"):
            value = getattr(self, name)
            if value is not None:
                parts.append(name if value else f"not {name}")
        return " ".join(parts) or "any element"


@dataclass(frozen=True)
class Step:
    """A device action as a driver runs it: the command with its arguments resolved.

    The common arguments have fields of their own; every resolved argument is also in ``args``
    (Maestro's names), for the commands and options a driver reads from there.
    """

    index: int  # the step's number in the run's report
    line: int  # 1-based line in its file
    command: str
    selector: Selector | None = None
    text: str | None = None  # inputText, setClipboard, the text an inputRandom… step types
    direction: str | None = None  # swipe / scroll / scrollUntilVisible: UP | DOWN | LEFT | RIGHT
    app_id: str | None = None  # launchApp / stopApp / killApp / clearState / setPermissions
    clear_state: bool = False  # launchApp clearState
    optional: bool = False  # a failure does not fail the run
    timeout_ms: int | None = None  # waits: how long to look
    label: str | None = None  # takeScreenshot / startRecording: the file's name
    args: Mapping[str, Value] = field(default_factory=dict)
    path: str = ""  # the file the step is written in
    # Files of the test case the step uses (addMedia's media, assertScreenshot's reference), by path.
    attachments: Mapping[str, bytes] = field(default_factory=dict)
    display: str | None = None  # the description with secrets masked, when it differs

    def describe(self) -> str:
        """One line a person reads in a report, e.g. ``tapOn "Sign in"``."""
        if self.display is not None:
            return self.display
        if self.selector is not None:
            return f"{self.command} {self.selector.describe()}"
        if self.text is not None:
            return f'{self.command} "{self.text}"'
        if self.direction is not None:
            return f"{self.command} {self.direction}"
        if self.label is not None:
            return f"{self.command} {self.label}"
        if self.app_id is not None and self.command != "launchApp":
            return f"{self.command} {self.app_id}"
        return describe(self.command, self.args)


class FlowError(ValueError):
    """A flow that cannot run; ``line`` is the 1-based line of the problem in the file ``path`` (None: the
    main flow; otherwise a path inside the test case's files, e.g. ``subflows/login.yaml``)."""

    def __init__(self, line: int | None, message: str, path: str | None = None) -> None:
        self.line = line
        self.message = message
        self.path = path
        super().__init__(message)

    def __str__(self) -> str:
        # Built when shown: the file may be named after the error was raised (a subflow's parse).
        return self.where() + self.message

    def where(self) -> str:
        """``"subflows/login.yaml line 3: "``, ``"line 3: "`` or ``""``."""
        place = " ".join(part for part in (self.path, f"line {self.line}" if self.line else None) if part)
        return f"{place}: " if place else ""
