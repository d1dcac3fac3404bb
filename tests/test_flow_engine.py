"""The flow engine end to end: bundles run through ``FlowRunner`` on the real simulated driver.

The device is ``SimulatorDriver`` opened on examples/hello.apk (package com.qualgent.fixture; texts
"Sign in", "Log in", "Bonjour", "QualGent Fixture"; ids ``username`` and ``login_button``): a step naming
one of those passes, any other text fails. A recording session in front of it keeps every step that
reached the device, so a test sees what was typed; a small reporter keeps every StepRecord. JavaScript
runs in the real worker processes; HTTP from scripts goes to a real server started here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from qualgent.drivers.base import AppUnderTest, Artifact, DeviceConfig, StepResult
from qualgent.drivers.simulator import SimulatorDriver, SimulatorSession
from qualgent.flows import scripts as scripts_module
from qualgent.flows.bundle import check_bundle
from qualgent.flows.engine import MASK, MAX_STEPS_PER_RUN, FlowRunner, Outcome, RunValues, StepRecord, truthy
from qualgent.flows.model import Step
from qualgent.flows.scripts import ScriptEngine

ROOT = Path(__file__).resolve().parents[1]
APK = ROOT / "examples" / "hello.apk"
APP_ID = "com.qualgent.fixture"
HEADER = f"appId: {APP_ID}\n---\n"
DEVICES = {
    "Android": DeviceConfig("pixel-7-sim", "Pixel 7", "Android", "14"),
    "iOS": DeviceConfig("iphone-14-sim", "iPhone 14 Pro", "iOS", "16.0"),
}


class RecordingSession:
    """The simulator's session, with every step that reached it kept in order."""

    def __init__(self, inner: SimulatorSession) -> None:
        self.inner = inner
        self.steps: list[Step] = []

    async def run_step(self, step: Step) -> StepResult:
        self.steps.append(step)
        return await self.inner.run_step(step)

    async def close(self) -> None:
        await self.inner.close()

    async def start_recording(self) -> None:
        await self.inner.start_recording()

    async def stop_recording(self) -> Artifact | None:
        return await self.inner.stop_recording()

    async def device_log(self) -> Artifact | None:
        return await self.inner.device_log()


@dataclass
class Reporter:
    records: list[StepRecord] = field(default_factory=list)
    progress: list[int | None] = field(default_factory=list)

    async def step(self, record: StepRecord, progress: int | None) -> None:
        self.records.append(record)
        self.progress.append(progress)


@dataclass
class Result:
    outcome: Outcome
    records: list[StepRecord]
    progress: list[int | None]
    steps: list[Step]  # what reached the device

    @property
    def status(self) -> str:
        return self.outcome.status

    @property
    def failure(self) -> dict[str, Any]:
        assert self.outcome.failure is not None, self.outcome
        return self.outcome.failure

    def typed(self) -> list[str | None]:
        return [s.text for s in self.steps if s.command == "inputText"]

    def record(self, description: str) -> StepRecord:
        found = [r for r in self.records if r.description == description]
        assert len(found) == 1, (description, [r.description for r in self.records])
        return found[0]

    def tree(self) -> list[tuple[int, int | None, int, str, str]]:
        """(index, parent, depth, description, status) in index order."""
        return sorted((r.index, r.parent, r.depth, r.description, r.status) for r in self.records)

    def statuses(self) -> dict[str, str]:
        return {r.description: r.status for r in self.records}


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    """One event loop for the module: the JavaScript workers of one loop are reused by the next run."""
    with asyncio.Runner() as loop:
        yield loop
        # Idle workers belong to this loop: end them on it, before it closes.
        loop.run(_end_idle_workers())


async def _end_idle_workers() -> None:
    await scripts_module.close_idle_workers()


RunFlow = Any  # the `run` fixture's callable


@pytest.fixture
def run(runner: asyncio.Runner) -> RunFlow:
    def go(
        main: str,
        files: Mapping[str, str | bytes] | None = None,
        *,
        variables: Mapping[str, str] | None = None,
        secrets: tuple[str, ...] = (),
        platform: str = "Android",
        scripts: ScriptEngine | None = None,
        flow_name: str = "login",
    ) -> Result:
        data = {path: text.encode() if isinstance(text, str) else text for path, text in (files or {}).items()}
        bundle = check_bundle(textwrap.dedent(main).lstrip("\n"), data)

        async def execute() -> Result:
            app = AppUnderTest(str(APK), "0" * 64, platform.lower(), APP_ID)
            device = DEVICES[platform]
            session = RecordingSession(await SimulatorDriver(step_seconds=0).open(device, app, bundle.flow))
            reporter = Reporter()
            values = RunValues(
                platform=platform,
                device_id=device.id,
                variables=dict(variables or {}),
                secrets=secrets,
                flow_name=flow_name,
            )
            try:
                outcome = await FlowRunner(bundle, session, values, reporter, scripts).run()
            finally:
                await session.close()
            return Result(outcome, reporter.records, reporter.progress, session.steps)

        return runner.run(execute())

    return go


# --- a real HTTP server for scripts ------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class HttpServer:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if self.path.startswith("/user"):
                    status, payload = 200, json.dumps({"name": "Ada", "token": self.headers.get("X-Token")})
                elif self.path == "/echo":
                    status, payload = 201, json.dumps({"got": json.loads(body or b"null"), "method": self.command})
                elif self.path == "/fail":
                    status, payload = 503, "down for maintenance"
                else:
                    status, payload = 404, "no such thing"
                data = payload.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Served-By", "test")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=10)


# --- variables and ${…} ------------------------------------------------------------------------------


def test_variables_expressions_undefined_names_and_literals(run: RunFlow) -> None:
    result = run(
        f"""
        appId: {APP_ID}
        env:
          USER: ada
          GREETING: Hello ${{USER}}
          COUNT: 3
        ---
        - inputText: ${{USER}}
        - inputText: ${{USER.toUpperCase()}}-${{COUNT * 2}}
        - inputText: ${{NOBODY_DEFINED_THIS}}
        - inputText: ${{typeof NOBODY_DEFINED_THIS}}|${{NOBODY || 'fallback'}}
        - inputText: \\${{USER}} stays as written
        - inputText: "{{braces}} ${{USER}}, ${{USER}}!"
        - inputText: ${{GREETING}}
        - inputText: ${{}}empty
        """
    )
    assert result.status == "passed", result.outcome
    assert result.typed() == [
        "ada",
        "ADA-6",
        "undefined",
        "undefined|fallback",
        "${USER} stays as written",
        "{braces} ada, ada!",
        # Entries of one env block are all evaluated before any is defined (as in Maestro).
        "Hello undefined",
        "empty",
    ]
    assert result.record('inputText "ada"').status == "passed"


def test_run_values_win_over_every_env(run: RunFlow) -> None:
    files = {
        "sub.yaml": "appId: com.qualgent.fixture\nenv:\n  USER: from-subflow\n---\n- inputText: sub ${USER}\n",
    }
    result = run(
        f"""
        appId: {APP_ID}
        env:
          USER: from-flow
          OTHER: from-flow
        ---
        - inputText: ${{USER}} ${{OTHER}}
        - runFlow:
            file: sub.yaml
            env:
              USER: from-runflow
        - retry:
            env:
              USER: from-retry
            commands:
              - inputText: retry ${{USER}}
        """,
        files,
        variables={"USER": "from-run"},
    )
    assert result.status == "passed", result.outcome
    assert result.typed() == ["from-run from-flow", "sub from-run", "retry from-run"]


def test_a_runflow_s_env_wins_over_the_subflow_s_own(run: RunFlow) -> None:
    files = {
        "flows/sub.yaml": "appId: com.qualgent.fixture\nenv:\n  A: sub-a\n  B: sub-b\n---\n- inputText: ${A} ${B} ${C}\n",
    }
    result = run(
        HEADER
        + """
- runFlow:
    file: flows/sub.yaml
    env:
      A: caller-a
      C: ${'caller-' + 'c'}
- inputText: after ${A} ${B} ${C}
""",
        files,
    )
    assert result.status == "passed", result.outcome
    assert result.typed() == ["caller-a sub-b caller-c", "after undefined undefined undefined"]


def test_a_subflow_s_env_can_use_the_values_its_runflow_passes(run: RunFlow) -> None:
    """Maestro defines a runFlow's env before the subflow's own, so the subflow's constants can be built
    from its parameters (`GREETING: Hello ${NAME || 'guest'}`); a runFlow's env still wins on a shared name."""
    files = {
        "greet.yaml": "env:\n  GREETING: Hello ${NAME || 'guest'}\n  NAME: default\n---\n- inputText: ${GREETING} (${NAME})\n"
    }
    result = run(
        HEADER + "- runFlow:\n    file: greet.yaml\n    env:\n      NAME: Ada\n- runFlow: greet.yaml\n",
        files,
    )
    assert result.status == "passed", result.outcome
    assert result.typed() == ["Hello Ada (Ada)", "Hello guest (default)"]


def test_variables_are_scoped_and_output_persists(run: RunFlow) -> None:
    files = {"set.yaml": "appId: com.qualgent.fixture\nenv:\n  X: in-file\n---\n- inputText: file ${X}\n"}
    result = run(
        f"""
        appId: {APP_ID}
        env:
          X: outer
        ---
        - runFlow:
            env: {{X: in-runflow, ONLY_INSIDE: yes}}
            commands:
              - inputText: runFlow ${{X}} ${{ONLY_INSIDE}}
              - evalScript: ${{output.fromRunFlow = X}}
        - inputText: after runFlow ${{X}} ${{ONLY_INSIDE}}
        - repeat:
            times: 2
            commands:
              - runFlow: set.yaml
              - runFlow:
                  env: {{Y: iteration}}
                  commands:
                    - evalScript: ${{output.count = (output.count || 0) + 1}}
        - inputText: after repeat ${{X}} ${{Y}}
        - retry:
            env: {{X: in-retry}}
            commands:
              - inputText: retry ${{X}}
        - inputText: after retry ${{X}}
        - inputText: output ${{output.fromRunFlow}} ${{output.count}}
        """,
        files,
    )
    assert result.status == "passed", result.outcome
    assert result.typed() == [
        "runFlow in-runflow yes",
        "after runFlow outer undefined",
        "file in-file",
        "file in-file",
        "after repeat outer undefined",
        "retry in-retry",
        "after retry outer",
        "output in-runflow 2",
    ]


def test_globals_made_by_scripts_do_not_outlive_them(run: RunFlow) -> None:
    result = run(
        HEADER
        + """
- evalScript: ${var local = 1; leaked = 2; output.kept = 3}
- inputText: ${typeof local} ${typeof leaked} ${output.kept}
"""
    )
    assert result.status == "passed", result.outcome
    assert result.typed() == ["undefined undefined 3"]


def test_maestro_built_ins(run: RunFlow) -> None:
    flow = (
        HEADER
        + """
- inputText: ${MAESTRO_FILENAME}|${MAESTRO_DEVICE_UDID}|${MAESTRO_SHARD_ID}|${MAESTRO_SHARD_INDEX}
- inputText: ${maestro.platform}|${MAESTRO_PLATFORM}|${maestro.copiedText}
- setClipboard: copied ${1 + 1}
- inputText: ${maestro.copiedText}
- pasteText
- copyTextFrom: Log in
- inputText: ${maestro.copiedText}
- pasteText
"""
    )
    android = run(flow, flow_name="checkout")
    assert android.status == "passed", android.outcome
    assert android.typed() == [
        "checkout|pixel-7-sim|1|0",
        "android|android|null",
        "copied 2",
        "Log in",
    ]
    assert [s.text for s in android.steps if s.command == "pasteText"] == ["copied 2", "Log in"]
    assert android.record('setClipboard "copied 2"').status == "passed"
    assert "copied 'Log in'" in android.record('copyTextFrom "Log in"').logs
    ios = run(flow, platform="iOS")
    assert ios.typed()[:2] == ["login|iphone-14-sim|1|0", "ios|ios|null"]


def test_run_values_cannot_be_changed_by_a_flow_but_maestro_names_can_be_passed(run: RunFlow) -> None:
    result = run(
        f"appId: {APP_ID}\nenv:\n  MAESTRO_FILENAME: mine\n---\n- inputText: ${{MAESTRO_FILENAME}} ${{MAESTRO_SHARD_ID}}\n",
        variables={"MAESTRO_SHARD_ID": "7"},
    )
    # A flow's env may set a built-in; a value passed for the run wins over the built-in.
    assert result.typed() == ["mine 7"]


# --- JavaScript: runScript, evalScript, assertTrue, json(), http ----------------------------------------


def test_run_script_sees_variables_logs_and_keeps_its_env_to_itself(run: RunFlow) -> None:
    files = {
        "scripts/seed.js": (
            "var local = 'kept in the script';\n"
            "console.log('user is', USER, 'count', COUNT, {n: 1});\n"
            "console.log(typeof local);\n"
            "output.seed = USER + '-' + (Number(COUNT) + 1);\n"
        )
    }
    result = run(
        f"""
        appId: {APP_ID}
        env:
          USER: ada
        ---
        - runScript:
            file: scripts/seed.js
            env:
              COUNT: ${{2 * 2}}
        - inputText: ${{output.seed}} ${{typeof COUNT}} ${{typeof local}}
        - runScript: scripts/seed.js
        """,
        files,
    )
    assert result.status == "passed", result.outcome
    first = result.records[0]
    assert first.description == "runScript scripts/seed.js"
    assert first.logs == ['console: user is ada count 4 {"n":1}', "console: string"]
    assert result.typed() == ["ada-5 undefined undefined"]
    # Without its env, COUNT is undefined in the script.
    assert result.records[2].logs[0] == 'console: user is ada count undefined {"n":1}'


def test_a_script_that_throws_fails_its_step_with_the_script_s_path_and_line(run: RunFlow) -> None:
    files = {
        "scripts/check.js": "console.log('before');\n\nthrow new Error('the API said no');\n",
        "sub/flow.yaml": "appId: com.qualgent.fixture\n---\n- back\n- runScript: ../scripts/check.js\n",
    }
    result = run(HEADER + "- launchApp\n- runFlow: sub/flow.yaml\n- back\n", files)
    assert result.status == "failed"
    [failed] = [r for r in result.records if r.status == "failed" and r.depth == 1]
    assert failed.description.startswith("runScript ") and failed.description.endswith("scripts/check.js")
    # The script is named by its path among the test case's files, as the bundle check names it.
    assert failed.message == "scripts/check.js line 3: Error: the API said no"
    assert failed.logs == ["console: before"]
    assert result.failure == {
        "kind": "test",
        "message": (
            f"Step 4 ({failed.description}, sub/flow.yaml line 4) failed: scripts/check.js line 3: Error: the API said no"
        ),
        "step": failed.index,
    }
    assert failed.index == 3 and failed.parent == 1 and failed.depth == 1
    assert result.record("runFlow sub/flow.yaml").status == "failed"
    assert [s.command for s in result.steps] == ["launchApp", "back"]  # the last `back` never ran


def test_an_endless_script_is_stopped_at_its_time_limit(run: RunFlow) -> None:
    files = {"spin.js": "output.before = 'yes';\nwhile (true) {}\n"}
    engine = ScriptEngine(platform="android", time_limit_s=0.5)
    result = run(
        f"""
        appId: {APP_ID}
        onFlowComplete:
          - inputText: complete ${{output.before}}
        ---
        - runScript: spin.js
        - back
        """,
        files,
        scripts=engine,
    )
    assert result.status == "failed"
    spin = result.record("runScript spin.js")
    assert spin.status == "failed"
    assert spin.message.startswith("spin.js: TimeoutError: the script ran longer than 0.5 s"), spin.message
    assert spin.duration_ms < 5000
    # The run goes on to its complete hook, with a working engine.
    assert result.typed() == ["complete yes"]
    assert [s.command for s in result.steps] == ["inputText"]


def test_eval_script_runs_only_what_is_inside_templates(run: RunFlow) -> None:
    result = run(
        HEADER
        + """
- evalScript: ${output.a = 1} and ${output.b = output.a + 1}
- evalScript: output.a = 100
- inputText: ${output.a} ${output.b}
- evalScript:
    script: ${console.log('from eval', output.b)}
    label: Log it
"""
    )
    assert result.status == "passed", result.outcome
    assert result.typed() == ["1 2"]
    assert result.records[1].logs == ["nothing to run: evalScript runs only what is inside ${…}, as in Maestro"]
    assert result.record("Log it").logs == ["console: from eval 2"]


def test_a_javascript_error_in_a_template_fails_the_step(run: RunFlow) -> None:
    result = run(HEADER + "- back\n- inputText: ${undefinedFunction()}\n- back\n")
    assert result.status == "failed"
    assert result.failure["step"] == 1
    assert result.failure["message"].startswith(
        'Step 2 (inputText "${undefinedFunction()}", line 4) failed: JavaScript TypeError in ${undefinedFunction()}: '
    )
    assert [s.command for s in result.steps] == ["back"]


def test_console_lines_of_a_failing_template_are_in_the_step_s_logs(run: RunFlow) -> None:
    result = run(HEADER + "- evalScript: ${console.log('about to fail', 1); null.x}\n")
    assert result.status == "failed"
    [record] = result.records
    assert record.logs == ["console: about to fail 1"]  # as for a passing one, and as runScript writes them
    assert record.message.startswith("JavaScript TypeError in ${console.log('about to fail', 1); null.x}: ")


CONDITIONS = {
    # Maestro's truth: blank, "false" (any case), "undefined", "null" and zero are false.
    "": False,
    "   ": False,
    "false": False,
    "FALSE": False,
    "undefined": False,
    "null": False,
    "0": False,
    "0.0": False,
    "-0": False,
    "0e5": False,
    "true": True,
    "1": True,
    "no": True,
    "NaN": True,
    "[object Object]": True,
    "Null": True,
    "-1.5": True,
}


def test_truthiness_table() -> None:
    assert {text: truthy(text) for text in CONDITIONS} == CONDITIONS


def test_assert_true_follows_the_truthiness_table(run: RunFlow) -> None:
    steps = "".join(
        f"- assertTrue:\n    condition: ${{{json.dumps(text)}}}\n    label: case {i}\n    optional: true\n"
        for i, text in enumerate(CONDITIONS)
    )
    result = run(HEADER + steps + "- assertTrue: ${output.n = 3}\n- assertTrue: ${output.n > 5}\n")
    expected = {f"case {i}": "passed" if truth else "skipped" for i, truth in enumerate(CONDITIONS.values())}
    assert {d: s for d, s in result.statuses().items() if d.startswith("case")} == expected
    assert result.record("case 2").message == "optional step did not pass: assertion is false: ${\"false\"} is 'false'"
    # Written without ${…}, the text itself is the condition.
    literal = run(HEADER + "- assertTrue: 'false'\n")
    assert literal.status == "failed" and literal.failure["message"].endswith("assertion is false: false is 'false'")
    assert result.status == "failed"
    assert result.failure["message"] == (
        f'Step {len(CONDITIONS) + 2} (assertTrue "${{output.n > 5}}", line {3 + 4 * len(CONDITIONS) + 1}) failed: '
        "assertion is false: ${output.n > 5} is 'false'"
    )


def test_json_parses_text(run: RunFlow) -> None:
    result = run(
        HEADER
        + """
- inputText: >-
    ${json('{"user": {"roles": ["admin", "qa"]}}').user.roles[1]}
- evalScript: ${output.data = json('[1, 2, 3]')}
- inputText: ${output.data.length} ${output.data}
"""
    )
    assert result.status == "passed", result.outcome
    assert result.typed() == ["qa", "3 [1,2,3]"]


def test_http_from_scripts_reaches_a_real_server(run: RunFlow, http_server: HttpServer) -> None:
    files = {
        "api.js": """
var user = http.get(BASE + '/user?id=7', {headers: {'X-Token': TOKEN, 'X-Number': 42}});
output.user = user.status + ' ' + user.ok + ' ' + json(user.body).name + ' ' + json(user.body).token;
output.servedBy = user.headers['x-served-by'];
var echo = http.post(BASE + '/echo', {headers: {'Content-Type': 'application/json'}, body: JSON.stringify({n: 1})});
output.echo = echo.status + ' ' + json(echo.body).got.n + ' ' + json(echo.body).method;
var put = http.request(BASE + '/echo', {method: 'put', body: '{"n": 2}'});
output.put = json(put.body).method + ' ' + json(put.body).got.n;
var down = http.get(BASE + '/fail');
output.down = down.status + ' ' + down.ok + ' ' + down.body;
var missing = http.delete(BASE + '/nothing');
output.missing = missing.status + ' ' + missing.ok;
""",
    }
    result = run(
        HEADER
        + """
- runScript:
    file: api.js
    env:
      TOKEN: tok-1
- inputText: ${output.user} ${output.servedBy}
- inputText: ${output.echo} | ${output.put}
- inputText: ${output.down} | ${output.missing}
""",
        files,
        variables={"BASE": http_server.url},
    )
    assert result.status == "passed", result.outcome
    assert result.typed() == [
        "200 true Ada tok-1 test",
        "201 1 POST | PUT 2",
        "503 false down for maintenance | 404 false",
    ]
    by_path = {(s.method, s.path): s for s in http_server.seen}
    user = by_path[("GET", "/user?id=7")]
    assert user.headers["x-token"] == "tok-1" and user.headers["x-number"] == "42"
    echo = by_path[("POST", "/echo")]
    assert echo.headers["content-type"] == "application/json" and json.loads(echo.body) == {"n": 1}
    assert by_path[("PUT", "/echo")].body == b'{"n": 2}'
    assert ("DELETE", "/nothing") in by_path


def test_an_unreachable_server_fails_the_script(run: RunFlow) -> None:
    files = {"down.js": "var r = http.get('http://127.0.0.1:9/nothing');\noutput.never = 1;\n"}
    result = run(HEADER + "- runScript: down.js\n", files)
    assert result.status == "failed"
    message = result.record("runScript down.js").message
    assert message.startswith("down.js line 1: Error: http GET http://127.0.0.1:9/nothing failed"), message


# --- runFlow and conditions ------------------------------------------------------------------------------


def test_run_flow_from_a_file_and_inline(run: RunFlow) -> None:
    files = {
        "flows/login.yaml": "appId: com.qualgent.fixture\n---\n- tapOn: Sign in\n- runFlow: ../common/type.yaml\n",
        "common/type.yaml": "- inputText: ${WHO}\n",
    }
    result = run(
        HEADER
        + """
- runFlow:
    file: flows/login.yaml
    env: {WHO: ada}
- runFlow:
    label: Inline ${'part'}
    commands:
      - tapOn:
          id: login_button
""",
        files,
    )
    assert result.status == "passed", result.outcome
    assert result.tree() == [
        (0, None, 0, "runFlow flows/login.yaml", "passed"),
        (1, 0, 1, 'tapOn "Sign in"', "passed"),
        (2, 0, 1, "runFlow ../common/type.yaml", "passed"),
        (3, 2, 2, 'inputText "ada"', "passed"),
        (4, None, 0, "Inline part", "passed"),
        (5, 4, 1, 'tapOn id "login_button"', "passed"),
    ]
    assert [(s.path, s.line) for s in result.steps] == [("flows/login.yaml", 3), ("common/type.yaml", 1), ("", 10)]


def test_files_are_found_however_their_path_is_written(run: RunFlow) -> None:
    """The engine finds a subflow or script under the path the bundle check resolved (`./`, `a/../`)."""
    files = {"sub.yaml": "- inputText: sub\n", "s.js": "output.s = 'script';\n"}
    result = run(HEADER + "- runFlow: ./sub.yaml\n- runScript: scripts/../s.js\n- inputText: ${output.s}\n", files)
    assert result.status == "passed", result.outcome
    assert result.typed() == ["sub", "script"]


def test_when_conditions_run_or_skip(run: RunFlow) -> None:
    files = {"sub.yaml": "- inputText: sub ${WHY}\n"}
    result = run(
        HEADER
        + """
- runFlow:
    file: sub.yaml
    env: {WHY: android}
    when:
      platform: android
- runFlow:
    file: sub.yaml
    env: {WHY: ios}
    when:
      platform: iOS
- runFlow:
    label: visible
    when:
      visible: Sign in
    commands:
      - inputText: shown
- runFlow:
    label: not there
    when:
      visible: Checkout complete
    commands:
      - inputText: never
- runFlow:
    label: not visible
    when:
      notVisible: Checkout complete
    commands:
      - inputText: absent
- evalScript: ${output.flag = false}
- runFlow:
    label: flag
    when:
      true: ${output.flag}
    commands:
      - inputText: flagged
- runFlow:
    label: flag and platform
    when:
      true: ${!output.flag}
      platform: Android
    commands:
      - inputText: both
- inputText:
    text: plain step
    when:
      true: ${output.flag}
- runScript:
    file: s.js
    when:
      platform: iOS
""",
        {**files, "s.js": "output.ran = true;"},
    )
    assert result.status == "passed", result.outcome
    assert result.typed() == ["sub android", "shown", "absent", "both"]
    skipped = [r for r in result.records if r.status == "skipped"]
    assert [(r.description, r.depth) for r in skipped] == [
        ("runFlow sub.yaml", 0),
        ("not there", 0),
        ("flag", 0),
        ('inputText "plain step"', 0),
        ("runScript s.js", 0),
    ]
    assert skipped[0].logs == ["platform is Android, not iOS", "condition not met: skipped"]
    assert skipped[1].logs[-2:] == [
        '"Checkout complete" is not visible: condition false',
        "condition not met: skipped",
    ]
    assert skipped[2].logs == ["${output.flag} is 'false': false", "condition not met: skipped"]
    # visible / notVisible look on the device; the flow's own steps come after.
    probes = [(s.command, s.selector.text if s.selector else None) for s in result.steps if s.index == -1]
    assert probes == [
        ("assertVisible", "Sign in"),
        ("assertVisible", "Checkout complete"),
        ("assertNotVisible", "Checkout complete"),
    ]


# --- repeat and retry ----------------------------------------------------------------------------------


def test_repeat_times_while_and_both(run: RunFlow) -> None:
    result = run(
        HEADER
        + """
- repeat:
    times: ${1 + 2}
    commands:
      - inputText: times
- repeat:
    while:
      true: ${(output.i || 0) < 2}
    commands:
      - evalScript: ${output.i = (output.i || 0) + 1}
      - inputText: while ${output.i}
- repeat:
    times: 5
    while:
      true: ${(output.j || 0) < 2}
    commands:
      - evalScript: ${output.j = (output.j || 0) + 1}
- repeat:
    times: 2
    while:
      visible: Sign in
    commands:
      - evalScript: ${output.k = (output.k || 0) + 1}
- inputText: ${output.j} ${output.k}
- repeat:
    times: 0
    commands:
      - inputText: never
- repeat:
    while:
      true: ${false}
    commands:
      - inputText: never
"""
    )
    assert result.status == "passed", result.outcome
    assert result.typed() == ["times", "times", "times", "while 1", "while 2", "2 2"]
    top = [(r.description, r.status) for r in sorted(result.records, key=lambda r: r.index) if r.depth == 0]
    assert top == [
        ("repeat ${1 + 2} times", "passed"),
        ("repeat while ${(output.i || 0) < 2}", "passed"),
        ("repeat 5 times while ${(output.j || 0) < 2}", "passed"),
        ('repeat 2 times while "Sign in" is visible', "passed"),
        ('inputText "2 2"', "passed"),
        ("repeat 0 times", "skipped"),
        ("repeat while ${false}", "skipped"),
    ]
    iterations = [r.description for r in sorted(result.records, key=lambda r: r.index) if r.depth == 1]
    assert iterations == ["iteration 1", "iteration 2", "iteration 3"] + ["iteration 1", "iteration 2"] * 3


def test_a_failing_step_ends_the_repeat(run: RunFlow) -> None:
    result = run(
        HEADER
        + """
- repeat:
    times: 5
    commands:
      - evalScript: ${output.n = (output.n || 0) + 1}
      - assertTrue: ${output.n < 2}
- back
"""
    )
    assert result.status == "failed"
    assert result.tree() == [
        (0, None, 0, "repeat 5 times", "failed"),
        (1, 0, 1, "iteration 1", "passed"),
        (2, 1, 2, 'evalScript "${output.n = (output.n || 0) + 1}"', "passed"),
        (3, 1, 2, 'assertTrue "${output.n < 2}"', "passed"),
        (4, 0, 1, "iteration 2", "failed"),
        (5, 4, 2, 'evalScript "${output.n = (output.n || 0) + 1}"', "passed"),
        (6, 4, 2, 'assertTrue "${output.n < 2}"', "failed"),
    ]
    assert result.failure["step"] == 6
    assert result.steps == []


def test_repeat_without_times_or_while_stops_at_the_step_cap(run: RunFlow) -> None:
    result = run(HEADER + "- repeat:\n    commands:\n      - back\n- tapOn: Sign in\n")
    assert result.status == "failed"
    assert f"more than {MAX_STEPS_PER_RUN} steps" in result.failure["message"]
    assert len(result.records) == MAX_STEPS_PER_RUN
    assert max(r.index for r in result.records) == MAX_STEPS_PER_RUN - 1
    assert all(s.command == "back" for s in result.steps)  # the tapOn after it never ran


def test_retry_passes_on_a_later_attempt(run: RunFlow) -> None:
    result = run(
        HEADER
        + """
- retry:
    maxRetries: 3
    commands:
      - evalScript: ${output.tries = (output.tries || 0) + 1}
      - assertTrue: ${output.tries >= 3}
- inputText: tried ${output.tries}
"""
    )
    assert result.status == "passed", result.outcome
    attempts = [(r.description, r.status) for r in sorted(result.records, key=lambda r: r.index) if r.depth == 1]
    assert attempts == [("attempt 1 of 4", "failed"), ("attempt 2 of 4", "failed"), ("attempt 3 of 4", "passed")]
    assert result.typed() == ["tried 3"]
    assert result.record("retry").status == "passed"


def test_retry_gives_up_after_max_retries(run: RunFlow) -> None:
    files = {"tap.yaml": "appId: com.qualgent.fixture\n---\n- tapOn: Checkout complete\n"}
    result = run(HEADER + "- retry:\n    maxRetries: 1\n    file: tap.yaml\n- back\n", files)
    assert result.status == "failed"
    assert [s.selector.text for s in result.steps if s.selector] == ["Checkout complete"] * 2
    assert result.tree() == [
        (0, None, 0, "retry tap.yaml", "failed"),
        (1, 0, 1, "attempt 1 of 2", "failed"),
        (2, 1, 2, 'tapOn "Checkout complete"', "failed"),
        (3, 0, 1, "attempt 2 of 2", "failed"),
        (4, 3, 2, 'tapOn "Checkout complete"', "failed"),
    ]
    assert result.failure["step"] == 4
    assert result.failure["message"].startswith('Step 5 (tapOn "Checkout complete", tap.yaml line 3) failed: ')
    # At most 3 retries, whatever is asked; 0 is a single attempt.
    capped = run(HEADER + "- retry:\n    maxRetries: 10\n    commands:\n      - tapOn: Nope\n")
    assert len([s for s in capped.steps if s.command == "tapOn"]) == 4
    once = run(HEADER + "- retry:\n    maxRetries: 0\n    commands:\n      - tapOn: Nope\n")
    assert len([s for s in once.steps if s.command == "tapOn"]) == 1
    default = run(HEADER + "- retry:\n    commands:\n      - tapOn: Nope\n")
    assert len([s for s in default.steps if s.command == "tapOn"]) == 2


def test_a_javascript_error_is_not_retried(run: RunFlow) -> None:
    files = {"boom.js": "output.runs = (output.runs || 0) + 1;\nnull.x;\n"}
    result = run(
        f"""
        appId: {APP_ID}
        onFlowComplete:
          - inputText: runs ${{output.runs}}
        ---
        - retry:
            maxRetries: 3
            commands:
              - runScript: boom.js
        """,
        files,
    )
    assert result.status == "failed"
    assert [r.description for r in result.records if r.depth == 1 and r.parent == 0] == ["attempt 1 of 4"]
    assert result.typed() == ["runs 1"]
    assert "boom.js line 2: TypeError" in result.failure["message"]


# --- hooks -----------------------------------------------------------------------------------------------


def test_a_failing_on_flow_start_skips_the_body_but_on_flow_complete_runs(run: RunFlow) -> None:
    result = run(
        f"""
        appId: {APP_ID}
        onFlowStart:
          - tapOn: Not in the build
          - inputText: never typed
        onFlowComplete:
          - inputText: cleaned up
        ---
        - inputText: body
        """
    )
    assert result.status == "failed"
    assert result.typed() == ["cleaned up"]
    assert result.tree() == [
        (0, None, 0, "onFlowStart", "failed"),
        (1, 0, 1, 'tapOn "Not in the build"', "failed"),
        (2, None, 0, "onFlowComplete", "passed"),
        (3, 2, 1, 'inputText "cleaned up"', "passed"),
    ]
    assert result.failure["step"] == 1


def test_a_failing_on_flow_complete_fails_a_passing_flow(run: RunFlow) -> None:
    result = run(
        f"""
        appId: {APP_ID}
        onFlowStart:
          - inputText: start
        onFlowComplete:
          - assertTrue: ${{output.done}}
        ---
        - inputText: body
        """
    )
    assert result.status == "failed"
    assert result.typed() == ["start", "body"]
    assert result.failure["step"] == 4
    assert result.failure["message"] == (
        "Step 5 (assertTrue \"${output.done}\", line 5) failed: assertion is false: ${output.done} is 'undefined'"
    )
    # A body failure wins over a complete hook's failure.
    both = run(
        f"appId: {APP_ID}\nonFlowComplete:\n  - tapOn: Nope too\n---\n- tapOn: Nope\n",
    )
    assert both.failure["step"] == 0 and "'Nope'" in both.failure["message"]
    assert both.record("onFlowComplete").status == "failed"


def test_a_subflow_s_hooks_run_around_it(run: RunFlow) -> None:
    files = {
        "sub.yaml": (
            "appId: com.qualgent.fixture\nonFlowStart:\n  - inputText: sub start\n"
            "onFlowComplete:\n  - inputText: sub end\n---\n- tapOn: Nope\n"
        )
    }
    result = run(HEADER + "- runFlow: sub.yaml\n", files)
    assert result.status == "failed"
    assert result.typed() == ["sub start", "sub end"]
    assert result.tree() == [
        (0, None, 0, "runFlow sub.yaml", "failed"),
        (1, 0, 1, "onFlowStart", "passed"),
        (2, 1, 2, 'inputText "sub start"', "passed"),
        (3, 0, 1, 'tapOn "Nope"', "failed"),
        (4, 0, 1, "onFlowComplete", "passed"),
        (5, 4, 2, 'inputText "sub end"', "passed"),
    ]
    assert result.failure["step"] == 3


# --- optional ------------------------------------------------------------------------------------------


def test_an_optional_step_that_does_not_pass_is_skipped_and_the_flow_goes_on(run: RunFlow) -> None:
    result = run(
        HEADER
        + """
- tapOn:
    text: Maybe later
    optional: true
- runFlow:
    optional: true
    commands:
      - tapOn: Not there either
- assertTrue:
    condition: ${false}
    optional: true
- inputText: went on
"""
    )
    assert result.status == "passed", result.outcome
    assert result.typed() == ["went on"]
    assert result.statuses() == {
        'tapOn "Maybe later"': "skipped",
        "runFlow": "skipped",
        'tapOn "Not there either"': "failed",
        'assertTrue "${false}"': "skipped",
        'inputText "went on"': "passed",
    }
    tap = result.record('tapOn "Maybe later"')
    assert "No text 'Maybe later' in the build" in tap.message
    assert result.record("runFlow").message.startswith('optional: Step 3 (tapOn "Not there either", line 10) failed')


def test_a_javascript_error_fails_even_an_optional_step(run: RunFlow) -> None:
    for flow in (
        "- evalScript:\n    script: ${throw new Error('bad')}\n    optional: true\n- back\n",
        "- inputText:\n    text: ${nope()}\n    optional: true\n- back\n",
        "- runScript:\n    file: bad.js\n    optional: true\n- back\n",
        "- runFlow:\n    optional: true\n    commands:\n      - evalScript: ${null.x}\n- back\n",
    ):
        result = run(HEADER + flow, {"bad.js": "throw new Error('bad');"})
        assert result.status == "failed", flow
        assert result.steps == [], flow


# --- the report: nesting, failure step, masking, progress ---------------------------------------------------


def test_nested_records_carry_parent_depth_and_index_order(run: RunFlow) -> None:
    files = {
        "login.yaml": "appId: com.qualgent.fixture\n---\n- tapOn: Sign in\n- repeat:\n    times: 2\n    commands:\n      - back\n",
    }
    result = run(
        f"""
        appId: {APP_ID}
        onFlowStart:
          - launchApp
        onFlowComplete:
          - back
        ---
        - runFlow: login.yaml
        - retry:
            commands:
              - inputText: hi
        - back
        """,
        files,
    )
    assert result.status == "passed", result.outcome
    assert result.tree() == [
        (0, None, 0, "onFlowStart", "passed"),
        (1, 0, 1, "launchApp", "passed"),
        (2, None, 0, "runFlow login.yaml", "passed"),
        (3, 2, 1, 'tapOn "Sign in"', "passed"),
        (4, 2, 1, "repeat 2 times", "passed"),
        (5, 4, 2, "iteration 1", "passed"),
        (6, 5, 3, "back", "passed"),
        (7, 4, 2, "iteration 2", "passed"),
        (8, 7, 3, "back", "passed"),
        (9, None, 0, "retry", "passed"),
        (10, 9, 1, "attempt 1 of 2", "passed"),
        (11, 10, 2, 'inputText "hi"', "passed"),
        (12, None, 0, "back", "passed"),
        (13, None, 0, "onFlowComplete", "passed"),
        (14, 13, 1, "back", "passed"),
    ]
    # Children are reported before their parent; a parent finishes after all of its children.
    order = [r.index for r in result.records]
    assert order == [1, 0, 3, 6, 5, 8, 7, 4, 2, 11, 10, 9, 12, 14, 13]
    # The device saw the steps with their own index, path and line.
    assert [(s.index, s.command, s.path, s.line) for s in result.steps] == [
        (1, "launchApp", "", 3),
        (3, "tapOn", "login.yaml", 3),
        (6, "back", "login.yaml", 7),
        (8, "back", "login.yaml", 7),
        (11, "inputText", "", 10),
        (12, "back", "", 11),
        (14, "back", "", 5),
    ]


def test_the_failure_points_at_the_innermost_step(run: RunFlow) -> None:
    files = {
        "a.yaml": "appId: com.qualgent.fixture\n---\n- back\n- runFlow: b.yaml\n",
        "b.yaml": "- repeat:\n    times: 1\n    commands:\n      - tapOn:\n          id: no_such_id\n",
    }
    result = run(HEADER + "- launchApp\n- runFlow: a.yaml\n- back\n", files)
    assert result.status == "failed"
    failed = [r for r in result.records if r.status == "failed"]
    innermost = min(failed, key=lambda r: -r.depth)
    assert innermost.description == 'tapOn id "no_such_id"' and innermost.depth == 4
    assert result.failure["step"] == innermost.index == 6
    assert result.failure["message"] == (
        'Step 7 (tapOn id "no_such_id", b.yaml line 4) failed: '
        "No resource id 'no_such_id' in the build: the simulated device cannot find it on any screen."
    )
    assert {r.description for r in failed} == {
        'tapOn id "no_such_id"',
        "iteration 1",
        "repeat 1 times",
        "runFlow b.yaml",
        "runFlow a.yaml",
    }


def test_secret_values_are_masked_in_everything_reported(run: RunFlow) -> None:
    files = {"log.js": "console.log('token=' + TOKEN + ' password=' + PASSWORD);\n"}
    result = run(
        f"""
        appId: {APP_ID}
        env:
          GREETING: hi ${{PASSWORD}}
        ---
        - inputText: ${{PASSWORD}}
        - inputText:
            text: ${{GREETING}}
            label: Type ${{PASSWORD}} again
        - runScript:
            file: log.js
            env:
              TOKEN: ${{PASSWORD}}-suffix
        - tapOn: ${{PASSWORD}}
        """,
        files,
        variables={"PASSWORD": "hunter2", "PASSWORD_LONG": "hunter2-suffix"},
        secrets=("hunter2", "hunter2-suffix", ""),
    )
    assert result.status == "failed"
    # The device got the real values ...
    assert result.typed() == ["hunter2", "hi hunter2"]
    assert result.steps[-1].selector is not None and result.steps[-1].selector.text == "hunter2"
    # ... the report never shows them.
    everything = json.dumps([r.as_dict() for r in result.records]) + json.dumps(result.failure)
    assert "hunter2" not in everything
    assert [r.description for r in result.records] == [
        f'inputText "{MASK}"',
        f"Type {MASK} again",
        "runScript log.js",
        f'tapOn "{MASK}"',
    ]
    # The longer secret is masked as a whole, not as the shorter one plus its tail.
    assert result.records[2].logs == [f"console: token={MASK} password={MASK}"]
    assert result.failure["message"] == (
        f"Step 4 (tapOn \"{MASK}\", line 13) failed: No text '{MASK}' in the build: "
        "the simulated device cannot find it on any screen."
    )
    assert all(MASK in line for line in result.records[3].logs)
    # The step handed to the device keeps a masked description for the driver's own logs.
    assert result.steps[0].describe() == f'inputText "{MASK}"'


def test_progress_counts_top_level_commands(run: RunFlow) -> None:
    result = run(
        f"""
        appId: {APP_ID}
        onFlowStart:
          - launchApp
        ---
        - back
        - runFlow:
            commands:
              - back
              - back
        - back
        """
    )
    assert result.status == "passed", result.outcome
    # Four units (the hook and three commands): each record carries the share finished before it.
    assert list(zip([r.description for r in result.records], result.progress, strict=True)) == [
        ("launchApp", 0),
        ("onFlowStart", 0),
        ("back", 25),
        ("back", 50),
        ("back", 50),
        ("runFlow", 50),
        ("back", 75),
    ]


# --- JavaScript workers and event loops ----------------------------------------------------------------


def test_scripts_work_in_a_second_event_loop_of_the_same_process(tmp_path: Path) -> None:
    """An agent process may run flows in more than one event loop (the test suite's agents each have one):
    a JavaScript worker started for one loop must not be handed to another."""
    program = tmp_path / "two_loops.py"
    program.write_text(
        textwrap.dedent(
            f"""
            import asyncio
            from qualgent.drivers.base import AppUnderTest, DeviceConfig
            from qualgent.drivers.simulator import SimulatorDriver
            from qualgent.flows.bundle import check_bundle
            from qualgent.flows.engine import FlowRunner, RunValues

            class Reporter:
                async def step(self, record, progress):
                    pass

            async def once():
                bundle = check_bundle("- inputText: ${{1 + 1}}\\n", {{}})
                device = DeviceConfig("d", "Pixel 7", "Android", "14")
                app = AppUnderTest({str(APK)!r}, "0" * 64, "android", {APP_ID!r})
                session = await SimulatorDriver(0).open(device, app, bundle.flow)
                outcome = await FlowRunner(bundle, session, RunValues("Android"), Reporter()).run()
                return outcome.status

            print(asyncio.run(once()), flush=True)
            print(asyncio.run(once()), flush=True)
            """
        )
    )
    done = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["passed", "passed"], done.stderr[-3000:]
    assert done.returncode == 0, done.stderr[-3000:]
