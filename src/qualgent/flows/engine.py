"""Run a flow on a device: the language here, the device actions in a driver.

The engine walks a ``Bundle``'s commands as Maestro's Orchestra does: variables and ``${…}``
(JavaScript in ``flows.scripts``), ``runFlow``, ``repeat``, ``retry``, conditions, hooks, ``optional``.
Each device action becomes a ``Step`` with its arguments resolved and goes to the driver's session.

Every command is a step of the report, numbered in the order it starts; the steps inside ``runFlow``,
each ``repeat`` iteration, each ``retry`` attempt and each hook carry their parent's number, so the
report shows them nested. Values of the organisation's secrets are masked (``***``) in everything
the engine reports.

What differs from Maestro, on purpose (docs/flows.md): values passed for the run win over a flow's
``env``, and a ``runFlow``'s ``env`` wins over the subflow's own ``env`` (Maestro lets the flow's own
constants win); ``when`` works on every command.
"""

from __future__ import annotations

import functools
import random
import re
import string
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, Protocol

from qualgent.drivers.base import Artifact, DeviceSession, StepResult
from qualgent.flows import commands as C
from qualgent.flows.bundle import Bundle
from qualgent.flows.model import Command, Condition, Flow, Selector, Step, Value
from qualgent.flows.parse import TEMPLATE, check_timeout, enum_value, is_template, point_problem
from qualgent.flows.paths import reference_image, resolve
from qualgent.flows.scripts import ScriptEngine, ScriptError

StepStatus = Literal["passed", "failed", "skipped"]

MAX_STEPS_PER_RUN: Final = 10_000
CONDITION_TIMEOUT_MS: Final = 7_000  # Maestro's lookup for `when: visible` / `notVisible`
EXTENDED_WAIT_MS: Final = 17_000  # extendedWaitUntil's default
MAX_RETRIES: Final = 3
DEFAULT_ERASE: Final = 50
MAX_RANDOM_LENGTH: Final = 1000
MASK: Final = "***"
_ESCAPED_TEMPLATE = re.compile(r"\\(\$\{[^$]*})")


@dataclass
class StepRecord:
    """A step as reported: its place in the tree and how it went."""

    index: int
    parent: int | None
    depth: int
    description: str
    status: StepStatus
    message: str = ""
    logs: list[str] = field(default_factory=list)
    duration_ms: int = 0
    screenshot: bytes | None = None
    artifacts: list[Artifact] = field(default_factory=list)  # stopRecording: the video

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "parent": self.parent,
            "depth": self.depth,
            "description": self.description,
            "status": self.status,
            "message": self.message,
            "logs": self.logs,
            "duration_ms": self.duration_ms,
        }


class Reporter(Protocol):
    async def step(self, record: StepRecord, progress: int | None) -> None:
        """A finished step (children are reported before their parent); ``progress`` in percent, or None."""
        ...


@dataclass
class Outcome:
    status: Literal["passed", "failed"]
    failure: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunValues:
    """What the run brings besides the flow: the device and the values passed for the run."""

    platform: str  # android | ios
    device_id: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)  # run env and secrets: they win over flows' env
    secrets: Sequence[str] = ()  # values to mask in reports
    flow_name: str = ""  # MAESTRO_FILENAME of the main flow
    shard_index: int = 0


class _Failed(Exception):
    """A step failed. ``assertion``: a Maestro-kind failure (element not found, assertion false), which
    ``optional`` turns into a warning and ``retry`` tries again; other failures (JavaScript errors,
    bad values) fail the flow whatever the step says."""

    def __init__(self, message: str, *, assertion: bool, step: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.assertion = assertion
        self.step = step


@dataclass(frozen=True)
class _Scope:
    """Where a command runs: its flow file (for paths and the default appId) and its place in the tree."""

    flow: Flow
    parent: int | None
    depth: int


def truthy(text: str) -> bool:
    """Maestro's truth of a condition's text: false when blank, "false", "undefined", "null" or 0."""
    value = text.strip()
    if not value or value.lower() == "false" or value in ("undefined", "null"):
        return False
    try:
        return float(value) != 0.0
    except ValueError:
        return True


def random_text(command: str, length: int | None) -> str:
    """What an inputRandom… command types."""
    rng = random.SystemRandom()
    size = min(max(length or 8, 1), MAX_RANDOM_LENGTH) if length is None or length > 0 else 8
    if command == "inputRandomNumber":
        return "".join(rng.choice(string.digits[1:] if i == 0 else string.digits) for i in range(size))
    if command == "inputRandomText":
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(size))
    first = rng.choice(_FIRST_NAMES)
    last = rng.choice(_LAST_NAMES)
    if command == "inputRandomEmail":
        return f"{first.lower()}.{last.lower()}{rng.randint(1, 9999)}@example.com"
    if command == "inputRandomPersonName":
        return f"{first} {last}"
    if command == "inputRandomCityName":
        return rng.choice(_CITIES)
    if command == "inputRandomCountryName":
        return rng.choice(_COUNTRIES)
    return rng.choice(_COLOURS)


_FIRST_NAMES = ("Ada", "Grace", "Alan", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Radia", "Tim")
_LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson", "Perlman")
_CITIES = ("Lisbon", "Nairobi", "Osaka", "Montreal", "Tallinn", "Valparaíso", "Hanoi", "Zurich", "Accra", "Perth")
_COUNTRIES = ("Portugal", "Kenya", "Japan", "Canada", "Estonia", "Chile", "Vietnam", "Switzerland", "Ghana")
_COLOURS = ("red", "green", "blue", "teal", "orange", "purple", "yellow", "indigo", "maroon", "olive")


class FlowRunner:
    """One run of a bundle on one device session."""

    def __init__(
        self,
        bundle: Bundle,
        session: DeviceSession,
        values: RunValues,
        reporter: Reporter,
        scripts: ScriptEngine | None = None,
    ) -> None:
        self.bundle = bundle
        self.session = session
        self.values = values
        self.reporter = reporter
        self.scripts = scripts or ScriptEngine(platform=values.platform.lower())
        self.variables: dict[str, str] = {}  # what the scripts' globals hold, for scopes to restore
        self.fixed = frozenset(values.variables)  # names a flow's env may not change
        self.masks = sorted({s for s in values.secrets if s}, key=len, reverse=True)
        self.next_index = 0
        flow = bundle.flow
        self.top_level = len(flow.commands) + bool(flow.on_flow_start) + bool(flow.on_flow_complete)
        self.top_done = 0
        self.copied_text: str | None = None
        self.console: list[str] = []  # console.log lines of ${…} outside scripts, for the current step

    # -- the run -----------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        """Run the flow; a failure is an Outcome; InfrastructureError (the device failed) propagates."""
        flow = self.bundle.flow
        scope = _Scope(flow, None, 0)
        failure: _Failed | None = None
        try:
            try:
                await self._define(self._builtins(flow), fixed_wins=True)
                await self._define(self.values.variables, fixed_wins=True)
                await self._define_env(flow.env, scope)
                if flow.on_flow_start:
                    await self._hook("onFlowStart", flow.on_flow_start, scope)
                for command in flow.commands:
                    await self._run(command, scope)
                    self.top_done += 1
            except _Failed as exc:
                failure = exc
            # The complete hook runs whether the flow passed or failed (not when the device failed).
            if flow.on_flow_complete:
                try:
                    await self._hook("onFlowComplete", flow.on_flow_complete, scope)
                except _Failed as exc:
                    failure = failure or exc
        finally:
            await self.scripts.close()
        if failure is None:
            return Outcome("passed")
        return Outcome("failed", {"kind": "test", "message": self.mask(failure.message), "step": failure.step})

    def _builtins(self, flow: Flow) -> dict[str, str]:
        return {
            "MAESTRO_FILENAME": self.values.flow_name,
            "MAESTRO_DEVICE_UDID": self.values.device_id,
            "MAESTRO_SHARD_ID": str(self.values.shard_index + 1),
            "MAESTRO_SHARD_INDEX": str(self.values.shard_index),
            "MAESTRO_PLATFORM": self.values.platform.lower(),
        }

    async def _hook(self, name: str, commands: tuple[Command, ...], scope: _Scope) -> None:
        await self._group(name, scope, lambda inner: self._run_all(commands, inner))
        if scope.depth == 0:
            self.top_done += 1

    async def _run_all(self, commands: Sequence[Command], scope: _Scope) -> StepStatus | None:
        for command in commands:
            await self._run(command, scope)
        return None

    # -- steps and groups --------------------------------------------------------------------------

    def _allocate(self) -> int:
        index = self.next_index
        if index >= MAX_STEPS_PER_RUN:
            raise _Failed(
                f"the flow ran more than {MAX_STEPS_PER_RUN} steps: a `repeat` or `retry` that never ends?",
                assertion=False,
            )
        self.next_index += 1
        return index

    def _progress(self) -> int | None:
        if not self.top_level:
            return None
        return min(99, self.top_done * 100 // self.top_level)

    async def _report(self, record: StepRecord) -> None:
        if self.console:
            record.logs = [*self.console, *record.logs]
            self.console = []
        record.description = self.mask(record.description)
        record.message = self.mask(record.message)
        record.logs = [self.mask(line) for line in record.logs]
        await self.reporter.step(record, self._progress())

    async def _group(
        self,
        description: str,
        scope: _Scope,
        body: Callable[[_Scope], Awaitable[StepStatus | None]],
        *,
        optional: bool = False,
    ) -> None:
        """A step whose children are steps: it fails when one of them does (``body`` may say it was skipped)."""
        index = self._allocate()
        started = time.monotonic()
        inner = _Scope(scope.flow, index, scope.depth + 1)
        try:
            outcome = await body(inner)
        except _Failed as exc:
            status: StepStatus = "skipped" if optional and exc.assertion else "failed"
            message = f"optional: {exc.message}" if status == "skipped" else exc.message
            await self._report(
                StepRecord(index, scope.parent, scope.depth, description, status, message, [], _ms(started))
            )
            if status == "failed":
                raise _Failed(
                    exc.message, assertion=exc.assertion, step=exc.step if exc.step is not None else index
                ) from None
            return
        await self._report(
            StepRecord(index, scope.parent, scope.depth, description, outcome or "passed", "", [], _ms(started))
        )

    async def _run(self, command: Command, scope: _Scope) -> None:
        """Run one command as one step (a group for runFlow, repeat and retry)."""
        if command.name == "runFlow":
            await self._run_flow(command, scope)
            return
        if command.name == "repeat":
            await self._repeat(command, scope)
            return
        if command.name == "retry":
            await self._retry(command, scope)
            return
        index = self._allocate()
        started = time.monotonic()
        logs: list[str] = []
        description = command.describe()
        try:
            description = await self._label(command) or description
            if command.when is not None and not await self._holds(command.when, scope, logs):
                logs.append("condition not met: skipped")
                await self._report(
                    StepRecord(index, scope.parent, scope.depth, description, "skipped", "", logs, _ms(started))
                )
                return
            result, shown = await self._perform(command, scope, index, logs)
            description = await self._label(command) or shown or description
        except _Failed as exc:
            status: StepStatus = "skipped" if command.optional and exc.assertion else "failed"
            message = f"optional step did not pass: {exc.message}" if status == "skipped" else exc.message
            await self._report(
                StepRecord(index, scope.parent, scope.depth, description, status, message, logs, _ms(started))
            )
            if status == "failed":
                raise _Failed(
                    self._where(command, index, description, exc.message), assertion=exc.assertion, step=index
                ) from None
            return
        logs.extend(result.logs)
        record = StepRecord(
            index,
            scope.parent,
            scope.depth,
            description,
            result.status,
            result.message,
            logs,
            _ms(started),
            result.screenshot,
            result.artifacts,
        )
        if result.status == "failed" and command.optional:
            record.status = "skipped"
            record.message = f"optional step did not pass: {result.message}"
        await self._report(record)
        if record.status == "failed":
            raise _Failed(self._where(command, index, description, result.message), assertion=True, step=index)

    def _where(self, command: Command, index: int, description: str, message: str) -> str:
        place = f"{command.path} line {command.line}" if command.path else f"line {command.line}"
        return f"Step {index + 1} ({description}, {place}) failed: {message}"

    async def _label(self, command: Command) -> str | None:
        if command.label is None:
            return None
        return await self.interpolate(command.label)

    # -- control flow ------------------------------------------------------------------------------

    async def _run_flow(self, command: Command, scope: _Scope) -> None:
        description = await self._label(command) or command.describe()
        if command.when is not None:
            logs: list[str] = []
            if not await self._holds(command.when, scope, logs):
                index = self._allocate()
                logs.append("condition not met: skipped")
                await self._report(StepRecord(index, scope.parent, scope.depth, description, "skipped", "", logs))
                return
        env = await self._evaluate_env(command.args.get("env") or {})

        async def body(inner: _Scope) -> StepStatus | None:
            await self._subflow(command, inner, env)
            return None

        await self._scoped(lambda: self._group(description, scope, body, optional=command.optional))

    async def _subflow(self, command: Command, scope: _Scope, env: Mapping[str, str]) -> None:
        """A runFlow's or retry's body: its file's commands (with the file's env and hooks), or inline ones."""
        await self._define(env, fixed_wins=False)
        if command.file is None:
            await self._run_all(command.commands, scope)
            return
        flow = self.bundle.flows[resolve(command.path, command.file)]
        inner = _Scope(flow, scope.parent, scope.depth)
        # A runFlow's env wins over the subflow's own, which may use it (`${NAME || 'guest'}`); values
        # passed for the run win over both.
        own = {name: value for name, value in flow.env.items() if name not in env}
        await self._define(await self._evaluate_env(own), fixed_wins=False)
        failure: _Failed | None = None
        try:
            if flow.on_flow_start:
                await self._hook("onFlowStart", flow.on_flow_start, inner)
            await self._run_all(flow.commands, inner)
        except _Failed as exc:
            failure = exc
        finally:
            if flow.on_flow_complete:
                try:
                    await self._hook("onFlowComplete", flow.on_flow_complete, inner)
                except _Failed as exc:
                    failure = failure or exc
        if failure is not None:
            raise failure

    async def _repeat(self, command: Command, scope: _Scope) -> None:
        description = await self._label(command) or command.describe()
        times = command.args.get("times")
        limit: int | None = None
        if times is not None:
            text = await self.interpolate(str(times))
            try:
                limit = int(float(text.replace("_", "")))
            except ValueError:
                limit = None  # Maestro: not a number means no limit
        condition = command.args.get("while")
        if command.when is not None and not await self._holds(command.when, scope, []):
            index = self._allocate()
            await self._report(
                StepRecord(index, scope.parent, scope.depth, description, "skipped", "", ["condition not met: skipped"])
            )
            return

        async def commands_body(inner: _Scope) -> StepStatus | None:
            return await self._run_all(command.commands, inner)

        async def body(inner: _Scope) -> StepStatus | None:
            ran = 0
            while limit is None or ran < limit:
                if isinstance(condition, Condition) and not await self._holds(condition, inner, []):
                    break
                ran += 1
                await self._scoped(functools.partial(self._group, f"iteration {ran}", inner, commands_body))
            # Maestro reports a repeat that never ran as skipped.
            return "skipped" if ran == 0 else None

        await self._group(description, scope, body, optional=command.optional)

    async def _retry(self, command: Command, scope: _Scope) -> None:
        description = await self._label(command) or command.describe()
        if command.when is not None and not await self._holds(command.when, scope, []):
            index = self._allocate()
            await self._report(
                StepRecord(index, scope.parent, scope.depth, description, "skipped", "", ["condition not met: skipped"])
            )
            return
        retries = 1
        if command.args.get("maxRetries") is not None:
            text = await self.interpolate(str(command.args["maxRetries"]))
            try:
                retries = int(float(text))
            except ValueError:
                retries = 1
        retries = max(0, min(retries, MAX_RETRIES))
        env = await self._evaluate_env(command.args.get("env") or {})

        async def attempt_body(inner: _Scope) -> StepStatus | None:
            await self._subflow(command, inner, env)
            return None

        async def body(inner: _Scope) -> StepStatus | None:
            for attempt in range(1, retries + 2):
                try:
                    await self._scoped(
                        functools.partial(self._group, f"attempt {attempt} of {retries + 1}", inner, attempt_body)
                    )
                    return None
                except _Failed as exc:
                    # Only what Maestro retries: a step that did not pass, not a script error.
                    if not exc.assertion or attempt == retries + 1:
                        raise
            return None

        await self._group(description, scope, body, optional=command.optional)

    async def _scoped(self, work: Callable[[], Awaitable[None]]) -> None:
        """Variables defined inside (runFlow, retry, a repeat iteration) are forgotten afterwards."""
        saved = dict(self.variables)
        try:
            await work()
        finally:
            changes: dict[str, str | None] = {
                name: saved.get(name)
                for name in set(saved) | set(self.variables)
                if saved.get(name) != self.variables.get(name)
            }
            if changes:
                await self._set(changes)

    # -- variables and JavaScript ------------------------------------------------------------------

    async def _set(self, values: Mapping[str, str | None]) -> None:
        for name, value in values.items():
            if value is None:
                self.variables.pop(name, None)
            else:
                self.variables[name] = value
        await self.scripts.set_variables(dict(values))

    async def _define(self, values: Mapping[str, str], *, fixed_wins: bool) -> None:
        """Define variables; unless ``fixed_wins``, a name passed for the run keeps its run value."""
        chosen = {name: value for name, value in values.items() if fixed_wins or name not in self.fixed}
        if chosen:
            await self._set(chosen)

    async def _evaluate_env(self, env: Mapping[str, Value]) -> dict[str, str]:
        """An env block's values, all evaluated before any is defined (as in Maestro)."""
        return {name: await self.interpolate(str(value)) for name, value in env.items()}

    async def _define_env(self, env: Mapping[str, str], scope: _Scope) -> None:
        await self._define(await self._evaluate_env(env), fixed_wins=False)

    async def interpolate(self, text: str) -> str:
        """Resolve every ``${…}`` of ``text`` (Maestro's rules: left to right; `\\${` stays literal)."""
        if "${" not in text:
            return text
        out: list[str] = []
        position = 0
        for match in TEMPLATE.finditer(text):
            out.append(text[position : match.start()])
            code = match.group(1)
            if code.strip():
                out.append(await self._evaluate(code, "${" + code + "}"))
            position = match.end()
        out.append(text[position:])
        return _ESCAPED_TEMPLATE.sub(r"\1", "".join(out))

    async def _evaluate(self, code: str, shown: str, logs: list[str] | None = None) -> str:
        """Run a ``${…}``; what it logs goes to ``logs``, else to the current step's log."""
        sink = logs if logs is not None else self.console
        try:
            result = await self.scripts.evaluate(code)
        except ScriptError as exc:
            sink.extend(f"console: {line}" for line in exc.logs)
            raise _Failed(f"JavaScript {exc.name} in {shown}: {exc.message}", assertion=False) from None
        sink.extend(f"console: {line}" for line in result.logs)
        return result.text

    async def _value(self, value: Value) -> Value:
        """An argument with every string in it interpolated."""
        if isinstance(value, str):
            return await self.interpolate(value)
        if isinstance(value, list):
            return [await self._value(item) for item in value]
        if isinstance(value, dict):
            return {key: await self._value(item) for key, item in value.items()}
        return value

    def mask(self, text: str) -> str:
        for secret in self.masks:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    # -- conditions --------------------------------------------------------------------------------

    async def _holds(self, condition: Condition, scope: _Scope, logs: list[str]) -> bool:
        """Every part of the condition must hold: platform, then true, then visible, then notVisible."""
        if condition.platform is not None and condition.platform.lower() != self.values.platform.lower():
            logs.append(f"platform is {self.values.platform}, not {condition.platform}")
            return False
        if condition.script is not None:
            text = await self.interpolate(condition.script)
            if not truthy(text):
                logs.append(f"{condition.script} is {text!r}: false")
                return False
        for selector_args, visible in ((condition.visible, True), (condition.not_visible, False)):
            if selector_args is None:
                continue
            selector = await self._selector(selector_args)
            probe = Step(
                index=-1,
                line=condition.line,
                command="assertVisible" if visible else "assertNotVisible",
                selector=selector,
                timeout_ms=CONDITION_TIMEOUT_MS,
                path=scope.flow.path,
            )
            result = await self.session.run_step(probe)
            logs.extend(result.logs)
            if result.status != "passed":
                logs.append(f"{selector.describe()} is {'not ' if visible else ''}visible: condition false")
                return False
        return True

    # -- commands ----------------------------------------------------------------------------------

    async def _perform(
        self, command: Command, scope: _Scope, index: int, logs: list[str]
    ) -> tuple[StepResult, str | None]:
        """Run a command that is not a group; the result and a description with values resolved."""
        name = command.name
        if name == "evalScript":
            script = str(command.args.get("script", ""))
            if not is_template(script):
                logs.append("nothing to run: evalScript runs only what is inside ${…}, as in Maestro")
            else:
                for match in TEMPLATE.finditer(script):
                    if match.group(1).strip():
                        await self._evaluate(match.group(1), "${" + match.group(1) + "}")
            return StepResult("passed"), None
        if name == "runScript":
            return await self._run_script(command, logs), None
        if name == "assertTrue":
            written = str(command.args.get("condition", ""))
            text = await self.interpolate(written)
            if not truthy(text):
                raise _Failed(f"assertion is false: {written} is {text!r}", assertion=True)
            return StepResult("passed"), None
        if name == "setClipboard":
            text = await self.interpolate(str(command.args.get("text", "")))
            await self._copied(text)
            return StepResult("passed"), f'setClipboard "{text}"'
        step = await self._step(command, scope, index)
        if name == "extendedWaitUntil":
            return await self._extended_wait(step), step.describe()
        result = await self.session.run_step(step)
        if name == "copyTextFrom" and result.status == "passed":
            if result.value is None:
                raise _Failed(f"{step.describe()}: the element has no text to copy", assertion=True)
            await self._copied(result.value)
            result.logs.append(f"copied {result.value!r}")
        return result, step.describe()

    async def _copied(self, text: str) -> None:
        self.copied_text = text
        await self.scripts.set_maestro(copiedText=text)

    async def _run_script(self, command: Command, logs: list[str]) -> StepResult:
        assert command.file is not None
        path = resolve(command.path, command.file)
        source = self.bundle.scripts[path]
        env = await self._evaluate_env(command.args.get("env") or {})
        # The script's env lives only while it runs (a runScript's env never leaks); values passed for
        # the run keep winning.
        env = {name: value for name, value in env.items() if name not in self.fixed}
        saved = {name: self.variables.get(name) for name in env}
        await self._set(dict(env))
        try:
            result = await self.scripts.evaluate(source)
        except ScriptError as exc:
            logs.extend(f"console: {line}" for line in exc.logs)
            where = f"{path} line {exc.line}" if exc.line else path
            raise _Failed(f"{where}: {exc.name}: {exc.message}", assertion=False) from None
        finally:
            await self._set(saved)
        logs.extend(f"console: {line}" for line in result.logs)
        return StepResult("passed")

    async def _extended_wait(self, step: Step) -> StepResult:
        results: list[StepResult] = []
        for key, command in (("visible", "assertVisible"), ("notVisible", "assertNotVisible")):
            selector = step.args.get(key)
            if isinstance(selector, Selector):
                probe = Step(
                    index=step.index,
                    line=step.line,
                    command=command,
                    selector=selector,
                    timeout_ms=step.timeout_ms or EXTENDED_WAIT_MS,
                    optional=step.optional,
                    path=step.path,
                )
                result = await self.session.run_step(probe)
                results.append(result)
                if result.status != "passed":
                    return result
        merged = StepResult("passed")
        for result in results:
            merged.logs.extend(result.logs)
        return merged

    async def _selector(self, args: Mapping[str, Value]) -> Selector:
        resolved = await self._value(dict(args))
        return to_selector(resolved)

    async def _step(self, command: Command, scope: _Scope, index: int) -> Step:
        """The device step for a command: arguments resolved and typed."""
        spec = C.SPECS[command.name]
        args: dict[str, Value] = {}
        for name, value in command.args.items():
            arg = spec.args.get(name)
            if arg is None or name in ("label", "optional", "when"):
                continue
            args[name] = _typed(command.name, name, arg, await self._value(value))
        selector: Selector | None = None
        if spec.selector:
            selector = to_selector(args)
        elif "element" in args and isinstance(args["element"], Selector):
            selector = args["element"]
        app_id: str | None = None
        if command.name in ("launchApp", "stopApp", "killApp", "clearState", "setPermissions"):
            app_id = str(args.get("appId") or args.get("url") or "") or None
            if app_id is None and scope.flow.app_id is not None:
                app_id = await self.interpolate(scope.flow.app_id)
        text: str | None = None
        if command.name in ("inputText",):
            text = str(args.get("text", ""))
        elif command.name in C.RANDOM_INPUTS:
            length = args.get("length")
            text = random_text(command.name, length if isinstance(length, int) else None)
        elif command.name == "pasteText":
            text = self.copied_text or ""
        direction: str | None = None
        if command.name in ("swipe", "scrollUntilVisible"):
            direction = str(args["direction"]) if args.get("direction") is not None else None
            if command.name == "scrollUntilVisible" and direction is None:
                direction = "DOWN"
        elif command.name == "scroll":
            direction = "DOWN"
        timeout = args.get("timeout")
        label = str(args["path"]) if command.name in ("takeScreenshot", "startRecording") and "path" in args else None
        attachments: dict[str, bytes] = {}
        if command.name == "addMedia":
            for written in args.get("files") or []:
                target = resolve(command.path, str(written))
                attachments[target] = self.bundle.files[target]
        elif command.name == "assertScreenshot":
            target = self._reference(command, str(args.get("path", "")))
            attachments[target] = self.bundle.files[target]
        if command.name == "eraseText" and "charactersToErase" not in args:
            args["charactersToErase"] = DEFAULT_ERASE
        step = Step(
            index=index,
            line=command.line,
            command=command.name,
            selector=selector,
            text=text,
            direction=direction,
            app_id=app_id,
            clear_state=bool(args.get("clearState", False)),
            optional=command.optional,
            timeout_ms=timeout if isinstance(timeout, int) else None,
            label=label,
            args=args,
            path=command.path,
            attachments=attachments,
        )
        shown = self.mask(step.describe())
        return replace(step, display=shown) if shown != step.describe() else step

    def _reference(self, command: Command, path: str) -> str:
        try:
            target = resolve(command.path, reference_image(path))
        except ValueError as exc:
            raise _Failed(f"assertScreenshot path {path!r}: {exc}", assertion=False) from None
        if target not in self.bundle.files:
            raise _Failed(
                f"assertScreenshot: no reference image {target!r} among the test case's files", assertion=False
            )
        return target


def _typed(command: str, name: str, arg: C.Arg, value: Value) -> Value:
    """A resolved argument in its type; a value that cannot be is a failed step (not an assertion)."""
    kind = arg.kind
    what = f"{command} {name}"
    if kind is C.Kind.INT:
        if isinstance(value, bool):
            raise _Failed(f"{what} must be a whole number, not {value}", assertion=False)
        if isinstance(value, int):
            number = value
        else:
            try:
                number = int(float(str(value).replace("_", "").strip()))
            except ValueError:
                raise _Failed(f"{what} must be a whole number, not {value!r}", assertion=False) from None
        if name in ("timeout", "waitToSettleTimeoutMs"):
            problem = check_timeout(number, what)
            if problem:
                raise _Failed(problem, assertion=False)
        return number
    if kind is C.Kind.NUMBER:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        try:
            return float(str(value).strip())
        except ValueError:
            raise _Failed(f"{what} must be a number, not {value!r}", assertion=False) from None
    if kind is C.Kind.ENUM:
        canonical = enum_value(str(value), arg)
        if canonical is None:
            raise _Failed(f"{what} must be one of {', '.join(arg.choices)}, not {value!r}", assertion=False)
        return canonical
    if kind is C.Kind.POINT:
        problem = point_problem(str(value))
        if problem:
            raise _Failed(f"{what}: {problem}", assertion=False)
        return str(value)
    if kind is C.Kind.SELECTOR:
        return to_selector(value) if isinstance(value, dict) else value
    if kind is C.Kind.SELECTORS:
        return [to_selector(item) for item in value] if isinstance(value, list) else value
    if kind is C.Kind.PERMISSIONS and isinstance(value, dict):
        out = {}
        for permission, setting in value.items():
            if str(setting).lower() not in C.PERMISSION_VALUES:
                raise _Failed(f"{what} {permission} must be allow, deny or unset, not {setting!r}", assertion=False)
            out[permission] = str(setting).lower()
        return out
    return value


def to_selector(args: Mapping[str, Value]) -> Selector:
    """A Selector from resolved selector fields (nested selectors included)."""

    def nested(key: str) -> Selector | None:
        value = args.get(key)
        if isinstance(value, Selector):
            return value
        return to_selector(value) if isinstance(value, Mapping) else None

    def number(key: str) -> int | None:
        value = args.get(key)
        if value is None or isinstance(value, bool):
            return None
        try:
            return int(float(str(value)))
        except ValueError:
            raise _Failed(f"selector {key} must be a number, not {value!r}", assertion=False) from None

    def flag(key: str) -> bool | None:
        value = args.get(key)
        return value if isinstance(value, bool) else None

    descendants = args.get("containsDescendants")
    return Selector(
        text=str(args["text"]) if args.get("text") is not None else None,
        id=str(args["id"]) if args.get("id") is not None else None,
        index=number("index"),
        point=str(args["point"]) if args.get("point") is not None else None,
        below=nested("below"),
        above=nested("above"),
        left_of=nested("leftOf"),
        right_of=nested("rightOf"),
        child_of=nested("childOf"),
        contains_child=nested("containsChild"),
        contains_descendants=tuple(
            item if isinstance(item, Selector) else to_selector(item)
            for item in (descendants if isinstance(descendants, list) else [])
        ),
        enabled=flag("enabled"),
        checked=flag("checked"),
        focused=flag("focused"),
        selected=flag("selected"),
        width=number("width"),
        height=number("height"),
        tolerance=number("tolerance"),
        traits=str(args["traits"]) if args.get("traits") is not None else None,
        css=str(args["css"]) if args.get("css") is not None else None,
    )


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
