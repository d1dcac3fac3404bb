"""The dashboard over plain HTTP (both databases): sign-in, sessions, CSRF and hostile input.

The browser tests (tests/web/) show the pages working for a person; these check the edges a browser
never sends: forged forms, tampered cookies, open redirects, oversized fields, floods of wrong passwords.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from qualgent.config import Settings
from qualgent.db.models import WebSession
from qualgent.ids import new_id
from qualgent.state import AppState
from qualgent.web.sessions import SESSION_COOKIE, set_session_cookie
from tests.fixtures.contract import assert_error
from tests.fixtures.factories import (
    PIXEL_7,
    Database,
    Tenant,
    create_test_case,
    make_tenant,
    upload_app,
)
from tests.fixtures.servers import LiveServer, live_server
from tests.fixtures.web import PASSWORD, csrf_of, set_password, sign_in, signed_in_tenant

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
PAGES = [
    "/test-runs",
    "/test-runs/rows",
    "/apps",
    "/test-cases",
    "/devices",
    "/settings/developer",
    "/settings/secrets",
]


@pytest.fixture
def web(db: Database, tenant: Tenant) -> str:
    """The tenant's client, signed in to the dashboard; returns the session's CSRF token."""
    return signed_in_tenant(db, tenant)


def _populate(tenant: Tenant) -> dict[str, str]:
    uploaded = upload_app(tenant, app_name="WebApp")
    assert uploaded.status_code == 200, uploaded.text
    app_id = uploaded.json()["file"]["id"]
    case = create_test_case(tenant, name="Web Login")
    job = {"test_case_id": case["id"], "app_file_id": app_id, "device": PIXEL_7}
    queued = tenant.client.post("/v1/test-cases/run", json={"jobs": [job]})
    assert queued.status_code == 200, queued.text
    return {"app": app_id, "tc": case["id"], "run": queued.json()["jobs"][0]["id"]}


# ------------------------------------------------------------------------------------ signed out


def test_pages_send_people_to_sign_in_and_programs_a_401(server: LiveServer, tenant: Tenant) -> None:
    run_id = _populate(tenant)["run"]
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        for path in [*PAGES, f"/test-runs/{run_id}/live", f"/test-runs/{run_id}/report.json"]:
            page = anonymous.get(path, headers=HTML, params={"status": "queued"})
            assert page.status_code == 303, (path, page.text)
            assert page.headers["location"].startswith("/sign-in?next=" + path.replace("/", "%2F")), page.headers
            assert_error(anonymous.get(path), 401, "sign_in_required")
        # The API key opens the API, not the dashboard (the run page aside, which is every run's link).
        assert_error(tenant.client.get("/apps"), 401, "sign_in_required")
        assert tenant.client.get(f"/test-runs/{run_id}").status_code == 200
        home = anonymous.get("/", follow_redirects=True, headers=HTML)
        assert home.status_code == 200 and 'action="/sign-in"' in home.text


def test_sign_in_page_is_a_labelled_form_with_security_headers(server: LiveServer) -> None:
    page = httpx.get(f"{server.url}/sign-in", headers=HTML)
    assert page.status_code == 200
    for field in ("email", "password"):
        assert f'<label for="{field}">' in page.text and f'id="{field}"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    # Nothing on the page comes from another host.
    assert "http://" not in page.text.replace(server.url, "") and "https://" not in page.text
    cookie = page.headers["set-cookie"]
    assert "qg_signin_csrf=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie


def test_static_files_are_served_by_the_app(server: LiveServer) -> None:
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css"), ("pygments.css", "text/css")):
        response = httpx.get(f"{server.url}/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"], name
    assert httpx.get(f"{server.url}/static/../config.py").status_code == 404


# ------------------------------------------------------------------------------------------ sign-in


def test_sign_in_sets_a_session_cookie_and_sign_out_ends_it(server: LiveServer, db: Database, tenant: Tenant) -> None:
    set_password(db, tenant.user_email)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        form = client.get("/sign-in")
        response = client.post(
            "/sign-in",
            data={"email": tenant.user_email, "password": PASSWORD, "csrf_token": csrf_of(form.text), "next": "/apps"},
        )
        assert response.status_code == 303 and response.headers["location"] == "/apps"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Secure" not in cookie  # the server is reached over http here
        stolen = client.cookies[SESSION_COOKIE]
        page = client.get("/apps", headers=HTML)
        assert page.status_code == 200 and tenant.user_email in page.text
        csrf = csrf_of(page.text)

        out = client.post("/sign-out", data={"csrf_token": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/sign-in"
        assert client.get("/apps").status_code == 401
    # The cookie from before signing out is dead on the server, not only forgotten by the browser.
    with httpx.Client(base_url=server.url, timeout=30, cookies={SESSION_COOKIE: stolen}) as thief:
        assert_error(thief.get("/apps"), 401, "sign_in_required")


def test_ended_sessions_are_forgotten_at_the_next_sign_in(server: LiveServer, db: Database, tenant: Tenant) -> None:
    set_password(db, tenant.user_email)

    async def rows(session: AsyncSession) -> list[tuple[Any, Any]]:
        stmt = select(WebSession.revoked_at, WebSession.expires_at).where(WebSession.user_id == tenant.user_id)
        return [tuple(r) for r in (await session.execute(stmt)).all()]

    with httpx.Client(base_url=server.url, timeout=30) as client:
        csrf = sign_in(client, tenant.user_email)
        assert client.post("/sign-out", data={"csrf_token": csrf}).status_code == 303
        [(revoked_at, _)] = db.run(rows)
        assert revoked_at is not None  # signed out: kept, but dead
        sign_in(client, tenant.user_email)
        [(revoked_at, expires_at)] = db.run(rows)
        assert revoked_at is None and expires_at is not None  # only the open one remains


def test_cookies_are_secure_when_people_reach_the_server_over_https(tmp_path: Path) -> None:
    # set_session_cookie is what the sign-in route calls; a live server here cannot be reached over https.
    for url, secure in (("https://qualgent.example.com", True), ("http://127.0.0.1:8000", False)):
        settings = Settings(_env_file=None, data_dir=tmp_path, public_base_url=url, secret_key="k")
        response = Response()
        set_session_cookie(response, _state(settings), "value")
        header = response.headers["set-cookie"]
        assert ("Secure" in header) is secure, header
        assert "HttpOnly" in header and "SameSite=lax" in header


def _state(settings: Settings) -> AppState:
    # Only .settings is read by set_session_cookie; building a whole AppState would open a database.
    state = AppState.__new__(AppState)
    state.settings = settings
    return state


def test_wrong_passwords_and_unknown_emails_get_the_same_answer(
    server: LiveServer, db: Database, tenant: Tenant
) -> None:
    set_password(db, tenant.user_email)
    no_password = make_tenant(db, server.url)  # a user who never set a password
    answers = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for email, password in (
            (tenant.user_email, "wrong password"),
            (f"nobody-{new_id('user')}@example.com", PASSWORD),
            (no_password.user_email, "short"),
            (no_password.user_email, PASSWORD),
        ):
            form = client.get("/sign-in")
            response = client.post(
                "/sign-in", data={"email": email, "password": password, "csrf_token": csrf_of(form.text)}
            )
            assert response.status_code == 401, response.text
            assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
            answers.append(response.text.split('name="csrf_token"')[0])
    no_password.client.close()
    assert all("Wrong email or password." in a for a in answers)


def test_sign_in_refuses_a_form_from_elsewhere(server: LiveServer, db: Database, tenant: Tenant) -> None:
    set_password(db, tenant.user_email)
    data = {"email": tenant.user_email, "password": PASSWORD}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        # No token, a token without its cookie, a cookie with another token: all refused.
        assert_error(client.post("/sign-in", data=data), 403, "csrf_failed")
        assert_error(client.post("/sign-in", data={**data, "csrf_token": "x" * 43}), 403, "csrf_failed")
        client.get("/sign-in")
        assert_error(client.post("/sign-in", data={**data, "csrf_token": "y" * 43}), 403, "csrf_failed")
        assert SESSION_COOKIE not in client.cookies


@pytest.mark.parametrize(
    ("next_path", "landing"),
    [
        ("/apps", "/apps"),
        ("/test-runs?status=failed", "/test-runs?status=failed"),
        ("//evil.example/x", "/test-runs"),
        ("https://evil.example/", "/test-runs"),
        ("/\\evil.example", "/test-runs"),
        ("", "/test-runs"),
    ],
)
def test_sign_in_never_redirects_off_the_server(
    server: LiveServer, db: Database, tenant: Tenant, next_path: str, landing: str
) -> None:
    set_password(db, tenant.user_email)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        form = client.get("/sign-in", params={"next": next_path})
        assert f'name="next" value="{landing}"' in form.text.replace("&amp;", "&").replace("&#34;", '"')
        response = client.post(
            "/sign-in",
            data={
                "email": tenant.user_email,
                "password": PASSWORD,
                "csrf_token": csrf_of(form.text),
                "next": next_path,
            },
        )
        assert response.status_code == 303 and response.headers["location"] == landing


def test_sign_in_rejects_oversized_and_missing_fields(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        csrf = csrf_of(client.get("/sign-in").text)
        too_long = client.post("/sign-in", data={"email": "a" * 5000, "password": "x", "csrf_token": csrf})
        assert_error(too_long, 422, "invalid_request")
        assert_error(client.post("/sign-in", data={"email": "a@b.c", "csrf_token": csrf}), 400, "bad_request")
        assert_error(client.post("/sign-in", content=b"\xff\xfe\x00garbage"), 400)
        huge = client.post("/sign-in", content=b"x" * (2 * 1024 * 1024), headers={"Content-Type": "text/plain"})
        assert_error(huge, 413, "payload_too_large")


@pytest.fixture
def strict_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server of its own: 3 failed authentications a minute per address, 2-second sessions."""
    with live_server("sqlite", tmp_path / "strict", auth_failure_limit=3, session_hours=2 / 3600) as srv:
        yield srv


def test_sign_in_attempts_are_rate_limited_per_address_and_email(strict_server: LiveServer) -> None:
    db = Database(strict_server.settings.resolved_database_url)
    try:
        tenant = make_tenant(db, strict_server.url)
        set_password(db, tenant.user_email)
        with httpx.Client(base_url=strict_server.url, timeout=30) as client:
            csrf = csrf_of(client.get("/sign-in").text)
            for _ in range(3):
                wrong = client.post(
                    "/sign-in", data={"email": tenant.user_email, "password": "nope", "csrf_token": csrf}
                )
                assert wrong.status_code == 401
            # Even the right password is refused now (it is not checked); API keys from this address are
            # not: valid credentials are never refused for others' failures.
            right = client.post("/sign-in", data={"email": tenant.user_email, "password": PASSWORD, "csrf_token": csrf})
            error = assert_error(right, 429, "rate_limited")
            assert "sign-in" in error["message"] and int(right.headers["retry-after"]) >= 1
            assert SESSION_COOKIE not in client.cookies
            assert tenant.client.get("/v1/jobs/list").status_code == 200
        tenant.client.close()
    finally:
        db.close()


def test_sessions_expire_and_tampered_cookies_open_nothing(strict_server: LiveServer) -> None:
    db = Database(strict_server.settings.resolved_database_url)
    try:
        tenant = make_tenant(db, strict_server.url)
        set_password(db, tenant.user_email)
        with httpx.Client(base_url=strict_server.url, timeout=30) as client:
            sign_in(client, tenant.user_email)
            good = client.cookies[SESSION_COOKIE]
            assert client.get("/devices").status_code == 200
            token = URLSafeTimedSerializer(b"another-secret", salt="qualgent.web-session").dumps("x" * 43)
            for forged in (good[:-2] + ("AA" if not good.endswith("AA") else "BB"), token, "", "a" * 400, "%F0%9F"):
                with httpx.Client(base_url=strict_server.url, timeout=30) as other:
                    other.cookies.set(SESSION_COOKIE, forged)
                    assert_error(other.get("/devices"), 401, "sign_in_required")
            time.sleep(2.5)
        # The same cookie, sent after its session's time is up (a browser would have dropped it).
        with httpx.Client(base_url=strict_server.url, timeout=30) as late:
            late.cookies.set(SESSION_COOKIE, good)
            assert_error(late.get("/devices"), 401, "sign_in_required")
        tenant.client.close()
    finally:
        db.close()


# --------------------------------------------------------------------------------------- the forms


def _forms(ids: dict[str, str], key_id: str) -> list[tuple[str, dict[str, str]]]:
    """Every form of the dashboard, each with valid fields: with the right token each would act."""
    return [
        (f"/test-runs/{ids['run']}/cancel", {}),
        (f"/apps/{ids['app']}/delete", {}),
        (f"/test-cases/{ids['tc']}/run", {"device": "Pixel 7|Android|14.0", "app_file_id": ids["app"]}),
        ("/settings/developer/keys", {"name": "forged"}),
        (f"/settings/developer/keys/{key_id}/revoke", {}),
        ("/settings/secrets", {"name": "FORGED", "value": "x"}),
        ("/settings/secrets/KEPT_SECRET/delete", {}),
        ("/sign-out", {}),
    ]


def _state_of(tenant: Tenant) -> Any:
    runs = tenant.client.get("/v1/jobs/list").json()["test_runs"]
    return (
        sorted((r["id"], r["status"]) for r in runs),
        sorted(a["id"] for a in tenant.client.get("/v1/apps").json()),
        tenant.client.get("/v1/secrets").json(),
    )


def test_every_form_refuses_a_missing_or_wrong_csrf_token(tenant: Tenant, web: str, db: Database) -> None:
    ids = _populate(tenant)
    assert tenant.client.put("/v1/secrets/KEPT_SECRET", json={"value": "v"}).status_code == 200
    before = _state_of(tenant)
    keys_before = tenant.client.get("/settings/developer").text.count("data-key-id=")
    for path, fields in _forms(ids, tenant.key_id):
        for token in (None, "", web[:-1] + ("a" if web[-1] != "a" else "b")):
            data = {**fields, **({"csrf_token": token} if token is not None else {})}
            assert_error(tenant.client.post(path, data=data), 403, "csrf_failed")
    # Uploads carry the token in a header or the query.
    files = {"file": ("app.apk", b"PK\x03\x04", "application/octet-stream")}
    form = {"app_name": "Forged", "version": "1"}
    assert_error(tenant.client.post("/apps/upload", data=form, files=files), 403, "csrf_failed")
    forged = tenant.client.post("/apps/upload", data=form, files=files, headers={"X-CSRF-Token": "nope"})
    assert_error(forged, 403, "csrf_failed")

    assert _state_of(tenant) == before
    assert tenant.client.get("/settings/developer").text.count("data-key-id=") == keys_before
    assert tenant.client.get("/v1/jobs/list").status_code == 200  # the key was not revoked
    assert tenant.client.get("/devices").status_code == 200  # nor the session signed out


def test_the_same_forms_act_with_the_token(tenant: Tenant, web: str) -> None:
    """The control for the test above: the same requests with the session's token do act."""
    ids = _populate(tenant)
    cancel = tenant.client.post(f"/test-runs/{ids['run']}/cancel", data={"csrf_token": web})
    assert cancel.status_code == 303 and cancel.headers["location"] == f"/test-runs/{ids['run']}"
    assert tenant.client.get(f"/v1/jobs/status/{ids['run']}").json()["status"] == "cancelled"

    run = tenant.client.post(
        f"/test-cases/{ids['tc']}/run",
        data={"csrf_token": web, "device": "Pixel 7|Android|14.0", "app_file_id": ids["app"], "priority": "high"},
    )
    assert run.status_code == 303, run.text
    run_id = run.headers["location"].removeprefix("/test-runs/")
    status = tenant.client.get(f"/v1/jobs/status/{run_id}").json()
    assert status["priority"] == "high" and status["test_case"]["id"] == ids["tc"]
    assert status["executed_by"]["email"] == tenant.user_email

    deleted = tenant.client.post(f"/apps/{ids['app']}/delete", data={"csrf_token": web})
    assert deleted.status_code == 303
    assert tenant.client.get(f"/v1/apps/{ids['app']}").status_code == 404


def test_queueing_from_the_dashboard_validates_like_the_api(tenant: Tenant, web: str) -> None:
    ids = _populate(tenant)
    before = _state_of(tenant)
    path = f"/test-cases/{ids['tc']}/run"
    for fields in (
        {"device": "Pixel 7"},
        {"device": "Pixel 99|Android|14"},
        {"device": "Pixel 7|Symbian|14"},
        {"device": "iPhone 14 Pro|iOS|16.0"},  # an Android build on an iOS device
        {"device": "Pixel 7|Android|14", "priority": "urgent"},
        {"device": "Pixel 7|Android|14", "app_file_id": new_id("file")},
        {"device": "x" * 301},
    ):
        response = tenant.client.post(path, data={"csrf_token": web, "app_file_id": ids["app"], **fields})
        assert response.status_code == 422, (fields, response.text)
    assert_error(tenant.client.post(path, data={"csrf_token": web}), 400, "bad_request")
    assert_error(
        tenant.client.post(f"/test-cases/{new_id('tc')}/run", data={"csrf_token": web, "device": "Pixel 7|Android|14"}),
        422,
    )
    # A browser gets the reasons on the error page.
    page = tenant.client.post(path, data={"csrf_token": web, "device": "Pixel 99|Android|14"}, headers=HTML)
    assert page.status_code == 422 and page.headers["content-type"].startswith("text/html")
    assert "no device &#39;Pixel 99&#39;" in page.text or "no device 'Pixel 99'" in page.text, page.text
    assert _state_of(tenant) == before


def test_filters_and_ids_of_the_wrong_shape(tenant: Tenant, web: str) -> None:
    ids = _populate(tenant)
    assert_error(tenant.client.get("/test-runs", params={"status": "exploded"}), 422, "invalid_request")
    assert_error(tenant.client.get("/test-runs", params={"app_id": "x" * 500}), 422)
    for params in ({"app_id": "../../etc"}, {"device": "<script>"}):
        rows = tenant.client.get("/test-runs/rows", params=params)
        assert rows.status_code == 200 and ids["run"] not in rows.text and "<script>" not in rows.text
    # NUL in a URL is refused before any page (docs/decisions.md).
    assert tenant.client.get("/test-runs/rows", params={"test_case_id": "tc_\x00"}).status_code == 400
    assert ids["run"] in tenant.client.get("/test-runs/rows", params={"status": "queued"}).text
    for path in ("/test-runs/run_nope", "/test-cases/tc_nope", f"/test-runs/{ids['run']}/screenshots/1/0.png"):
        assert_error(tenant.client.get(path), 404, "not_found")
    assert_error(tenant.client.get(f"/test-runs/{ids['run']}/screenshots/x/0.png"), 422)
    # A browser gets the same 404 as a page, with no trace of the API's error body.
    page = tenant.client.get("/test-runs/run_nope", headers=HTML)
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "Not found" in page.text and '"success"' not in page.text


def test_generated_keys_are_shown_once_and_revoked_keys_stop_at_once(
    server: LiveServer, tenant: Tenant, web: str
) -> None:
    page = tenant.client.post("/settings/developer/keys", data={"csrf_token": web, "name": "<b>ci</b>"})
    assert page.status_code == 200
    assert "<b>ci</b>" not in page.text and "&lt;b&gt;ci&lt;/b&gt;" in page.text
    secret = page.text.split('id="new-key-value" readonly value="', 1)[1].split('"', 1)[0]
    read_only = tenant.client.post("/settings/developer/keys", data={"csrf_token": web, "name": "reader"})
    reader = read_only.text.split('id="new-key-value" readonly value="', 1)[1].split('"', 1)[0]
    assert secret.startswith("qg_") and reader.startswith("qg_")

    listing = tenant.client.get("/settings/developer").text
    assert secret not in listing and secret[:10] in listing
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/v1/jobs/list", headers={"X-Api-Key": secret}).status_code == 200
        # No "write" box ticked: a read-only key.
        denied = client.post("/v1/categories", json={"name": "no"}, headers={"X-Api-Key": reader})
        assert_error(denied, 403, "insufficient_scope")

        key_id = listing.split(f"<code>{secret[:10]}…</code>")[0].rsplit('data-key-id="', 1)[1].split('"', 1)[0]
        revoked = tenant.client.post(f"/settings/developer/keys/{key_id}/revoke", data={"csrf_token": web})
        assert revoked.status_code == 303
        assert_error(client.get("/v1/jobs/list", headers={"X-Api-Key": secret}), 401, "invalid_api_key")
        assert client.get("/v1/jobs/list", headers={"X-Api-Key": reader}).status_code == 200
