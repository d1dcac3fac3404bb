"""Maestro workspaces as they are (tests/fixtures/maestro_workspaces/) become test cases with
`qualgent test-cases sync`, and run with `qualgent run-all` on simulated devices.

The CLI runs as a CI job runs it (a subprocess, real HTTP) against a live server on SQLite and on
PostgreSQL, with a device agent of simulated devices. The first part checks the pieces sync is made of
(globs, tags, the config, a workspace's flows and their bundles) without a server."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qualgent.client import testsync
from qualgent.client.models import Step, TestCase, TestCaseDetail
from qualgent.client.testsync import (
    FlowGlobs,
    WorkspaceError,
    is_flow_file,
    parse_config,
    read_workspace,
    tags_selected,
)
from tests.fixtures.agents import agent_token, running_agent, simulated_devices
from tests.fixtures.cli import HELLO_APK, Cli, Result
from tests.fixtures.factories import Database, Tenant, make_tenant
from tests.fixtures.servers import LiveServer, live_server

WORKSPACES = Path(__file__).parent / "fixtures" / "maestro_workspaces"
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "workspaces.md"


# ------------------------------------------------------------------------------------------- globs


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*", "login.yaml", True),
        ("*", "smoke/login.yaml", False),  # `*` stays in its folder: Maestro's default is the top level
        ("**", "login.yaml", True),
        ("**", "smoke/deep/login.yaml", True),
        ("*/*", "smoke/login.yaml", True),
        ("*/*", "login.yaml", False),
        ("*/*", "smoke/deep/login.yaml", False),
        ("**/*.yaml", "login.yaml", False),  # as in Java: `**/` needs a folder
        ("**/*.yaml", "a/b/login.yaml", True),
        ("smoke/**", "smoke/a/b.yaml", True),
        ("?.yaml", "a.yaml", True),
        ("?.yaml", "ab.yaml", False),
        ("a?b.yaml", "a/b.yaml", False),  # `?` is not `/`
        ("[ab]*.yaml", "b1.yaml", True),
        ("[!ab]*.yaml", "b1.yaml", False),
        ("[!ab]*.yaml", "c1.yaml", True),
        ("[a-c]x.yaml", "bx.yaml", True),
        ("[a-c]x.yaml", "dx.yaml", False),
        ("[-a]x.yaml", "-x.yaml", True),
        ("{smoke,auth}/*", "auth/login.yaml", True),
        ("{smoke,auth}/*", "payments/login.yaml", False),
        ("*.{yaml,yml}", "launch.yml", True),
        ("login.y?ml", "login.yaml", True),
        (r"a\*b.yaml", "a*b.yaml", True),
        (r"a\*b.yaml", "axb.yaml", False),
        ("flows/(x).yaml", "flows/(x).yaml", True),  # regex characters are literal
        ("a+b.yaml", "aab.yaml", False),
    ],
)
def test_glob_matching_follows_java_nio(pattern: str, path: str, matches: bool) -> None:
    assert FlowGlobs([pattern]).matches(path) is matches


def test_negative_patterns_exclude() -> None:
    globs = FlowGlobs(["**", "!**/wip_*", "!drafts/*"])
    assert globs.matches("login.yaml") and globs.matches("auth/login.yaml")
    assert not globs.matches("auth/wip_logout.yaml")
    assert not globs.matches("drafts/idea.yaml")
    assert globs.matches("drafts/deeper/idea.yaml")  # `drafts/*` stays in drafts/


@pytest.mark.parametrize(
    ("patterns", "problem"),
    [
        (["!**/wip_*"], "only exclusions"),
        (["{a,{b}}"], "nested"),
        (["{a,b"], "no closing"),
        (["[ab"], "no closing"),
        (["a/[b/c]"], "`/` cannot be inside"),
        (["[z-a]"], "backwards"),
        (["a\\"], "nothing to escape"),
        (["!"], "empty pattern"),
    ],
)
def test_bad_patterns_are_errors(patterns: list[str], problem: str) -> None:
    with pytest.raises(WorkspaceError, match=problem):
        FlowGlobs(patterns)


# -------------------------------------------------------------------------------------- tags, config


@pytest.mark.parametrize(
    ("tags", "include", "exclude", "require", "selected"),
    [
        ((), (), (), (), True),
        (("smoke",), ("smoke", "regression"), (), (), True),
        (("nightly",), ("smoke", "regression"), (), (), False),
        ((), ("smoke",), (), (), False),  # with include tags, an untagged flow is out
        (("smoke", "flaky"), ("smoke",), ("flaky",), (), False),
        (("smoke",), (), ("flaky",), (), True),
        (("smoke", "android"), (), (), ("android",), True),
        (("smoke",), (), (), ("smoke", "android"), False),  # every require tag
        (("smoke", "android"), ("smoke",), ("ios",), ("android",), True),
    ],
)
def test_tag_filter(
    tags: tuple[str, ...], include: tuple[str, ...], exclude: tuple[str, ...], require: tuple[str, ...], selected: bool
) -> None:
    assert tags_selected(tags, include, exclude, require) is selected


def test_config_keys() -> None:
    assert parse_config("") == testsync.WorkspaceConfig(file="config.yaml")  # blank: the defaults
    assert parse_config("# only a comment\n").flows == ("*",)
    config = parse_config(
        "flows:\n  - 'auth/*'\n  - \"!**/wip_*\"\nincludeTags: smoke\nexcludeTags: [flaky, slow]\n"
        "requireTags:\n  - android\nexecutionOrder:\n  continueOnFailure: false\n  flowsOrder: [Login, Checkout]\n"
        "testOutputDir: reports\nplatform:\n  android:\n    disableAnimations: true\n",  # unknown keys: ignored
        "config.yml",
    )
    assert config.flows == ("auth/*", "!**/wip_*")
    assert config.include_tags == ("smoke",) and config.exclude_tags == ("flaky", "slow")
    assert config.require_tags == ("android",)
    assert config.execution_order == testsync.ExecutionOrder(("Login", "Checkout"), False)
    assert config.file == "config.yml"
    assert parse_config("executionOrder:\n  flowsOrder: [A]\n").execution_order == testsync.ExecutionOrder(("A",))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("flows:\n  - *\n", r"line 2: not valid YAML .*quote patterns"),  # `*` starts a YAML alias
        ("- a\n- b\n", "must be a mapping"),
        ("flows: {a: 1}\n", "`flows` must be a list of strings"),
        ("flows: []\n", "no pattern"),
        ("flows: ['!wip/*']\n", "only exclusions"),
        ("includeTags: {a: b}\n", "`includeTags` must be a list"),
        ("executionOrder: [a]\n", "`executionOrder` must be a mapping"),
        ("executionOrder:\n  continueOnFailure: maybe\n", "true or false"),
    ],
)
def test_a_bad_config_is_an_error(text: str, problem: str) -> None:
    with pytest.raises(WorkspaceError, match=problem):
        parse_config(text)


def test_flow_files_by_name() -> None:
    assert is_flow_file("login.yaml") and is_flow_file("a/b/launch.yml") and is_flow_file("x/Login.YAML")
    assert not is_flow_file("config.yaml") and not is_flow_file("android-config.yml")
    assert not is_flow_file("scripts/seed.js") and not is_flow_file("README.md")


# ------------------------------------------------------------------------------- reading workspaces


def test_a_configured_workspace_is_read_as_maestro_reads_it() -> None:
    workspace = read_workspace(WORKSPACES / "configured")
    flows = {f.path: f for f in workspace.flows}
    # auth/wip_logout.yaml is excluded by "!**/wip_*" (it would not parse); common/ is not listed.
    assert sorted(flows) == ["auth/login.yaml", "auth/login_with_retry.yaml", "media/upload_avatar.yaml"]
    assert sorted(f.path for f in workspace.left_out) == ["experiments/dark_mode.yaml", "flaky/offline_banner.yaml"]
    assert workspace.order == ["auth/login.yaml", "media/upload_avatar.yaml"]
    login = flows["auth/login.yaml"]
    assert (login.name, login.category, login.tags, login.error) == ("Login", "auth", ("smoke", "auth"), None)
    assert sorted(login.files) == ["../common/launch.yaml", "../common/sign_in.yaml", "../scripts/seed_user.js"]
    avatar = flows["media/upload_avatar.yaml"]
    assert avatar.files["../assets/avatar.png"] == (WORKSPACES / "configured/assets/avatar.png").read_bytes()
    assert "../assets/screens/home.png" in avatar.files  # assertScreenshot's `.png` is added
    payload = {f["path"]: f for f in avatar.files_payload()}
    assert "content_base64" in payload["../assets/avatar.png"] and "content" in payload["../common/launch.yaml"]


def test_without_a_config_only_top_level_flows_are_test_cases(tmp_path: Path) -> None:
    workspace = read_workspace(WORKSPACES / "default_layout")
    assert [f.path for f in workspace.flows] == ["checkout.yaml", "login.yaml"]
    assert all(f.category is None for f in workspace.flows)
    assert sorted(workspace.flows[1].files) == ["scripts/make_user.js", "subflows/launch.yaml", "subflows/sign_in.yaml"]
    assert workspace.unused == []

    # The README's <category>/<test>.yaml layout needs a config: without one there is nothing to sync,
    # and the error says what to write.
    folder = shutil.copytree(WORKSPACES / "categories", tmp_path / "categories")
    (folder / "config.yaml").unlink()
    with pytest.raises(WorkspaceError, match=r'flows: \["\*/\*"\]'):
        read_workspace(folder)


def test_subflows_bring_their_own_files() -> None:
    """A subflow's references are relative to the subflow's own folder, and followed too."""
    [purchase] = read_workspace(WORKSPACES / "nested").flows
    assert sorted(purchase.files) == [
        "media/receipt.png",  # named by steps/cart/add_to_cart.yaml as ../../media/receipt.png
        "scripts/seed.js",  # named by steps/sign_in.yaml as ../scripts/seed.js
        "steps/cart/add_to_cart.yaml",
        "steps/launch.yaml",  # named by steps/sign_in.yaml as launch.yaml
        "steps/sign_in.yaml",
    ]


def test_local_problems_name_the_file_and_line(tmp_path: Path) -> None:
    folder = shutil.copytree(WORKSPACES / "default_layout", tmp_path / "ws")
    (folder / "subflows" / "sign_in.yaml").write_text("- launchApp\n- tapOnn: Sign in\n")
    (folder / "missing.yaml").write_text(
        "appId: com.qualgent.fixture\n---\n- launchApp\n- runFlow: subflows/nope.yaml\n"
    )
    workspace = read_workspace(folder)
    errors = {f.path: f.error for f in workspace.flows}
    assert errors["login.yaml"] is not None and errors["login.yaml"].startswith("subflows/sign_in.yaml line 2:")
    assert "tapOnn" in errors["login.yaml"]
    assert errors["missing.yaml"] == (
        "missing.yaml line 4: flow file 'subflows/nope.yaml' not found (subflows/nope.yaml)"
    )


def test_older_servers_answers_still_parse() -> None:
    case = TestCase.model_validate({"id": "tc_1", "name": "A", "status": "active"})
    detail = TestCaseDetail.model_validate({"id": "tc_1", "name": "A", "status": "active", "flow": "- back\n"})
    assert case.tags == [] and detail.files == []
    step = Step.model_validate({"index": 0, "description": "back", "status": "passed"})
    assert step.parent is None and step.depth == 0


# ----------------------------------------------------------------------------------- the live server


@pytest.fixture(scope="module")
def ws_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        backend,
        tmp_path_factory.mktemp(f"workspaces-{backend}"),
        lease_seconds=3,
        heartbeat_seconds=0.3,
        reaper_interval=0.2,
        max_attempts=1,
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def ws_db(ws_server: LiveServer) -> Iterator[Database]:
    database = Database(ws_server.settings.resolved_database_url)
    yield database
    database.close()


@pytest.fixture(scope="module")
def agent(ws_server: LiveServer, ws_db: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    devices = simulated_devices(["Pixel 7", "Pixel 8"], copies=2)
    cache = tmp_path_factory.mktemp("agent-cache")
    with running_agent(ws_server.url, agent_token(ws_db), devices, cache, step_seconds=0.01) as running:
        yield
    assert not running.errors, running.errors


@pytest.fixture
def tenant(ws_db: Database, ws_server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(ws_db, ws_server.url)
    yield t
    t.client.close()


@pytest.fixture
def cli(ws_server: LiveServer, tenant: Tenant, tmp_path: Path) -> Cli:
    return Cli(ws_server.url, tenant.key, tmp_path)


def _workspace(cli: Cli, name: str) -> Path:
    return Path(shutil.copytree(WORKSPACES / name, cli.cwd / name))


def _lines(result: Result) -> dict[str, dict[str, Any]]:
    """`sync --json`: one object per line, by path."""
    objects = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    for obj in objects:
        assert {"path", "action", "test_case_id", "error"} <= obj.keys()
    return {obj["path"]: obj for obj in objects}


def _cases(tenant: Tenant) -> dict[str, dict[str, Any]]:
    listed = tenant.client.get("/v1/test-cases/list").json()
    return {c["name"]: tenant.client.get(f"/v1/test-cases/{c['id']}").json() for c in listed}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _upload(cli: Cli) -> str:
    done = cli("apps", "upload", str(HELLO_APK), "--name", "Hello", "--version", "1.0.0", "--json")
    assert done.code == 0, done
    app_id: str = done.json()["id"]
    return app_id


def _run_all(cli: Cli, app: str, *args: str) -> Result:
    return cli("run-all", "--platform", "android", "--app", app, "--wait", "--json", *args, timeout=180)


def test_a_configured_workspace_syncs_and_runs(cli: Cli, tenant: Tenant, agent: None) -> None:
    folder = _workspace(cli, "configured")

    plan = cli("test-cases", "sync", str(folder), "--dry-run", "--json")
    assert plan.code == 0, plan
    planned = _lines(plan)
    assert {p: (o["action"], o["order"]) for p, o in planned.items()} == {
        "auth/login.yaml": ("create", 1),
        "auth/login_with_retry.yaml": ("create", None),
        "media/upload_avatar.yaml": ("create", 2),
    }
    assert "experiments/dark_mode.yaml" in plan.stderr and "flaky/offline_banner.yaml" in plan.stderr
    assert _cases(tenant) == {}  # a dry run changes nothing

    done = cli("test-cases", "sync", str(folder))
    assert done.code == 0, done
    assert "Synced: 3 create" in done.stdout
    assert (
        "Execution order (continueOnFailure: false): 1. Login (auth/login.yaml), "
        "2. Upload avatar (media/upload_avatar.yaml)" in done.stdout
    )
    cases = _cases(tenant)
    assert set(cases) == {"Login", "Login with retry", "Upload avatar"}
    login = cases["Login"]
    assert login["category"]["name"] == "auth" and login["tags"] == ["smoke", "auth"]
    assert login["description"] == "qualgent sync: auth/login.yaml"
    assert login["flow"] == (folder / "auth" / "login.yaml").read_text()
    assert [(f["path"], f["sha256"]) for f in login["files"]] == [
        (path, _sha((folder / "auth" / path).read_bytes()))
        for path in ("../common/launch.yaml", "../common/sign_in.yaml", "../scripts/seed_user.js")
    ]
    avatar = cases["Upload avatar"]
    assert avatar["category"]["name"] == "media" and avatar["tags"] == ["regression"]
    png = tenant.client.get(f"/v1/test-cases/{avatar['id']}/files/%2E%2E/assets/avatar.png")
    assert png.status_code == 200 and png.content == (folder / "assets" / "avatar.png").read_bytes()

    again = cli("test-cases", "sync", str(folder), "--json")
    assert again.code == 0, again
    assert {o["action"] for o in _lines(again).values()} == {"unchanged"}

    # CI passes the button's label: every run passes.
    app = _upload(cli)
    ran = _run_all(cli, app, "-e", "BUTTON=Log in", "-e", "USERNAME=ci@example.com")
    assert ran.code == 0, ran
    runs = ran.json()["runs"]
    assert sorted(r["test_case"]["name"] for r in runs) == ["Login", "Login with retry", "Upload avatar"]
    assert {r["status"] for r in runs} == {"passed"}

    # Tags choose the runs; without -e, Login taps the flow's own "Sign up", which this build lacks: the
    # failure names the nested step and its file.
    failed = _run_all(cli, app, "--include-tags", "auth", "--exclude-tags", "regression")
    assert failed.code == 1, failed
    [run] = failed.json()["runs"]
    assert run["test_case"]["name"] == "Login" and run["status"] == "failed"
    message = run["failure"]["message"]
    assert 'tapOn "Sign up"' in message and "../common/sign_in.yaml line 7" in message, message
    report = tenant.client.get(f"/v1/jobs/{run['id']}/report").json()
    [step] = [s for s in report["steps"] if s["status"] == "failed" and s["depth"] > 0]
    assert step["description"] == 'tapOn "Sign up"' and step["parent"] is not None
    assert report["steps"][step["parent"]]["description"] == "runFlow ../common/sign_in.yaml"

    tagged = _run_all(cli, app, "--include-tags", "smoke,regression", "--exclude-tags", "auth", "-e", "BUTTON=x")
    assert tagged.code == 0, tagged
    assert [r["test_case"]["name"] for r in tagged.json()["runs"]] == ["Upload avatar"]


def test_the_default_layout_syncs_updates_refuses_and_prunes(cli: Cli, tenant: Tenant, agent: None) -> None:
    folder = _workspace(cli, "default_layout")
    by_hand = tenant.client.post("/v1/test-cases", json={"name": "Made by hand", "flow": "- back\n"}).json()

    done = cli("test-cases", "sync", str(folder), "--json")
    assert done.code == 0, done
    lines = _lines(done)
    assert {p: o["action"] for p, o in lines.items()} == {"checkout.yaml": "create", "login.yaml": "create"}
    cases = _cases(tenant)
    assert set(cases) == {"Checkout", "Login", "Made by hand"}  # subflows/ holds no test case
    assert cases["Login"]["category"] is None and cases["Login"]["tags"] == ["smoke"]
    assert lines["login.yaml"]["test_case_id"] == cases["Login"]["id"]
    assert [f["path"] for f in cases["Checkout"]["files"]] == ["subflows/launch.yaml", "subflows/sign_in.yaml"]

    app = _upload(cli)
    ran = _run_all(cli, app, "-e", "USERNAME=CI@Example.com")
    assert ran.code == 0, ran
    assert {r["status"] for r in ran.json()["runs"]} == {"passed"}

    # A subflow changes: both flows that use it are updated (their files), nothing else.
    sign_in = folder / "subflows" / "sign_in.yaml"
    sign_in.write_text(sign_in.read_text().replace("- tapOn: ${LABEL}", "- tapOn: Log out"))
    updated = cli("test-cases", "sync", str(folder), "--json")
    assert updated.code == 0, updated
    assert {p: (o["action"], o["fields"]) for p, o in _lines(updated).items()} == {
        "checkout.yaml": ("update", ["files"]),
        "login.yaml": ("update", ["files"]),
    }
    login = tenant.client.get(f"/v1/test-cases/{cases['Login']['id']}").json()
    assert {f["path"]: f["sha256"] for f in login["files"]}["subflows/sign_in.yaml"] == _sha(sign_in.read_bytes())
    failing = _run_all(cli, app, "--include-tags", "smoke")
    assert failing.code == 1, failing
    [run] = failing.json()["runs"]
    assert 'tapOn "Log out"' in run["failure"]["message"] and "subflows/sign_in.yaml" in run["failure"]["message"]

    # Refused: a flow that does not parse (locally, with its line), a subflow it names that is not
    # there, and a script only the server's JavaScript check refuses; the others are synced; exit 3.
    (folder / "broken.yaml").write_text("appId: com.qualgent.fixture\n---\n- launchApp\n- flyTo: moon\n")
    (folder / "seeded.yaml").write_text("appId: com.qualgent.fixture\n---\n- runScript: scripts/seed.js\n")
    (folder / "scripts" / "seed.js").write_text("// seeds the cart\noutput.items = [1, 2;\n")
    (folder / "search.yaml").write_text("appId: com.qualgent.fixture\nname: Search\n---\n- launchApp\n")
    refused = cli("test-cases", "sync", str(folder), "--json")
    assert refused.code == 3, refused
    lines = _lines(refused)
    assert lines["broken.yaml"]["action"] == "refused"
    assert lines["broken.yaml"]["error"].startswith("broken.yaml line 4: ") and "flyTo" in lines["broken.yaml"]["error"]
    assert lines["seeded.yaml"]["action"] == "refused"
    assert lines["seeded.yaml"]["error"].startswith("scripts/seed.js line 2: "), lines["seeded.yaml"]
    assert lines["search.yaml"]["action"] == "create" and lines["search.yaml"]["test_case_id"]
    assert lines["login.yaml"]["action"] == "unchanged"
    human = cli("test-cases", "sync", str(folder))
    assert human.code == 3 and "refused          broken.yaml → broken" in human.stdout, human
    assert "error: broken.yaml line 4:" in human.stdout and "2 flow(s) refused" in human.stderr

    # Prune: the flows whose file is gone are deactivated; hand-made test cases are never touched.
    for name in ("checkout.yaml", "broken.yaml", "seeded.yaml"):
        (folder / name).unlink()
    plan = cli("test-cases", "sync", str(folder), "--prune", "--dry-run", "--json")
    assert {p: o["action"] for p, o in _lines(plan).items()} == {
        "checkout.yaml": "deactivate",
        "login.yaml": "unchanged",
        "search.yaml": "unchanged",
    }
    pruned = cli("test-cases", "sync", str(folder), "--prune")
    assert pruned.code == 0, pruned
    statuses = {c["name"]: c["status"] for c in tenant.client.get("/v1/test-cases/list").json()}
    assert statuses == {"Checkout": "inactive", "Login": "active", "Search": "active", "Made by hand": "active"}
    assert tenant.client.get(f"/v1/test-cases/{by_hand['id']}").json()["description"] == ""


def test_the_category_layout_with_a_config(cli: Cli, tenant: Tenant, agent: None) -> None:
    folder = _workspace(cli, "categories")
    done = cli("test-cases", "sync", str(folder))
    assert done.code == 0, done
    cases = _cases(tenant)
    assert {name: (c["category"]["name"], c["tags"]) for name, c in cases.items()} == {
        "Smoke login": ("smoke", ["smoke"]),
        "launch": ("smoke", []),
        "French greeting": ("regression", ["regression", "i18n"]),
    }
    assert [f["path"] for f in cases["launch"]["files"]] == ["../shared/launch.yaml"]
    app = _upload(cli)
    ran = _run_all(cli, app, "--category", "smoke")
    assert ran.code == 0, ran
    assert sorted(r["test_case"]["name"] for r in ran.json()["runs"]) == ["Smoke login", "launch"]

    # Without its config the folder has no top-level flow: nothing is synced (so --prune cannot empty
    # the organisation by mistake), and the error says what to write.
    (folder / "config.yaml").unlink()
    bare = cli("test-cases", "sync", str(folder), "--prune")
    assert bare.code == 3 and 'flows: ["*/*"]' in bare.stderr, bare
    assert {c["status"] for c in tenant.client.get("/v1/test-cases/list").json()} == {"active"}


def test_a_terminal_gets_a_progress_bar(cli: Cli, tenant: Tenant) -> None:
    """On a TTY (a pseudo-terminal here) sync shows its progress; in a pipe (every other test), plain lines."""

    folder = _workspace(cli, "configured")
    code, text = cli.on_a_terminal("test-cases", "sync", str(folder), timeout=60)
    assert code == 0, text
    assert "Reading" in text and "Syncing" in text and "3/3" in text, text
    assert "Synced: 3 create" in text
    piped = cli("test-cases", "sync", str(folder))
    assert piped.code == 0 and "Reading" not in piped.stdout + piped.stderr, piped


def _documented_workspace(into: Path) -> Path:
    """The example of docs/workspaces.md: every code block whose first line names a file of .maestro/."""
    for block in re.findall(r"```(?:yaml|js)\n(.*?)```", GUIDE.read_text(), re.S):
        named = re.fullmatch(r"(?:#|//) (\.maestro/\S+)", block.partition("\n")[0])
        if named:
            path = into / named.group(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block)
    return into / ".maestro"


def test_the_documented_workspace_syncs_and_passes_as_printed(cli: Cli, tenant: Tenant, agent: None) -> None:
    folder = _documented_workspace(cli.cwd)
    done = cli("test-cases", "sync", str(folder))
    assert done.code == 0, done
    printed = re.search(r"```\n(create .*?)```", GUIDE.read_text(), re.S)
    assert printed is not None and done.stdout == printed.group(1)
    assert "auth/wip_logout.yaml" not in done.stdout
    ran = cli(
        "run-all",
        "--upload",
        str(HELLO_APK),
        "--name",
        "Hello",
        "--version",
        "1.4.2",
        "--platform",
        "android",
        "-e",
        "USERNAME=ci@example.com",
        "-e",
        "BUTTON=Log in",
        "--include-tags",
        "smoke",
        "--wait",
        "--json",
        timeout=180,
    )
    assert ran.code == 0, ran
    assert [(r["test_case"]["name"], r["status"]) for r in ran.json()["runs"]] == [("Login", "passed")]


def test_subflows_that_run_their_own_subflows(cli: Cli, tenant: Tenant, agent: None) -> None:
    folder = _workspace(cli, "nested")
    done = cli("test-cases", "sync", str(folder), "--json")
    assert done.code == 0, done
    [case] = _cases(tenant).values()
    assert [f["path"] for f in case["files"]] == [
        "media/receipt.png",
        "scripts/seed.js",
        "steps/cart/add_to_cart.yaml",
        "steps/launch.yaml",
        "steps/sign_in.yaml",
    ]
    ran = _run_all(cli, _upload(cli), "--timeout", "60")
    assert ran.code == 0, ran
    [run] = ran.json()["runs"]
    steps = tenant.client.get(f"/v1/jobs/{run['id']}/report").json()["steps"]
    nested = [(s["depth"], s["description"]) for s in steps if s["depth"] > 0]
    assert nested[:7] == [
        (1, "runFlow launch.yaml"),  # steps/sign_in.yaml runs its sibling …
        (2, "launchApp"),
        (2, 'assertVisible "Sign in"'),
        (1, "runScript ../scripts/seed.js"),  # … and a script above its folder, whose output it types
        (1, 'tapOn id "username"'),
        (1, 'inputText "buyer@example.com"'),
        (1, 'tapOn "Log in"'),
    ]
    assert {s["status"] for s in steps} == {"passed"}


@pytest.mark.parametrize(
    "args",
    [
        ["run-all", "--platform", "android", "-e", "NO_EQUALS"],
        ["run-all", "--platform", "android", "-e", "1BAD=x"],
        ["run", "tc_x", "--platform", "android", "--env", "BAD-NAME=x"],
    ],
)
def test_a_bad_env_value_is_a_usage_error(args: list[str], tmp_path: Path) -> None:
    done = Cli("http://127.0.0.1:9", "qg_unused", tmp_path)(*args)  # refused before any request
    assert done.code == 3, done
    assert "KEY=VALUE" in done.stderr or "not a variable name" in done.stderr
