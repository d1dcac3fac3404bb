"""Test cases carry files (subflows, scripts, media): stored with the flow as one unit, checked with it,
listed on the test case and downloadable; paths, sizes and counts are bounded."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
from typing import Any

import httpx
import pytest

from qualgent.flows.bundle import check_bundle
from qualgent.flows.model import FlowError
from qualgent.flows.paths import MAX_BUNDLE_BYTES, MAX_FILE_BYTES, MAX_FILES
from qualgent.ids import new_id
from qualgent.test_cases.service import invalid_flow
from tests.fixtures.contract import assert_error
from tests.fixtures.factories import Tenant, create_test_case
from tests.fixtures.servers import LiveServer

FLOW = "appId: com.example.app\ntags: [smoke, login]\n---\n- launchApp\n- tapOn: Sign in\n"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(64)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(tenant: Tenant, case_id: str, path: str) -> httpx.Response:
    return tenant.client.get(f"/v1/test-cases/{case_id}/files/{path}")


def listed_files(tenant: Tenant, case_id: str) -> list[dict[str, Any]]:
    response = tenant.client.get(f"/v1/test-cases/{case_id}")
    assert response.status_code == 200, response.text
    files: list[dict[str, Any]] = response.json()["files"]
    return files


# ------------------------------------------------------------------------------- stored and served


def test_files_are_stored_listed_and_downloadable(tenant: Tenant) -> None:
    subflow = "- tapOn: Sign in\n"
    case = create_test_case(
        tenant,
        flow=FLOW,
        files=[
            {"path": "subflows/login.yaml", "content": subflow},
            {"path": "media/logo.png", "content_base64": b64(PNG)},
            {"path": "./data/../data/seed.qqq", "content": "é"},
        ],
    )
    expected = [
        {"path": "data/seed.qqq", "size": 2, "sha256": sha("é".encode())},
        {"path": "media/logo.png", "size": len(PNG), "sha256": sha(PNG)},
        {"path": "subflows/login.yaml", "size": len(subflow), "sha256": sha(subflow.encode())},
    ]
    # The create answer and every later read list them, sorted by (normalised) path.
    assert case["files"] == expected
    assert listed_files(tenant, case["id"]) == expected

    yaml = download(tenant, case["id"], "subflows/login.yaml")
    assert yaml.status_code == 200 and yaml.content == subflow.encode()
    assert yaml.headers["content-type"] == "application/yaml"
    assert yaml.headers["x-content-type-options"] == "nosniff"
    png = download(tenant, case["id"], "media/logo.png")
    assert png.status_code == 200 and png.content == PNG
    assert png.headers["content-type"] == "image/png"
    other = download(tenant, case["id"], "data/seed.qqq")
    assert other.content == "é".encode() and other.headers["content-type"] == "application/octet-stream"
    # The path is normalised on the way in too.
    assert download(tenant, case["id"], "subflows/./x/../login.yaml").content == subflow.encode()


def test_unknown_and_hostile_download_paths_are_404(tenant: Tenant) -> None:
    case = create_test_case(tenant, flow=FLOW, files=[{"path": "subflows/login.yaml", "content": "- back\n"}])
    plain = create_test_case(tenant, name="no files", flow=FLOW)
    for path in (
        "subflows/missing.yaml",
        "subflows",
        "%2E%2E/%2E%2E/etc/passwd",
        "/etc/passwd",
        "C:/Windows/win.ini",
        "a%5Cb",
    ):
        assert_error(download(tenant, case["id"], path), 404, "not_found")
    # A NUL anywhere in a URL is refused as malformed.
    assert_error(download(tenant, case["id"], "subflows%2Flogin.yaml%00"), 400, "bad_request")
    assert_error(download(tenant, plain["id"], "subflows/login.yaml"), 404, "not_found")
    assert_error(download(tenant, new_id("tc"), "subflows/login.yaml"), 404, "not_found")


def test_a_path_above_the_flow_s_folder_is_kept_and_served(tenant: Tenant) -> None:
    case = create_test_case(tenant, flow=FLOW, files=[{"path": "../shared/common.yaml", "content": "- back\n"}])
    assert [f["path"] for f in case["files"]] == ["../shared/common.yaml"]
    # `..` must travel percent-encoded (clients fold a literal `..` away before sending).
    response = download(tenant, case["id"], "%2E%2E/shared/common.yaml")
    assert response.status_code == 200 and response.content == b"- back\n"


def test_tags_come_from_the_flow(tenant: Tenant) -> None:
    case = create_test_case(tenant, flow=FLOW)
    assert case["tags"] == ["smoke", "login"]
    listed = tenant.client.get("/v1/test-cases/list").json()
    assert [c["tags"] for c in listed] == [["smoke", "login"]]
    untagged = tenant.client.patch(f"/v1/test-cases/{case['id']}", json={"flow": "- launchApp\n"})
    assert untagged.status_code == 200 and untagged.json()["tags"] == []
    assert create_test_case(tenant, name="empty")["tags"] == []


# ----------------------------------------------------------------------------------------- PATCH


def test_patch_replaces_the_whole_set_and_keeps_it_when_only_the_flow_changes(tenant: Tenant) -> None:
    case = create_test_case(
        tenant,
        flow=FLOW,
        files=[{"path": "a.yaml", "content": "- back\n"}, {"path": "b.js", "content": "output.x = 1"}],
    )
    url = f"/v1/test-cases/{case['id']}"
    # A new flow alone keeps the stored files.
    new_flow = "appId: com.example.app\ntags: [nightly]\n---\n- launchApp\n"
    response = tenant.client.patch(url, json={"flow": new_flow})
    assert response.status_code == 200, response.text
    assert [f["path"] for f in response.json()["files"]] == ["a.yaml", "b.js"]
    assert response.json()["tags"] == ["nightly"]
    # Files alone replace every file (b.js goes, a.yaml changes, c.png comes) and keep the flow.
    response = tenant.client.patch(
        url,
        json={"files": [{"path": "a.yaml", "content": "- launchApp\n"}, {"path": "c.png", "content_base64": b64(PNG)}]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["flow"] == new_flow and body["tags"] == ["nightly"]
    assert [(f["path"], f["sha256"]) for f in body["files"]] == [("a.yaml", sha(b"- launchApp\n")), ("c.png", sha(PNG))]
    assert download(tenant, case["id"], "a.yaml").content == b"- launchApp\n"
    assert_error(download(tenant, case["id"], "b.js"), 404)
    # Other fields leave the files alone; [] removes them all; null is refused.
    assert [f["path"] for f in tenant.client.patch(url, json={"name": "renamed"}).json()["files"]] == [
        "a.yaml",
        "c.png",
    ]
    assert_error(tenant.client.patch(url, json={"files": None}), 422)
    assert len(listed_files(tenant, case["id"])) == 2
    assert tenant.client.patch(url, json={"files": []}).json()["files"] == []
    assert_error(download(tenant, case["id"], "a.yaml"), 404)


def test_a_refused_patch_changes_nothing(tenant: Tenant) -> None:
    case = create_test_case(tenant, flow=FLOW, files=[{"path": "a.yaml", "content": "- back\n"}])
    url = f"/v1/test-cases/{case['id']}"
    bad = [{"path": "b.yaml", "content": "x"}, {"path": "/abs.yaml", "content": "x"}]
    assert_error(tenant.client.patch(url, json={"name": "new name", "files": bad}), 422, "invalid_files")
    assert_error(tenant.client.patch(url, json={"flow": "- tapOnn: x\n", "files": []}), 422, "invalid_flow")
    after = tenant.client.get(url).json()
    assert after["name"] == case["name"] and after["flow"] == FLOW
    assert [f["path"] for f in after["files"]] == ["a.yaml"]


# --------------------------------------------------------------------------------- refused input


def test_bad_paths_are_refused_naming_each_file(tenant: Tenant) -> None:
    hostile = [
        ("../" * 9 + "etc/passwd", "up at most"),
        ("/etc/passwd", "relative"),
        ("C:/Windows/win.ini", "relative"),
        ("sub\\flow.yaml", "`/`"),
        ("sub/\x01.yaml", "control characters"),
        ("", "non-empty"),
        ("sub/..", "folder"),
        ("x" * 301 + ".yaml", "at most 300"),
        ("a/b?.yaml", "may not contain"),
    ]
    files = [{"path": "ok.yaml", "content": "- back\n"}] + [{"path": path, "content": "x"} for path, _ in hostile]
    error = assert_error(
        tenant.client.post("/v1/test-cases", json={"name": "hostile", "flow": FLOW, "files": files}), 422
    )
    assert error["code"] == "invalid_files"
    details = error["details"]
    assert [d["index"] for d in details] == list(range(1, len(hostile) + 1))
    for detail, (path, reason) in zip(details, hostile, strict=True):
        assert detail["field"] == "files" and detail["path"] == path
        assert reason in detail["issue"], detail
    assert tenant.client.get("/v1/test-cases/list").json() == []


def test_a_nul_in_a_file_path_is_refused_and_nothing_is_stored(tenant: Tenant) -> None:
    files = [{"path": "sub/\x00.yaml", "content": "x"}]
    error = assert_error(tenant.client.post("/v1/test-cases", json={"name": "nul", "flow": FLOW, "files": files}), 422)
    assert "NUL" in error["message"] or any("NUL" in str(d) for d in error.get("details") or []), error
    assert tenant.client.get("/v1/test-cases/list").json() == []


def test_duplicate_paths_and_bad_contents_are_refused(tenant: Tenant) -> None:
    def post(files: list[dict[str, Any]]) -> dict[str, Any]:
        return assert_error(tenant.client.post("/v1/test-cases", json={"name": "x", "flow": FLOW, "files": files}), 422)

    # Two spellings of one path.
    error = post([{"path": "a/b.yaml", "content": "1"}, {"path": "a/./c/../b.yaml", "content": "2"}])
    assert error["details"] == [
        {"field": "files", "index": 1, "path": "a/./c/../b.yaml", "issue": error["details"][0]["issue"]}
    ]
    assert "file 0" in error["details"][0]["issue"]
    # Exactly one of content and content_base64.
    post([{"path": "a", "content": "1", "content_base64": "MQ=="}])
    post([{"path": "a"}])
    # Not base64; a number where text belongs; an unknown field.
    assert "base64" in post([{"path": "a", "content_base64": "not base64!"}])["details"][0]["issue"]
    post([{"path": "a", "content": 12}])
    post([{"path": "a", "content": "1", "mode": "0755"}])
    # Wrapped base64 (as `base64` prints it) is fine.
    wrapped = "\n".join(b64(PNG)[i : i + 76] for i in range(0, len(b64(PNG)), 76))
    case = create_test_case(tenant, flow=FLOW, files=[{"path": "logo.png", "content_base64": wrapped}])
    assert case["files"][0]["sha256"] == sha(PNG)


def test_too_many_files_is_422(tenant: Tenant) -> None:
    files = [{"path": f"f{i}.txt", "content": "x"} for i in range(MAX_FILES + 1)]
    error = assert_error(tenant.client.post("/v1/test-cases", json={"name": "many", "files": files}), 422)
    assert error["code"] == "too_many_files" and str(MAX_FILES) in error["message"]
    case = create_test_case(tenant, flow=FLOW, files=files[:MAX_FILES])
    assert len(case["files"]) == MAX_FILES
    patched = tenant.client.patch(f"/v1/test-cases/{case['id']}", json={"files": files})
    assert_error(patched, 422, "too_many_files")
    assert len(listed_files(tenant, case["id"])) == MAX_FILES


def test_sizes_over_the_limits_are_413(tenant: Tenant) -> None:
    # One file over its limit (sent as text, so the body stays under the body limit).
    error = assert_error(
        tenant.client.post(
            "/v1/test-cases",
            json={
                "name": "big",
                "files": [{"path": "ok", "content": "x"}, {"path": "big", "content": "x" * (MAX_FILE_BYTES + 1)}],
            },
        ),
        413,
        "payload_too_large",
    )
    assert error["details"][0]["index"] == 1 and error["details"][0]["path"] == "big"
    # Each file within its limit, all of them over the bundle's.
    each = MAX_BUNDLE_BYTES // 3 + 1
    files = [{"path": f"part{i}.bin", "content": "y" * each} for i in range(3)]
    error = assert_error(tenant.client.post("/v1/test-cases", json={"name": "big", "files": files}), 413)
    assert str(MAX_BUNDLE_BYTES) in error["message"]
    assert tenant.client.get("/v1/test-cases/list").json() == []


def test_a_file_at_its_limit_fits_in_the_larger_body(tenant: Tenant, server: LiveServer) -> None:
    """POST and PATCH of a test case take bodies past the usual JSON limit; other routes do not."""
    data = os.urandom(MAX_FILE_BYTES)
    body = {"name": "large", "flow": FLOW, "files": [{"path": "video.mp4", "content_base64": b64(data)}]}
    assert len(json.dumps(body)) > server.settings.max_json_bytes * 10
    response = tenant.client.post("/v1/test-cases", json=body)
    assert response.status_code == 201, response.text[:500]
    case = response.json()
    assert case["files"] == [{"path": "video.mp4", "size": MAX_FILE_BYTES, "sha256": sha(data)}]
    got = download(tenant, case["id"], "video.mp4")
    assert got.content == data and got.headers["content-type"] == "video/mp4"
    patched = tenant.client.patch(
        f"/v1/test-cases/{case['id']}", json={"files": [*body["files"], {"path": "x", "content": "1"}]}
    )
    assert patched.status_code == 200, patched.text[:500]
    # The usual limit still holds elsewhere.
    big = {
        "jobs": [{"test_case_id": case["id"], "platform": "android", "x": "z" * (2 * server.settings.max_json_bytes)}]
    }
    assert_error(tenant.client.post("/v1/test-cases/run", json=big), 413, "payload_too_large")
    assert_error(tenant.client.post("/v1/categories", json={"name": "z" * (2 * server.settings.max_json_bytes)}), 413)


def test_a_body_over_the_test_case_limit_is_413(tenant: Tenant, server: LiveServer) -> None:
    limit = server.settings.max_test_case_bytes
    body = b'{"name": "huge", "files": [{"path": "a", "content": "' + b"z" * limit + b'"}]}'
    for method, url in (("POST", "/v1/test-cases"), ("PATCH", f"/v1/test-cases/{create_test_case(tenant)['id']}")):
        response = tenant.client.request(method, url, content=body, headers={"Content-Type": "application/json"})
        error = assert_error(response, 413, "payload_too_large")
        assert str(limit) in error["message"]

    # Without a Content-Length (chunked), the count stops it all the same.
    def chunks() -> Any:
        yield b'{"name": "huge", "files": [{"path": "a", "content": "'
        for _ in range(limit // (1024 * 1024) + 1):
            yield b"z" * (1024 * 1024)
        yield b'"}]}'

    response = tenant.client.post("/v1/test-cases", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(response, 413, "payload_too_large")
    assert [c["name"] for c in tenant.client.get("/v1/test-cases/list").json()] == ["Login Flow Test"]


# ------------------------------------------------------------------------------------- the check


def test_flow_errors_name_the_file_as_the_bundle_check_does(tenant: Tenant) -> None:
    """The API reports exactly what the bundle check finds, with the files it was given."""
    flow = "appId: com.example.app\n---\n- launchApp\n- runFlow: subflows/login.yaml\n"
    files = {"subflows/login.yaml": b"- tapOnn: Sign in\n"}
    try:
        check_bundle(flow, files)
    except FlowError as exc:
        expected = exc
    else:
        pytest.fail("the bundle check accepts a flow with an unknown command")
    body = {
        "name": "broken",
        "flow": flow,
        "files": [{"path": path, "content": data.decode()} for path, data in files.items()],
    }
    error = assert_error(tenant.client.post("/v1/test-cases", json=body), 422, "invalid_flow")
    assert error["message"] == f"The flow is invalid: {expected.where()}{expected.message}"
    assert error["details"] == [
        {
            "field": "flow" if expected.path is None else "files",
            "path": expected.path,
            "line": expected.line,
            "issue": expected.message,
        }
    ]
    # The main flow's own errors keep their shape.
    error = assert_error(
        tenant.client.post("/v1/test-cases", json={"name": "x", "flow": "- launchApp\n- swipe: sideways\n"}), 422
    )
    assert error["details"][0]["field"] == "flow" and error["details"][0]["path"] is None
    assert error["details"][0]["line"] == 2 and error["message"].startswith("The flow is invalid: line 2: ")


def test_a_file_s_flow_error_becomes_a_422_naming_the_file() -> None:
    error = invalid_flow(FlowError(3, "unknown command tapOnn", "subflows/login.yaml"))
    assert (error.status_code, error.code) == (422, "invalid_flow")
    assert error.message == "The flow is invalid: subflows/login.yaml line 3: unknown command tapOnn"
    assert error.details == [
        {"field": "files", "path": "subflows/login.yaml", "line": 3, "issue": "unknown command tapOnn"}
    ]
    main = invalid_flow(FlowError(2, "unknown command", None))
    assert main.message == "The flow is invalid: line 2: unknown command"
    assert main.details == [{"field": "flow", "path": None, "line": 2, "issue": "unknown command"}]


def test_another_organisation_s_files_are_not_found(tenant: Tenant, other_tenant: Tenant) -> None:
    theirs = create_test_case(other_tenant, flow=FLOW, files=[{"path": "secret.yaml", "content": "- back\n"}])
    error = assert_error(download(tenant, theirs["id"], "secret.yaml"), 404, "not_found")
    ghost_id = new_id("tc")
    ghost = assert_error(download(tenant, ghost_id, "secret.yaml"), 404, "not_found")
    assert error["message"].replace(theirs["id"], "ID") == ghost["message"].replace(ghost_id, "ID")
    assert download(other_tenant, theirs["id"], "secret.yaml").content == b"- back\n"


def test_the_flow_and_its_files_are_checked_together(tenant: Tenant) -> None:
    flow = "appId: com.example.app\n---\n- launchApp\n- runFlow: subflows/login.yaml\n"
    login = {"path": "subflows/login.yaml", "content": "appId: com.example.app\n---\n- tapOn: Sign in\n"}
    # The flow needs a file it was not given.
    error = assert_error(tenant.client.post("/v1/test-cases", json={"name": "x", "flow": flow}), 422, "invalid_flow")
    assert error["details"][0]["field"] == "flow" and error["details"][0]["line"] == 4
    assert "subflows/login.yaml" in error["message"]
    case = create_test_case(tenant, flow=flow, files=[login])
    url = f"/v1/test-cases/{case['id']}"
    # New files are checked against the stored flow: the file it needs cannot go.
    assert_error(tenant.client.patch(url, json={"files": []}), 422, "invalid_flow")
    # A broken file is named.
    broken = {"path": "subflows/login.yaml", "content": "appId: com.example.app\n---\n- tapOnn: Sign in\n"}
    error = assert_error(tenant.client.patch(url, json={"files": [broken]}), 422, "invalid_flow")
    assert error["details"][0]["field"] == "files" and error["details"][0]["path"] == "subflows/login.yaml"
    assert error["message"].startswith("The flow is invalid: subflows/login.yaml line 3: ")
    # A new flow is checked against the stored files.
    other = flow.replace("login.yaml", "signup.yaml")
    assert_error(tenant.client.patch(url, json={"flow": other}), 422, "invalid_flow")
    signup = {**login, "path": "subflows/signup.yaml"}
    response = tenant.client.patch(url, json={"flow": other, "files": [signup]})
    assert response.status_code == 200, response.text
    assert [f["path"] for f in response.json()["files"]] == ["subflows/signup.yaml"]


def test_concurrent_changes_of_the_files_do_not_collide(tenant: Tenant) -> None:
    case = create_test_case(tenant, flow=FLOW)
    url = f"/v1/test-cases/{case['id']}"

    def patch(n: int) -> int:
        files = [{"path": f"shared/{i}.txt", "content": f"{n}-{i}"} for i in range(20)]
        with httpx.Client(base_url=str(tenant.client.base_url), headers=dict(tenant.client.headers), timeout=60) as c:
            return c.patch(url, json={"files": files}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(patch, range(8)))
    assert statuses == [200] * 8
    files = listed_files(tenant, case["id"])
    assert [f["path"] for f in files] == sorted(f"shared/{i}.txt" for i in range(20))
    # One PATCH's set, whole: every file from the same request.
    writers = {download(tenant, case["id"], f["path"]).text.split("-")[0] for f in files}
    assert len(writers) == 1
