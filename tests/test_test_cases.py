"""Test cases: CRUD, the list's shape and filters, and queuing runs (one by one and all at once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from qualgent.ids import new_id
from tests.fixtures.contract import (
    QUEUED_EXAMPLE,
    TEST_CASE_EXAMPLE,
    assert_error,
    assert_shape,
    next_link,
    queue,
    set_run,
    shape_problems,
)
from tests.fixtures.factories import (
    IPHONE_14_PRO,
    PIXEL_7,
    Database,
    Tenant,
    create_category,
    create_test_case,
    ipa_bytes,
    upload_app,
)
from tests.fixtures.servers import LiveServer


def android_app(tenant: Tenant, version: str = "1.0.0") -> str:
    response = upload_app(tenant, version=version)
    assert response.status_code == 200, response.text
    file_id: str = response.json()["file"]["id"]
    return file_id


def ios_app(tenant: Tenant, version: str = "1.0.0") -> str:
    response = upload_app(tenant, ipa_bytes(), filename="app.ipa", version=version)
    assert response.status_code == 200, response.text
    file_id: str = response.json()["file"]["id"]
    return file_id


def listed(tenant: Tenant, **params: str) -> list[dict[str, Any]]:
    response = tenant.client.get("/v1/test-cases/list", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, list), body
    return body


def runs_of(tenant: Tenant) -> list[dict[str, Any]]:
    response = tenant.client.get("/v1/jobs/list")
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()["test_runs"]
    return runs


def status_of(tenant: Tenant, run_id: str) -> dict[str, Any]:
    response = tenant.client.get(f"/v1/jobs/status/{run_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_shape_helper_reports_missing_keys_and_wrong_types() -> None:
    # The helper every contract check relies on must itself be able to fail.
    good = {"a": 1, "b": {"c": "x"}, "d": [{"e": True}], "extra": 0}
    example = {"a": 2, "b": {"c": "y"}, "d": [{"e": False}]}
    assert shape_problems(good, example) == []
    assert shape_problems({"a": "1", "b": {"c": "x"}, "d": []}, example) == ["$.a: expected number, got string ('1')"]
    assert shape_problems({"a": 1, "b": {}, "d": [{"e": 1}]}, example) == [
        "$.b.c: missing",
        "$.d[0].e: expected boolean, got number (1)",
    ]
    assert shape_problems({"a": True, "b": None, "d": {}}, example) == [
        "$.a: expected number, got boolean (True)",
        "$.b: expected object, got null (None)",
        "$.d: expected array, got object ({})",
    ]


# ------------------------------------------------------------------------------------------ CRUD


def test_create_get_patch_delete(tenant: Tenant) -> None:
    flow = "appId: com.example.app\n---\n- launchApp\n- tapOn: Sign in\n"
    created = tenant.client.post(
        "/v1/test-cases", json={"name": "  Login Flow Test ", "description": "Signs in", "flow": flow}
    )
    assert created.status_code == 201, created.text
    case = created.json()
    assert case["id"].startswith("tc_")
    assert case["name"] == "Login Flow Test"
    assert case["status"] == "active"
    assert case["description"] == "Signs in"
    assert case["category"] is None
    assert case["latest_completed_run"] is None
    assert case["flow"] == flow

    got = tenant.client.get(f"/v1/test-cases/{case['id']}")
    assert got.status_code == 200, got.text
    assert got.json() == case

    category = create_category(tenant, "Smoke Tests")
    patched = tenant.client.patch(
        f"/v1/test-cases/{case['id']}",
        json={"name": "Login v2", "status": "inactive", "category_id": category["id"]},
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["name"], body["status"], body["description"], body["flow"]) == (
        "Login v2",
        "inactive",
        "Signs in",
        flow,
    )
    assert body["category"] == {"id": category["id"], "name": "Smoke Tests"}
    assert tenant.client.get(f"/v1/test-cases/{case['id']}").json()["name"] == "Login v2"

    cleared = tenant.client.patch(f"/v1/test-cases/{case['id']}", json={"category_id": None})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["category"] is None

    deleted = tenant.client.delete(f"/v1/test-cases/{case['id']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"success": True, "deleted": [case["id"]]}
    assert_error(tenant.client.get(f"/v1/test-cases/{case['id']}"), 404, "not_found")
    assert_error(tenant.client.delete(f"/v1/test-cases/{case['id']}"), 404)
    assert_error(tenant.client.patch(f"/v1/test-cases/{case['id']}", json={"name": "x"}), 404)
    assert case["id"] not in [c["id"] for c in listed(tenant)]


def test_other_organisations_and_malformed_ids_are_404(tenant: Tenant, other_tenant: Tenant) -> None:
    case = create_test_case(tenant)
    for client in (other_tenant.client,):
        assert_error(client.get(f"/v1/test-cases/{case['id']}"), 404, "not_found")
        assert_error(client.patch(f"/v1/test-cases/{case['id']}", json={"name": "stolen"}), 404)
        assert_error(client.delete(f"/v1/test-cases/{case['id']}"), 404)
    for bad in ("tc_nope", "cat_01jd2f3g4h5j6k7m8n9p0q1r2s", new_id("tc")):
        assert_error(tenant.client.get(f"/v1/test-cases/{bad}"), 404, "not_found")
    assert tenant.client.get(f"/v1/test-cases/{case['id']}").json()["name"] == "Login Flow Test"
    assert listed(other_tenant) == []


def test_validation_errors(tenant: Tenant, other_tenant: Tenant) -> None:
    post = tenant.client.post
    assert_error(post("/v1/test-cases", json={}), 400, "bad_request")
    assert_error(post("/v1/test-cases", json={"description": "no name"}), 400)
    assert_error(post("/v1/test-cases", json=["not", "an", "object"]), 400)
    assert_error(post("/v1/test-cases", json={"name": "x", "status": "paused"}), 422, "invalid_request")
    assert_error(post("/v1/test-cases", json={"name": ""}), 422)
    assert_error(post("/v1/test-cases", json={"name": "x", "colour": "red"}), 422, "invalid_request")
    foreign = create_category(other_tenant, "Theirs")
    for category_id in (new_id("cat"), "cat_nope", foreign["id"]):
        error = assert_error(post("/v1/test-cases", json={"name": "x", "category_id": category_id}), 422)
        assert any(d.get("field") == "category_id" for d in error.get("details", [])), error
    assert listed(tenant) == []

    case = create_test_case(tenant)
    url = f"/v1/test-cases/{case['id']}"
    assert_error(tenant.client.patch(url, json={"status": "paused"}), 422)
    assert_error(tenant.client.patch(url, json={"name": None}), 422)
    assert_error(tenant.client.patch(url, json={"colour": "red"}), 422)
    assert_error(tenant.client.patch(url, json={"category_id": foreign["id"]}), 422)
    unchanged = tenant.client.get(url).json()
    assert (unchanged["name"], unchanged["status"], unchanged["category"]) == ("Login Flow Test", "active", None)


def test_nul_characters_are_refused_on_every_backend(tenant: Tenant) -> None:
    # PostgreSQL cannot store NUL in text; a 500 there and a stored value on SQLite would both be wrong.
    for body in ({"name": "a\u0000b"}, {"name": "x", "description": "\u0000"}, {"name": "x", "flow": "- tap\u0000"}):
        error = assert_error(tenant.client.post("/v1/test-cases", json=body), 422, "invalid_request")
        assert "NUL" in str(error["details"])
    case = create_test_case(tenant)
    assert_error(tenant.client.patch(f"/v1/test-cases/{case['id']}", json={"flow": "\u0000"}), 422)
    # In a query string, NUL is refused before any route (400), as everywhere in URLs.
    assert_error(tenant.client.get("/v1/test-cases/list", params={"category": "cat_\u0000"}), 400, "bad_request")
    assert [c["id"] for c in listed(tenant)] == [case["id"]]


def test_lenient_json_keeps_commas_inside_strings(tenant: Tenant) -> None:
    response = tenant.client.post(
        "/v1/test-cases",
        content=b'{"name": "a,}b", "description": "x,] \\",}",\n}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert (response.json()["name"], response.json()["description"]) == ("a,}b", 'x,] ",}')
    assert_error(
        tenant.client.post("/v1/test-cases", content=b'{"name": "x",,}', headers={"Content-Type": "application/json"}),
        400,
        "bad_request",
    )


# ------------------------------------------------------------------------------------------ list


def test_list_is_a_bare_array_in_the_reference_shape(tenant: Tenant, db: Database, server: LiveServer) -> None:
    file_id = android_app(tenant)
    category = create_category(tenant, "Smoke Tests")
    case = create_test_case(tenant, "Login Flow Test", category_id=category["id"])
    plain = create_test_case(tenant, "Payment Flow Test")

    items = {c["id"]: c for c in listed(tenant)}
    assert set(items) == {case["id"], plain["id"]}
    for item in items.values():
        assert {"id", "name", "status", "category", "latest_completed_run"} <= set(item)
        assert item["latest_completed_run"] is None
    assert items[plain["id"]]["category"] is None
    assert items[case["id"]]["category"] == {"id": category["id"], "name": "Smoke Tests"}

    [job] = queue(tenant, [{"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7}])
    set_run(db, job["id"], status="passed", progress=100, finished_at=datetime.now(UTC))
    items = {c["id"]: c for c in listed(tenant)}
    assert_shape(items[case["id"]], TEST_CASE_EXAMPLE)
    latest = items[case["id"]]["latest_completed_run"]
    assert latest["id"] == job["id"]
    assert latest["link"] == f"{server.url}/test-runs/{job['id']}"
    assert items[plain["id"]]["latest_completed_run"] is None


def test_latest_completed_run_is_the_newest_passed_or_failed(tenant: Tenant, db: Database, server: LiveServer) -> None:
    file_id = android_app(tenant)
    case = create_test_case(tenant)
    job = {"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7}
    first, second, cancelled, queued = queue(tenant, [job, job | {"priority": "high"}, job, job])

    assert listed(tenant)[0]["latest_completed_run"] is None
    t0 = datetime.now(UTC)
    set_run(db, first["id"], status="passed", progress=100, started_at=t0, finished_at=t0 + timedelta(minutes=1))
    latest = listed(tenant)[0]["latest_completed_run"]
    assert (latest["id"], latest["status"]) == (first["id"], "passed")

    set_run(db, second["id"], status="failed", progress=100, started_at=t0, finished_at=t0 + timedelta(minutes=2))
    set_run(db, cancelled["id"], status="cancelled", progress=100, finished_at=t0 + timedelta(minutes=3))
    [item] = listed(tenant)
    latest = item["latest_completed_run"]
    assert latest == {
        "id": second["id"],
        "link": f"{server.url}/test-runs/{second['id']}",
        "app": {"id": file_id, "name": "MyApp v1.0.0"},
        "status": "failed",
        "priority": "high",
        "progress": 100,
        "executed_by": {"id": tenant.user_id, "name": latest["executed_by"]["name"], "email": tenant.user_email},
        "device": "Pixel 7",
    }
    assert latest["executed_by"]["name"]
    assert tenant.client.get(f"/v1/test-cases/{case['id']}").json()["latest_completed_run"] == latest
    assert queued["id"] not in {first["id"], second["id"]}


def test_category_filter(tenant: Tenant, other_tenant: Tenant) -> None:
    smoke = create_category(tenant, "Smoke")
    regression = create_category(tenant, "Regression")
    a = create_test_case(tenant, "A", category_id=smoke["id"])
    b = create_test_case(tenant, "B", category_id=smoke["id"])
    c = create_test_case(tenant, "C", category_id=regression["id"])
    d = create_test_case(tenant, "D")

    assert sorted(x["id"] for x in listed(tenant, category=smoke["id"])) == sorted([a["id"], b["id"]])
    assert [x["id"] for x in listed(tenant, category=regression["id"])] == [c["id"]]
    assert sorted(x["id"] for x in listed(tenant)) == sorted([a["id"], b["id"], c["id"], d["id"]])
    theirs = create_category(other_tenant, "Smoke")
    create_test_case(other_tenant, "Theirs", category_id=theirs["id"])
    assert listed(tenant, category=theirs["id"]) == []
    assert listed(other_tenant, category=smoke["id"]) == []
    assert listed(tenant, category=new_id("cat")) == []
    assert listed(tenant, category="cat_nope") == []


def test_list_pages_with_link_header(tenant: Tenant) -> None:
    ids = sorted(create_test_case(tenant, f"Case {i}")["id"] for i in range(5))
    seen: list[str] = []
    url: str | None = "/v1/test-cases/list?limit=2"
    pages = 0
    while url:
        response = tenant.client.get(url)
        assert response.status_code == 200, response.text
        seen += [c["id"] for c in response.json()]
        url = next_link(response)
        pages += 1
    assert pages == 3
    assert sorted(seen) == ids and len(seen) == len(set(seen))


def test_inactive_is_listed_but_not_run_and_deleted_disappears(tenant: Tenant) -> None:
    file_id = android_app(tenant)
    active = create_test_case(tenant, "Active")
    inactive = create_test_case(tenant, "Inactive", status="inactive")
    gone = create_test_case(tenant, "Gone")
    assert tenant.client.delete(f"/v1/test-cases/{gone['id']}").status_code == 200

    assert {c["id"]: c["status"] for c in listed(tenant)} == {active["id"]: "active", inactive["id"]: "inactive"}

    for case in (inactive, gone):
        error = assert_error(
            tenant.client.post(
                "/v1/test-cases/run",
                json={"jobs": [{"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7}]},
            ),
            422,
        )
        assert error["details"][0]["index"] == 0
        assert error["details"][0]["field"] == "test_case_id"

    response = tenant.client.post("/v1/test-cases/run-all", json={"app_file_id": file_id, "device": PIXEL_7})
    assert response.status_code == 200, response.text
    [job] = response.json()["jobs"]
    assert status_of(tenant, job["id"])["test_case"]["id"] == active["id"]
    assert [r["id"] for r in runs_of(tenant)] == [job["id"]]


# ------------------------------------------------------------------------------------------ run


def test_run_with_device_and_app(tenant: Tenant, server: LiveServer) -> None:
    file_id = android_app(tenant)
    case = create_test_case(tenant)
    response = tenant.client.post(
        "/v1/test-cases/run", json={"jobs": [{"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7}]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert_shape(body, QUEUED_EXAMPLE)
    assert body["success"] is True
    [job] = body["jobs"]
    assert job["id"].startswith("run_")
    assert job["status"] == "queued"
    assert job["link"] == server.url + "/test-runs/" + job["id"]

    run = status_of(tenant, job["id"])
    assert run["test_case"] == {"id": case["id"], "name": case["name"]}
    assert run["app"] == {"id": file_id, "name": "MyApp v1.0.0"}
    assert (run["status"], run["priority"], run["progress"], run["device"]) == ("queued", "medium", 0, "Pixel 7")
    assert run["device_details"]["orientation"] == "portrait"
    assert run["executed_by"]["id"] == tenant.user_id


def test_run_with_platform_only_picks_device_and_newest_app(tenant: Tenant) -> None:
    older = android_app(tenant, version="1.0.0")
    newer = android_app(tenant, version="1.1.0")
    iphone = ios_app(tenant, version="2.0.0")
    case = create_test_case(tenant)

    jobs = queue(
        tenant,
        [
            {"test_case_id": case["id"], "platform": "android"},
            {"test_case_id": case["id"], "platform": "ANDROID"},
            {"test_case_id": case["id"], "platform": "iOS"},
            {"test_case_id": case["id"], "platform": "android", "app_file_id": older},
        ],
    )
    runs = [status_of(tenant, j["id"]) for j in jobs]
    assert [r["app"]["id"] for r in runs] == [newer, newer, iphone, older]
    assert runs[0]["app"]["name"] == "MyApp v1.1.0"
    # A platform alone is matched when a device claims the run; until then the run shows what it asked for.
    assert [r["device"] for r in runs[:3]] == ["any Android device", "any Android device", "any iOS device"]
    assert runs[0]["device_selector"] == {"platform": "android", "any": True}
    assert [r["device_details"]["platform"] for r in runs] == ["Android", "Android", "iOS", "Android"]

    # A deleted app is never chosen.
    assert tenant.client.post("/v1/apps/delete", json={"files": [newer]}).status_code == 200
    [job] = queue(tenant, [{"test_case_id": case["id"], "platform": "Android"}])
    assert status_of(tenant, job["id"])["app"]["id"] == older


def test_platform_and_device_platform_are_case_insensitive(tenant: Tenant) -> None:
    file_id = android_app(tenant)
    case = create_test_case(tenant)
    jobs = queue(
        tenant,
        [
            {"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7 | {"platform": "ANDROID"}},
            {"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7 | {"platform": "android"}},
            {"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7, "platform": "aNdRoId"},
        ],
    )
    assert len(jobs) == 3
    assert {status_of(tenant, j["id"])["device_details"]["platform"] for j in jobs} == {"Android"}


def test_priority_default_and_values(tenant: Tenant) -> None:
    file_id = android_app(tenant)
    case = create_test_case(tenant)
    job = {"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7}
    jobs = queue(tenant, [job, job | {"priority": "high"}, job | {"priority": "low"}, job | {"priority": "medium"}])
    assert [status_of(tenant, j["id"])["priority"] for j in jobs] == ["medium", "high", "low", "medium"]
    error = assert_error(tenant.client.post("/v1/test-cases/run", json={"jobs": [job | {"priority": "urgent"}]}), 422)
    assert "priority" in str(error["details"])


def test_batch_is_atomic_and_names_bad_entries(tenant: Tenant, other_tenant: Tenant) -> None:
    file_id = android_app(tenant)
    ipa = ios_app(tenant)
    case = create_test_case(tenant)
    theirs = create_test_case(other_tenant)
    good = {"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7}
    bad_entries = [
        {"test_case_id": new_id("tc"), "app_file_id": file_id, "device": PIXEL_7},
        {"test_case_id": theirs["id"], "app_file_id": file_id, "device": PIXEL_7},
        {"test_case_id": case["id"], "app_file_id": ipa, "device": PIXEL_7},
        {"test_case_id": case["id"], "app_file_id": new_id("file"), "device": PIXEL_7},
        {"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7 | {"name": "Nokia 3310"}},
        {"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7 | {"os_version": "2"}},
        {"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7 | {"platform": "windows"}},
        {"test_case_id": case["id"], "platform": "symbian"},
        {"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7, "platform": "ios"},
    ]
    for bad in bad_entries:
        error = assert_error(tenant.client.post("/v1/test-cases/run", json={"jobs": [good, bad, good]}), 422)
        indexes = {d.get("index") for d in error["details"]}
        assert indexes == {1}, (bad, error)
    error = assert_error(
        tenant.client.post("/v1/test-cases/run", json={"jobs": [bad_entries[0], good, bad_entries[2]]}), 422
    )
    assert sorted(d["index"] for d in error["details"]) == [0, 2]
    assert runs_of(tenant) == []


def test_platform_mismatch_and_unknown_device_are_422(tenant: Tenant) -> None:
    apk = android_app(tenant)
    ipa = ios_app(tenant)
    case = create_test_case(tenant)
    post = tenant.client.post
    error = assert_error(
        post(
            "/v1/test-cases/run", json={"jobs": [{"test_case_id": case["id"], "app_file_id": ipa, "device": PIXEL_7}]}
        ),
        422,
    )
    assert error["details"][0]["field"] == "app_file_id"
    assert_error(
        post(
            "/v1/test-cases/run",
            json={"jobs": [{"test_case_id": case["id"], "app_file_id": apk, "device": IPHONE_14_PRO}]},
        ),
        422,
    )
    error = assert_error(
        post(
            "/v1/test-cases/run",
            json={"jobs": [{"test_case_id": case["id"], "app_file_id": apk, "device": PIXEL_7 | {"name": "Pixel 99"}}]},
        ),
        422,
    )
    assert error["details"][0]["field"] == "device"
    # The right pairing works.
    assert len(queue(tenant, [{"test_case_id": case["id"], "app_file_id": ipa, "device": IPHONE_14_PRO}])) == 1


def test_missing_parameters_are_400(tenant: Tenant) -> None:
    file_id = android_app(tenant)
    case = create_test_case(tenant)
    post = tenant.client.post
    assert_error(post("/v1/test-cases/run", json={}), 400, "bad_request")
    assert_error(post("/v1/test-cases/run", json={"jobs": [{"app_file_id": file_id, "device": PIXEL_7}]}), 400)
    error = assert_error(post("/v1/test-cases/run", json={"jobs": [{"test_case_id": case["id"]}]}), 400)
    assert error["details"][0]["index"] == 0
    assert_error(
        post(
            "/v1/test-cases/run",
            json={"jobs": [{"test_case_id": case["id"], "app_file_id": file_id, "device": {"name": "Pixel 7"}}]},
        ),
        400,
    )
    assert runs_of(tenant) == []


def test_reference_curl_body_with_trailing_comma_is_accepted(tenant: Tenant, server: LiveServer) -> None:
    file_id = android_app(tenant)
    case = create_test_case(tenant)
    body = (
        "{\n"
        '"jobs": [\n'
        "{\n"
        '"device": {\n'
        '"name": "Pixel 7",\n'
        '"platform": "Android",\n'
        '"os_version": "14",\n'
        '"orientation": "portrait"\n'
        "},\n"
        f'"test_case_id": "{case["id"]}",\n'
        f'"app_file_id": "{file_id}",\n'
        "}\n"
        "]\n"
        "}"
    )
    response = tenant.client.post("/v1/test-cases/run", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    [job] = response.json()["jobs"]
    assert job["link"] == f"{server.url}/test-runs/{job['id']}"

    for malformed in ('{"jobs": [', '{"jobs": [{"test_case_id": "x" "app_file_id": "y"}]}', "jobs=1", '{"jobs": [,]}'):
        error = assert_error(
            tenant.client.post("/v1/test-cases/run", content=malformed, headers={"Content-Type": "application/json"}),
            400,
            "bad_request",
        )
        assert error["message"]
    assert [r["id"] for r in runs_of(tenant)] == [job["id"]]


# -------------------------------------------------------------------------------------- run-all


def test_run_all_queues_every_active_test_case(tenant: Tenant, server: LiveServer) -> None:
    file_id = android_app(tenant)
    category = create_category(tenant)
    cases = [create_test_case(tenant, f"Case {i}", category_id=category["id"] if i < 2 else None) for i in range(3)]
    create_test_case(tenant, "Off", status="inactive")

    # The reference's own body, with a category.
    response = tenant.client.post(
        "/v1/test-cases/run-all",
        json={"device": PIXEL_7, "app_file_id": file_id, "category_id": category["id"]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert_shape(body, QUEUED_EXAMPLE)
    assert len(body["jobs"]) == 2
    for job in body["jobs"]:
        assert job["status"] == "queued"
        assert job["link"] == f"{server.url}/test-runs/{job['id']}"
    assert {status_of(tenant, j["id"])["test_case"]["id"] for j in body["jobs"]} == {cases[0]["id"], cases[1]["id"]}

    response = tenant.client.post(
        "/v1/test-cases/run-all", json={"app_file_id": file_id, "device": PIXEL_7, "priority": "high"}
    )
    assert response.status_code == 200, response.text
    runs = [status_of(tenant, j["id"]) for j in response.json()["jobs"]]
    assert sorted(r["test_case"]["id"] for r in runs) == sorted(c["id"] for c in cases)
    assert {(r["priority"], r["app"]["id"], r["device"]) for r in runs} == {("high", file_id, "Pixel 7")}
    assert len(runs_of(tenant)) == 5


def test_run_all_with_platform_only(tenant: Tenant) -> None:
    ios_app(tenant)
    newest = ios_app(tenant, version="3.0.0")
    create_test_case(tenant)
    response = tenant.client.post("/v1/test-cases/run-all", json={"platform": "IOS"})
    assert response.status_code == 200, response.text
    [job] = response.json()["jobs"]
    run = status_of(tenant, job["id"])
    assert (run["app"]["id"], run["device_details"]["platform"]) == (newest, "iOS")


def test_run_all_errors(tenant: Tenant, other_tenant: Tenant) -> None:
    file_id = android_app(tenant)
    post = tenant.client.post
    create_test_case(tenant, "Off", status="inactive")
    error = assert_error(post("/v1/test-cases/run-all", json={"app_file_id": file_id, "device": PIXEL_7}), 422)
    assert error["code"] == "no_test_cases"

    create_test_case(tenant, "On")
    empty = create_category(tenant, "Empty")
    assert_error(
        post("/v1/test-cases/run-all", json={"app_file_id": file_id, "device": PIXEL_7, "category_id": empty["id"]}),
        422,
        "no_test_cases",
    )
    theirs = create_category(other_tenant, "Theirs")
    for category_id in (new_id("cat"), theirs["id"], "nonsense"):
        error = assert_error(
            post(
                "/v1/test-cases/run-all", json={"app_file_id": file_id, "device": PIXEL_7, "category_id": category_id}
            ),
            422,
        )
        assert any(d["field"] == "category_id" for d in error["details"]), error
    assert_error(post("/v1/test-cases/run-all", json={}), 400, "bad_request")
    assert_error(post("/v1/test-cases/run-all", json={"device": PIXEL_7}), 400, "bad_request")
    assert_error(post("/v1/test-cases/run-all", json={"app_file_id": file_id}), 400)
    assert_error(post("/v1/test-cases/run-all", json={"app_file_id": file_id, "device": IPHONE_14_PRO}), 422)
    assert_error(post("/v1/test-cases/run-all", json={"app_file_id": new_id("file"), "device": PIXEL_7}), 422)
    assert_error(post("/v1/test-cases/run-all", json={"app_file_id": file_id, "device": PIXEL_7, "priority": "x"}), 422)
    assert runs_of(tenant) == []


@pytest.mark.parametrize(
    "path", ["/v1/test-cases/list", "/v1/test-cases/run", "/v1/test-cases/run-all", "/v1/test-cases"]
)
def test_requires_an_api_key(server: LiveServer, path: str) -> None:
    import httpx

    method = "GET" if path.endswith("list") else "POST"
    assert_error(httpx.request(method, server.url + path, json={}), 401)
    assert_error(httpx.request(method, server.url + path, json={}, headers={"X-Api-Key": "qg_wrong"}), 401)
