"""Tenancy: every route, called by organisation A with organisation B's IDs, answers as if they did not exist.

"As if they did not exist" is checked literally: each request is made twice, once with B's ID and once
with a well-shaped ID of nothing, and the two answers must be the same (status, code, message, details)
once the IDs are swapped back. Responses must also never carry any of B's data that A did not send.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from qualgent.ids import new_id
from qualgent.signing import signed_download_url
from tests.fixtures.factories import (
    PIXEL_7,
    Database,
    Tenant,
    apk_bytes,
    create_category,
    create_test_case,
    upload_app,
)
from tests.fixtures.routes import DASHBOARD_PREFIXES, PRESIGNED, app_routes
from tests.fixtures.servers import LiveServer
from tests.fixtures.web import PASSWORD, csrf_of, sign_in, signed_in_tenant

PREFIXES = {
    "app": "file",
    "tc": "tc",
    "cat": "cat",
    "run": "run",
    "key": "key",
    "upload": "upload",
    "secret": "secret",
    "batch": "batch",
    "webhook": "whk",
    "delivery": "msg",
}
TUS = {"Tus-Resumable": "1.0.0"}


@dataclass
class World:
    """A's client and own objects; B's objects and every string of B's that A must never see."""

    a: Tenant
    b: Tenant
    b_ids: dict[str, str]
    a_ids: dict[str, str]
    b_secrets: set[str]
    a_app_ids: set[str] = field(default_factory=set)
    a_category_ids: set[str] = field(default_factory=set)
    # A's client is signed in to the dashboard too; its forms send this token.
    csrf: str = ""


def _populate(tenant: Tenant, tag: str) -> tuple[dict[str, str], set[str]]:
    """One of everything, named so that the names are recognisable in any response."""
    app_name = f"App-{tag}-{secrets.token_hex(3)}"
    content = apk_bytes(extra={f"assets/{tag}.bin": secrets.token_bytes(32)})  # a sha256 of its own
    uploaded = upload_app(tenant, content, app_name=app_name, version=f"{tag}.0.1")
    assert uploaded.status_code == 200, uploaded.text
    file = uploaded.json()["file"]
    category = create_category(tenant, name=f"Category-{tag}-{secrets.token_hex(3)}", description=f"desc-{tag}")
    file_content = f"- tapOn: File-{tag}-{secrets.token_hex(3)}\n"
    case = create_test_case(
        tenant,
        name=f"Case-{tag}-{secrets.token_hex(3)}",
        category_id=category["id"],
        files=[{"path": f"data/{tag}.yaml", "content": file_content}],
    )
    secret_name, secret_value = f"SECRET_{tag.upper()}_{secrets.token_hex(3)}", f"Value-{tag}-{secrets.token_hex(3)}"
    assert tenant.client.put(f"/v1/secrets/{secret_name}", json={"value": secret_value}).status_code == 200
    webhook = _webhook(tenant, tag)
    queued = tenant.client.post(
        "/v1/test-cases/run",
        json={"jobs": [{"test_case_id": case["id"], "app_file_id": file["id"], "device": PIXEL_7}]},
    )
    assert queued.status_code == 200, queued.text
    run_id = queued.json()["jobs"][0]["id"]
    batch_id = queued.json()["batch_id"]
    # A resumable upload, half sent (issue 4).
    created = tenant.client.post("/v1/apps/uploads/", headers=_tus_creation(f"Upload-{tag}", 200))
    assert created.status_code == 201, created.text
    upload_id = created.headers["Location"].rsplit("/", 1)[-1]
    sent = tenant.client.patch(f"/v1/apps/uploads/{upload_id}", content=b"u" * 100, headers=_tus_patch(0))
    assert sent.status_code == 204, sent.text
    delivery = _first_delivery(tenant, webhook["id"])
    ids = {
        "app": file["id"],
        "cat": category["id"],
        "tc": case["id"],
        "run": run_id,
        "key": tenant.key_id,
        "upload": upload_id,
        "secret": secret_name,
        "batch": batch_id,
        "webhook": webhook["id"],
        "delivery": delivery,
    }
    names = {
        webhook["url"],
        webhook["secret"],
        webhook["description"],
        app_name,
        file["filename"],
        file["file_path"],
        file["sha256"],
        category["name"],
        case["name"],
        file_content.strip(),
        case["files"][0]["sha256"],
        secret_value,
    }
    return ids, names


def _webhook(tenant: Tenant, tag: str) -> dict[str, Any]:
    """A webhook endpoint (issue 15), of the run events to come."""
    url = f"https://hooks.example.com/{tag}-{secrets.token_hex(4)}"
    description = f"Hook-{tag}-{secrets.token_hex(3)}"
    created = tenant.client.post(
        "/v1/webhooks", json={"url": url, "events": ["run.queued"], "description": description}
    )
    assert created.status_code == 201, created.text
    webhook: dict[str, Any] = created.json()
    return webhook


def _first_delivery(tenant: Tenant, webhook_id: str) -> str:
    """The endpoint's delivery of the run queued since, once the server's worker has made it (its
    attempts fail: the host does not resolve)."""
    deadline = time.monotonic() + 10
    while True:
        found = tenant.client.get(f"/v1/webhooks/{webhook_id}/deliveries").json()["deliveries"]
        if found:
            return str(found[0]["id"])
        assert time.monotonic() < deadline, "the webhook never got a delivery"
        time.sleep(0.05)


def _tus_creation(app_name: str, length: int) -> dict[str, str]:
    metadata = {"filename": "app.apk", "app_name": app_name, "version": "1"}
    encoded = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())
    return {**TUS, "Upload-Length": str(length), "Upload-Metadata": encoded}


def _tus_patch(offset: int) -> dict[str, str]:
    return {**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}


@pytest.fixture
def world(tenant: Tenant, other_tenant: Tenant, db: Database) -> World:
    b_ids, b_names = _populate(other_tenant, "bbb")
    # A has objects of its own too, so that requests mixing A's and B's IDs are possible.
    a_ids, _ = _populate(tenant, "aaa")
    b_secrets = {
        *b_ids.values(),
        *b_names,
        other_tenant.organization_id,
        other_tenant.user_id,
        other_tenant.user_email,
        other_tenant.key_id,
        other_tenant.key,
        other_tenant.key[:10],  # the prefix the dashboard lists keys by
    }
    csrf = signed_in_tenant(db, tenant)
    return World(tenant, other_tenant, b_ids, a_ids, b_secrets, {a_ids["app"]}, {a_ids["cat"]}, csrf)


# ------------------------------------------------------------------------------------------ probing


def _sent_text(url: str, kwargs: dict[str, Any]) -> str:
    return " ".join([url, json.dumps(kwargs.get("json")), str(kwargs.get("params")), str(kwargs.get("data"))])


def probe(w: World, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """A's request; fails if the answer carries anything of B's that A did not send itself."""
    response = w.a.client.request(method, url, **kwargs)
    sent = _sent_text(url, kwargs)
    for secret in w.b_secrets:
        if secret in sent:
            continue
        assert secret not in response.text, f"{method} {url} leaked {secret!r}: {response.text[:500]}"
        for name, value in response.headers.items():
            assert secret not in value, f"{method} {url} leaked {secret!r} in header {name}"
    return response


def _substitute(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, str):
        for old, new in mapping.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [_substitute(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, mapping) for k, v in value.items()}
    return value


def _comparable(response: httpx.Response, mapping: dict[str, str]) -> Any:
    try:
        body = response.json()
    except ValueError:
        return _substitute(response.text, mapping)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body["error"].pop("request_id", None)
    return _substitute(body, mapping)


def indistinguishable(
    w: World,
    method: str,
    url: str,
    refs: tuple[str, ...],
    *,
    status: int,
    code: str | None = None,
    **kwargs: Any,
) -> Any:
    """Call with B's IDs and with IDs of nothing; both answers must be ``status`` and otherwise identical.

    ``url`` and the string values of ``kwargs`` name B's objects as ``<app>``, ``<tc>``, ``<cat>``,
    ``<run>`` and A's as ``<a:app>`` and so on; ``refs`` names the placeholders of B's that are used.
    """
    b_values = {f"<{k}>": w.b_ids[k] for k in refs}
    ghost_values = {f"<{k}>": new_id(PREFIXES[k]) for k in refs}
    own = {f"<a:{k}>": v for k, v in w.a_ids.items()}
    answers = []
    for values in (b_values, ghost_values):
        mapping = {**values, **own}
        response = probe(w, method, _substitute(url, mapping), **_substitute(kwargs, mapping))
        answers.append((response, {v: k for k, v in values.items()}))
    (with_b, back_b), (with_ghost, back_ghost) = answers
    assert with_b.status_code == status, f"{method} {url} with B's IDs: {with_b.status_code} {with_b.text}"
    assert with_ghost.status_code == status, f"{method} {url} with unknown IDs: {with_ghost.text}"
    if code is not None:
        assert with_b.json()["error"]["code"] == code, with_b.text
    seen_b, seen_ghost = _comparable(with_b, back_b), _comparable(with_ghost, back_ghost)
    assert seen_b == seen_ghost, f"{method} {url}: B's IDs are told apart from unknown ones"
    return seen_b


# -------------------------------------------------------------------------------- the route table


def _list_only_own(w: World, url: str, own: set[str], key: str | None = None, **kwargs: Any) -> None:
    response = probe(w, "GET", url, **kwargs)
    assert response.status_code == 200, response.text
    items = response.json()[key] if key else response.json()
    assert {item["id"] for item in items} <= own, f"{url} lists objects that are not A's"


def upload(w: World) -> None:
    # A reuses B's app name and version: nothing of B's may show through, and A's app is A's.
    response = probe(
        w,
        "POST",
        "/v1/apps/upload",
        data={"app_name": next(s for s in w.b_secrets if s.startswith("App-bbb")), "version": "bbb.0.1"},
        files={"file": ("app.apk", apk_bytes(), "application/octet-stream")},
    )
    assert response.status_code == 200, response.text
    file = response.json()["file"]
    assert file["organization_id"] == w.a.organization_id
    assert file["user_id"] == w.a.user_id
    assert file["id"] != w.b_ids["app"]
    w.a_app_ids.add(file["id"])


def list_apps(w: World) -> None:
    _list_only_own(w, "/v1/apps", w.a_app_ids)


def latest_app(w: World) -> None:
    for params in ({}, {"os": "android"}):
        response = probe(w, "GET", "/v1/apps/latest", params=params)
        assert response.status_code == 200, response.text
        assert response.json()["id"] in w.a_app_ids


def get_app(w: World) -> None:
    indistinguishable(w, "GET", "/v1/apps/<app>", ("app",), status=404, code="not_found")


def delete_apps(method: str, path: str) -> Callable[[World], None]:
    def check(w: World) -> None:
        indistinguishable(w, method, path, ("app",), status=404, json={"files": ["<app>"]})
        # Atomic: with one of A's own apps beside B's, nothing at all is deleted.
        indistinguishable(w, method, path, ("app",), status=404, json={"files": ["<a:app>", "<app>"]})
        assert w.a.client.get(f"/v1/apps/{w.a_ids['app']}").status_code == 200

    return check


def list_test_cases(w: World) -> None:
    _list_only_own(w, "/v1/test-cases/list", {w.a_ids["tc"]})
    body = indistinguishable(w, "GET", "/v1/test-cases/list", ("cat",), status=200, params={"category": "<cat>"})
    assert body == []


def run_test_cases(w: World) -> None:
    device = dict(PIXEL_7)
    for job in (
        {"test_case_id": "<tc>", "app_file_id": "<a:app>", "device": device},
        {"test_case_id": "<a:tc>", "app_file_id": "<app>", "device": device},
        {"test_case_id": "<tc>", "app_file_id": "<app>", "device": device},
        {"test_case_id": "<tc>", "platform": "android"},
    ):
        refs = tuple(k for k in ("tc", "app") if f"<{k}>" in json.dumps(job))
        body = indistinguishable(w, "POST", "/v1/test-cases/run", refs, status=422, json={"jobs": [job]})
        assert body["error"]["details"], body
    # A valid entry beside one naming B's test case: the batch is atomic, so nothing is queued.
    jobs = [
        {"test_case_id": "<a:tc>", "app_file_id": "<a:app>", "device": device},
        {"test_case_id": "<tc>", "app_file_id": "<a:app>", "device": device},
    ]
    indistinguishable(w, "POST", "/v1/test-cases/run", ("tc",), status=422, json={"jobs": jobs})


def run_all(w: World) -> None:
    device = dict(PIXEL_7)
    indistinguishable(
        w, "POST", "/v1/test-cases/run-all", ("app",), status=422, json={"app_file_id": "<app>", "device": device}
    )
    indistinguishable(
        w,
        "POST",
        "/v1/test-cases/run-all",
        ("cat",),
        status=422,
        json={"app_file_id": "<a:app>", "device": device, "category_id": "<cat>"},
    )


def create_test_case_with_b_category(w: World) -> None:
    indistinguishable(
        w, "POST", "/v1/test-cases", ("cat",), status=422, json={"name": "Sneaky", "category_id": "<cat>"}
    )


def get_test_case(w: World) -> None:
    indistinguishable(w, "GET", "/v1/test-cases/<tc>", ("tc",), status=404, code="not_found")


def patch_test_case(w: World) -> None:
    indistinguishable(w, "PATCH", "/v1/test-cases/<tc>", ("tc",), status=404, json={"name": "Hijacked"})
    indistinguishable(w, "PATCH", "/v1/test-cases/<tc>", ("tc",), status=404, json={"status": "inactive"})
    # A's own test case cannot be moved into B's category.
    indistinguishable(w, "PATCH", "/v1/test-cases/<a:tc>", ("cat",), status=422, json={"category_id": "<cat>"})


def get_test_case_file(w: World) -> None:
    indistinguishable(w, "GET", "/v1/test-cases/<tc>/files/data/bbb.yaml", ("tc",), status=404, code="not_found")
    # A's own test case has no file of B's path; its own file is there.
    indistinguishable(w, "GET", "/v1/test-cases/<a:tc>/files/data/bbb.yaml", ("tc",), status=404, code="not_found")
    assert probe(w, "GET", f"/v1/test-cases/{w.a_ids['tc']}/files/data/aaa.yaml").status_code == 200


def list_secrets(w: World) -> None:
    response = probe(w, "GET", "/v1/secrets")
    assert response.status_code == 200, response.text
    assert [s["name"] for s in response.json()] == [w.a_ids["secret"]]


def delete_secret(w: World) -> None:
    indistinguishable(w, "DELETE", "/v1/secrets/<secret>", ("secret",), status=404, code="not_found")


def put_secret_named_like_b(w: World) -> None:
    # Names are per organisation: B's name is free for A, and setting it leaves B's secret alone.
    response = probe(w, "PUT", f"/v1/secrets/{w.b_ids['secret']}", json={"value": "A's own"})
    assert response.status_code == 200, response.text
    # From here on, A has a secret of that name itself: A's answers may show it.
    w.b_secrets.discard(w.b_ids["secret"])
    assert {s["name"] for s in probe(w, "GET", "/v1/secrets").json()} == {w.b_ids["secret"], w.a_ids["secret"]}


def dashboard_secrets(w: World) -> None:
    response = probe(w, "GET", "/settings/secrets")
    assert response.status_code == 200 and f'data-secret="{w.a_ids["secret"]}"' in response.text


def dashboard_delete_secret(w: World) -> None:
    indistinguishable(w, "POST", "/settings/secrets/<secret>/delete", ("secret",), status=404, **_form(w))


def dashboard_set_secret(w: World) -> None:
    b_name = w.b_ids["secret"]
    response = probe(w, "POST", "/settings/secrets", **_form(w, name=b_name, value="A's own too"))
    assert response.status_code == 303, response.text
    w.b_secrets.discard(b_name)
    assert f'data-secret="{b_name}"' in probe(w, "GET", "/settings/secrets").text


def list_webhooks(w: World) -> None:
    _list_only_own(w, "/v1/webhooks", {w.a_ids["webhook"]})


def create_webhook_like_b(w: World) -> None:
    # A may point an endpoint of its own at B's URL: the answer is A's endpoint, with nothing of B's.
    b_url = next(s for s in w.b_secrets if s.startswith("https://hooks.example.com/bbb"))
    response = probe(w, "POST", "/v1/webhooks", json={"url": b_url, "events": ["run.finished"]})
    assert response.status_code == 201, response.text
    assert response.json()["id"] != w.b_ids["webhook"]
    assert probe(w, "DELETE", f"/v1/webhooks/{response.json()['id']}").status_code == 200


def get_webhook(w: World) -> None:
    indistinguishable(w, "GET", "/v1/webhooks/<webhook>", ("webhook",), status=404, code="not_found")


def patch_webhook(w: World) -> None:
    indistinguishable(w, "PATCH", "/v1/webhooks/<webhook>", ("webhook",), status=404, json={"enabled": False})
    indistinguishable(
        w, "PATCH", "/v1/webhooks/<webhook>", ("webhook",), status=404, json={"url": "https://hooks.example.com/a"}
    )


def delete_webhook(w: World) -> None:
    indistinguishable(w, "DELETE", "/v1/webhooks/<webhook>", ("webhook",), status=404, code="not_found")


def webhook_deliveries(w: World) -> None:
    indistinguishable(w, "GET", "/v1/webhooks/<webhook>/deliveries", ("webhook",), status=404, code="not_found")


def redeliver(w: World) -> None:
    path = "/v1/webhooks/<webhook>/deliveries/<delivery>/redeliver"
    indistinguishable(w, "POST", path, ("webhook", "delivery"), status=404, code="not_found")
    # B's delivery through A's own endpoint: as unknown.
    own = "/v1/webhooks/<a:webhook>/deliveries/<delivery>/redeliver"
    indistinguishable(w, "POST", own, ("delivery",), status=404, code="not_found")


def dashboard_webhooks(w: World) -> None:
    response = probe(w, "GET", "/settings/webhooks")
    assert response.status_code == 200 and f'data-webhook="{w.a_ids["webhook"]}"' in response.text


def dashboard_create_webhook(w: World) -> None:
    b_url = next(s for s in w.b_secrets if s.startswith("https://hooks.example.com/bbb"))
    response = probe(w, "POST", "/settings/webhooks", **_form(w, url=b_url, events="run.finished"))
    assert response.status_code == 200, response.text
    created = re.search(r'id="new-webhook" data-webhook="(whk_[0-9a-z]+)"', response.text)
    assert created and created.group(1) != w.b_ids["webhook"]
    assert probe(w, "DELETE", f"/v1/webhooks/{created.group(1)}").status_code == 200


def dashboard_webhook(w: World) -> None:
    indistinguishable(w, "GET", "/settings/webhooks/<webhook>", ("webhook",), status=404)


def dashboard_webhook_enabled(w: World) -> None:
    path = "/settings/webhooks/<webhook>/enabled"
    indistinguishable(w, "POST", path, ("webhook",), status=404, **_form(w, enabled="false"))


def dashboard_delete_webhook(w: World) -> None:
    indistinguishable(w, "POST", "/settings/webhooks/<webhook>/delete", ("webhook",), status=404, **_form(w))


def dashboard_redeliver(w: World) -> None:
    path = "/settings/webhooks/<webhook>/deliveries/<delivery>/redeliver"
    indistinguishable(w, "POST", path, ("webhook", "delivery"), status=404, **_form(w))
    own = "/settings/webhooks/<a:webhook>/deliveries/<delivery>/redeliver"
    indistinguishable(w, "POST", own, ("delivery",), status=404, **_form(w))


def delete_test_case(w: World) -> None:
    indistinguishable(w, "DELETE", "/v1/test-cases/<tc>", ("tc",), status=404, code="not_found")


def list_categories(path: str) -> Callable[[World], None]:
    def check(w: World) -> None:
        _list_only_own(w, path, w.a_category_ids)

    return check


def create_category_named_like_b(w: World) -> None:
    # Names are unique per organisation only: B's name is free for A, and the answer says nothing of B.
    b_name = next(s for s in w.b_secrets if s.startswith("Category-bbb"))
    response = probe(w, "POST", "/v1/categories", json={"name": b_name})
    assert response.status_code == 201, response.text
    assert response.json()["id"] != w.b_ids["cat"]
    w.a_category_ids.add(response.json()["id"])


def patch_category(w: World) -> None:
    indistinguishable(w, "PATCH", "/v1/categories/<cat>", ("cat",), status=404, json={"name": "Hijacked"})
    indistinguishable(w, "PATCH", "/v1/categories/<cat>", ("cat",), status=404, json={"description": "x"})


def delete_category(w: World) -> None:
    indistinguishable(w, "DELETE", "/v1/categories/<cat>", ("cat",), status=404, code="not_found")


def list_jobs(w: World) -> None:
    _list_only_own(w, "/v1/jobs/list", {w.a_ids["run"]}, key="test_runs")
    for ref, params in (
        ("tc", {"test_case_id": "<tc>"}),
        ("app", {"app_id": "<app>"}),
        ("run", {"ids": "<run>"}),
        ("run", {"ids": "<run>", "status": "queued"}),
    ):
        body = indistinguishable(w, "GET", "/v1/jobs/list", (ref,), status=200, params=params)
        assert body == {"test_runs": []}
    list_jobs_of_batch(w)
    # Asking for A's run and B's together returns A's alone.
    response = probe(w, "GET", "/v1/jobs/list", params={"ids": f"{w.a_ids['run']},{w.b_ids['run']}"})
    assert [r["id"] for r in response.json()["test_runs"]] == [w.a_ids["run"]]


def job_status(w: World) -> None:
    indistinguishable(w, "GET", "/v1/jobs/status/<run>", ("run",), status=404, code="not_found")


def job_report(w: World) -> None:
    indistinguishable(w, "GET", "/v1/jobs/<run>/report", ("run",), status=404, code="not_found")
    job_report_attempt(w)


def job_junit(w: World) -> None:
    indistinguishable(w, "GET", "/v1/jobs/<run>/junit", ("run",), status=404, code="not_found")


def cancel_job(w: World) -> None:
    indistinguishable(w, "POST", "/v1/jobs/<run>/cancel", ("run",), status=404, code="not_found")


def job_report_attempt(w: World) -> None:
    indistinguishable(w, "GET", "/v1/jobs/<run>/report", ("run",), status=404, code="not_found", params={"attempt": 1})


def get_batch(w: World) -> None:
    for params in ({}, {"runs": "true", "queue": "true"}):
        indistinguishable(w, "GET", "/v1/batches/<batch>", ("batch",), status=404, code="not_found", params=params)
    # A's own batch lists A's run only.
    own = probe(w, "GET", f"/v1/batches/{w.a_ids['batch']}", params={"runs": "true"})
    assert own.status_code == 200 and [r["id"] for r in own.json()["runs"]] == [w.a_ids["run"]]


def job_events(w: World) -> None:
    # Replayed from the first event on: A's stream has A's run's events and never B's, whether it asks
    # for everything, for B's run, for B's batch, or for A's run and B's together.
    for params in (
        {},
        {"ids": w.b_ids["run"]},
        {"batch_id": w.b_ids["batch"]},
        {"ids": f"{w.a_ids['run']},{w.b_ids['run']}"},
    ):
        response = probe(w, "GET", "/v1/jobs/events", params={**params, "last_event_id": 0, "max_seconds": 1})
        assert response.status_code == 200, response.text
        assert w.b_ids["run"] not in response.text and w.b_ids["batch"] not in response.text, params
        events = [line for line in response.text.splitlines() if line.startswith("data:")]
        if params and w.a_ids["run"] not in params.get("ids", ""):
            assert events == [], params
        else:
            assert events and all(w.a_ids["run"] in line for line in events), params


def list_jobs_of_batch(w: World) -> None:
    body = indistinguishable(w, "GET", "/v1/jobs/list", ("batch",), status=200, params={"batch_id": "<batch>"})
    assert body == {"test_runs": []}


def history_of_test_case(w: World) -> None:
    indistinguishable(w, "GET", "/v1/test-cases/<tc>/history", ("tc",), status=404, code="not_found")


def quarantine(method: str) -> Callable[[World], None]:
    def check(w: World) -> None:
        body = {"json": {"reason": "not mine"}} if method == "PUT" else {}
        indistinguishable(w, method, "/v1/test-cases/<tc>/quarantine", ("tc",), status=404, code="not_found", **body)

    return check


def organization_settings(w: World) -> None:
    response = probe(w, "GET", "/v1/organization/settings")
    assert response.status_code == 200, response.text
    assert set(response.json()) >= {"default_retries", "auto_quarantine", "quarantine_exit_passes"}


def change_organization_settings(w: World) -> None:
    # A's change is A's alone: B's settings stay as they were (checked at the end of the walk).
    response = probe(w, "PATCH", "/v1/organization/settings", json={"default_retries": 2})
    assert response.status_code == 200 and response.json()["default_retries"] == 2, response.text


def dashboard_batch(w: World) -> None:
    indistinguishable(w, "GET", "/batches/<batch>", ("batch",), status=404, code="not_found")


def dashboard_quarantine(w: World) -> None:
    indistinguishable(
        w, "POST", "/test-cases/<tc>/quarantine", ("tc",), status=404, code="not_found", **_form(w, quarantined="1")
    )


def dashboard_organization(w: World) -> None:
    response = probe(w, "GET", "/settings/organization")
    assert response.status_code == 200 and 'id="organization-settings"' in response.text


def dashboard_change_organization(w: World) -> None:
    form = _form(w, default_retries="1", quarantine_exit_passes="3", auto_quarantine="1")
    response = probe(w, "POST", "/settings/organization", **form)
    assert response.status_code == 303, response.text


def list_devices(path: str) -> Callable[[World], None]:
    def check(w: World) -> None:
        response = probe(w, "GET", path)
        assert response.status_code == 200
        assert "phone" in response.json()

    return check


def upload_options(w: World) -> None:
    response = probe(w, "OPTIONS", "/v1/apps/uploads/")
    assert response.status_code == 204


def create_upload(w: World) -> None:
    response = probe(w, "POST", "/v1/apps/uploads/", headers=_tus_creation("Sneaky", 100))
    assert response.status_code == 201, response.text
    assert w.b_ids["upload"] not in response.headers["Location"]


def upload_status(w: World) -> None:
    indistinguishable(w, "GET", "/v1/apps/uploads/<upload>", ("upload",), status=404, code="not_found")
    for upload_id in (w.b_ids["upload"], new_id("upload")):
        assert probe(w, "HEAD", f"/v1/apps/uploads/{upload_id}", headers=TUS).status_code == 404


def patch_upload(w: World) -> None:
    # At B's real offset, and at the start: both as if the upload did not exist.
    for offset in (100, 0):
        indistinguishable(
            w,
            "PATCH",
            "/v1/apps/uploads/<upload>",
            ("upload",),
            status=404,
            content=b"x" * 50,
            headers=_tus_patch(offset),
        )


def delete_upload(w: World) -> None:
    indistinguishable(w, "DELETE", "/v1/apps/uploads/<upload>", ("upload",), status=404, headers=TUS)


def run_page(w: World) -> None:
    indistinguishable(w, "GET", "/test-runs/<run>", ("run",), status=404, code="not_found")


# ------------------------------------------------------------------------ the dashboard (signed in)


def _form(w: World, **fields: str) -> dict[str, Any]:
    return {"data": {"csrf_token": w.csrf, **fields}}


def dashboard_home(w: World) -> None:
    response = probe(w, "GET", "/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/test-runs"


def dashboard_sign_in_page(w: World) -> None:
    # Already signed in: straight on, to a path of this server only.
    response = probe(w, "GET", "/sign-in", params={"next": "//evil.example/x"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/test-runs"


def dashboard_sign_in(w: World) -> None:
    # B's user's email with A's password (and with no password set for B) opens nothing.
    fresh = httpx.Client(base_url=str(w.a.client.base_url), timeout=30)
    try:
        form = fresh.get("/sign-in")
        response = fresh.post(
            "/sign-in",
            data={"email": w.b.user_email, "password": PASSWORD, "csrf_token": csrf_of(form.text)},
            follow_redirects=False,
        )
        assert response.status_code == 401, response.text
        assert "qg_session" not in response.headers.get("set-cookie", "")
    finally:
        fresh.close()


def dashboard_sign_out(w: World) -> None:
    # A second session of A's, signed out; A's own session (the walk's) stays open.
    other = httpx.Client(base_url=str(w.a.client.base_url), timeout=30)
    try:
        csrf = sign_in(other, w.a.user_email)
        response = other.post("/sign-out", data={"csrf_token": csrf}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/sign-in"
        assert other.get("/settings/developer", follow_redirects=False).status_code == 401
        assert probe(w, "GET", "/settings/developer").status_code == 200
    finally:
        other.close()


def dashboard_run_list(path: str) -> Callable[[World], None]:
    def check(w: World) -> None:
        response = probe(w, "GET", path)
        assert response.status_code == 200, response.text
        assert w.a_ids["run"] in response.text
        for ref, param in (("tc", "test_case_id"), ("app", "app_id")):
            indistinguishable(w, "GET", path, (ref,), status=200, params={param: f"<{ref}>"})

    return check


def dashboard_run_events(w: World) -> None:
    # A's dashboard stream, replayed from the first event: A's run's events, none of B's even when asked.
    b_run, a_run = w.b_ids["run"], w.a_ids["run"]
    for ids in (None, b_run, f"{a_run},{b_run}"):
        params = {"max_seconds": "0", **({"ids": ids} if ids else {})}
        response = probe(w, "GET", "/test-runs/events", params=params, headers={"Last-Event-ID": "0"})
        assert response.status_code == 200, response.text
        events = [line for line in response.text.splitlines() if line.startswith("data:")]
        assert not any(b_run in line for line in events), ids
        if ids == b_run:
            assert events == []
        else:
            assert events and all(a_run in line for line in events)


def dashboard_run(suffix: str) -> Callable[[World], None]:
    def check(w: World) -> None:
        indistinguishable(w, "GET", f"/test-runs/<run>{suffix}", ("run",), status=404, code="not_found")

    return check


def dashboard_screenshot(w: World) -> None:
    indistinguishable(w, "GET", "/test-runs/<run>/screenshots/1/0.png", ("run",), status=404, code="not_found")


def dashboard_artifact(w: World) -> None:
    for name in ("run.mp4", "device.log"):
        indistinguishable(w, "GET", f"/test-runs/<run>/artifacts/1/{name}", ("run",), status=404, code="not_found")


def dashboard_cancel(w: World) -> None:
    indistinguishable(w, "POST", "/test-runs/<run>/cancel", ("run",), status=404, code="not_found", **_form(w))


def dashboard_apps(w: World) -> None:
    response = probe(w, "GET", "/apps")
    assert response.status_code == 200 and w.a_ids["app"] in response.text


def dashboard_upload(w: World) -> None:
    b_name = next(s for s in w.b_secrets if s.startswith("App-bbb"))
    response = probe(
        w,
        "POST",
        "/apps/upload",
        headers={"X-CSRF-Token": w.csrf},
        data={"app_name": b_name, "version": "bbb.0.1"},
        files={"file": ("app.apk", apk_bytes(), "application/octet-stream")},
    )
    assert response.status_code == 200, response.text
    file = response.json()["file"]
    assert file["organization_id"] == w.a.organization_id and file["id"] != w.b_ids["app"]
    w.a_app_ids.add(file["id"])


def dashboard_delete_app(w: World) -> None:
    indistinguishable(w, "POST", "/apps/<app>/delete", ("app",), status=404, **_form(w))


def dashboard_test_cases(w: World) -> None:
    response = probe(w, "GET", "/test-cases")
    assert response.status_code == 200 and w.a_ids["tc"] in response.text
    indistinguishable(w, "GET", "/test-cases", ("cat",), status=404, code="not_found", params={"category": "<cat>"})


def dashboard_test_case(w: World) -> None:
    indistinguishable(w, "GET", "/test-cases/<tc>", ("tc",), status=404, code="not_found")


def dashboard_run_test_case(w: World) -> None:
    device = "Pixel 7|Android|14"
    for refs, path, app in (
        (("tc",), "/test-cases/<tc>/run", "<a:app>"),
        (("app",), "/test-cases/<a:tc>/run", "<app>"),
    ):
        body = indistinguishable(w, "POST", path, refs, status=422, **_form(w, device=device, app_file_id=app))
        assert body["error"]["details"], body


def dashboard_devices(w: World) -> None:
    response = probe(w, "GET", "/devices")
    assert response.status_code == 200 and "Pixel 7" in response.text


def dashboard_developer(w: World) -> None:
    response = probe(w, "GET", "/settings/developer")
    assert response.status_code == 200 and w.a.key[:10] in response.text


def dashboard_generate_key(w: World) -> None:
    response = probe(w, "POST", "/settings/developer/keys", **_form(w, name="walk", write="1"))
    assert response.status_code == 200, response.text
    secret = re.search(r'id="new-key-value" readonly value="(qg_[^"]+)"', response.text)
    assert secret, response.text
    # The new key is A's: it sees A's runs, not B's.
    runs = httpx.get(w.a.client.base_url.join("/v1/jobs/list"), headers={"X-Api-Key": secret.group(1)}).json()[
        "test_runs"
    ]
    assert [r["id"] for r in runs] == [w.a_ids["run"]]


def dashboard_revoke_key(w: World) -> None:
    indistinguishable(w, "POST", "/settings/developer/keys/<key>/revoke", ("key",), status=404, **_form(w))
    assert w.b.client.get("/v1/jobs/list").status_code == 200  # B's key still works


ROUTE_TABLE: dict[tuple[str, str], Callable[[World], None]] = {
    # The dashboard, signed in as A; first, before A names things of its own like B's.
    ("GET", "/"): dashboard_home,
    ("GET", "/sign-in"): dashboard_sign_in_page,
    ("POST", "/sign-in"): dashboard_sign_in,
    ("POST", "/sign-out"): dashboard_sign_out,
    ("GET", "/test-runs"): dashboard_run_list("/test-runs"),
    ("GET", "/test-runs/rows"): dashboard_run_list("/test-runs/rows"),
    ("GET", "/test-runs/events"): dashboard_run_events,
    ("GET", "/test-runs/{run_id}/live"): dashboard_run("/live"),
    ("GET", "/test-runs/{run_id}/report.json"): dashboard_run("/report.json"),
    ("GET", "/test-runs/{run_id}/junit.xml"): dashboard_run("/junit.xml"),
    ("GET", "/test-runs/{run_id}/screenshots/{attempt}/{index}.png"): dashboard_screenshot,
    ("GET", "/test-runs/{run_id}/artifacts/{attempt}/{name}"): dashboard_artifact,
    ("POST", "/test-runs/{run_id}/cancel"): dashboard_cancel,
    ("GET", "/apps"): dashboard_apps,
    ("POST", "/apps/{app_id}/delete"): dashboard_delete_app,
    ("GET", "/test-cases"): dashboard_test_cases,
    ("GET", "/test-cases/{test_case_id}"): dashboard_test_case,
    ("POST", "/test-cases/{test_case_id}/run"): dashboard_run_test_case,
    ("GET", "/devices"): dashboard_devices,
    ("GET", "/settings/developer"): dashboard_developer,
    ("POST", "/settings/developer/keys"): dashboard_generate_key,
    ("POST", "/settings/developer/keys/{key_id}/revoke"): dashboard_revoke_key,
    ("GET", "/settings/secrets"): dashboard_secrets,
    ("GET", "/batches/{batch_id}"): dashboard_batch,
    ("POST", "/test-cases/{test_case_id}/quarantine"): dashboard_quarantine,
    ("GET", "/settings/organization"): dashboard_organization,
    ("POST", "/settings/organization"): dashboard_change_organization,
    ("POST", "/settings/secrets/{name}/delete"): dashboard_delete_secret,
    ("GET", "/v1/apps"): list_apps,
    ("GET", "/v1/apps/latest"): latest_app,
    ("GET", "/v1/apps/{app_id}"): get_app,
    ("DELETE", "/v1/apps"): delete_apps("DELETE", "/v1/apps"),
    ("POST", "/v1/apps/delete"): delete_apps("POST", "/v1/apps/delete"),
    ("GET", "/v1/test-cases/list"): list_test_cases,
    ("POST", "/v1/test-cases/run"): run_test_cases,
    ("POST", "/v1/test-cases/run-all"): run_all,
    ("POST", "/v1/test-cases"): create_test_case_with_b_category,
    ("GET", "/v1/test-cases/{test_case_id}"): get_test_case,
    ("GET", "/v1/test-cases/{test_case_id}/files/{file_path:path}"): get_test_case_file,
    ("PATCH", "/v1/test-cases/{test_case_id}"): patch_test_case,
    ("DELETE", "/v1/test-cases/{test_case_id}"): delete_test_case,
    ("GET", "/v1/categories"): list_categories("/v1/categories"),
    ("GET", "/v1/categories/list"): list_categories("/v1/categories/list"),
    ("POST", "/v1/categories"): create_category_named_like_b,
    ("PATCH", "/v1/categories/{category_id}"): patch_category,
    ("DELETE", "/v1/categories/{category_id}"): delete_category,
    ("GET", "/v1/secrets"): list_secrets,
    ("DELETE", "/v1/secrets/{name}"): delete_secret,
    ("GET", "/v1/jobs/list"): list_jobs,
    ("GET", "/v1/jobs/events"): job_events,
    ("GET", "/v1/jobs/status/{test_run_id}"): job_status,
    ("GET", "/v1/jobs/{test_run_id}/report"): job_report,
    ("GET", "/v1/batches/{batch_id}"): get_batch,
    ("GET", "/v1/test-cases/{test_case_id}/history"): history_of_test_case,
    ("PUT", "/v1/test-cases/{test_case_id}/quarantine"): quarantine("PUT"),
    ("DELETE", "/v1/test-cases/{test_case_id}/quarantine"): quarantine("DELETE"),
    ("GET", "/v1/organization/settings"): organization_settings,
    ("PATCH", "/v1/organization/settings"): change_organization_settings,
    ("GET", "/v1/jobs/{test_run_id}/junit"): job_junit,
    ("POST", "/v1/jobs/{test_run_id}/cancel"): cancel_job,
    ("GET", "/v1/devices"): list_devices("/v1/devices"),
    ("GET", "/v1/devices/list"): list_devices("/v1/devices/list"),
    ("GET", "/test-runs/{run_id}"): run_page,
    ("OPTIONS", "/v1/apps/uploads/"): upload_options,
    ("POST", "/v1/apps/uploads/"): create_upload,
    ("GET", "/v1/apps/uploads/{upload_id}"): upload_status,
    ("PATCH", "/v1/apps/uploads/{upload_id}"): patch_upload,
    ("DELETE", "/v1/apps/uploads/{upload_id}"): delete_upload,
    ("GET", "/v1/webhooks"): list_webhooks,
    ("GET", "/settings/webhooks"): dashboard_webhooks,
    ("POST", "/settings/webhooks"): dashboard_create_webhook,
    ("GET", "/settings/webhooks/{webhook_id}"): dashboard_webhook,
    ("POST", "/settings/webhooks/{webhook_id}/enabled"): dashboard_webhook_enabled,
    ("POST", "/settings/webhooks/{webhook_id}/delete"): dashboard_delete_webhook,
    ("POST", "/settings/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): dashboard_redeliver,
    ("POST", "/v1/webhooks"): create_webhook_like_b,
    ("GET", "/v1/webhooks/{webhook_id}"): get_webhook,
    ("PATCH", "/v1/webhooks/{webhook_id}"): patch_webhook,
    ("DELETE", "/v1/webhooks/{webhook_id}"): delete_webhook,
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): webhook_deliveries,
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): redeliver,
    # Late: A names secrets like B's, which the checks above must not find.
    ("PUT", "/v1/secrets/{name}"): put_secret_named_like_b,
    ("POST", "/settings/secrets"): dashboard_set_secret,
    # Last: A's upload adds an app of A's that the checks above need not know about.
    ("POST", "/v1/apps/upload"): upload,
    ("POST", "/apps/upload"): dashboard_upload,
}


def test_route_table_covers_every_route() -> None:
    """A route added to the application without a line above fails here."""
    routes = app_routes(("/v1", *DASHBOARD_PREFIXES))
    assert routes >= PRESIGNED
    assert set(ROUTE_TABLE) == routes - PRESIGNED


# ----------------------------------------------------------------------------------------- the walk


def _b_view(b: Tenant, ids: dict[str, str]) -> dict[str, Any]:
    client = b.client
    app = client.get(f"/v1/apps/{ids['app']}")
    case = client.get(f"/v1/test-cases/{ids['tc']}")
    run = client.get(f"/v1/jobs/status/{ids['run']}")
    assert app.status_code == case.status_code == run.status_code == 200
    app_body = app.json()
    app_body.pop("link")  # a fresh signature each time
    batch = client.get(f"/v1/batches/{ids['batch']}", params={"runs": "true"}).json()
    batch.pop("wall_seconds")  # grows while its run waits
    return {
        "app": app_body,
        "apps": [a["id"] for a in client.get("/v1/apps").json()],
        "categories": client.get("/v1/categories/list").json(),
        "test_case": case.json(),
        "test_cases": client.get("/v1/test-cases/list").json(),
        "run": run.json(),
        "runs": client.get("/v1/jobs/list").json(),
        "upload": client.get(f"/v1/apps/uploads/{ids['upload']}").json(),
        "secrets": client.get("/v1/secrets").json(),
        "file": client.get(f"/v1/test-cases/{ids['tc']}/files/data/bbb.yaml").text,
        "batch": batch,
        "history": client.get(f"/v1/test-cases/{ids['tc']}/history").json(),
        "settings": client.get("/v1/organization/settings").json(),
        # failing_since: set by the worker's first failed delivery, whenever it comes.
        "webhooks": [{k: v for k, v in h.items() if k != "failing_since"} for h in client.get("/v1/webhooks").json()],
        "deliveries": [d["id"] for d in client.get(f"/v1/webhooks/{ids['webhook']}/deliveries").json()["deliveries"]],
    }


def test_every_route_hides_other_organisations(world: World) -> None:
    before = _b_view(world.b, world.b_ids)
    assert before["run"]["status"] == "queued"

    for (method, path), check in ROUTE_TABLE.items():
        try:
            check(world)
        except AssertionError as exc:
            raise AssertionError(f"{method} {path}: {exc}") from exc

    # B's objects are exactly as they were: nothing renamed, moved, cancelled or deleted.
    after = _b_view(world.b, world.b_ids)
    assert after == before
    assert after["run"]["status"] == "queued"
    assert after["apps"] == [world.b_ids["app"]]
    # And nothing A tried with B's IDs was done in A's name either.
    a_runs = world.a.client.get("/v1/jobs/list").json()["test_runs"]
    assert [r["id"] for r in a_runs] == [world.a_ids["run"]]
    a_cases = world.a.client.get("/v1/test-cases/list").json()
    assert [c["id"] for c in a_cases] == [world.a_ids["tc"]]
    assert a_cases[0]["category"]["id"] == world.a_ids["cat"]
    assert world.a.client.get(f"/v1/apps/{world.a_ids['app']}").status_code == 200


def test_download_link_is_bound_to_its_organisation(server: LiveServer, world: World) -> None:
    key = (server.settings.secret_key or "").encode()
    assert key
    anonymous = httpx.Client(timeout=30)
    try:
        # B's own link works (the control).
        b_app = world.b.client.get(f"/v1/apps/{world.b_ids['app']}").json()
        assert anonymous.get(b_app["link"]).status_code == 200
        # A's link with B's app ID put in: the signature no longer matches.
        a_app = world.a.client.get(f"/v1/apps/{world.a_ids['app']}").json()
        swapped = a_app["link"].replace(world.a_ids["app"], world.b_ids["app"])
        response = anonymous.get(swapped)
        assert response.status_code == 403, response.text
        assert world.b.organization_id not in response.text
        # Even a correctly signed link for (A's organisation, B's app) finds nothing: the query is A's.
        forged = signed_download_url(server.url, key, world.a.organization_id, world.b_ids["app"], 300)
        response = anonymous.get(forged)
        assert response.status_code == 404, response.text
        ghost = signed_download_url(server.url, key, world.a.organization_id, new_id("file"), 300)
        assert anonymous.get(ghost).json()["error"]["code"] == response.json()["error"]["code"]
    finally:
        anonymous.close()
