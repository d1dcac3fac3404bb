"""JavaScript for flows: syntax checks (server and agent) and a sandboxed engine per run (agent).

The engine is QuickJS through ``jsbox`` (see docs/decisions.md for the choice): no file system, no
modules, no timers, a memory cap and a wall-clock limit per script. Scripts run in a worker process
(``flows.js_worker``), never in the agent's own interpreter, so a runaway script costs its own
process and nothing else; workers are reused across runs, each run getting a fresh runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Final

DEFAULT_TIME_LIMIT_S: Final = 30.0
DEFAULT_MEMORY_MB: Final = 64
DEFAULT_HTTP_TIMEOUT_S: Final = 30.0
# How long past a script's own limit the agent waits for the worker before killing it.
KILL_GRACE_S: Final = 2.0
MAX_IDLE_WORKERS: Final = 8

_local = threading.local()
_WHERE = re.compile(r"(?:check|eval_script|<input>):(\d+)(?::(\d+))?")


class ScriptError(Exception):
    """A script that threw, did not compile, or ran out of time or memory."""

    def __init__(self, name: str, message: str, line: int | None = None, column: int | None = None) -> None:
        self.name = name
        self.message = message
        self.line = line
        self.column = column
        self.logs: list[str] = []  # what the script logged before it failed
        super().__init__(f"{name}: {message}" if name else message)


def check_syntax(code: str) -> ScriptError | None:
    """Compile ``code`` without running it (QuickJS compile-only); the SyntaxError, if any."""
    import jsbox

    runtime = getattr(_local, "runtime", None)
    if runtime is None:  # a jsbox runtime belongs to the thread that made it
        runtime = _local.runtime = jsbox.Runtime(memory_limit=32 * 1024 * 1024)
    try:
        runtime.check_syntax(code)
    except jsbox.JavaScriptError as exc:
        stack = getattr(exc, "stack", None) or str(exc)
        found = _WHERE.search(stack)
        message = getattr(exc, "message", None) or str(exc).splitlines()[0]
        return ScriptError(
            str(getattr(exc, "name", None) or "SyntaxError"),
            str(message),
            int(found.group(1)) if found else None,
            int(found.group(2)) if found and found.group(2) else None,
        )
    return None


_CHECKER = r"""
globalThis.__qg_check = function (codes) {
  var out = [];
  for (var i = 0; i < codes.length; i++) {
    try { new Function(codes[i]); out.push(null); } catch (e) { out.push(String(e && e.name)); }
  }
  return out;
};
0
"""


def check_many(codes: list[str]) -> list[ScriptError | None]:
    """The SyntaxError of each piece of code, or None: one call for all (a call costs about 140 µs).

    Each piece is compiled as a function body (``new Function``), never run; a piece that fails is
    compiled again alone as a script, for the exact message and line.
    """
    if not codes:
        return []
    import jsbox

    runtime = getattr(_local, "batch", None)
    if runtime is None:
        runtime = _local.batch = jsbox.Runtime(memory_limit=64 * 1024 * 1024)
        runtime.eval(_CHECKER)
    try:
        verdicts = runtime.eval(f"__qg_check({json.dumps(codes)})", timeout=10.0)
    except Exception:  # out of memory or time: check one by one
        verdicts = ["?"] * len(codes)
    return [check_syntax(code) if verdict is not None else None for code, verdict in zip(codes, verdicts, strict=True)]


@dataclass
class ScriptResult:
    value: Any  # the completion value as JSON data (None for undefined, functions, …)
    text: str  # String(value), as Maestro interpolates it
    type: str  # typeof value
    logs: list[str] = field(default_factory=list)


class _Worker:
    """One worker process; requests go one at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.next_id = 0

    @classmethod
    async def start(cls) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "qualgent.flows.js_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        return cls(process)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def call(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.next_id += 1
        request = {**request, "id": self.next_id}
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        await self.process.stdin.drain()
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
            if not line:
                raise ScriptError("Error", "the JavaScript worker stopped")
            answer: dict[str, Any] = json.loads(line)
            if answer.get("id") == self.next_id:
                return answer

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        with contextlib.suppress(Exception):
            await self.process.wait()


class _Pool:
    """Idle workers of this process, reused by the next run that needs one.

    A worker's pipes belong to the event loop that started it, so idle workers are kept per loop (an
    agent runs in one loop; tests and tools may start several in turn).
    """

    def __init__(self) -> None:
        self.idle: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Worker]] = weakref.WeakKeyDictionary()

    async def acquire(self) -> _Worker:
        idle = self.idle.setdefault(asyncio.get_running_loop(), [])
        while idle:
            worker = idle.pop()
            if worker.alive:
                return worker
        return await _Worker.start()

    async def release(self, worker: _Worker) -> None:
        idle = self.idle.setdefault(asyncio.get_running_loop(), [])
        if worker.alive and len(idle) < MAX_IDLE_WORKERS:
            idle.append(worker)
        else:
            await worker.kill()

    async def close(self) -> None:
        """Stop this loop's idle workers (an agent that stops calls this)."""
        for worker in self.idle.pop(asyncio.get_running_loop(), []):
            await worker.kill()


_pool = _Pool()


async def close_idle_workers() -> None:
    await _pool.close()


class ScriptEngine:
    """The JavaScript of one run: its globals (variables, ``output``, ``maestro``) live in one runtime.

    The worker is taken from the pool at the first script and given back by ``close``. A script that
    overstays its limit by more than ``KILL_GRACE_S`` costs its worker: the next script starts a new
    runtime with the run's variables (``output`` starts empty again; the step that timed out failed).
    """

    def __init__(
        self,
        *,
        platform: str,
        time_limit_s: float = DEFAULT_TIME_LIMIT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
        http_timeout_s: float = DEFAULT_HTTP_TIMEOUT_S,
    ) -> None:
        self.platform = platform
        self.time_limit_s = time_limit_s
        self.memory_mb = memory_mb
        self.http_timeout_s = http_timeout_s
        self.variables: dict[str, str] = {}  # what the runtime has, to rebuild it after a kill
        self.maestro: dict[str, Any] = {}
        self._worker: _Worker | None = None

    async def _ready(self) -> _Worker:
        if self._worker is not None and self._worker.alive:
            return self._worker
        worker = await _pool.acquire()
        try:
            await self._call_on(
                worker,
                {
                    "op": "open",
                    "platform": self.platform,
                    "variables": self.variables,
                    "memory_mb": self.memory_mb,
                    "http_timeout_s": self.http_timeout_s,
                },
                30.0,
            )
            if self.maestro:
                await self._call_on(worker, {"op": "maestro", "values": self.maestro}, 30.0)
        except BaseException:
            await worker.kill()
            raise
        self._worker = worker
        return worker

    async def _call_on(self, worker: _Worker, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        try:
            return await worker.call(request, timeout_s)
        except (TimeoutError, ScriptError, OSError, ValueError, RuntimeError):
            await worker.kill()
            if self._worker is worker:
                self._worker = None
            raise

    async def evaluate(self, code: str, *, time_limit_s: float | None = None) -> ScriptResult:
        """Run ``code`` in the run's global scope; raise ScriptError when it throws or overstays."""
        limit = time_limit_s or self.time_limit_s
        worker = await self._ready()
        try:
            answer = await self._call_on(worker, {"op": "eval", "code": code, "timeout_s": limit}, limit + KILL_GRACE_S)
        except TimeoutError:
            raise ScriptError("TimeoutError", f"the script ran longer than {limit:g} s and was stopped") from None
        logs = [str(line) for line in answer.get("logs") or []]
        error = answer.get("error")
        if error:
            exc = ScriptError(str(error.get("name") or "Error"), str(error.get("message") or ""), error.get("line"))
            exc.column = error.get("column")
            exc.logs = logs
            raise exc
        return ScriptResult(answer.get("value"), str(answer.get("text", "")), str(answer.get("type", "")), logs)

    async def set_variables(self, values: dict[str, str | None]) -> None:
        """Set (or, with None, remove) global variables."""
        for name, value in values.items():
            if value is None:
                self.variables.pop(name, None)
            else:
                self.variables[name] = value
        if self._worker is not None and self._worker.alive:
            await self._call_on(self._worker, {"op": "set", "variables": values}, 30.0)

    async def set_maestro(self, **values: Any) -> None:
        """Fields of the ``maestro`` object (``copiedText``)."""
        self.maestro.update(values)
        if self._worker is not None and self._worker.alive:
            await self._call_on(self._worker, {"op": "maestro", "values": values}, 30.0)

    @property
    def started(self) -> bool:
        return self._worker is not None

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await _pool.release(worker)
