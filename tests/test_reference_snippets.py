"""Every curl, Python requests, Node fetch and Go snippet of the API reference works against the server.

The promise: each snippet, with the base URL replaced (and the placeholder key and IDs replaced by real
ones), runs against a live server and returns the documented shape.

``tests/reference_snippets/`` holds the reference's snippets, one file per call and language, verbatim
but for indentation (the reference lost its indentation when it was extracted; the Python upload snippet
needs it back to run, and gofmt aligns Go map literals). ``test_snippet_files_are_the_reference_verbatim``
checks that, line by line and ignoring whitespace, against ``shared/spec/api-reference.md``.

At test time, in a temporary copy and never in the files, placeholders are replaced mechanically:

    http://api.qualgent.ai                  -> the live server's URL
    qg_your_api_key_here                    -> a real key of a fresh organisation
    tc_xyz789                               -> a real test case (in the category below)
    file_abc123                             -> a real uploaded app
    run_abc123                              -> a real queued run
    770e8400-e29b-41d4-a716-446655440000    -> a real category
    /path/to/your/app.apk                   -> a real APK (tests.fixtures.factories.apk_bytes())

Where a snippet cannot run as printed, or prints nothing to check, the test wraps it mechanically:

- Node: the snippets use top-level ``await`` in CommonJS (they ``require(...)``), which Node refuses: older
  Node says "await is only valid in async functions"; Node >= 20.19 re-reads the file as an ES module and
  then fails on "require is not defined in ES module scope". Each is wrapped in ``(async () => { ... })()``, and code
  is added around it: before, ``console.log`` is made to print objects as JSON, since Node's default
  (util.inspect) elides objects nested deeper than two levels as ``[Object]`` and prints no JSON; after,
  the response's status (and its body, where the snippet left it unread) is written to a record file.
  The auth section's snippet calls the global ``fetch`` without requiring node-fetch: that is Node >= 18's
  built-in fetch, used as is. Packages (node-fetch v2, form-data, dotenv) come from
  ``tests/reference_snippets/node/node_modules`` through NODE_PATH.
- Python: each snippet runs unchanged through ``runpy.run_path`` in a small runner, which then records the
  status and body of the snippet's ``response`` variable (the auth section's snippet prints nothing).
- Go: the snippets ignore every error, and the auth section's prints nothing. Placeholders sit inside
  string literals, so each is replaced by ``" + qgEnv("QG_…") + "``, and one file is added to the
  package: ``qgEnv`` (reads the real value from the environment, so each binary is built once per
  session and reused on both backends) and an ``init`` that wraps ``http.DefaultTransport`` (which the
  snippets' ``&http.Client{}`` uses) to record each response's status and body. An ignored error
  (no response) makes the snippet panic on ``resp.Body``, which fails the test with Go's message.
- curl: run unchanged with bash; a ``.curlrc`` in a temporary CURL_HOME adds a ``write-out`` of the
  HTTP status to stderr. The reference's curl example for ``POST /v1/test-cases/run`` has a trailing comma
  after ``"app_file_id": "file_abc123",``, which strict JSON refuses: the server deliberately accepts it
  (``qualgent.lenient_json``), and this test runs the example with the comma in place.
- The auth section's Python and Node snippets load the key from a ``.env`` file (dotenv); the test writes
  ``QUALGENT_API_KEY=<key>`` to a ``.env`` beside the copy and leaves it out of the environment, so a 200
  shows that dotenv supplied it. Its Go snippet reads QUALGENT_API_KEY from the environment, as it says.

Node and Go must be installed: ``bash tests/reference_snippets/install.sh`` (CI runs it before the
suite). Without them these tests fail, and say so; they never skip.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.contract import json_type
from tests.fixtures.factories import PIXEL_7, Tenant, apk_bytes, create_category, create_test_case, upload_app
from tests.fixtures.servers import LiveServer

SNIPPETS = Path(__file__).parent / "reference_snippets"
REPO = Path(__file__).resolve().parent.parent
INSTALL_HINT = "run `bash tests/reference_snippets/install.sh` (it installs Node packages and Go)"

LANGUAGES = ["curl", "python", "node", "go"]
CALLS = ["list_test_cases", "list_apps", "upload_app", "run_test_cases", "run_all", "list_jobs", "job_status"]
EXTENSIONS = {"curl": "sh", "python": "py", "node": "js"}

# The reference's placeholders, in substitution order, with the environment variable that carries each
# real value into the Go binaries.
PLACEHOLDERS = {
    "http://api.qualgent.ai": "QG_BASE_URL",
    "qg_your_api_key_here": "QG_API_KEY",
    "tc_xyz789": "QG_TEST_CASE_ID",
    "file_abc123": "QG_APP_FILE_ID",
    "run_abc123": "QG_RUN_ID",
    "770e8400-e29b-41d4-a716-446655440000": "QG_CATEGORY_ID",
    "/path/to/your/app.apk": "QG_APK_PATH",
}

RUN_STATUSES = {"queued", "running", "passed", "failed", "cancelled"}
SUBPROCESS_TIMEOUT = 60
GO_CACHE = Path("/tmp/qualgent-reference-snippets-go")


def snippet_path(language: str, call: str) -> Path:
    if language == "go":
        return SNIPPETS / "go" / call / "main.go"
    return SNIPPETS / language / f"{call}.{EXTENSIONS[language]}"


# ------------------------------------------------------------------------- documented response shapes
# The reference's example responses, copied verbatim. A response matches when it has every key of the
# example with the same JSON type (extra keys allowed); arrays are checked element by element against the
# example's first element, and must not be empty where the example is not.

TEST_CASE_LIST_EXAMPLE = [
    {
        "id": "tc_1234567890",
        "name": "Login Flow Test",
        "status": "active",
        "category": {"id": "cat_abc123", "name": "Smoke Tests"},
        "latest_completed_run": {
            "id": "run_abc123def456",
            "link": "https://app.qualgent.ai/test-runs/run_abc123def456",
            "app": {"id": "file_xyz789", "name": "MyApp v1.0.0"},
            "status": "passed",
            "priority": "medium",
            "progress": 100,
            "executed_by": {"id": "user_abc123", "name": "John Doe", "email": "john@example.com"},
            "device": "iPhone 14 Pro",
        },
    }
]

# The reference gives no example body for listing apps; its field table does (id, name, version, os, link).
APP_LIST_EXAMPLE = [{"id": "file_…", "name": "app.apk", "version": "1.0.0", "os": "android", "link": "https://…"}]

UPLOAD_EXAMPLE = {
    "success": True,
    "file": {
        "file_path": "user_abc123/1757339253852-MyApp-1.0.0.apk",
        "filename": "1757339253852-MyApp-1.0.0.apk",
        "original_name": "app.apk",
        "file_size": 52428800,
        "file_type": "application/vnd.android.package-archive",
        "app_name": "MyApp",
        "version": "1.0.0",
        "os": "android",
        "user_id": "user_abc123",
        "organization_id": "org_xyz789",
    },
}

RUN_EXAMPLE = {"success": True, "jobs": [{"link": "https://app.qualgent.ai/test-runs/run_abc123def456"}]}

RUN_ALL_EXAMPLE = {
    "success": True,
    "jobs": [
        {"link": "https://app.qualgent.ai/test-runs/run_abc123"},
        {"link": "https://app.qualgent.ai/test-runs/run_def456"},
        {"link": "https://app.qualgent.ai/test-runs/run_ghi789"},
    ],
}

JOB_LIST_EXAMPLE = {
    "test_runs": [
        {
            "id": "run_abc123",
            "link": "https://app.qualgent.ai/test-runs/run_abc123",
            "test_case": {"id": "tc_1234567890", "name": "Login Flow Test"},
            "app": {"id": "file_xyz789", "name": "MyApp v1.0.0"},
            "status": "completed",
            "priority": "medium",
            "progress": 100,
            "executed_by": {"name": "John Doe", "email": "john@example.com"},
            "device": "iPhone 14 Pro",
        },
        {
            "id": "run_def456",
            "link": "https://app.qualgent.ai/test-runs/run_def456",
            "test_case": {"id": "tc_9876543210", "name": "Payment Flow Test"},
            "app": {"id": "file_xyz789", "name": "MyApp v1.0.0"},
            "status": "running",
            "priority": "high",
            "progress": 45,
            "executed_by": {"name": "Jane Smith", "email": "jane@example.com"},
            "device": "Pixel 7",
        },
    ]
}

JOB_STATUS_EXAMPLE = {
    "id": "run_abc123",
    "test_case": {"id": "tc_1234567890", "name": "Login Flow Test"},
    "app": {"id": "file_xyz789", "name": "MyApp v1.0.0"},
    "status": "completed|failed|queued|running",
    "priority": "medium",
    "progress": 100,
    "executed_by": {"id": "user_abc123", "name": "John Doe", "email": "john@example.com"},
    "device": "iPhone 14 Pro",
}

EXAMPLES: dict[str, Any] = {
    "list_test_cases": TEST_CASE_LIST_EXAMPLE,
    "list_apps": APP_LIST_EXAMPLE,
    "upload_app": UPLOAD_EXAMPLE,
    "run_test_cases": RUN_EXAMPLE,
    "run_all": RUN_ALL_EXAMPLE,
    "list_jobs": JOB_LIST_EXAMPLE,
    "job_status": JOB_STATUS_EXAMPLE,
}

# Keys the reference documents as present only sometimes: a test case's category "(if assigned)" and latest
# completed run "(if any)". The key must be there; it may be null, and when it is not it must match the
# example. Our categorised test case's category is checked by check_meaning; no run has finished here (no
# device executes one), so latest_completed_run is null.
NULLABLE = frozenset({"category", "latest_completed_run"})


def assert_shape(actual: Any, example: Any, where: str = "$") -> None:
    assert json_type(actual) == json_type(example), (
        f"{where}: expected {json_type(example)} as in the reference, got {json_type(actual)}: {actual!r}"
    )
    if isinstance(example, dict):
        for key, sub in example.items():
            assert key in actual, f"{where}: missing {key!r} (the reference shows it); keys: {sorted(actual)}"
            if key in NULLABLE and actual[key] is None:
                continue
            assert_shape(actual[key], sub, f"{where}.{key}")
    elif isinstance(example, list) and example:
        assert actual, f"{where}: empty array where the reference shows items"
        for i, item in enumerate(actual):
            assert_shape(item, example[0], f"{where}[{i}]")


# ------------------------------------------------------------------------------------------ the world


@dataclass
class World:
    """Real values for the reference's placeholders, in one organisation on one live server."""

    base_url: str
    key: str
    test_case_id: str
    app_file_id: str
    run_id: str
    category_id: str
    apk_path: Path
    other_test_case_id: str

    def values(self) -> dict[str, str]:
        real = [self.base_url, self.key, self.test_case_id, self.app_file_id, self.run_id, self.category_id]
        return dict(zip(PLACEHOLDERS, [*real, str(self.apk_path)], strict=True))

    def go_env(self) -> dict[str, str]:
        return {env: self.values()[placeholder] for placeholder, env in PLACEHOLDERS.items()}


@pytest.fixture
def world(tenant: Tenant, server: LiveServer, tmp_path: Path) -> World:
    apk = tmp_path / "apk" / "app.apk"
    apk.parent.mkdir()
    apk.write_bytes(apk_bytes())
    uploaded = upload_app(tenant, apk.read_bytes())
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["file"]["id"]
    category = create_category(tenant)
    case = create_test_case(tenant, category_id=category["id"])
    # Outside the category: run-all with the reference's category filter must leave it alone.
    other = create_test_case(tenant, name="Payment Flow Test")
    queued = tenant.client.post(
        "/v1/test-cases/run", json={"jobs": [{"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7}]}
    )
    assert queued.status_code == 200, queued.text
    return World(
        base_url=server.url,
        key=tenant.key,
        test_case_id=case["id"],
        app_file_id=file_id,
        run_id=queued.json()["jobs"][0]["id"],
        category_id=category["id"],
        apk_path=apk,
        other_test_case_id=other["id"],
    )


def substitute(text: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


# ----------------------------------------------------------------------------------------- running


@dataclass
class Outcome:
    """What a snippet did: its output, and the HTTP status (and body, where known) of its response."""

    stdout: str
    stderr: str
    http_status: int | None
    body: str | None = None
    command: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"command: {self.command}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr[-4000:]}"


def base_env(home: Path) -> dict[str, str]:
    """A small, explicit environment: no proxies or stray QUALGENT_* variables from the caller."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)


def read_record(path: Path) -> tuple[int | None, str | None]:
    if not path.exists():
        return None, None
    record = json.loads(path.read_text())
    return record["status"], record["body"]


def require_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed: {INSTALL_HINT}", pytrace=False)
    return found


def run_curl(call: str, world: World, work: Path) -> Outcome:
    bash = require_tool("bash")
    require_tool("curl")
    script = work / f"{call}.sh"
    script.write_text(substitute(snippet_path("curl", call).read_text(), world.values()))
    # Only adds a report of the status on stderr; the snippet's own output (the body) is untouched.
    (work / ".curlrc").write_text('write-out = "%{stderr}\\nqualgent-http-status=%{http_code}\\n"\n')
    env = {**base_env(work), "CURL_HOME": str(work)}
    done = run([bash, str(script)], work, env)
    outcome = Outcome(done.stdout, done.stderr, None, command=done.args)
    assert done.returncode == 0, f"curl snippet exited {done.returncode}\n{outcome.describe()}"
    found = re.findall(r"qualgent-http-status=(\d+)", done.stderr)
    assert len(found) == 1, outcome.describe()
    outcome.http_status = int(found[0])
    return outcome


PYTHON_RUNNER = """\
import json, runpy, sys

namespace = runpy.run_path(sys.argv[1], run_name="__main__")
response = namespace["response"]
with open(sys.argv[2], "w") as f:
    json.dump({"status": response.status_code, "body": response.text}, f)
"""


@functools.cache
def python_missing() -> list[str]:
    return [m for m in ("requests", "dotenv") if subprocess.run([sys.executable, "-c", f"import {m}"]).returncode]


def run_python(call: str, world: World, work: Path) -> Outcome:
    missing = python_missing()
    if missing:
        pytest.fail(f"{missing} not importable by {sys.executable}: run `./dev test` or `pip install -e .[dev]`")
    script = work / f"{call}.py"
    script.write_text(substitute(snippet_path("python", call).read_text(), world.values()))
    (work / ".env").write_text(f"QUALGENT_API_KEY={world.key}\n")
    (work / "runner.py").write_text(PYTHON_RUNNER)
    record = work / "record.json"
    done = run([sys.executable, str(work / "runner.py"), str(script), str(record)], work, base_env(work))
    status, body = read_record(record)
    outcome = Outcome(done.stdout, done.stderr, status, body, done.args)
    assert done.returncode == 0, f"Python snippet exited {done.returncode}\n{outcome.describe()}"
    return outcome


NODE_PROLOGUE = (
    "// Wrapped by tests/test_reference_snippets.py: console.log prints objects as JSON; top-level await\n"
    "// runs inside an async function; the response's status (and unread body) is recorded afterwards.\n"
    "console.log = (...args) => process.stdout.write("
    "args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ') + '\\n');\n"
    "(async () => {\n"
)
NODE_EPILOGUE = (
    "\nrequire('fs').writeFileSync(process.env.QG_RECORD, JSON.stringify("
    "{ status: response.status, body: response.bodyUsed ? null : await response.text() }));\n"
    "})().catch((err) => { console.error(err); process.exit(1); });\n"
)


def run_node(call: str, world: World, work: Path) -> Outcome:
    node = require_tool("node")
    modules = SNIPPETS / "node" / "node_modules"
    for package in ("node-fetch", "form-data", "dotenv"):
        if not (modules / package / "package.json").exists():
            pytest.fail(f"Node package {package} is not installed in {modules}: {INSTALL_HINT}", pytrace=False)
    script = work / f"{call}.js"
    snippet = substitute(snippet_path("node", call).read_text(), world.values())
    script.write_text(NODE_PROLOGUE + snippet + NODE_EPILOGUE)
    (work / ".env").write_text(f"QUALGENT_API_KEY={world.key}\n")
    record = work / "record.json"
    env = {**base_env(work), "NODE_PATH": str(modules), "QG_RECORD": str(record)}
    done = run([node, str(script)], work, env)
    status, body = read_record(record)
    outcome = Outcome(done.stdout, done.stderr, status, body, done.args)
    assert done.returncode == 0, f"Node snippet exited {done.returncode}\n{outcome.describe()}"
    return outcome


GO_SUPPORT = """\
package main

// Added beside the reference's main.go by tests/test_reference_snippets.py (see its docstring).

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
)

// qgEnv is what each placeholder of the reference became: the real value, from the environment.
func qgEnv(name string) string {
	value, ok := os.LookupEnv(name)
	if !ok {
		panic(name + " is not set")
	}
	return value
}

// recordingTransport writes each response's status and body to $QG_RECORD and hands the body on.
type recordingTransport struct{ next http.RoundTripper }

func (t recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	record, _ := json.Marshal(map[string]interface{}{"status": resp.StatusCode, "body": string(body)})
	if err := os.WriteFile(qgEnv("QG_RECORD"), record, 0o644); err != nil {
		panic(err)
	}
	return resp, nil
}

func init() {
	http.DefaultTransport = recordingTransport{http.DefaultTransport}
}
"""


def go_env(home: Path) -> dict[str, str]:
    return {
        **base_env(home),
        "GOPATH": str(GO_CACHE / "gopath"),
        "GOCACHE": str(GO_CACHE / "cache"),
        "GOFLAGS": "-mod=mod",
        "GO111MODULE": "on",
        "GOPROXY": "off",  # the snippets use the standard library only
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",  # pure-Go net: no C compiler needed
    }


class GoBinaries:
    """The Go snippets, built once per session (placeholders read at run time) and shared by both backends."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[str, Path] | None = None
        self.error: str | None = None

    def binary(self, call: str) -> Path:
        if self.built is None and self.error is None:
            self._build()
        if self.error is not None:
            pytest.fail(self.error, pytrace=False)
        assert self.built is not None
        return self.built[call]

    def _build(self) -> None:
        go = shutil.which("go")
        if go is None:
            self.error = f"`go` is not installed: {INSTALL_HINT}"
            return
        src, bin_dir = self.root / "src", self.root / "bin"
        src.mkdir()
        bin_dir.mkdir()
        (src / "go.mod").write_text("module qualgent.test/referencesnippets\n\ngo 1.19\n")
        go_values = {placeholder: f'" + qgEnv("{env}") + "' for placeholder, env in PLACEHOLDERS.items()}
        for call in CALLS:
            package = src / call
            package.mkdir()
            (package / "main.go").write_text(substitute(snippet_path("go", call).read_text(), go_values))
            (package / "qualgent_support.go").write_text(GO_SUPPORT)
        done = run([go, "build", "-o", str(bin_dir) + "/", "./..."], src, go_env(self.root))
        if done.returncode != 0:
            self.error = f"go build of the reference's Go snippets failed:\n{done.stdout}\n{done.stderr}"
            return
        self.built = {call: bin_dir / call for call in CALLS}


@pytest.fixture(scope="session")
def go_binaries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoBinaries]:
    yield GoBinaries(tmp_path_factory.mktemp("go-snippets"))


def run_go(call: str, world: World, work: Path, binaries: GoBinaries) -> Outcome:
    binary = binaries.binary(call)
    record = work / "record.json"
    env = {**base_env(work), **world.go_env(), "QG_RECORD": str(record), "QUALGENT_API_KEY": world.key}
    done = run([str(binary)], work, env)
    status, body = read_record(record)
    outcome = Outcome(done.stdout, done.stderr, status, body, done.args)
    assert done.returncode == 0, f"Go snippet exited {done.returncode}\n{outcome.describe()}"
    return outcome


# ------------------------------------------------------------------------------------------- checks


def printed_value(language: str, outcome: Outcome) -> Any:
    """The value a snippet printed: JSON (curl, Go, Node with JSON console.log), or a Python repr."""
    text = outcome.stdout.strip()
    assert text, f"the snippet printed nothing\n{outcome.describe()}"
    try:
        if language == "python":
            return ast.literal_eval(text)  # print(response.json()) prints a dict/list repr
        return json.loads(text)
    except (ValueError, SyntaxError) as exc:
        raise AssertionError(f"could not parse what the snippet printed ({exc})\n{outcome.describe()}") from exc


def check_meaning(call: str, value: Any, world: World) -> None:
    """Beyond the shape: the response is about the objects the snippet named."""
    if call == "list_test_cases":
        ours = [c for c in value if c["id"] == world.test_case_id]
        assert len(ours) == 1, value
        assert ours[0]["category"]["id"] == world.category_id
    elif call == "list_apps":
        assert world.app_file_id in [a["id"] for a in value], value
    elif call == "upload_app":
        uploaded = value["file"]
        assert value["success"] is True
        assert (uploaded["app_name"], uploaded["version"], uploaded["os"]) == ("MyApp", "1.0.0", "android")
        assert uploaded["original_name"] == "app.apk"
        assert uploaded["file_size"] == world.apk_path.stat().st_size
    elif call in ("run_test_cases", "run_all"):
        assert value["success"] is True
        # run-all with the category filter: our one categorised test case, not the other one.
        assert len(value["jobs"]) == 1, value
        assert value["jobs"][0]["link"].startswith(f"{world.base_url}/test-runs/run_"), value
    elif call == "list_jobs":
        assert world.run_id in [r["id"] for r in value["test_runs"]], value
    elif call == "job_status":
        assert value["id"] == world.run_id
        assert value["status"] in RUN_STATUSES, value


def check_printed_status(outcome: Outcome) -> None:
    """The Python and Node status snippets print `Status: <status>`."""
    match = re.fullmatch(r"Status: (\S+)", outcome.stdout.strip())
    assert match, f"expected `Status: <status>`\n{outcome.describe()}"
    assert match.group(1) in RUN_STATUSES, outcome.describe()


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("language", LANGUAGES)
def test_reference_snippet(language: str, call: str, world: World, tmp_path: Path, go_binaries: GoBinaries) -> None:
    work = tmp_path / "work"
    work.mkdir()
    if language == "curl":
        outcome = run_curl(call, world, work)
    elif language == "python":
        outcome = run_python(call, world, work)
    elif language == "node":
        outcome = run_node(call, world, work)
    else:
        outcome = run_go(call, world, work, go_binaries)

    assert outcome.http_status == 200, f"expected HTTP 200\n{outcome.describe()}\nbody: {outcome.body}"

    if call == "job_status" and language in ("python", "node"):
        check_printed_status(outcome)
        value = json.loads(outcome.body) if outcome.body is not None else None  # Python's runner has it
    elif call == "list_apps" and language != "curl":
        # The auth section's Python, Node and Go snippets make the request and print nothing.
        assert outcome.stdout.strip() == "", outcome.describe()
        assert outcome.body is not None, outcome.describe()
        value = json.loads(outcome.body)
    else:
        value = printed_value(language, outcome)

    if value is not None:
        assert_shape(value, EXAMPLES[call])
        check_meaning(call, value, world)


# ------------------------------------------------------------------------------------- verbatim-ness


def reference_path() -> Path | None:
    configured = os.environ.get("QUALGENT_API_REFERENCE")
    candidates = [Path(configured)] if configured else []
    candidates.append(REPO.parent / "shared" / "spec" / "api-reference.md")
    return next((p for p in candidates if p.is_file()), None)


def normalized_lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def test_snippet_files_are_the_reference_verbatim() -> None:
    """Each snippet file is the reference's text, line for line (whitespace aside), and none is missing."""
    reference = reference_path()
    if reference is None:
        pytest.skip("shared/spec/api-reference.md is not beside the repository (set QUALGENT_API_REFERENCE)")
    ref_lines = normalized_lines(reference.read_text())
    starts: set[int] = set()
    for language in LANGUAGES:
        for call in CALLS:
            lines = normalized_lines(snippet_path(language, call).read_text())
            found = [i for i in range(len(ref_lines)) if ref_lines[i : i + len(lines)] == lines]
            assert found, f"{snippet_path(language, call)} is not a verbatim snippet of {reference}"
            starts.update(found)
    # Every call in every language has its file: each request snippet names one /v1/ URL on the base URL.
    urls = sum(line.count("http://api.qualgent.ai/v1/") for line in ref_lines)
    assert urls == len(LANGUAGES) * len(CALLS) == len(starts), (urls, len(starts))
