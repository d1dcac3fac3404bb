"""A parsed flow: the typed steps a driver executes. Produced by ``flows.parse.parse_flow``."""

from __future__ import annotations

from dataclasses import dataclass, field

# Every command of the supported subset of Maestro's flow syntax.
COMMANDS = (
    "launchApp",
    "stopApp",
    "tapOn",
    "inputText",
    "assertVisible",
    "assertNotVisible",
    "back",
    "scroll",
    "swipe",
    "waitForAnimationToEnd",
    "takeScreenshot",
)


@dataclass(frozen=True)
class Selector:
    """What a step points at: visible text, or an element id (resource id / accessibility id)."""

    text: str | None = None
    id: str | None = None

    def describe(self) -> str:
        return f'id "{self.id}"' if self.id is not None else f'"{self.text}"'


@dataclass(frozen=True)
class Step:
    index: int  # 0-based position in the flow
    line: int  # 1-based line of the step in the flow's YAML text
    command: str  # one of COMMANDS
    selector: Selector | None = None  # tapOn, assertVisible, assertNotVisible
    text: str | None = None  # inputText
    direction: str | None = None  # swipe: UP | DOWN | LEFT | RIGHT; scroll: DOWN
    app_id: str | None = None  # launchApp/stopApp with an explicit appId
    clear_state: bool = False  # launchApp clearState
    optional: bool = False  # a failure does not fail the run
    timeout_ms: int | None = None  # waits: how long to look for the element
    label: str | None = None  # takeScreenshot: the screenshot's name

    def describe(self) -> str:
        """One line a person reads in a report, e.g. ``tapOn "Sign in"``."""
        if self.selector is not None:
            return f"{self.command} {self.selector.describe()}"
        if self.text is not None:
            return f'{self.command} "{self.text}"'
        if self.direction is not None:
            return f"{self.command} {self.direction}"
        if self.label is not None:
            return f"{self.command} {self.label}"
        return self.command


@dataclass(frozen=True)
class Flow:
    app_id: str | None
    name: str | None
    tags: tuple[str, ...] = ()
    steps: tuple[Step, ...] = field(default_factory=tuple)


class FlowError(ValueError):
    """A flow that cannot run; ``line`` is the 1-based line of the problem in the file ``path`` (None: the
    main flow; otherwise a path inside the test case's files, e.g. ``subflows/login.yaml``)."""

    def __init__(self, line: int | None, message: str, path: str | None = None) -> None:
        self.line = line
        self.message = message
        self.path = path
        super().__init__(self.where() + message)

    def where(self) -> str:
        """``"subflows/login.yaml line 3: "``, ``"line 3: "`` or ``""``."""
        place = " ".join(part for part in (self.path, f"line {self.line}" if self.line else None) if part)
        return f"{place}: " if place else ""
