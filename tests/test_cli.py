"""The `qualgent` command: serve's first start, migrations, and the admin commands against a live server."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner, Result

from qualgent.cli.main import app
from qualgent.config import get_settings
from qualgent.db.models import Organization
from tests.fixtures.factories import Database
from tests.fixtures.servers import LiveServer, start_serve_process

KEY = re.compile(r"qg_[A-Za-z0-9_-]{43}")
KEY_ID = re.compile(r"key_[0-9a-z]{26}")
ADMIN_COMMANDS = (
    "create-org",
    "list-orgs",
    "create-user",
    "create-key",
    "list-keys",
    "revoke-key",
    "set-rate-limit",
    "set-password",
    "set-parallel-runs",
    "org-settings",
    "add-category",
    "add-test-case",
)


class Cli:
    """`qualgent …` in-process, with the environment a shell would give it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0) -> Result:
        get_settings.cache_clear()
        try:
            result = self.runner.invoke(app, list(args), env=self.env)
        finally:
            get_settings.cache_clear()
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr, result.exception)
        return result


@pytest.fixture
def cli(server: LiveServer, tmp_path: Path) -> Iterator[Cli]:
    """The CLI pointed at the live test server's database (SQLite or PostgreSQL)."""
    yield Cli(
        {
            "QUALGENT_DATABASE_URL": server.settings.resolved_database_url,
            "QUALGENT_DATA_DIR": str(tmp_path / "cli-data"),
        }
    )


def get(server: LiveServer, key: str, path: str) -> httpx.Response:
    return httpx.get(server.url + path, headers={"X-Api-Key": key})


def eventually(server: LiveServer, check: Callable[[], bool]) -> None:
    """Servers may reuse a resolved key for ``auth_cache_seconds``: a change shows within that time."""
    deadline = time.monotonic() + server.settings.auth_cache_seconds + 1.0
    while not check():
        assert time.monotonic() < deadline, "the change did not reach the server in time"
        time.sleep(0.05)


# -------------------------------------------------------------------------------------------- help


def test_help_describes_the_commands(tmp_path: Path) -> None:
    cli = Cli({"QUALGENT_DATA_DIR": str(tmp_path)})
    top = cli("--help").stdout
    for command in ("serve", "db", "admin"):
        assert command in top
    assert "Start the API server" in top
    admin = cli("admin", "--help").stdout
    for command in ADMIN_COMMANDS:
        assert command in admin, command
    assert "Revoke an API key" in admin
    assert "upgrade" in cli("db", "--help").stdout
    assert "--flow" in cli("admin", "add-test-case", "--help").stdout
    cli("no-such-command", code=2)


# ------------------------------------------------------------------------------------------- serve


# start_serve_process leaves its parent-side handle of the log file open (tests/fixtures/servers.py).
def test_serve_prints_a_working_key_on_first_start_only(tmp_path: Path) -> None:
    env = {"QUALGENT_DATA_DIR": str(tmp_path / "data")}
    first = start_serve_process(env, tmp_path / "first.log")
    try:
        output = first.output()
        keys = set(KEY.findall(output))
        assert len(keys) == 1, output
        [key] = keys
        curl = re.search(r"curl (\S+) -H \"X-Api-Key: \$QUALGENT_API_KEY\"", output)
        assert curl, output
        assert f'export QUALGENT_API_KEY="{key}"' in output
        url = curl.group(1)
        assert url.startswith(first.url + "/v1/")
        response = httpx.get(url, headers={"X-Api-Key": key})
        assert response.status_code == 200, response.text
        assert httpx.get(url).status_code == 401
        assert f"{first.url}/docs" in output
        # And how to sign in to the dashboard: the admin's email and a password, shown once too.
        assert f"sign in at {first.url}/sign-in" in output
        email = re.search(r"email:\s+(\S+)", output)
        password = re.search(r"password:\s+(\S+)", output)
        assert email and password, output
        assert _signs_in(first.url, email.group(1), password.group(1))
        assert not _signs_in(first.url, email.group(1), password.group(1) + "x")
    finally:
        first.stop()
    assert first.proc.returncode is not None

    second = start_serve_process(env, tmp_path / "second.log")
    try:
        output = second.output()
        assert not KEY.search(output), output
        assert "qg_" not in output and "curl" not in output
        assert password.group(1) not in output and "password:" not in output
        assert f"{second.url}/docs" in output and f"{second.url}/sign-in" in output
        # The first start's key still works.
        assert httpx.get(f"{second.url}/v1/devices/list", headers={"X-Api-Key": key}).status_code == 200
    finally:
        second.stop()


def _signs_in(base_url: str, email: str, password: str) -> bool:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        form = client.get("/sign-in").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert csrf, form
        response = client.post("/sign-in", data={"email": email, "password": password, "csrf_token": csrf.group(1)})
        return response.status_code == 303 and client.get("/devices").status_code == 200


def test_set_password_lets_a_user_sign_in(cli: Cli, server: LiveServer) -> None:
    org = cli("admin", "create-org", "Password Org").stdout.strip()
    email = f"pw-{uuid.uuid4().hex[:8]}@example.com"
    cli("admin", "create-user", email, "--org", org)
    assert not _signs_in(server.url, email, "first password")  # no password yet: no sign-in
    result = cli.runner.invoke(
        app, ["admin", "set-password", email, "--password-stdin"], env=cli.env, input="first password\n"
    )
    assert result.exit_code == 0, result.stdout
    assert "/sign-in" in result.stdout and "first password" not in result.stdout
    assert _signs_in(server.url, email, "first password")
    # Interactive: asked twice.
    result = cli.runner.invoke(
        app, ["admin", "set-password", email], env=cli.env, input="second password\nsecond password\n"
    )
    assert result.exit_code == 0, result.stdout
    assert not _signs_in(server.url, email, "first password")
    assert _signs_in(server.url, email, "second password")
    # Too short, or nobody: refused, and the password stays.
    short = cli.runner.invoke(app, ["admin", "set-password", email, "--password-stdin"], env=cli.env, input="short\n")
    assert short.exit_code == 1 and "at least 8" in short.stderr
    nobody = cli.runner.invoke(
        app, ["admin", "set-password", "nobody@example.com", "--password-stdin"], env=cli.env, input="long enough\n"
    )
    assert nobody.exit_code == 1 and "No user" in nobody.stderr
    assert _signs_in(server.url, email, "second password")


def test_db_upgrade_and_downgrade(tmp_path: Path) -> None:
    cli = Cli({"QUALGENT_DATA_DIR": str(tmp_path / "data")})
    assert "head" in cli("db", "upgrade").stdout
    assert (tmp_path / "data" / "qualgent.db").exists()
    cli("admin", "create-org", "Before downgrade")
    assert "Before downgrade" in cli("admin", "list-orgs").stdout
    assert "base" in cli("db", "downgrade", "base").stdout
    cli("db", "upgrade")
    assert "Before downgrade" not in cli("admin", "list-orgs").stdout


# ------------------------------------------------------------------------------------------- admin


def test_admin_org_user_key_and_revoke(cli: Cli, server: LiveServer) -> None:
    org = cli("admin", "create-org", "CLI Org").stdout.strip()
    assert re.fullmatch(r"org_[0-9a-z]{26}", org), org
    assert org in cli("admin", "list-orgs").stdout
    email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    user = cli("admin", "create-user", email, "--name", "Cli User", "--org", org).stdout.strip()
    assert re.fullmatch(r"user_[0-9a-z]{26}", user), user

    created = cli("admin", "create-key", "--org", org, "--name", "ci")
    [key] = KEY.findall(created.stdout)
    [key_id] = KEY_ID.findall(created.stderr)
    assert key not in created.stderr

    assert get(server, key, "/v1/categories/list").json() == []
    upload = httpx.post(
        f"{server.url}/v1/apps/upload",
        headers={"X-Api-Key": key},
        data={"app_name": "CliApp", "version": "1"},
        files={"file": ("app.apk", _apk(), "application/octet-stream")},
    )
    assert upload.status_code == 200, upload.text
    assert upload.json()["file"]["user_id"] == user

    listing = cli("admin", "list-keys", "--org", org).stdout
    assert key_row(listing, key_id)[-1] == ""
    assert key_id in listing
    assert key[:10] in listing
    assert key not in listing
    assert user in listing

    assert f"Revoked {key_id}" in cli("admin", "revoke-key", key_id).stdout
    eventually(server, lambda: get(server, key, "/v1/categories/list").status_code == 401)
    cells = key_row(cli("admin", "list-keys", "--org", org).stdout, key_id)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", cells[-1]), cells


def test_admin_read_only_key_and_rate_limit(cli: Cli, server: LiveServer) -> None:
    org = cli("admin", "create-org", "Limited Org").stdout.strip()
    cli("admin", "create-user", f"ro-{uuid.uuid4().hex[:8]}@example.com", "--org", org)
    created = cli("admin", "create-key", "--org", org, "--scopes", "read")
    [key] = KEY.findall(created.stdout)
    [key_id] = KEY_ID.findall(created.stderr)
    assert "(read)" in created.stderr

    assert "7 requests per second" in cli("admin", "set-rate-limit", key_id, "7").stdout
    response = get(server, key, "/v1/devices/list")
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == "7"
    assert rate_limit_cell(cli("admin", "list-keys", "--org", org).stdout, key_id) == "7"
    forbidden = httpx.post(f"{server.url}/v1/categories", json={"name": "x"}, headers={"X-Api-Key": key})
    assert forbidden.status_code == 403, forbidden.text

    assert "default" in cli("admin", "set-rate-limit", key_id, "0").stdout
    assert rate_limit_cell(cli("admin", "list-keys", "--org", org).stdout, key_id) == "default"
    assert "at least 1" in cli("admin", "set-rate-limit", key_id, "--", "-3", code=1).stderr


def key_row(listing: str, key_id: str) -> list[str]:
    """The cells of a key's row in `list-keys`' table."""
    line = next(line for line in listing.splitlines() if key_id in line)
    return [cell.strip() for cell in line.split("│")[1:-1]]


def rate_limit_cell(listing: str, key_id: str) -> str:
    return key_row(listing, key_id)[4]


def test_admin_set_parallel_runs(cli: Cli, db: Database) -> None:
    org = cli("admin", "create-org", "Parallel Org", "--parallel-runs", "2").stdout.strip()

    def cap() -> int | None:
        async def read(session: AsyncSession) -> int | None:
            value: int | None = await session.scalar(
                select(Organization.max_parallel_runs).where(Organization.id == org)
            )
            return value

        return db.run(read)

    assert cap() == 2
    assert "5 parallel runs" in cli("admin", "set-parallel-runs", "5", "--org", org).stdout
    assert cap() == 5
    cli("admin", "set-parallel-runs", "0", "--org", org)
    assert cap() is None


def test_admin_org_settings_shows_and_changes_test_retries_and_quarantine(cli: Cli) -> None:
    org = cli("admin", "create-org", "Settings Org").stdout.strip()
    shown = cli("admin", "org-settings", "--org", org).stdout
    assert "default_retries: 0" in shown and "auto_quarantine: False" in shown and "quarantine_exit_passes: 5" in shown
    changed = cli(
        "admin", "org-settings", "--org", org, "--default-retries", "2", "--auto-quarantine",
        "--quarantine-exit-passes", "0",
    ).stdout  # fmt: skip
    assert "default_retries: 2" in changed and "auto_quarantine: True" in changed
    assert "quarantine_exit_passes: 0" in changed
    assert "auto_quarantine: False" in cli("admin", "org-settings", "--org", org, "--no-auto-quarantine").stdout
    cli("admin", "org-settings", "--org", org, "--default-retries", "9", code=2)  # out of 0–5: a usage error


def test_admin_add_category_and_test_case_with_flow(cli: Cli, server: LiveServer, tmp_path: Path) -> None:
    org = cli("admin", "create-org", "Content Org").stdout.strip()
    cli("admin", "create-user", f"content-{uuid.uuid4().hex[:8]}@example.com", "--org", org)
    [key] = KEY.findall(cli("admin", "create-key", "--org", org).stdout)

    category = cli("admin", "add-category", "Smoke", "--description", "Fast checks", "--org", org).stdout.strip()
    assert re.fullmatch(r"cat_[0-9a-z]{26}", category), category
    assert get(server, key, "/v1/categories/list").json() == [
        {"id": category, "name": "Smoke", "description": "Fast checks"}
    ]

    flow = 'appId: com.example.app\n---\n# Sign in ✓\n- launchApp\n-   tapOn:  "Sign in"\n  \n- assertVisible: Welcome   \n'
    flow_file = tmp_path / "login.yaml"
    flow_file.write_text(flow)
    case_id = cli(
        "admin", "add-test-case", "Login Flow Test", "--flow", str(flow_file), "--category", category, "--org", org
    ).stdout.strip()
    assert re.fullmatch(r"tc_[0-9a-z]{26}", case_id), case_id
    case = get(server, key, f"/v1/test-cases/{case_id}").json()
    assert case["flow"] == flow
    assert (case["name"], case["status"]) == ("Login Flow Test", "active")
    assert case["category"] == {"id": category, "name": "Smoke"}

    off = cli("admin", "add-test-case", "Disabled", "--inactive", "--org", org).stdout.strip()
    listed = {c["id"]: c for c in get(server, key, "/v1/test-cases/list").json()}
    assert set(listed) == {case_id, off}
    assert (listed[off]["status"], listed[off]["category"]) == ("inactive", None)

    cli("admin", "add-test-case", "Missing", "--flow", str(tmp_path / "nope.yaml"), "--org", org, code=2)
    cli("admin", "add-category", "Smoke", "--org", org, code=1)


def test_admin_errors_are_one_line_and_exit_1(cli: Cli) -> None:
    # The shared test database holds many organisations: commands must be told which.
    ambiguous = cli("admin", "create-user", "who@example.com", code=1)
    assert "--org" in ambiguous.stderr
    assert "Traceback" not in ambiguous.stderr + ambiguous.stdout
    unknown_org = cli("admin", "create-user", "who@example.com", "--org", "org_01jd2f3g4h5j6k7m8n9p0q1r2s", code=1)
    assert "error" in unknown_org.stderr
    cli("admin", "revoke-key", "key_01jd2f3g4h5j6k7m8n9p0q1r2s", code=1)
    org = cli("admin", "create-org", "Empty Org").stdout.strip()
    assert "no users" in cli("admin", "create-key", "--org", org, code=1).stderr
    cli("admin", "create-user", f"s-{uuid.uuid4().hex[:8]}@example.com", "--org", org)
    cli("admin", "create-key", "--org", org, "--scopes", "admin", code=1)
    cli("admin", "set-rate-limit", "key_01jd2f3g4h5j6k7m8n9p0q1r2s", "5", code=1)


def _apk() -> bytes:
    from tests.fixtures.factories import apk_bytes

    return apk_bytes()
