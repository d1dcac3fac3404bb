"""Jobs: the run list (shape, order, filters, pages), one run's status, and cancelling."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from qualgent.ids import new_id
from tests.fixtures.contract import (
    JOB_STATUS_EXAMPLE,
    JOBS_LIST_EXAMPLE,
    assert_error,
    assert_shape,
    next_link,
    queue,
    set_run,
)
from tests.fixtures.factories import PIXEL_7, Database, Tenant, create_test_case, upload_app
from tests.fixtures.servers import LiveServer


def android_app(tenant: Tenant, version: str = "1.0.0") -> str:
    response = upload_app(tenant, version=version)
    assert response.status_code == 200, response.text
    file_id: str = response.json()["file"]["id"]
    return file_id


def queue_one(tenant: Tenant, test_case_id: str, app_file_id: str, **extra: Any) -> str:
    [job] = queue(tenant, [{"test_case_id": test_case_id, "app_file_id": app_file_id, "device": PIXEL_7, **extra}])
    run_id: str = job["id"]
    return run_id


def queue_sequence(tenant: Tenant, test_case_id: str, app_file_id: str, count: int) -> list[str]:
    """Runs queued one request after another, so each is strictly newer than the one before."""
    ids = []
    for _ in range(count):
        ids.append(queue_one(tenant, test_case_id, app_file_id))
        time.sleep(0.002)
    return ids


def list_runs(tenant: Tenant, **params: Any) -> list[dict[str, Any]]:
    response = tenant.client.get("/v1/jobs/list", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"test_runs"}
    runs: list[dict[str, Any]] = body["test_runs"]
    return runs


def ids_of(runs: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in runs]


def test_list_shape_and_newest_first(tenant: Tenant, db: Database, server: LiveServer) -> None:
    assert list_runs(tenant) == []
    file_id = android_app(tenant)
    login = create_test_case(tenant, "Login Flow Test")
    payment = create_test_case(tenant, "Payment Flow Test")
    first = queue_one(tenant, login["id"], file_id)
    time.sleep(0.002)
    second = queue_one(tenant, payment["id"], file_id, priority="high")
    set_run(db, first, status="passed", progress=100, started_at=datetime.now(UTC), finished_at=datetime.now(UTC))

    response = tenant.client.get("/v1/jobs/list")
    assert response.status_code == 200
    body = response.json()
    assert_shape(body, JOBS_LIST_EXAMPLE)
    runs = body["test_runs"]
    assert ids_of(runs) == [second, first]
    newest, oldest = runs
    assert newest["link"] == f"{server.url}/test-runs/{second}"
    assert newest["test_case"] == {"id": payment["id"], "name": "Payment Flow Test"}
    assert newest["app"] == {"id": file_id, "name": "MyApp v1.0.0"}
    assert (newest["status"], newest["priority"], newest["progress"], newest["device"]) == (
        "queued",
        "high",
        0,
        "Pixel 7",
    )
    assert newest["executed_by"]["id"] == tenant.user_id
    assert newest["executed_by"]["email"] == tenant.user_email
    assert newest["executed_by"]["name"]
    assert (oldest["status"], oldest["progress"], oldest["priority"]) == ("passed", 100, "medium")
    assert oldest["test_case"]["name"] == "Login Flow Test"
    assert oldest["failure"] is None


def test_list_is_scoped_to_the_organisation(tenant: Tenant, other_tenant: Tenant) -> None:
    file_id = android_app(tenant)
    case = create_test_case(tenant)
    run_id = queue_one(tenant, case["id"], file_id)
    assert list_runs(other_tenant) == []
    assert list_runs(other_tenant, ids=run_id) == []
    assert list_runs(other_tenant, test_case_id=case["id"]) == []
    assert_error(other_tenant.client.get(f"/v1/jobs/status/{run_id}"), 404, "not_found")
    assert_error(other_tenant.client.post(f"/v1/jobs/{run_id}/cancel"), 404)
    assert list_runs(tenant, ids=run_id)[0]["status"] == "queued"


def test_filters(tenant: Tenant, db: Database) -> None:
    app_a = android_app(tenant, version="1.0.0")
    app_b = android_app(tenant, version="2.0.0")
    case_x = create_test_case(tenant, "X")
    case_y = create_test_case(tenant, "Y")
    r1 = queue_one(tenant, case_x["id"], app_a)
    r2 = queue_one(tenant, case_y["id"], app_a)
    r3 = queue_one(tenant, case_x["id"], app_b)
    r4 = queue_one(tenant, case_y["id"], app_b)
    set_run(db, r2, status="running", progress=40, started_at=datetime.now(UTC))
    set_run(db, r3, status="failed", progress=100, finished_at=datetime.now(UTC))

    def ids(**params: Any) -> set[str]:
        return set(ids_of(list_runs(tenant, **params)))

    assert ids() == {r1, r2, r3, r4}
    assert ids(status="queued") == {r1, r4}
    assert ids(status="running") == {r2}
    assert ids(status="failed") == {r3}
    assert ids(status="passed") == set()
    assert ids(test_case_id=case_x["id"]) == {r1, r3}
    assert ids(app_id=app_b) == {r3, r4}
    assert ids(app_id=app_b, test_case_id=case_y["id"]) == {r4}
    assert ids(ids=f"{r1},{r3}") == {r1, r3}
    assert ids(ids=f"{r1},,{r4},") == {r1, r4}
    assert ids(ids=f"{r2},{new_id('run')},nonsense") == {r2}
    assert ids(ids=f"{r1},{r2},{r3}", status="queued") == {r1}
    assert ids(test_case_id=new_id("tc")) == set()
    assert ids(app_id="file_nope") == set()
    # A NUL in a filter is refused before any query (PostgreSQL refuses NUL in text).
    for params in ({"test_case_id": "tc_\u0000"}, {"app_id": "\u0000"}, {"ids": f"{r1},\u0000"}):
        assert_error(tenant.client.get("/v1/jobs/list", params=params), 400, "bad_request")
    assert list_runs(tenant, status="running")[0]["progress"] == 40
    assert_error(tenant.client.get("/v1/jobs/list", params={"status": "completed-ish"}), 422, "invalid_request")


def test_pagination_has_no_overlap_or_gaps(tenant: Tenant) -> None:
    file_id = android_app(tenant)
    case = create_test_case(tenant)
    created = queue_sequence(tenant, case["id"], file_id, 5)
    # A batch's runs share a millisecond: the pages must still tile it exactly.
    created += [j["id"] for j in queue(tenant, [{"test_case_id": case["id"], "platform": "android"}] * 6)]

    everything = ids_of(list_runs(tenant, limit=1000))
    assert sorted(everything) == sorted(created)
    assert set(everything[:6]) == set(created[5:])
    assert everything[6:] == list(reversed(created[:5]))

    pages: list[list[str]] = []
    url: str | None = "/v1/jobs/list?limit=3"
    while url:
        response = tenant.client.get(url)
        assert response.status_code == 200, response.text
        pages.append(ids_of(response.json()["test_runs"]))
        url = next_link(response)
        if url:
            assert url.startswith(str(tenant.client.base_url)), url
            assert "limit=3" in url
        assert len(pages) < 10
    assert [len(p) for p in pages] == [3, 3, 3, 2]
    assert [i for page in pages for i in page] == everything

    # Filters survive into the next page's link.
    response = tenant.client.get("/v1/jobs/list", params={"limit": 4, "status": "queued"})
    link = next_link(response)
    assert link is not None and "status=queued" in link
    second = tenant.client.get(link)
    assert ids_of(response.json()["test_runs"]) + ids_of(second.json()["test_runs"]) == everything[:8]

    last = tenant.client.get("/v1/jobs/list", params={"limit": 11})
    assert len(last.json()["test_runs"]) == 11
    assert next_link(last) is None


@pytest.mark.parametrize("limit", ["1001", "0", "-1", "many"])
def test_bad_limit_is_422(tenant: Tenant, limit: str) -> None:
    # decisions.md: limit is at most 1000; an out-of-range value is well-formed but invalid.
    error = assert_error(tenant.client.get("/v1/jobs/list", params={"limit": limit}), 422, "invalid_request")
    assert "limit" in str(error["details"])


def test_max_limit_and_bad_cursor(tenant: Tenant) -> None:
    assert tenant.client.get("/v1/jobs/list", params={"limit": 1000}).status_code == 200
    assert_error(tenant.client.get("/v1/jobs/list", params={"cursor": "not a cursor!"}), 400, "invalid_cursor")


def test_status_shape(tenant: Tenant, db: Database, server: LiveServer) -> None:
    file_id = android_app(tenant)
    case = create_test_case(tenant, "Login Flow Test")
    run_id = queue_one(tenant, case["id"], file_id, priority="low")

    response = tenant.client.get(f"/v1/jobs/status/{run_id}")
    assert response.status_code == 200, response.text
    run = response.json()
    assert_shape(run, JOB_STATUS_EXAMPLE)
    assert run["id"] == run_id
    assert run["link"] == f"{server.url}/test-runs/{run_id}"
    assert run["test_case"] == {"id": case["id"], "name": "Login Flow Test"}
    assert run["app"] == {"id": file_id, "name": "MyApp v1.0.0"}
    assert (run["status"], run["priority"], run["progress"], run["device"]) == ("queued", "low", 0, "Pixel 7")
    assert run["executed_by"] == {"id": tenant.user_id, "name": run["executed_by"]["name"], "email": tenant.user_email}
    assert run["failure"] is None and run["finished_at"] is None

    set_run(
        db,
        run_id,
        status="failed",
        progress=100,
        finished_at=datetime.now(UTC),
        failure_kind="timeout",
        failure_message="The run exceeded 600 s.",
        failure_step=3,
    )
    run = tenant.client.get(f"/v1/jobs/status/{run_id}").json()
    assert (run["status"], run["progress"]) == ("failed", 100)
    assert run["failure"] == {"kind": "timeout", "message": "The run exceeded 600 s.", "step": 3}
    assert run["finished_at"] is not None


@pytest.mark.parametrize(
    "bad", ["run_nope", "tc_01jd2f3g4h5j6k7m8n9p0q1r2s", "RUN_01JD2F3G4H5J6K7M8N9P0Q1R2S", "%20", "new"]
)
def test_status_of_unknown_or_malformed_is_404(tenant: Tenant, bad: str) -> None:
    run_id = new_id("run") if bad == "new" else bad
    assert_error(tenant.client.get(f"/v1/jobs/status/{run_id}"), 404, "not_found")
    assert_error(tenant.client.post(f"/v1/jobs/{run_id}/cancel"), 404, "not_found")


def test_cancel(tenant: Tenant, db: Database) -> None:
    file_id = android_app(tenant)
    case = create_test_case(tenant)
    queued, running, passed = (queue_one(tenant, case["id"], file_id) for _ in range(3))
    set_run(db, running, status="running", progress=30, started_at=datetime.now(UTC))
    set_run(db, passed, status="passed", progress=100, finished_at=datetime.now(UTC))

    response = tenant.client.post(f"/v1/jobs/{queued}/cancel")
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "id": queued, "status": "cancelled"}
    run = tenant.client.get(f"/v1/jobs/status/{queued}").json()
    assert (run["status"], run["progress"]) == ("cancelled", 100)
    assert run["finished_at"] is not None
    assert ids_of(list_runs(tenant, status="cancelled")) == [queued]

    again = assert_error(tenant.client.post(f"/v1/jobs/{queued}/cancel"), 422)
    assert again["code"] == "run_finished"
    assert_error(tenant.client.post(f"/v1/jobs/{passed}/cancel"), 422, "run_finished")
    assert tenant.client.get(f"/v1/jobs/status/{passed}").json()["status"] == "passed"

    # A running run is asked to stop; it stays running until its agent does.
    response = tenant.client.post(f"/v1/jobs/{running}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "running"
    assert tenant.client.get(f"/v1/jobs/status/{running}").json()["status"] == "running"


def test_requires_an_api_key(server: LiveServer) -> None:
    for path in ("/v1/jobs/list", f"/v1/jobs/status/{new_id('run')}"):
        assert_error(httpx.get(server.url + path), 401, "missing_api_key")
        assert_error(httpx.get(server.url + path, headers={"X-Api-Key": "qg_not_a_real_key_at_all"}), 401)


def test_status_hot_path_keeps_the_contract(tenant: Tenant) -> None:
    """The status route is served by HotRoutesMiddleware, outside FastAPI's routing: its answers must
    stay those of any other route (headers, errors), and paths it does not own must still reach FastAPI."""
    file_id = android_app(tenant)
    run_id = queue_one(tenant, create_test_case(tenant)["id"], file_id)

    ok = tenant.client.get(f"/v1/jobs/status/{run_id}", params={"ignored": "1"})
    assert ok.status_code == 200 and ok.json()["id"] == run_id
    assert ok.headers["content-type"] == "application/json"
    assert ok.headers["x-request-id"].startswith("req_")
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(ok.headers)
    # Each header once, and each request its own ID.
    assert len(ok.headers.get_list("x-request-id")) == 1
    again = tenant.client.get(f"/v1/jobs/status/{run_id}")
    assert again.headers["x-request-id"] != ok.headers["x-request-id"]

    missing = tenant.client.get(f"/v1/jobs/status/{new_id('run')}")
    error = assert_error(missing, 404, "not_found")
    assert error["request_id"] == missing.headers["x-request-id"]
    assert "x-ratelimit-remaining" in missing.headers

    # Not the hot route's: an empty or nested ID, and other methods.
    assert_error(tenant.client.get("/v1/jobs/status/"), 404)
    assert_error(tenant.client.get(f"/v1/jobs/status/{run_id}/extra"), 404)
    assert_error(tenant.client.post(f"/v1/jobs/status/{run_id}"), 405)
    assert tenant.client.head(f"/v1/jobs/status/{run_id}").status_code == 405
    # The FastAPI route is still what the OpenAPI document describes.
    assert "/v1/jobs/status/{test_run_id}" in tenant.client.get("/openapi.json").json()["paths"]
