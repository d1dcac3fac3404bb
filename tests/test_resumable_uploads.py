"""Resumable uploads (tus 1.0.0) under /v1/apps/uploads/, driven by a real tus client (tuspy) over HTTP."""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from tusclient import client as tus
from tusclient.exceptions import TusCommunicationError

from tests.fixtures.apps import app_ids, assert_error, stored_files
from tests.fixtures.factories import Database, Tenant, add_key, apk_bytes, ipa_bytes, upload_app
from tests.fixtures.servers import LiveServer

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = 64 * 1024


def _content(size: int = 400 * 1024) -> bytes:
    # Random padding (stored, not deflated): a SHA-256 of its own, and big enough for several chunks.
    return apk_bytes(extra={"assets/noise.bin": secrets.token_bytes(size)})


def _client(server: LiveServer, tenant: Tenant) -> tus.TusClient:
    return tus.TusClient(f"{server.url}/v1/apps/uploads/", headers={"X-Api-Key": tenant.key})


def _metadata(**overrides: str) -> dict[str, str]:
    return {"filename": "build.apk", "app_name": "Resumable", "version": "2.0.0", **overrides}


def _encode(metadata: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())


def _create(tenant: Tenant, length: int, **metadata: str) -> httpx.Response:
    return tenant.client.post(
        "/v1/apps/uploads/",
        headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": _encode(_metadata(**metadata))},
    )


def _location(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return urlsplit(response.headers["Location"]).path


def _head(tenant: Tenant, path: str) -> httpx.Response:
    return tenant.client.head(path, headers=TUS)


def _patch(tenant: Tenant, path: str, offset: int, data: bytes, **headers: str) -> httpx.Response:
    return tenant.client.patch(
        path,
        content=data,
        headers={**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream", **headers},
    )


def tus_dir_files(data_dir: Path) -> list[Path]:
    tus_dir = data_dir / "tmp" / "tus"
    return sorted(tus_dir.glob("*.part")) if tus_dir.exists() else []


def part_of(data_dir: Path, location: str) -> Path:
    """Where the server keeps the bytes of the upload at ``location`` until it is finished."""
    return data_dir / "tmp" / "tus" / f"{location.rsplit('/', 1)[-1]}.part"


def _app(tenant: Tenant, app_id: str) -> dict[str, Any]:
    response = tenant.client.get(f"/v1/apps/{app_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -------------------------------------------------------------------------------------- discovery


def test_options_advertises_the_protocol_without_a_key(server: LiveServer) -> None:
    response = httpx.options(f"{server.url}/v1/apps/uploads/")
    assert response.status_code == 204
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.headers["Tus-Version"] == "1.0.0"
    assert set(response.headers["Tus-Extension"].split(",")) == {"creation", "checksum", "expiration", "termination"}
    assert int(response.headers["Tus-Max-Size"]) == server.settings.max_upload_bytes
    assert {"sha1", "sha256"} <= set(response.headers["Tus-Checksum-Algorithm"].split(","))


# ------------------------------------------------------------------------------------ with tuspy


def test_tuspy_uploads_in_chunks_with_checksums_and_the_app_is_created(
    server: LiveServer, tenant: Tenant, data_dir: Path
) -> None:
    content = _content()
    uploader = _client(server, tenant).uploader(
        file_stream=io.BytesIO(content), chunk_size=CHUNK, metadata=_metadata(), upload_checksum=True
    )
    uploader.upload()
    assert uploader.offset == len(content)

    head = _head(tenant, urlsplit(uploader.url).path)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(content))
    assert head.headers["Cache-Control"] == "no-store"
    app_id = head.headers["Qualgent-App-Id"]

    # The same app as the single-request route makes: fields, hash, parsed metadata, link.
    app = _app(tenant, app_id)
    assert app["app_name"] == "Resumable" and app["version"] == "2.0.0" and app["os"] == "android"
    assert app["name"] == "build.apk"
    assert app["file_size"] == len(content)
    assert app["sha256"] == hashlib.sha256(content).hexdigest()
    assert app["metadata"]["package_name"] == "com.example.app"
    assert httpx.get(app["link"]).content == content

    status = tenant.client.get(urlsplit(uploader.url).path)
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["offset"] == body["length"] == len(content)
    assert body["app"]["id"] == app_id and body["app"]["sha256"] == app["sha256"]
    assert not part_of(data_dir, uploader.url).exists()


def test_a_transfer_stopped_after_some_chunks_resumes_from_the_servers_offset(
    server: LiveServer, tenant: Tenant
) -> None:
    content = _content()
    first = _client(server, tenant).uploader(file_stream=io.BytesIO(content), chunk_size=CHUNK, metadata=_metadata())
    for _ in range(3):
        first.upload_chunk()
    assert first.offset == 3 * CHUNK
    location = urlsplit(first.url).path
    assert tenant.client.get(location).json()["app"] is None

    # A new client (the CI job restarted) knows only the URL and asks the server where to go on.
    second = _client(server, tenant).uploader(file_stream=io.BytesIO(content), chunk_size=CHUNK, url=first.url)
    assert second.offset == 3 * CHUNK
    second.upload()
    app_id = _head(tenant, location).headers["Qualgent-App-Id"]
    assert _app(tenant, app_id)["sha256"] == hashlib.sha256(content).hexdigest()


def test_a_connection_cut_mid_body_keeps_what_arrived_and_tuspy_resumes(
    server: LiveServer, tenant: Tenant, data_dir: Path
) -> None:
    content = _content(1024 * 1024)
    location = _location(_create(tenant, len(content)))

    # A raw PATCH announcing the whole file, cut after ~40% of it: the socket just closes.
    sent = len(content) * 2 // 5
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    request = (
        f"PATCH {location} HTTP/1.1\r\nHost: {host}:{port}\r\nX-Api-Key: {tenant.key}\r\n"
        f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {len(content)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port)) as sock:
        sock.sendall(request + content[:sent])
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while True:
        offset = int(_head(tenant, location).headers["Upload-Offset"])
        if offset == sent or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert offset == sent, "the bytes that arrived before the cut are kept"
    assert app_ids(tenant) == []

    uploader = _client(server, tenant).uploader(
        file_stream=io.BytesIO(content), chunk_size=CHUNK, url=f"{server.url}{location}"
    )
    assert uploader.offset == sent
    uploader.upload()
    app_id = _head(tenant, location).headers["Qualgent-App-Id"]
    app = _app(tenant, app_id)
    assert app["sha256"] == hashlib.sha256(content).hexdigest()
    [stored] = [p for p in stored_files(data_dir, tenant.organization_id) if p.name.startswith(app_id)]
    assert stored.read_bytes() == content
    assert not part_of(data_dir, location).exists()


def test_an_ipa_over_tus_gets_its_ios_metadata(server: LiveServer, tenant: Tenant) -> None:
    content = ipa_bytes(bundle_id="com.example.tus", version="3.1", build="77")
    uploader = _client(server, tenant).uploader(
        file_stream=io.BytesIO(content), metadata=_metadata(filename="x.ipa", os="ios")
    )
    uploader.upload()
    app = _app(tenant, _head(tenant, urlsplit(uploader.url).path).headers["Qualgent-App-Id"])
    assert app["os"] == "ios"
    assert app["metadata"]["bundle_id"] == "com.example.tus"
    assert app["metadata"]["version_name"] == "3.1" and app["metadata"]["build_number"] == "77"


# ------------------------------------------------------------------------------------ protocol rules


def test_offset_mismatch_is_409_and_changes_nothing(tenant: Tenant) -> None:
    content = _content()
    location = _location(_create(tenant, len(content)))
    assert _patch(tenant, location, 0, content[:1000]).status_code == 204
    for wrong in (0, 500, 2000):
        response = _patch(tenant, location, wrong, content[wrong : wrong + 10])
        assert_error(response, 409, "offset_mismatch")
    assert _head(tenant, location).headers["Upload-Offset"] == "1000"


def test_checksum_mismatch_is_460_and_keeps_nothing_of_the_body(tenant: Tenant) -> None:
    content = _content()
    location = _location(_create(tenant, len(content)))
    chunk = content[:5000]
    good = base64.b64encode(hashlib.sha1(chunk).digest()).decode()
    bad = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    response = _patch(tenant, location, 0, chunk, **{"Upload-Checksum": f"sha1 {bad}"})
    assert_error(response, 460, "checksum_mismatch")
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert _head(tenant, location).headers["Upload-Offset"] == "0"
    assert_error(_patch(tenant, location, 0, chunk, **{"Upload-Checksum": f"crc32 {good}"}), 400)
    response = _patch(tenant, location, 0, chunk, **{"Upload-Checksum": f"sha1 {good}"})
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == "5000"
    sha256 = base64.b64encode(hashlib.sha256(content[5000:]).digest()).decode()
    response = _patch(tenant, location, 5000, content[5000:], **{"Upload-Checksum": f"sha256 {sha256}"})
    assert response.status_code == 204, response.text
    assert _app(tenant, response.headers["Qualgent-App-Id"])["sha256"] == hashlib.sha256(content).hexdigest()


def test_malformed_requests_get_the_documented_errors(server: LiveServer, tenant: Tenant, data_dir: Path) -> None:
    before = tus_dir_files(data_dir)
    limit = server.settings.max_upload_bytes
    cases: list[tuple[dict[str, str], int]] = [
        ({"Upload-Length": "100", "Upload-Metadata": _encode(_metadata())}, 412),  # no Tus-Resumable
        ({**TUS, "Upload-Metadata": _encode(_metadata())}, 400),  # no Upload-Length
        ({**TUS, "Upload-Length": "-5", "Upload-Metadata": _encode(_metadata())}, 400),
        ({**TUS, "Upload-Length": str(limit + 1), "Upload-Metadata": _encode(_metadata())}, 413),
        ({**TUS, "Upload-Length": "0", "Upload-Metadata": _encode(_metadata())}, 422),
        ({**TUS, "Upload-Length": "100", "Upload-Metadata": "filename !!!notbase64"}, 400),
        ({**TUS, "Upload-Length": "100", "Upload-Metadata": _encode({"filename": "a.apk", "version": "1"})}, 400),
        ({**TUS, "Upload-Length": "100", "Upload-Metadata": _encode({"app_name": "A", "version": "1"})}, 400),
        ({**TUS, "Upload-Length": "100", "Upload-Metadata": _encode(_metadata(os="windows"))}, 422),
        ({**TUS, "Upload-Length": "100", "Upload-Metadata": _encode(_metadata(filename="build.bin"))}, 422),
        ({**TUS, "Upload-Length": "100", "Upload-Metadata": _encode(_metadata(app_name=" "))}, 422),
    ]
    for headers, status in cases:
        response = tenant.client.post("/v1/apps/uploads/", headers=headers)
        assert_error(response, status)
        assert response.headers["Tus-Resumable"] == "1.0.0"
    assert tus_dir_files(data_dir) == before

    location = _location(_create(tenant, 100))
    wrong_type = tenant.client.patch(
        location, content=b"x", headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/json"}
    )
    assert_error(wrong_type, 415)
    assert_error(_patch(tenant, location, 0, b"x" * 101), 413)
    assert _head(tenant, location).headers["Upload-Offset"] == "0"
    no_version = tenant.client.patch(
        location, content=b"x", headers={"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    )
    assert_error(no_version, 412)
    assert no_version.headers["Tus-Version"] == "1.0.0"


def test_an_invalid_package_is_422_on_the_last_patch_and_nothing_is_kept(tenant: Tenant, data_dir: Path) -> None:
    content = b"this is not a zip at all" * 100
    location = _location(_create(tenant, len(content)))
    assert _patch(tenant, location, 0, content[:1000]).status_code == 204
    error = assert_error(_patch(tenant, location, 1000, content[1000:]), 422, "invalid_package")
    assert "not a zip archive" in error["message"]
    assert _head(tenant, location).status_code == 404
    assert app_ids(tenant) == []
    assert stored_files(data_dir, tenant.organization_id) == []
    assert not part_of(data_dir, location).exists()


def test_termination_removes_the_upload_and_its_bytes(tenant: Tenant, data_dir: Path) -> None:
    content = _content()
    location = _location(_create(tenant, len(content)))
    assert _patch(tenant, location, 0, content[:10_000]).status_code == 204
    assert part_of(data_dir, location).exists()
    response = tenant.client.delete(location, headers=TUS)
    assert response.status_code == 204
    assert _head(tenant, location).status_code == 404
    assert_error(_patch(tenant, location, 10_000, content[10_000:]), 404)
    assert_error(tenant.client.get(location), 404)
    assert not part_of(data_dir, location).exists()


def test_another_organisations_upload_is_not_found(tenant: Tenant, other_tenant: Tenant) -> None:
    content = _content()
    location = _location(_create(other_tenant, len(content)))
    assert _patch(other_tenant, location, 0, content[:1000]).status_code == 204
    ghost = location.rsplit("/", 1)[0] + "/upload_01jd2f3g4h5j6k7m8n9p0q1r2s"
    for path in (location, ghost):
        assert _head(tenant, path).status_code == 404
        assert_error(_patch(tenant, path, 1000, content[1000:2000]), 404)
        assert_error(tenant.client.delete(path, headers=TUS), 404)
        assert_error(tenant.client.get(path), 404)
    # B's upload is untouched.
    assert _head(other_tenant, location).headers["Upload-Offset"] == "1000"


def test_read_only_keys_cannot_upload_and_keys_are_required(db: Database, server: LiveServer, tenant: Tenant) -> None:
    _, read_only = add_key(db, tenant, scopes="read")
    headers = {**TUS, "Upload-Length": "100", "Upload-Metadata": _encode(_metadata()), "X-Api-Key": read_only}
    assert_error(httpx.post(f"{server.url}/v1/apps/uploads/", headers=headers), 403, "insufficient_scope")
    headers.pop("X-Api-Key")
    assert_error(httpx.post(f"{server.url}/v1/apps/uploads/", headers=headers), 401)


def test_the_same_bytes_by_tus_and_by_form_are_stored_once(server: LiveServer, tenant: Tenant, data_dir: Path) -> None:
    content = _content()
    uploader = _client(server, tenant).uploader(file_stream=io.BytesIO(content), metadata=_metadata())
    uploader.upload()
    first = _head(tenant, urlsplit(uploader.url).path).headers["Qualgent-App-Id"]
    second = upload_app(tenant, content, app_name="Again", version="9").json()["file"]["id"]
    assert first != second
    assert len(stored_files(data_dir, tenant.organization_id)) == 1
    assert _app(tenant, first)["sha256"] == _app(tenant, second)["sha256"]


def test_tuspy_reports_an_error_for_an_invalid_build(server: LiveServer, tenant: Tenant) -> None:
    uploader = _client(server, tenant).uploader(file_stream=io.BytesIO(b"PK\x03\x04 truncated"), metadata=_metadata())
    with pytest.raises(TusCommunicationError) as raised:
        uploader.upload()
    assert raised.value.status_code == 422
