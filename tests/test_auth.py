"""Authentication: who may call, what a key may do, whose name a run carries, how keys are kept."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.auth.keys import generate_key, hash_key
from qualgent.ids import new_id
from qualgent.organisations import service as admin
from tests.fixtures.factories import (
    PIXEL_7,
    Database,
    Tenant,
    add_key,
    apk_bytes,
    create_category,
    create_test_case,
    upload_app,
)
from tests.fixtures.routes import api_key_routes, read_routes, write_routes
from tests.fixtures.servers import LiveServer

KEY_SHAPE = re.compile(r"^qg_[A-Za-z0-9_-]{43}$")


# ------------------------------------------------------------------------------------------- helpers


def populate(tenant: Tenant) -> dict[str, str]:
    """One of everything in the tenant's organisation: app, category, test case and a queued run."""
    uploaded = upload_app(tenant, app_name="AuthApp")
    assert uploaded.status_code == 200, uploaded.text
    app_id = uploaded.json()["file"]["id"]
    category = create_category(tenant, name="Auth Smoke")
    case = create_test_case(
        tenant, name="Auth Login", category_id=category["id"], files=[{"path": "sub/login.yaml", "content": "- back\n"}]
    )
    assert tenant.client.put("/v1/secrets/AUTH_SECRET", json={"value": "v"}).status_code == 200
    webhook = tenant.client.post(
        "/v1/webhooks", json={"url": "https://hooks.example.com/auth", "events": ["run.finished"]}
    )
    assert webhook.status_code == 201, webhook.text
    queued = tenant.client.post(
        "/v1/test-cases/run", json={"jobs": [{"test_case_id": case["id"], "app_file_id": app_id, "device": PIXEL_7}]}
    )
    assert queued.status_code == 200, queued.text
    upload = tenant.client.post("/v1/apps/uploads/", headers=tus_creation_headers())
    assert upload.status_code == 201, upload.text
    return {
        "app": app_id,
        "cat": category["id"],
        "tc": case["id"],
        "run": queued.json()["jobs"][0]["id"],
        "batch": queued.json()["batch_id"],
        "upload": upload.headers["Location"].rsplit("/", 1)[-1],
        "secret": "AUTH_SECRET",
        "file": "sub/login.yaml",
        "webhook": webhook.json()["id"],
    }


def tus_creation_headers() -> dict[str, str]:
    """A valid tus creation request for a 100-byte build (resumable uploads, issue 4)."""
    metadata = {"filename": "app.apk", "app_name": "AuthApp", "version": "1"}
    encoded = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())
    return {"Tus-Resumable": "1.0.0", "Upload-Length": "100", "Upload-Metadata": encoded}


def fill(path: str, ids: dict[str, str]) -> str:
    path = path.replace("{file_path:path}", ids.get("file", "sub/login.yaml"))
    return path.format(
        app_id=ids["app"],
        test_case_id=ids["tc"],
        category_id=ids["cat"],
        test_run_id=ids["run"],
        run_id=ids["run"],
        batch_id=ids["batch"],
        upload_id=ids.get("upload", ""),
        name=ids.get("secret", "NO_SUCH_SECRET"),
        webhook_id=ids.get("webhook", new_id("whk")),
        delivery_id=ids.get("delivery", new_id("msg")),
    )


def ghost_ids() -> dict[str, str]:
    """Well-shaped IDs of nothing."""
    return {
        "app": new_id("file"),
        "tc": new_id("tc"),
        "cat": new_id("cat"),
        "run": new_id("run"),
        "batch": new_id("batch"),
        "upload": new_id("upload"),
    }


def assert_error_body(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["success"] is False
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    if code is not None:
        assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"].strip()
    assert error["request_id"] and error["request_id"] == response.headers["x-request-id"]
    # A caller learns nothing of the server's insides.
    assert "Traceback" not in response.text
    error_dict: dict[str, Any] = error
    return error_dict


def anonymous(server: LiveServer, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def _cli(server: LiveServer, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUALGENT_")}
    env["QUALGENT_DATABASE_URL"] = server.settings.resolved_database_url
    env["QUALGENT_DATA_DIR"] = str(tmp_path / "data")
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "qualgent", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ------------------------------------------------------------------------------------ missing / bad keys


def test_every_api_route_without_a_key_is_401(server: LiveServer) -> None:
    ids = ghost_ids()
    routes = sorted(api_key_routes())
    assert len(routes) >= 20  # the enumeration found the API
    with anonymous(server) as client:
        for method, path in routes:
            response = client.request(method, fill(path, ids))
            error = assert_error_body(response, 401, "missing_api_key")
            assert "X-Api-Key" in error["message"], (method, path)


def test_empty_key_header_counts_as_missing(server: LiveServer) -> None:
    with anonymous(server, **{"X-Api-Key": ""}) as client:
        assert_error_body(client.get("/v1/test-cases/list"), 401, "missing_api_key")


@pytest.mark.parametrize(
    "value",
    [
        "not-a-key",
        "Bearer qg_abc",
        "qg_",  # the prefix alone
        "qg_short",
        "QG_" + secrets.token_urlsafe(32),  # the prefix is case-sensitive
        "qg_" + "a" * 300,  # longer than any key
        "qg_" + secrets.token_urlsafe(32) + "\u00e9",  # not ASCII
    ],
    # Named by position: the random keys must not name the tests (test processes collect the same names).
    ids=lambda value: None if len(value) < 20 else f"{value[:3]}-{len(value)}-chars",
)
def test_malformed_key_is_401(server: LiveServer, value: str) -> None:
    with anonymous(server) as client:
        response = client.get("/v1/apps", headers={b"X-Api-Key": value.encode("latin-1")})
        assert_error_body(response, 401, "invalid_api_key")


def test_unknown_key_is_401(server: LiveServer, tenant: Tenant) -> None:
    unknown = generate_key()
    with anonymous(server, **{"X-Api-Key": unknown}) as client:
        error = assert_error_body(client.get("/v1/devices/list"), 401, "invalid_api_key")
        assert unknown not in error["message"]
        # The run page takes a key too, and refuses a bad one rather than ignoring it.
        assert_error_body(client.get(f"/test-runs/{new_id('run')}"), 401, "invalid_api_key")
    # A key differing from a real one in its last character is as unknown as any other.
    near = tenant.key[:-1] + ("A" if tenant.key[-1] != "A" else "B")
    with anonymous(server, **{"X-Api-Key": near}) as client:
        assert_error_body(client.get("/v1/devices/list"), 401, "invalid_api_key")
    assert tenant.client.get("/v1/devices/list").status_code == 200


def test_revoked_key_is_401_at_once(server: LiveServer, db: Database, tenant: Tenant) -> None:
    key_id, secret = add_key(db, tenant)
    with anonymous(server, **{"X-Api-Key": secret}) as client:
        assert client.get("/v1/apps").status_code == 200
        db.run(lambda s: admin.revoke_key(s, key_id))
        assert_error_body(client.get("/v1/apps"), 401, "invalid_api_key")
        assert_error_body(client.post("/v1/categories", json={"name": "after revocation"}), 401, "invalid_api_key")
    # Revoking one key leaves the user's other keys working.
    assert tenant.client.get("/v1/apps").status_code == 200
    names = [c["name"] for c in tenant.client.get("/v1/categories/list").json()]
    assert "after revocation" not in names


def test_key_revoked_by_another_process_stops_working_within_the_cache_time(
    server: LiveServer, db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    """The CLI revokes in its own process: the server may trust its cached lookup only briefly."""
    key_id, secret = add_key(db, tenant)
    with anonymous(server, **{"X-Api-Key": secret}) as client:
        assert client.get("/v1/apps").status_code == 200  # resolved, and so cached, just now
        revoked = _cli(server, tmp_path, "admin", "revoke-key", key_id)
        assert revoked.returncode == 0, revoked.stderr
        done = time.monotonic()
        deadline = done + server.settings.auth_cache_seconds + 1.0
        while (response := client.get("/v1/apps")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert_error_body(response, 401, "invalid_api_key")
    assert tenant.client.get("/v1/apps").status_code == 200


def test_last_used_at_is_recorded(server: LiveServer, db: Database, tenant: Tenant) -> None:
    key_id, secret = add_key(db, tenant)

    async def last_used(session: AsyncSession) -> Any:
        return (
            await session.execute(text("SELECT last_used_at FROM api_keys WHERE id = :id"), {"id": key_id})
        ).scalar()

    assert db.run(last_used) is None
    with anonymous(server, **{"X-Api-Key": secret}) as client:
        assert client.get("/v1/devices/list").status_code == 200
    deadline = time.monotonic() + 10
    while db.run(last_used) is None:
        assert time.monotonic() < deadline, "last_used_at was never written"
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------ scopes


def _read_calls(ids: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    """How to call each read route; the value says what the 200 must contain."""
    return {
        ("GET", "/v1/apps"): {"contains": ids["app"]},
        ("GET", "/v1/apps/latest"): {"contains": ids["app"]},
        ("GET", "/v1/apps/{app_id}"): {"contains": ids["app"]},
        ("GET", "/v1/test-cases/list"): {"contains": ids["tc"], "params": {"category": ids["cat"]}},
        ("GET", "/v1/test-cases/{test_case_id}"): {"contains": ids["tc"]},
        ("GET", "/v1/categories"): {"contains": ids["cat"]},
        ("GET", "/v1/categories/list"): {"contains": ids["cat"]},
        ("GET", "/v1/jobs/list"): {"contains": ids["run"]},
        # A stream, replayed from its first event and ended after a second.
        ("GET", "/v1/jobs/events"): {
            "contains": ids["run"],
            "params": {"ids": ids["run"], "last_event_id": "0", "max_seconds": "1"},
        },
        ("GET", "/v1/jobs/status/{test_run_id}"): {"contains": ids["run"]},
        ("GET", "/v1/jobs/{test_run_id}/report"): {"contains": ids["run"]},
        ("GET", "/v1/jobs/{test_run_id}/junit"): {"contains": "testsuites"},
        ("GET", "/v1/devices"): {"contains": "Pixel 7"},
        ("GET", "/v1/devices/list"): {"contains": "Pixel 7"},
        ("GET", "/test-runs/{run_id}"): {"contains": ids["run"]},
        ("GET", "/v1/apps/uploads/{upload_id}"): {"contains": ids["upload"]},
        ("GET", "/v1/test-cases/{test_case_id}/files/{file_path:path}"): {"contains": "- back"},
        ("GET", "/v1/secrets"): {"contains": ids["secret"]},
        ("GET", "/v1/batches/{batch_id}"): {"contains": ids["run"], "params": {"runs": "true"}},
        ("GET", "/v1/test-cases/{test_case_id}/history"): {"contains": ids["tc"]},
        ("GET", "/v1/organization/settings"): {"contains": "default_retries"},
        ("GET", "/v1/webhooks"): {"contains": ids["webhook"]},
        ("GET", "/v1/webhooks/{webhook_id}"): {"contains": ids["webhook"]},
        ("GET", "/v1/webhooks/{webhook_id}/deliveries"): {"contains": "deliveries"},
    }


def _write_calls(ids: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each write route with a valid request: with the write scope, every one would change something."""
    job = {"test_case_id": ids["tc"], "app_file_id": ids["app"], "device": PIXEL_7}
    return {
        ("POST", "/v1/apps/upload"): {
            "data": {"app_name": "ReadOnlyApp", "version": "9.9.9"},
            "files": {"file": ("app.apk", apk_bytes(), "application/octet-stream")},
        },
        ("DELETE", "/v1/apps"): {"json": {"files": [ids["app"]]}},
        ("POST", "/v1/apps/delete"): {"json": {"files": [ids["app"]]}},
        ("POST", "/v1/test-cases"): {"json": {"name": "Read-only case"}},
        ("PATCH", "/v1/test-cases/{test_case_id}"): {"json": {"name": "Renamed by read-only"}},
        ("DELETE", "/v1/test-cases/{test_case_id}"): {},
        ("POST", "/v1/test-cases/run"): {"json": {"jobs": [job]}},
        ("POST", "/v1/test-cases/run-all"): {"json": {"app_file_id": ids["app"], "device": PIXEL_7}},
        ("POST", "/v1/categories"): {"json": {"name": "Read-only category"}},
        ("PATCH", "/v1/categories/{category_id}"): {"json": {"name": "Renamed by read-only"}},
        ("DELETE", "/v1/categories/{category_id}"): {},
        ("POST", "/v1/jobs/{test_run_id}/cancel"): {},
        ("POST", "/v1/apps/uploads/"): {"headers": tus_creation_headers()},
        ("PATCH", "/v1/apps/uploads/{upload_id}"): {
            "content": b"x" * 10,
            "headers": {
                "Tus-Resumable": "1.0.0",
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        },
        ("DELETE", "/v1/apps/uploads/{upload_id}"): {"headers": {"Tus-Resumable": "1.0.0"}},
        ("PUT", "/v1/secrets/{name}"): {"json": {"value": "set by read-only"}},
        ("DELETE", "/v1/secrets/{name}"): {},
        ("PUT", "/v1/test-cases/{test_case_id}/quarantine"): {"json": {"reason": "by read-only"}},
        ("DELETE", "/v1/test-cases/{test_case_id}/quarantine"): {},
        ("PATCH", "/v1/organization/settings"): {"json": {"default_retries": 3}},
        ("POST", "/v1/webhooks"): {"json": {"url": "https://hooks.example.com/ro", "events": ["run.finished"]}},
        ("PATCH", "/v1/webhooks/{webhook_id}"): {"json": {"enabled": False}},
        ("DELETE", "/v1/webhooks/{webhook_id}"): {},
        ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): {},
    }


def _snapshot(tenant: Tenant) -> dict[str, Any]:
    client = tenant.client
    apps = client.get("/v1/apps").json()
    return {
        "apps": sorted((a["id"], a["app_name"], a["version"]) for a in apps),
        "categories": client.get("/v1/categories/list").json(),
        "test_cases": sorted(
            (c["id"], c["name"], c["status"], (c["category"] or {}).get("id"), c["quarantined"])
            for c in client.get("/v1/test-cases/list").json()
        ),
        "runs": sorted((r["id"], r["status"]) for r in client.get("/v1/jobs/list").json()["test_runs"]),
        "secrets": client.get("/v1/secrets").json(),
        "settings": client.get("/v1/organization/settings").json(),
        "webhooks": client.get("/v1/webhooks").json(),
    }


def test_read_only_key_reads_everything_and_writes_nothing(server: LiveServer, db: Database, tenant: Tenant) -> None:
    ids = populate(tenant)
    _, secret = add_key(db, tenant, scopes="read")
    reads, writes = _read_calls(ids), _write_calls(ids)
    # The tables cover every route the application serves: a new route must be added here.
    assert set(reads) == read_routes()
    assert set(writes) == write_routes()
    before = _snapshot(tenant)

    with anonymous(server, **{"X-Api-Key": secret}) as client:
        for (method, path), call in reads.items():
            response = client.request(method, fill(path, ids), params=call.get("params"))
            assert response.status_code == 200, (method, path, response.text)
            assert call["contains"] in response.text, (method, path)
            assert response.headers["x-ratelimit-limit"]

        for (method, path), call in writes.items():
            kwargs = {k: v for k, v in call.items() if k in ("json", "data", "files", "headers", "content")}
            response = client.request(method, fill(path, ids), **kwargs)
            assert_error_body(response, 403, "insufficient_scope")

    assert _snapshot(tenant) == before
    upload = tenant.client.get(f"/v1/apps/uploads/{ids['upload']}")
    assert upload.status_code == 200 and upload.json()["offset"] == 0, upload.text
    assert tenant.client.get(f"/v1/jobs/status/{ids['run']}").json()["status"] == "queued"


def test_write_scope_is_what_allows_writing(server: LiveServer, db: Database, tenant: Tenant) -> None:
    """The 403 above comes from the scope: the same requests with a write key succeed."""
    _, secret = add_key(db, tenant, scopes="write")  # write implies read
    with anonymous(server, **{"X-Api-Key": secret}) as client:
        created = client.post("/v1/categories", json={"name": "Written"})
        assert created.status_code == 201, created.text
        assert client.get("/v1/categories/list").status_code == 200
        assert client.delete(f"/v1/categories/{created.json()['id']}").status_code == 200


# ------------------------------------------------------------------------------------- executed_by


def test_executed_by_is_the_user_of_the_key_that_queued(server: LiveServer, db: Database, tenant: Tenant) -> None:
    uploaded = upload_app(tenant)
    assert uploaded.status_code == 200, uploaded.text
    app_id = uploaded.json()["file"]["id"]
    case = create_test_case(tenant, name="Checkout")
    email = f"second-{secrets.token_hex(4)}@example.com"

    async def second_user(session: AsyncSession) -> tuple[str, str]:
        user = await admin.create_user(session, tenant.organization_id, "Grace Hopper", email)
        key = await admin.create_key(session, user.id)
        return user.id, key.secret

    user_id, secret = db.run(second_user)
    job = {"test_case_id": case["id"], "app_file_id": app_id, "device": PIXEL_7}
    with anonymous(server, **{"X-Api-Key": secret}) as client:
        queued = client.post("/v1/test-cases/run", json={"jobs": [job]})
        assert queued.status_code == 200, queued.text
        run_id = queued.json()["jobs"][0]["id"]
    own = tenant.client.post("/v1/test-cases/run", json={"jobs": [job]})
    assert own.status_code == 200, own.text
    own_id = own.json()["jobs"][0]["id"]

    expected = {"id": user_id, "name": "Grace Hopper", "email": email}
    status = tenant.client.get(f"/v1/jobs/status/{run_id}").json()
    assert status["status"] == "queued"
    assert status["executed_by"] == expected
    listed = {r["id"]: r for r in tenant.client.get("/v1/jobs/list").json()["test_runs"]}
    assert listed[run_id]["executed_by"] == expected
    # The organisation's first user queued the other run with their own key.
    assert listed[own_id]["executed_by"]["id"] == tenant.user_id
    assert listed[own_id]["executed_by"]["email"] == tenant.user_email


# --------------------------------------------------------------------------------------- key storage


def test_cli_keys_are_prefixed_and_stored_only_as_a_hash(
    server: LiveServer, db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    created = _cli(server, tmp_path, "admin", "create-key", "--user", tenant.user_id, "--scopes", "read")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert KEY_SHAPE.match(secret), created.stdout

    with anonymous(server, **{"X-Api-Key": secret}) as client:
        assert client.get("/v1/apps").status_code == 200
        assert_error_body(client.post("/v1/categories", json={"name": "cli"}), 403, "insufficient_scope")

    async def rows(session: AsyncSession) -> list[dict[str, Any]]:
        result = await session.execute(text("SELECT * FROM api_keys"))
        return [dict(row._mapping) for row in result]

    stored = db.run(rows)
    assert any(r["organization_id"] == tenant.organization_id for r in stored)
    # No column of any key's row holds the key (for every key, not just this one).
    for row in stored:
        for column, value in row.items():
            assert secret not in str(value), column
            assert tenant.key not in str(value), column
    mine = [r for r in stored if r["key_hash"] == hashlib.sha256(secret.encode()).hexdigest()]
    assert len(mine) == 1
    assert mine[0]["key_hash"] == hash_key(secret)
    assert len(secret) > len(mine[0]["prefix"]) and secret.startswith(mine[0]["prefix"])
    assert mine[0]["user_id"] == tenant.user_id
    assert mine[0]["scopes"] == "read"

    listed = _cli(server, tmp_path, "admin", "list-keys", "--org", tenant.organization_id)
    assert listed.returncode == 0, listed.stderr
    assert mine[0]["id"] in listed.stdout and mine[0]["prefix"] in listed.stdout
    assert secret not in listed.stdout and secret not in listed.stderr


def test_generated_keys_are_random_and_prefixed() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    assert all(KEY_SHAPE.match(k) for k in keys)
    assert len({hash_key(k) for k in keys}) == 200
    assert all(len(hash_key(k)) == 64 for k in keys)
