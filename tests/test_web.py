"""The run page every `link` points at, health checks, the OpenAPI schema, docs and generic errors."""

from __future__ import annotations

import httpx
import pytest

from qualgent.ids import new_id
from tests.fixtures.contract import assert_error, queue
from tests.fixtures.factories import PIXEL_7, Tenant, create_test_case, upload_app
from tests.fixtures.servers import LiveServer

# Every path the reference documents (with decisions.md's names where the reference gives none).
DOCUMENTED = {
    "/v1/apps/upload": "post",
    "/v1/apps": "get",
    "/v1/apps/{app_id}": "get",
    "/v1/apps/latest": "get",
    "/v1/test-cases/list": "get",
    "/v1/test-cases/run": "post",
    "/v1/test-cases/run-all": "post",
    "/v1/jobs/list": "get",
    "/v1/jobs/status/{test_run_id}": "get",
    "/v1/categories/list": "get",
    "/v1/devices/list": "get",
}


def queued_run(tenant: Tenant, name: str) -> str:
    upload = upload_app(tenant, app_name="PageApp", version="9.8.7")
    assert upload.status_code == 200, upload.text
    case = create_test_case(tenant, name)
    [job] = queue(tenant, [{"test_case_id": case["id"], "app_file_id": upload.json()["file"]["id"], "device": PIXEL_7}])
    run_id: str = job["id"]
    return run_id


def test_run_page_with_a_key_shows_the_run(tenant: Tenant, server: LiveServer) -> None:
    run_id = queued_run(tenant, "Checkout Flow Test")
    [job] = tenant.client.get("/v1/jobs/list").json()["test_runs"]
    assert job["link"] == f"{server.url}/test-runs/{run_id}"

    page = tenant.client.get(job["link"])
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert run_id in page.text
    assert "Checkout Flow Test" in page.text
    assert "queued" in page.text
    assert "PageApp v9.8.7" in page.text
    assert "Pixel 7" in page.text


def test_run_page_without_a_key_shows_no_run_data(tenant: Tenant, server: LiveServer) -> None:
    run_id = queued_run(tenant, "Secret Flow Test")
    page = httpx.get(f"{server.url}/test-runs/{run_id}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for secret in ("Secret Flow Test", "PageApp", "queued", tenant.user_email, "Pixel 7"):
        assert secret not in page.text, secret
    # It says how to see the run instead.
    assert f"/v1/jobs/status/{run_id}" in page.text
    assert "X-Api-Key" in page.text


def test_run_page_escapes_html(tenant: Tenant) -> None:
    run_id = queued_run(tenant, "<script>alert(1)</script>")
    page = tenant.client.get(f"/test-runs/{run_id}")
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_run_page_of_other_organisation_or_malformed_id_is_404(
    tenant: Tenant, other_tenant: Tenant, server: LiveServer
) -> None:
    run_id = queued_run(tenant, "Theirs Flow Test")
    foreign = other_tenant.client.get(f"/test-runs/{run_id}")
    assert_error(foreign, 404, "not_found")
    assert "Theirs Flow Test" not in foreign.text
    assert_error(tenant.client.get(f"/test-runs/{new_id('run')}"), 404, "not_found")
    for bad in ("run_nope", new_id("tc"), "..%2F..%2Fetc%2Fpasswd"):
        assert_error(tenant.client.get(f"/test-runs/{bad}"), 404)
        assert_error(httpx.get(f"{server.url}/test-runs/{bad}"), 404)
    wrong_key = httpx.get(f"{server.url}/test-runs/{run_id}", headers={"X-Api-Key": "qg_not_a_key_of_anyone"})
    assert_error(wrong_key, 401)
    assert "Theirs Flow Test" not in wrong_key.text


def test_health(server: LiveServer, backend: str) -> None:
    live = httpx.get(f"{server.url}/healthz")
    assert live.status_code == 200
    assert live.json()["status"] == "ok"
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": backend}


def test_openapi_lists_documented_paths_and_hides_aliases(server: LiveServer) -> None:
    response = httpx.get(f"{server.url}/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    for path, method in DOCUMENTED.items():
        assert path in paths, path
        assert method in paths[path], (path, sorted(paths[path]))
        assert paths[path][method].get("summary") or paths[path][method].get("description"), path
    # Aliases are served but not documented.
    assert "/v1/devices" not in paths
    assert "get" not in paths.get("/v1/categories", {})
    assert not any(p.startswith("/test-runs") for p in paths)


def test_docs_page(server: LiveServer) -> None:
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "openapi.json" in docs.text


@pytest.mark.parametrize("path", ["/nope", "/v1/nope", "/v1/jobs/status", "/v2/jobs/list"])
def test_unknown_route_is_a_json_404(tenant: Tenant, server: LiveServer, path: str) -> None:
    error = assert_error(tenant.client.get(path), 404, "not_found")
    assert error["request_id"]
    assert_error(httpx.get(server.url + path), 404, "not_found")


def test_error_bodies_never_contain_a_traceback(tenant: Tenant, server: LiveServer) -> None:
    json_headers = {"Content-Type": "application/json"}
    responses = [
        (tenant.client.get("/nope"), 404),
        (tenant.client.put("/v1/jobs/list"), 405),
        (tenant.client.post("/v1/test-cases/run", content="{not json", headers=json_headers), 400),
        (tenant.client.post("/v1/test-cases/run", content=b"\xff\xfe{", headers=json_headers), 400),
        (tenant.client.post("/v1/test-cases", json={"name": "x", "status": 7}), 422),
        (tenant.client.get("/v1/jobs/list", params={"limit": "lots"}), 422),
        (httpx.get(f"{server.url}/v1/jobs/list"), 401),
        (tenant.client.get(f"/v1/jobs/status/{new_id('run')}"), 404),
        (
            tenant.client.post("/v1/test-cases/run", json={"jobs": [{"test_case_id": "tc_x", "platform": "android"}]}),
            422,
        ),
    ]
    for response, status in responses:
        error = assert_error(response, status)
        assert "Traceback" not in response.text and 'File "' not in response.text
        assert error["request_id"]
