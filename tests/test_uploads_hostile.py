"""Uploads from hostile or broken clients: odd names, bad bodies, oversized JSON, connections cut short."""

from __future__ import annotations

import json
import plistlib
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest

from tests.fixtures.apps import (
    BOUNDARY,
    app_ids,
    assert_error,
    assert_nothing_stored,
    ipa_with_plist,
    multipart_end,
    multipart_part,
    part_files,
    post_raw_upload,
    stored_files,
    upload_body,
    wait_no_part_files,
)
from tests.fixtures.factories import Tenant, apk_bytes, upload_app
from tests.fixtures.servers import LiveServer

APK = apk_bytes()


def _all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("raw_name", "expected"),
    [
        (b"../../etc/passwd.apk", "passwd.apk"),
        (b"..\\..\\x.apk", "x.apk"),
        (b"/abs/path/to/app.apk", "app.apk"),
        (b"C:\\Users\\me\\Desktop\\app.apk", "app.apk"),
        (b"..%2F..%2Fx.apk", "%2F..%2Fx.apk"),  # not decoded: percent signs stay text; leading dots go
        (b"ap\x00p.apk", "app.apk"),
        (b"a\nb.apk", "ab.apk"),
        (b"\x1b[31mred.apk", "[31mred.apk"),
        (b"\x7f\x01tab\tapp.apk", "tabapp.apk"),
        ("évil\u202ekpa.apk".encode(), "évilkpa.apk"),  # bidi override would disguise the extension
        ("\u2067app\u2069\u200b.apk".encode(), "app.apk"),
        ("\ufeffbom.apk".encode(), "bom.apk"),
        ("cafe\u0301.apk".encode(), "caf\u00e9.apk"),  # NFC
        ("приложение-测试-🚀.apk".encode(), "приложение-测试-🚀.apk"),
        (b"  ...app.apk...  ", "app.apk"),
    ],
)
def test_hostile_file_names_are_sanitised_and_stored_in_the_data_dir(
    tenant: Tenant, data_dir: Path, raw_name: bytes, expected: str
) -> None:
    watch = data_dir.parent  # every server's temporary directory of this session
    before = _all_files(watch)
    response = post_raw_upload(tenant, upload_body(APK, filename=raw_name))
    assert response.status_code == 200, response.text
    file = response.json()["file"]
    assert file["original_name"] == expected
    assert file["file_path"] == f"{tenant.user_id}/{file['filename']}"
    assert re.fullmatch(r"\d{13}-MyApp-1\.0\.0\.apk", file["filename"])
    assert tenant.client.get(f"/v1/apps/{file['id']}").json()["name"] == expected

    [stored] = stored_files(data_dir, tenant.organization_id)
    assert stored.read_bytes() == APK
    assert stored.name == f"{file['id']}.apk"
    new = _all_files(watch) - before
    assert {p for p in new if not p.name.startswith("qualgent.db")} == {stored}


def test_very_long_names_keep_their_extension(tenant: Tenant) -> None:
    for raw, stem in ((b"a" * 1000 + b".apk", "a"), (("é" * 1000 + ".apk").encode(), "é")):
        file = post_raw_upload(tenant, upload_body(APK, filename=raw)).json()["file"]
        assert file["original_name"] == stem * 251 + ".apk"
        assert file["os"] == "android"
    # A name with no extension is shortened too, and then needs os.
    body = upload_body(APK, filename=b"x" * 1000, fields={"app_name": b"A", "version": b"1", "os": b"android"})
    file = post_raw_upload(tenant, body).json()["file"]
    assert file["original_name"] == "x" * 255


@pytest.mark.parametrize("raw_name", [b"", b"..", b"../", b"\x00\x00"])
def test_names_that_sanitise_to_nothing(tenant: Tenant, data_dir: Path, raw_name: bytes) -> None:
    # Nothing to tell the platform from: 422 unless os is sent, and then a placeholder name.
    assert_error(post_raw_upload(tenant, upload_body(APK, filename=raw_name)), 422, "unknown_platform")
    assert_nothing_stored(tenant, data_dir)
    body = upload_body(APK, filename=raw_name, fields={"app_name": b"A", "version": b"1", "os": b"android"})
    response = post_raw_upload(tenant, body)
    assert response.status_code == 200, response.text
    assert response.json()["file"]["original_name"] == "upload"


def test_download_of_a_hostile_name_has_a_safe_content_disposition(tenant: Tenant) -> None:
    for name in ('ü"b.apk', "a;b=c.apk"):
        file = post_raw_upload(tenant, upload_body(APK, filename=name.encode())).json()["file"]
        assert file["original_name"] == name
        response = httpx.get(file["link"])
        assert response.status_code == 200
        assert response.content == APK
        # A quote or semicolon cannot end the header's filename early: the name is percent-encoded.
        assert response.headers["content-disposition"] == "attachment; filename*=utf-8''" + quote(name)

    # A quote in the multipart header ends the quoted name there; the rest cannot smuggle a second one.
    smuggled = post_raw_upload(tenant, upload_body(APK, filename=b'x.apk"; name="app_name'))
    assert_error(smuggled, 400)


def test_app_name_and_version_cannot_steer_the_stored_path(tenant: Tenant, data_dir: Path) -> None:
    file = post_raw_upload(
        tenant, upload_body(APK, fields={"app_name": b"../../../etc/cron.d/x", "version": b"1.0/../../..\\y"})
    ).json()["file"]
    assert file["app_name"] == "../../../etc/cron.d/x"  # kept as given, as text
    assert "/" not in file["filename"] and "\\" not in file["filename"]
    assert file["file_path"] == f"{tenant.user_id}/{file['filename']}"
    [stored] = stored_files(data_dir, tenant.organization_id)
    assert stored.name == f"{file['id']}.apk"

    unicode_name = post_raw_upload(
        tenant, upload_body(APK, fields={"app_name": "Приложение 🚀".encode(), "version": b"2"})
    ).json()["file"]
    assert unicode_name["app_name"] == "Приложение 🚀"
    assert unicode_name["filename"].isascii()


# --------------------------------------------------------------------------------- field values


@pytest.mark.parametrize(
    "fields",
    [
        {"app_name": b"My\x00App", "version": b"1"},
        {"app_name": b"My\nApp", "version": b"1"},
        {"app_name": b"\x1b[2Jclear", "version": b"1"},
        {"app_name": b"del\x7f", "version": b"1"},
        {"app_name": b"A", "version": b"1\r\n2"},
        {"app_name": b"A" * 201, "version": b"1"},
        {"app_name": b"A", "version": b"1" * 101},
        {"app_name": b"", "version": b"1"},
        {"app_name": b"   ", "version": b"1"},
        {"app_name": b"A", "version": b""},
        {"app_name": b"\xff\xfe", "version": b"1"},
        {"app_name": b"A", "version": b"1", "os": b"windows"},
    ],
)
def test_invalid_field_values_are_422(tenant: Tenant, data_dir: Path, fields: dict[str, bytes]) -> None:
    assert_error(post_raw_upload(tenant, upload_body(APK, fields=fields)), 422)
    assert_nothing_stored(tenant, data_dir)


def test_longest_allowed_values_are_accepted(tenant: Tenant) -> None:
    body = upload_body(APK, fields={"app_name": b"A" * 200, "version": b"1" * 100})
    file = post_raw_upload(tenant, body).json()["file"]
    assert (len(file["app_name"]), len(file["version"])) == (200, 100)


def test_huge_form_field_is_413(tenant: Tenant, data_dir: Path) -> None:
    body = upload_body(APK, fields={"app_name": b"A" * 100_000, "version": b"1"})
    assert_error(post_raw_upload(tenant, body), 413, "payload_too_large")
    assert_nothing_stored(tenant, data_dir)


# ------------------------------------------------------------------------------ body and framing


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", json.dumps({"app_name": "MyApp", "version": "1.0.0", "file": "UEsDBA=="}).encode()),
        ("application/x-www-form-urlencoded", b"app_name=MyApp&version=1.0.0&file=x"),
        ("multipart/form-data", upload_body(APK)),
        ("multipart/form-data; charset=utf-8", upload_body(APK)),
        (f"multipart/mixed; boundary={BOUNDARY}", upload_body(APK)),
        ("text/plain", b"hello"),
        ("application/octet-stream", APK),
        (None, upload_body(APK)),
    ],
)
def test_wrong_content_types_are_400(tenant: Tenant, data_dir: Path, content_type: str | None, body: bytes) -> None:
    if content_type is None:
        response = tenant.client.post("/v1/apps/upload", content=body)
        assert "content-type" not in response.request.headers
    else:
        response = post_raw_upload(tenant, body, content_type=content_type)
    assert_error(response, 400, "invalid_content_type")
    assert_nothing_stored(tenant, data_dir)


def test_upload_with_httpx_json_or_urlencoded_is_400(tenant: Tenant, data_dir: Path) -> None:
    assert_error(tenant.client.post("/v1/apps/upload", json={"app_name": "A", "version": "1"}), 400)
    assert_error(tenant.client.post("/v1/apps/upload", data={"app_name": "A", "version": "1"}), 400)
    assert_error(tenant.client.post("/v1/apps/upload"), 400)
    assert_nothing_stored(tenant, data_dir)


def _fields() -> bytes:
    return multipart_part("app_name", b"MyApp") + multipart_part("version", b"1.0.0")


def _file_part(name: str = "file", filename: bytes = b"app.apk") -> bytes:
    return multipart_part(name, APK, filename, "application/octet-stream")


MALFORMED = {
    "garbage": b"this is not multipart at all",
    "wrong boundary": upload_body(APK).replace(BOUNDARY.encode(), b"someOtherBoundary"),
    "no closing boundary": _fields() + _file_part(),
    "closing boundary cut short": _fields() + _file_part() + b"--" + BOUNDARY.encode()[:10],
    "file cut short": _fields() + _file_part()[:-100],
    "CRLF inside a header": upload_body(APK, filename=b"a\r\nb.apk"),
    "no content-disposition": _fields()
    + b"--"
    + BOUNDARY.encode()
    + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
    + APK
    + b"\r\n"
    + multipart_end(),
    "disposition without name": _fields()
    + b"--"
    + BOUNDARY.encode()
    + b'\r\nContent-Disposition: form-data; filename="app.apk"\r\n\r\n'
    + APK
    + b"\r\n"
    + multipart_end(),
    "attachment disposition": _fields()
    + b"--"
    + BOUNDARY.encode()
    + b'\r\nContent-Disposition: attachment; name="file"; filename="app.apk"\r\n\r\n'
    + APK
    + b"\r\n"
    + multipart_end(),
    "two files": _fields() + _file_part() + _file_part() + multipart_end(),
    "file in another field": _fields() + _file_part(name="upload") + multipart_end(),
    "too many fields": _fields()
    + b"".join(multipart_part(f"f{i}", b"x") for i in range(30))
    + _file_part()
    + multipart_end(),
    "only the closing boundary": multipart_end(),
    "empty body": b"",
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_multipart_is_400(tenant: Tenant, data_dir: Path, body: bytes) -> None:
    assert_error(post_raw_upload(tenant, body), 400)
    assert_nothing_stored(tenant, data_dir)


def test_well_formed_variants_are_accepted(tenant: Tenant) -> None:
    # Closing boundary without its trailing CRLF, an epilogue, the file before the fields.
    variants = [
        _fields() + _file_part() + b"--" + BOUNDARY.encode() + b"--",
        _fields() + _file_part() + multipart_end() + b"epilogue",
        _file_part() + _fields() + multipart_end(),
    ]
    for body in variants:
        response = post_raw_upload(tenant, body)
        assert response.status_code == 200, response.text
        assert response.json()["file"]["file_size"] == len(APK)
    assert len(app_ids(tenant)) == len(variants)


@pytest.mark.parametrize("missing", ["file", "app_name", "version"])
def test_missing_required_part_is_400(tenant: Tenant, data_dir: Path, missing: str) -> None:
    parts = {"app_name": multipart_part("app_name", b"MyApp"), "version": multipart_part("version", b"1.0.0")}
    parts["file"] = _file_part()
    del parts[missing]
    error = assert_error(post_raw_upload(tenant, b"".join(parts.values()) + multipart_end()), 400, "missing_parameter")
    assert missing in error["message"]
    assert_nothing_stored(tenant, data_dir)


def test_file_sent_as_a_plain_field_is_missing(tenant: Tenant, data_dir: Path) -> None:
    # `-F file=app.apk` (no @): a text field named file, not a file.
    body = _fields() + multipart_part("file", b"app.apk") + multipart_end()
    assert_error(post_raw_upload(tenant, body), 400, "missing_parameter")
    assert_nothing_stored(tenant, data_dir)


# ------------------------------------------------------------------------------- hostile packages


@pytest.mark.parametrize(
    "content",
    [
        ipa_with_plist(plistlib.dumps({"CFBundleIdentifier": "x" * 3_000_000})),  # compresses to KBs
        ipa_with_plist(plistlib.dumps(["not", "a", "dict"])),
        ipa_with_plist(b"\x00" * 64),
        b"PK\x03\x04" + b"\x00" * 200,  # a zip's magic and nothing behind it
        b"PK\x05\x06" + b"\x00" * 18,  # an empty zip
    ],
    ids=["huge-plist", "plist-not-dict", "plist-garbage", "zip-magic-only", "empty-zip"],
)
def test_hostile_ipas_are_422(tenant: Tenant, data_dir: Path, content: bytes) -> None:
    assert_error(upload_app(tenant, content, filename="app.ipa"), 422, "invalid_package")
    assert_nothing_stored(tenant, data_dir)


def test_archive_member_names_are_never_extracted(tenant: Tenant, data_dir: Path) -> None:
    watch = data_dir.parent
    content = apk_bytes(extra={"../../../../qg-escaped.txt": b"x", "/tmp/qg-abs.txt": b"y"})
    response = upload_app(tenant, content)
    assert response.status_code == 200, response.text
    assert not [p for p in watch.rglob("qg-*.txt")]
    assert not Path("/tmp/qg-abs.txt").exists()


# -------------------------------------------------------------------------------- oversized JSON

FIVE_MB = b'{"name": "' + b"x" * (5 * 1024 * 1024) + b'"}'


def _chunks(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


# POST and PATCH /v1/test-cases take larger bodies (a test case's files): tests/test_test_case_files.py.
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/categories"), ("DELETE", "/v1/apps"), ("POST", "/v1/apps/delete"), ("POST", "/v1/test-cases/run")],
)
def test_huge_json_body_is_413(tenant: Tenant, method: str, path: str) -> None:
    headers = {"Content-Type": "application/json"}
    declared = tenant.client.request(method, path, content=FIVE_MB, headers=headers)
    assert_error(declared, 413, "payload_too_large")
    chunked = tenant.client.request(method, path, content=_chunks(FIVE_MB), headers=headers)
    assert "content-length" not in chunked.request.headers
    assert_error(chunked, 413, "payload_too_large")
    # The server is still fine, and nothing was created.
    assert tenant.client.get("/v1/test-cases/list").json() == []


def test_json_body_under_the_limit_is_parsed(tenant: Tenant) -> None:
    # Just under 1 MB of (valid, if odd) JSON is read, not refused: the limit is not set too low.
    body = json.dumps({"name": "Big", "description": "d" * 900_000}).encode()
    response = tenant.client.post(
        "/v1/test-cases", content=_chunks(body, 64 * 1024), headers={"Content-Type": "application/json"}
    )
    assert response.status_code != 413, response.text


# --------------------------------------------------------------------------- connections cut short


def _raw_upload_start(server: LiveServer, tenant: Tenant, declared: int) -> tuple[socket.socket, bytes]:
    host = urlsplit(server.url)
    sock = socket.create_connection((host.hostname, host.port), timeout=10)
    head = (
        "POST /v1/apps/upload HTTP/1.1\r\n"
        f"Host: {host.netloc}\r\n"
        f"X-Api-Key: {tenant.key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {declared}\r\n"
        "\r\n"
    ).encode()
    # A complete, valid APK and every field: only the closing boundary (and the rest of the declared
    # length) never arrives, so nothing but the framing says the upload is unfinished.
    body = _fields() + multipart_part("file", apk_bytes(size_padding=200_000), b"app.apk")
    return sock, head + body[:-2]


@pytest.mark.parametrize("how", ["close", "reset", "half-close"])
def test_upload_cut_off_mid_body_stores_nothing(server: LiveServer, tenant: Tenant, data_dir: Path, how: str) -> None:
    assert part_files(data_dir) == []
    sock, partial = _raw_upload_start(server, tenant, declared=1024 * 1024)
    try:
        sock.sendall(partial)
        # The server has started writing the file before the client goes away.
        deadline = time.monotonic() + 5
        while not part_files(data_dir):
            assert time.monotonic() < deadline, "the upload never reached storage"
            time.sleep(0.01)
        if how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif how == "half-close":
            # The body ends early but the client still listens: the server must not wait for the
            # missing bytes forever. Any reply it sends is an error, never a success.
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(65536):  # the socket's 10 s timeout fails the test
                reply += chunk
            assert not reply.startswith(b"HTTP/1.1 2"), reply[:300]
    finally:
        sock.close()
    assert wait_no_part_files(data_dir) == []
    assert app_ids(tenant) == []
    assert stored_files(data_dir, tenant.organization_id) == []
