"""The Apps API over HTTP: upload, detection, listing, deletion, signed downloads, size limits."""

from __future__ import annotations

import hashlib
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from qualgent.signing import signed_download_url
from tests.fixtures.apps import (
    APK_MIME,
    REFERENCE_APP_FIELDS,
    REFERENCE_UPLOAD_FILE,
    UPLOAD_EXTRAS,
    aab_bytes,
    apk_of_exact_size,
    app_ids,
    app_zip_bytes,
    assert_error,
    assert_nothing_stored,
    info_plist,
    part_files,
    stored_files,
    zip_without_manifest,
)
from tests.fixtures.factories import (
    PIXEL_7,
    Database,
    Tenant,
    apk_bytes,
    create_test_case,
    ipa_bytes,
    make_tenant,
    upload_app,
)
from tests.fixtures.servers import LiveServer, live_server


def _uploaded(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    file: dict[str, Any] = body["file"]
    return file


# ------------------------------------------------------------------------------------------- upload


def test_upload_response_matches_the_reference(tenant: Tenant, data_dir: Path) -> None:
    content = apk_bytes(size_padding=4096)
    file = _uploaded(upload_app(tenant, content, filename="app.apk", app_name="MyApp", version="1.0.0"))

    assert set(file) == set(REFERENCE_UPLOAD_FILE) | set(UPLOAD_EXTRAS)
    for key, example in REFERENCE_UPLOAD_FILE.items():
        assert type(file[key]) is type(example), key
    for key, kind in UPLOAD_EXTRAS.items():
        assert isinstance(file[key], kind), key

    assert file["original_name"] == "app.apk"
    assert file["app_name"] == "MyApp"
    assert file["version"] == "1.0.0"
    assert file["os"] == "android"
    assert file["file_type"] == APK_MIME
    assert file["user_id"] == tenant.user_id
    assert file["organization_id"] == tenant.organization_id
    assert re.fullmatch(r"\d{13}-MyApp-1\.0\.0\.apk", file["filename"]), file["filename"]
    assert file["file_path"] == f"{tenant.user_id}/{file['filename']}"
    assert re.fullmatch(r"file_[0-9a-z]{26}", file["id"])
    assert file["file_size"] == len(content)
    assert file["sha256"] == hashlib.sha256(content).hexdigest()
    assert file["metadata"]["package_type"] == "apk"
    assert file["link"].startswith(f"{tenant.client.base_url}/v1/apps/{file['id']}/download?")

    # The bytes are stored once, under the organisation, and no temporary file is left behind.
    [stored] = stored_files(data_dir, tenant.organization_id)
    assert stored.read_bytes() == content
    assert part_files(data_dir) == []


@pytest.mark.parametrize(
    ("filename", "content", "os_", "kind", "mime"),
    [
        ("app.apk", apk_bytes(), "android", "apk", APK_MIME),
        ("bundle.aab", aab_bytes(), "android", "aab", "application/x-authorware-bin"),
        ("App.IPA", ipa_bytes(), "ios", "ipa", "application/octet-stream"),
        ("Sim.zip", app_zip_bytes(), "ios", "app.zip", "application/zip"),
    ],
)
def test_os_is_detected_from_the_package(
    tenant: Tenant, filename: str, content: bytes, os_: str, kind: str, mime: str
) -> None:
    file = _uploaded(upload_app(tenant, content, filename=filename))
    assert file["os"] == os_
    assert file["metadata"]["package_type"] == kind
    assert file["file_type"] == mime
    got = tenant.client.get(f"/v1/apps/{file['id']}")
    assert got.status_code == 200
    assert got.json()["os"] == os_


def test_ipa_metadata_is_read_from_info_plist(tenant: Tenant) -> None:
    content = ipa_bytes(bundle_id="com.acme.shop", version="3.4.5", build="678")
    file = _uploaded(upload_app(tenant, content, filename="Shop.ipa"))
    expected = {
        "package_type": "ipa",
        "bundle_id": "com.acme.shop",
        "version_name": "3.4.5",
        "build_number": "678",
        "display_name": "Example",
        "min_os_version": "15.0",
    }
    assert {k: file["metadata"].get(k) for k in expected} == expected
    assert tenant.client.get(f"/v1/apps/{file['id']}").json()["metadata"] == file["metadata"]


def test_zipped_simulator_app_metadata(tenant: Tenant) -> None:
    file = _uploaded(upload_app(tenant, app_zip_bytes(), filename="Sim.zip"))
    expected = {
        "package_type": "app.zip",
        "bundle_id": "com.example.sim",
        "version_name": "2.0",
        "build_number": "7",
        "display_name": "SimApp",
        "min_os_version": "16.0",
    }
    assert {k: file["metadata"].get(k) for k in expected} == expected


def test_explicit_os_accepted_when_consistent(tenant: Tenant) -> None:
    assert _uploaded(upload_app(tenant, apk_bytes(), os="android"))["os"] == "android"
    assert _uploaded(upload_app(tenant, ipa_bytes(), filename="a.ipa", os="iOS"))["os"] == "ios"
    # An unhelpful name is fine when os is given and the content agrees with it.
    assert _uploaded(upload_app(tenant, apk_bytes(), filename="build.bin", os="android"))["os"] == "android"
    assert len(app_ids(tenant)) == 3


@pytest.mark.parametrize(
    ("filename", "content", "fields", "code"),
    [
        ("app.apk", apk_bytes(), {"os": "ios"}, "platform_mismatch"),
        ("app.ipa", ipa_bytes(), {"os": "android"}, "platform_mismatch"),
        ("build.bin", ipa_bytes(), {"os": "android"}, "platform_mismatch"),
        ("app.apk", apk_bytes(), {"os": "windows"}, None),
        ("build.bin", apk_bytes(), {}, "unknown_platform"),
        ("app", apk_bytes(), {}, "unknown_platform"),
    ],
)
def test_os_problems_are_422(
    tenant: Tenant, data_dir: Path, filename: str, content: bytes, fields: dict[str, str], code: str | None
) -> None:
    assert_error(upload_app(tenant, content, filename=filename, **fields), 422, code)
    assert_nothing_stored(tenant, data_dir)


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("app.apk", b"this is not a zip archive at all" * 10),
        ("app.apk", zip_without_manifest()),
        ("app.aab", apk_bytes()),  # an APK named .aab: content and name disagree
        ("app.apk", aab_bytes()),
        ("app.ipa", apk_bytes()),
        ("app.ipa", zip_without_manifest()),
        ("Sim.zip", zip_without_manifest()),
        ("Sim.zip", apk_bytes()),
        ("app.ipa", app_zip_bytes()),  # an .app without Payload/ is not an IPA
        ("Sim.zip", app_zip_bytes(plist=b"not a plist")),
        ("Sim.zip", app_zip_bytes(plist=info_plist()[:-40])),
    ],
)
def test_invalid_package_is_422_and_nothing_is_stored(
    tenant: Tenant, data_dir: Path, filename: str, content: bytes
) -> None:
    error = assert_error(upload_app(tenant, content, filename=filename), 422, "invalid_package")
    assert "Traceback" not in error["message"]
    assert_nothing_stored(tenant, data_dir)
    assert tenant.client.get("/v1/apps/latest").status_code == 404


def test_empty_file_is_422(tenant: Tenant, data_dir: Path) -> None:
    assert_error(upload_app(tenant, b""), 422, "empty_file")
    assert_nothing_stored(tenant, data_dir)


def test_upload_needs_an_api_key(server: LiveServer, tenant: Tenant, data_dir: Path) -> None:
    files = {"file": ("app.apk", apk_bytes(), "application/octet-stream")}
    data = {"app_name": "MyApp", "version": "1.0.0"}
    assert_error(httpx.post(f"{server.url}/v1/apps/upload", files=files, data=data), 401, "missing_api_key")
    bad = {"X-Api-Key": "qg_" + "x" * 40}
    assert_error(httpx.post(f"{server.url}/v1/apps/upload", files=files, data=data, headers=bad), 401)
    assert_nothing_stored(tenant, data_dir)


# ------------------------------------------------------------------------------------ list and get


def test_list_is_a_bare_array_newest_first(tenant: Tenant) -> None:
    first = _uploaded(upload_app(tenant, apk_bytes(), filename="one.apk", version="1"))
    second = _uploaded(upload_app(tenant, ipa_bytes(), filename="two.ipa", version="2"))
    third = _uploaded(upload_app(tenant, aab_bytes(), filename="three.aab", version="3"))

    response = tenant.client.get("/v1/apps")
    assert response.status_code == 200
    assert "link" not in response.headers
    apps = response.json()
    assert isinstance(apps, list)
    assert [a["id"] for a in apps] == [third["id"], second["id"], first["id"]]
    for app in apps:
        for key, kind in REFERENCE_APP_FIELDS.items():
            assert isinstance(app[key], kind), key
    assert [(a["name"], a["version"], a["os"]) for a in apps] == [
        ("three.aab", "3", "android"),
        ("two.ipa", "2", "ios"),
        ("one.apk", "1", "android"),
    ]
    assert apps[1]["link"].startswith(f"{tenant.client.base_url}/v1/apps/{second['id']}/download?")


def test_list_pages_with_limit_and_link_header(tenant: Tenant) -> None:
    uploaded = [_uploaded(upload_app(tenant, apk_bytes(), version=str(i)))["id"] for i in range(5)]
    newest_first = list(reversed(uploaded))

    seen: list[str] = []
    pages = 0
    url: str | None = "/v1/apps?limit=2"
    while url is not None:
        response = tenant.client.get(url)
        assert response.status_code == 200, response.text
        page = [a["id"] for a in response.json()]
        assert 1 <= len(page) <= 2
        seen += page
        pages += 1
        next_link = response.links.get("next")
        url = next_link["url"] if next_link else None
        if url is not None:
            assert url.startswith(str(tenant.client.base_url))
            assert parse_qs(urlsplit(url).query)["limit"] == ["2"]
        assert pages <= 5
    assert seen == newest_first
    assert pages == 3

    # A page that ends exactly at the last item announces no next page.
    exact = tenant.client.get("/v1/apps", params={"limit": 5})
    assert [a["id"] for a in exact.json()] == newest_first
    assert "next" not in exact.links


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=abc", "cursor=../../x"])
def test_list_rejects_bad_paging(tenant: Tenant, query: str) -> None:
    response = tenant.client.get(f"/v1/apps?{query}")
    assert response.status_code in (400, 422)
    assert_error(response, response.status_code)


def test_list_is_scoped_to_the_organisation(tenant: Tenant, other_tenant: Tenant) -> None:
    mine = _uploaded(upload_app(tenant))["id"]
    theirs = _uploaded(upload_app(other_tenant))["id"]
    assert app_ids(tenant) == [mine]
    assert app_ids(other_tenant) == [theirs]
    assert_error(tenant.client.get(f"/v1/apps/{theirs}"), 404, "not_found")


def test_get_by_id(tenant: Tenant) -> None:
    file = _uploaded(upload_app(tenant, ipa_bytes(), filename="Shop.ipa", app_name="Shop", version="9.9"))
    response = tenant.client.get(f"/v1/apps/{file['id']}")
    assert response.status_code == 200
    app = response.json()
    assert {k: app[k] for k in ("id", "name", "version", "os", "app_name", "file_size", "sha256")} == {
        "id": file["id"],
        "name": "Shop.ipa",
        "version": "9.9",
        "os": "ios",
        "app_name": "Shop",
        "file_size": file["file_size"],
        "sha256": file["sha256"],
    }
    assert app["link"].startswith(f"{tenant.client.base_url}/v1/apps/{file['id']}/download?")


def test_latest_and_latest_by_os(tenant: Tenant) -> None:
    assert_error(tenant.client.get("/v1/apps/latest"), 404, "not_found")
    assert_error(tenant.client.get("/v1/apps/latest", params={"os": "ios"}), 404, "not_found")

    android = _uploaded(upload_app(tenant, apk_bytes()))["id"]
    assert tenant.client.get("/v1/apps/latest").json()["id"] == android
    assert_error(tenant.client.get("/v1/apps/latest", params={"os": "ios"}), 404)

    ios = _uploaded(upload_app(tenant, ipa_bytes(), filename="a.ipa"))["id"]
    newest_android = _uploaded(upload_app(tenant, apk_bytes(), version="2"))["id"]
    assert tenant.client.get("/v1/apps/latest").json()["id"] == newest_android
    assert tenant.client.get("/v1/apps/latest", params={"os": "ios"}).json()["id"] == ios
    assert tenant.client.get("/v1/apps/latest", params={"os": "android"}).json()["id"] == newest_android
    assert android != newest_android
    assert_error(tenant.client.get("/v1/apps/latest", params={"os": "windows"}), 422)


@pytest.mark.parametrize(
    "app_id",
    [
        "file_00000000000000000000000000",  # the right shape, but no such app
        "file_xyz789",
        "nonsense",
        "tc_00000000000000000000000000",
        "FILE_00000000000000000000000000",
        "file_0000000000000000000000000%27%20OR%201=1--",
        "file_" + "0" * 500,
    ],
)
def test_get_unknown_or_malformed_id_is_404(tenant: Tenant, app_id: str) -> None:
    upload_app(tenant)  # the organisation has an app; the ID still must not find it
    assert_error(tenant.client.get(f"/v1/apps/{app_id}"), 404, "not_found")


def test_nul_in_an_app_id_is_400(tenant: Tenant) -> None:
    upload_app(tenant)
    error = assert_error(tenant.client.get("/v1/apps/%00"), 400, "bad_request")
    assert "NUL" in error["message"]


# ------------------------------------------------------------------------------------------ delete


def _delete(tenant: Tenant, ids: Any, *, via_post: bool = False) -> httpx.Response:
    if via_post:
        return tenant.client.post("/v1/apps/delete", json={"files": ids})
    return tenant.client.request("DELETE", "/v1/apps", json={"files": ids})


@pytest.mark.parametrize("via_post", [False, True], ids=["DELETE", "POST-delete"])
def test_delete_hides_the_app_everywhere(tenant: Tenant, data_dir: Path, via_post: bool) -> None:
    keep = _uploaded(upload_app(tenant, apk_bytes(), version="1"))
    gone = _uploaded(upload_app(tenant, apk_bytes(), version="2"))
    assert tenant.client.get("/v1/apps/latest").json()["id"] == gone["id"]

    response = _delete(tenant, [gone["id"], gone["id"]], via_post=via_post)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "deleted": [gone["id"]]}

    assert app_ids(tenant) == [keep["id"]]
    assert_error(tenant.client.get(f"/v1/apps/{gone['id']}"), 404, "not_found")
    assert tenant.client.get("/v1/apps/latest").json()["id"] == keep["id"]
    assert tenant.client.get("/v1/apps/latest", params={"os": "android"}).json()["id"] == keep["id"]
    # A link handed out before the deletion no longer downloads.
    assert_error(httpx.get(gone["link"]), 404, "not_found")
    assert httpx.get(keep["link"]).status_code == 200
    # Deleting again: it is already gone.
    assert_error(_delete(tenant, [gone["id"]], via_post=via_post), 404, "not_found")


def test_delete_several(tenant: Tenant) -> None:
    ids = [_uploaded(upload_app(tenant, version=str(i)))["id"] for i in range(3)]
    response = tenant.client.post("/v1/apps/delete", json={"files": ids[:2]})
    assert response.status_code == 200, response.text
    assert sorted(response.json()["deleted"]) == sorted(ids[:2])
    assert app_ids(tenant) == [ids[2]]


@pytest.mark.parametrize("via_post", [False, True], ids=["DELETE", "POST-delete"])
def test_delete_batch_with_an_unknown_id_deletes_nothing(tenant: Tenant, other_tenant: Tenant, via_post: bool) -> None:
    mine = _uploaded(upload_app(tenant))["id"]
    theirs = _uploaded(upload_app(other_tenant))["id"]
    for bad in ("file_00000000000000000000000000", "nonsense", theirs):
        error = assert_error(_delete(tenant, [mine, bad], via_post=via_post), 404, "not_found")
        assert [d["id"] for d in error["details"]] == [bad]
        assert app_ids(tenant) == [mine]
    assert app_ids(other_tenant) == [theirs]


@pytest.mark.parametrize("via_post", [False, True], ids=["DELETE", "POST-delete"])
@pytest.mark.parametrize(
    ("body", "status"),
    [
        # decisions.md: a missing required parameter or malformed JSON is 400, an invalid value 422.
        ({"files": []}, 422),
        ({"files": "file_00000000000000000000000000"}, 422),
        ({"files": [1, 2]}, 422),
        ({}, 400),
        ({"file": ["x"]}, 400),
        (None, 400),
        (b'{"files": [', 400),
    ],
)
def test_delete_bad_bodies(tenant: Tenant, via_post: bool, body: Any, status: int) -> None:
    mine = _uploaded(upload_app(tenant))["id"]
    method, path = ("POST", "/v1/apps/delete") if via_post else ("DELETE", "/v1/apps")
    if isinstance(body, bytes):
        response = tenant.client.request(method, path, content=body, headers={"Content-Type": "application/json"})
    elif body is None:
        response = tenant.client.request(method, path)
    else:
        response = tenant.client.request(method, path, json=body)
    assert_error(response, status)
    assert app_ids(tenant) == [mine]


def test_deleted_app_cannot_be_used_for_new_runs(tenant: Tenant) -> None:
    file_id = _uploaded(upload_app(tenant))["id"]
    case = create_test_case(tenant)
    job = {"test_case_id": case["id"], "app_file_id": file_id, "device": PIXEL_7}
    assert tenant.client.post("/v1/test-cases/run", json={"jobs": [job]}).status_code == 200
    assert _delete(tenant, [file_id]).status_code == 200

    error = assert_error(tenant.client.post("/v1/test-cases/run", json={"jobs": [job]}), 422)
    assert any(d.get("field") == "app_file_id" for d in error["details"]), error
    run_all = {"app_file_id": file_id, "device": PIXEL_7}
    assert_error(tenant.client.post("/v1/test-cases/run-all", json=run_all), 422)
    # Nor is it picked as the newest app of its platform.
    by_platform = {"test_case_id": case["id"], "platform": "android"}
    assert_error(tenant.client.post("/v1/test-cases/run", json={"jobs": [by_platform]}), 422)


# ---------------------------------------------------------------------------------------- download


def test_signed_link_downloads_the_exact_bytes_without_a_key(tenant: Tenant) -> None:
    content = apk_bytes(size_padding=300_000)
    file = _uploaded(upload_app(tenant, content, filename="My App.apk"))
    for link in (file["link"], tenant.client.get(f"/v1/apps/{file['id']}").json()["link"]):
        response = httpx.get(link)  # no X-Api-Key
        assert response.status_code == 200
        assert response.content == content
        assert response.headers["content-type"] == APK_MIME
        assert "My%20App.apk" in response.headers["content-disposition"]
    # The link lives for the reference's 5 minutes.
    expires = int(parse_qs(urlsplit(file["link"]).query)["expires"][0])
    assert 280 <= expires - time.time() <= 301


def _with_query(link: str, **changes: str) -> str:
    parts = urlsplit(link)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


def test_tampered_links_are_403(tenant: Tenant, other_tenant: Tenant) -> None:
    file = _uploaded(upload_app(tenant))
    other = _uploaded(upload_app(tenant, version="2"))
    link = file["link"]
    signature = parse_qs(urlsplit(link).query)["signature"][0]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    tampered = [
        _with_query(link, signature=flipped),
        _with_query(link, signature=""),
        _with_query(link, signature=signature.upper()),
        _with_query(link, expires=str(int(time.time()) + 86_400)),  # extending the link breaks it
        _with_query(link, org=other_tenant.organization_id),
        link.replace(file["id"], other["id"]),  # one app's signature does not open another
    ]
    for url in tampered:
        assert_error(httpx.get(url), 403, "invalid_signature")
    assert httpx.get(link).status_code == 200


def test_link_without_signature_parameters_is_refused(tenant: Tenant) -> None:
    file = _uploaded(upload_app(tenant))
    bare = file["link"].split("?", 1)[0]
    response = httpx.get(bare)
    assert response.status_code in (400, 403)
    assert_error(response, response.status_code)


def test_expired_link_is_403(server: LiveServer, tenant: Tenant) -> None:
    file = _uploaded(upload_app(tenant))
    key = (server.settings.secret_key or "").encode()
    assert key == b"test-secret-key"
    # Sanity: a link signed here with the server's key and a future expiry works...
    fresh = signed_download_url(server.url, key, tenant.organization_id, file["id"], 60)
    assert httpx.get(fresh).status_code == 200
    # ...and the same with an expiry in the past does not.
    expired = signed_download_url(server.url, key, tenant.organization_id, file["id"], -5)
    assert_error(httpx.get(expired), 403, "invalid_signature")
    wrong_key = signed_download_url(server.url, b"another-key", tenant.organization_id, file["id"], 60)
    assert_error(httpx.get(wrong_key), 403, "invalid_signature")


def test_short_ttl_link_expires(backend: str, tmp_path: Path) -> None:
    with live_server(backend, tmp_path / "srv", download_link_ttl=2) as srv:
        database = Database(srv.settings.resolved_database_url)
        try:
            tenant = make_tenant(database, srv.url)
            file = _uploaded(upload_app(tenant))
            assert httpx.get(file["link"]).status_code == 200
            expires = int(parse_qs(urlsplit(file["link"]).query)["expires"][0])
            time.sleep(max(0.0, expires - time.time()) + 0.05)
            assert_error(httpx.get(file["link"]), 403, "invalid_signature")
            tenant.client.close()
        finally:
            database.close()


# -------------------------------------------------------------------------------------- size limit

SMALL_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def small_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(backend, tmp_path_factory.mktemp(f"small-{backend}"), max_upload_bytes=SMALL_LIMIT) as srv:
        yield srv


@pytest.fixture(scope="module")
def small_db(small_server: LiveServer) -> Iterator[Database]:
    database = Database(small_server.settings.resolved_database_url)
    yield database
    database.close()


@pytest.fixture
def small_tenant(small_db: Database, small_server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(small_db, small_server.url)
    yield t
    t.client.close()


def test_upload_at_the_limit_is_accepted(small_tenant: Tenant, small_server: LiveServer) -> None:
    content = apk_of_exact_size(SMALL_LIMIT)
    file = _uploaded(upload_app(small_tenant, content))
    assert file["file_size"] == SMALL_LIMIT
    assert file["sha256"] == hashlib.sha256(content).hexdigest()
    assert part_files(small_server.settings.data_dir) == []


def test_one_byte_over_the_limit_is_413(small_tenant: Tenant, small_server: LiveServer) -> None:
    error = assert_error(upload_app(small_tenant, apk_of_exact_size(SMALL_LIMIT + 1)), 413, "payload_too_large")
    assert str(SMALL_LIMIT) in error["message"]
    assert_nothing_stored(small_tenant, small_server.settings.data_dir)


def test_declared_content_length_over_the_limit_is_413(small_tenant: Tenant, small_server: LiveServer) -> None:
    # Far over the limit: refused from the Content-Length header alone.
    content = apk_bytes(size_padding=SMALL_LIMIT + 2 * 1024 * 1024)
    response = upload_app(small_tenant, content)
    assert_error(response, 413, "payload_too_large")
    assert_nothing_stored(small_tenant, small_server.settings.data_dir)

    # The refusal does not wait for the body: a client that sends only the headers gets its answer.
    host = urlsplit(small_server.url)
    with socket.create_connection((host.hostname, host.port), timeout=5) as sock:
        sock.sendall(
            (
                "POST /v1/apps/upload HTTP/1.1\r\n"
                f"Host: {host.netloc}\r\n"
                f"X-Api-Key: {small_tenant.key}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n"
                f"Content-Length: {SMALL_LIMIT + 2 * 1024 * 1024}\r\n\r\n--b\r\n"
            ).encode()
        )
        reply = sock.recv(65536)  # the 5 s timeout fails the test if the server waits for the body
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert b'"payload_too_large"' in reply

    # Over the limit but within the multipart allowance: refused while streaming.
    content = apk_bytes(size_padding=SMALL_LIMIT * 3)
    assert_error(upload_app(small_tenant, content), 413, "payload_too_large")
    assert_nothing_stored(small_tenant, small_server.settings.data_dir)


def _chunked_upload(tenant: Tenant, content: bytes, chunk: int = 16 * 1024) -> httpx.Response:
    request = tenant.client.build_request(
        "POST",
        "/v1/apps/upload",
        data={"app_name": "MyApp", "version": "1.0.0"},
        files={"file": ("app.apk", content, "application/octet-stream")},
    )
    body = request.read()
    content_type = request.headers["content-type"]

    def stream() -> Iterator[bytes]:
        for i in range(0, len(body), chunk):
            yield body[i : i + chunk]

    return tenant.client.post("/v1/apps/upload", content=stream(), headers={"Content-Type": content_type})


def test_chunked_upload_over_the_limit_is_413(small_tenant: Tenant, small_server: LiveServer) -> None:
    for padding in (SMALL_LIMIT * 2, SMALL_LIMIT + 2 * 1024 * 1024):
        assert_error(_chunked_upload(small_tenant, apk_bytes(size_padding=padding)), 413, "payload_too_large")
        assert_nothing_stored(small_tenant, small_server.settings.data_dir)


def test_chunked_upload_under_the_limit_is_stored(small_tenant: Tenant, small_server: LiveServer) -> None:
    content = apk_bytes(size_padding=SMALL_LIMIT // 2)
    file = _uploaded(_chunked_upload(small_tenant, content, chunk=1000))
    assert file["sha256"] == hashlib.sha256(content).hexdigest()
    [stored] = stored_files(small_server.settings.data_dir, small_tenant.organization_id)
    assert stored.read_bytes() == content
