"""App storage on both backends: local disk and S3-compatible object storage.

The S3 backend runs against moto's server mode on loopback (tests/fixtures/s3.py says why: no MinIO can
be installed here). Every test here runs on both stores and both databases: upload and download,
content stored once per organisation, deletion and the purge, resumable uploads, and refusals that
must leave nothing behind (no object, no S3 multipart upload in progress).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tusclient import client as tus

from qualgent.db.models import Blob
from qualgent.signing import signed_download_url
from tests.fixtures.agents import agent_token, running_agent, simulated_devices
from tests.fixtures.apps import assert_error, stored_files
from tests.fixtures.factories import PIXEL_7, Database, Tenant, apk_bytes, create_test_case, make_tenant, upload_app
from tests.fixtures.processes import clean_env
from tests.fixtures.s3 import LocalS3, local_s3
from tests.fixtures.servers import LiveServer, live_server

MB = 1024 * 1024
PART_SIZE = 5 * MB
LIMIT = 20 * MB
PREFIX = "builds"


@dataclass
class Store:
    kind: str
    server: LiveServer
    db: Database
    s3: LocalS3 | None = None
    bucket: str = ""

    def objects(self, organization_id: str) -> list[str]:
        """The organisation's stored app objects (names relative to its folder)."""
        if self.s3 is None:
            root = self.server.settings.data_dir / "apps" / organization_id
            return [str(p.relative_to(root)) for p in stored_files(self.server.settings.data_dir, organization_id)]
        prefix = f"{PREFIX}/{organization_id}/"
        return [key[len(prefix) :] for key in self.s3.keys(self.bucket, prefix)]

    def read(self, organization_id: str, name: str) -> bytes:
        if self.s3 is None:
            return (self.server.settings.data_dir / "apps" / organization_id / name).read_bytes()
        client = self.s3.client()
        try:
            return bytes(client.get_object(Bucket=self.bucket, Key=f"{PREFIX}/{organization_id}/{name}")["Body"].read())
        finally:
            client.close()

    def in_progress(self) -> list[Any]:
        """S3 multipart uploads begun and neither completed nor aborted; local staging files."""
        if self.s3 is None:
            tmp = self.server.settings.data_dir / "tmp"
            return sorted(tmp.glob("upload-*.part")) if tmp.exists() else []
        return self.s3.multipart_uploads(self.bucket)

    def env(self) -> dict[str, str]:
        """The environment for a `qualgent` command against this server's database and store."""
        settings = self.server.settings
        values = {
            "QUALGENT_DATA_DIR": str(settings.data_dir),
            "QUALGENT_DATABASE_URL": settings.resolved_database_url,
        }
        if self.s3 is not None:
            values.update(
                {
                    "QUALGENT_STORAGE_URL": settings.storage_url or "",
                    "QUALGENT_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
                    "QUALGENT_S3_ACCESS_KEY_ID": settings.s3_access_key_id or "",
                    "QUALGENT_S3_SECRET_ACCESS_KEY": settings.s3_secret_access_key or "",
                }
            )
        return clean_env(values)

    def blob_refs(self, organization_id: str) -> dict[str, int]:
        async def read(session: AsyncSession) -> dict[str, int]:
            rows = await session.execute(
                select(Blob.sha256, Blob.ref_count).where(Blob.organization_id == organization_id)
            )
            return {sha: count for sha, count in rows.all()}

        return self.db.run(read)


@pytest.fixture(scope="session")
def s3() -> Iterator[LocalS3]:
    with local_s3() as server:
        yield server


@pytest.fixture(scope="module", params=["local", "s3"])
def store(
    request: pytest.FixtureRequest, backend: str, s3: LocalS3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    kind = str(request.param)
    overrides: dict[str, Any] = {"s3_part_size": PART_SIZE, "max_upload_bytes": LIMIT}
    bucket = ""
    if kind == "s3":
        bucket = s3.new_bucket()
        overrides.update(s3.settings(bucket, PREFIX))
    with live_server(backend, tmp_path_factory.mktemp(f"store-{kind}-{backend}"), **overrides) as server:
        db = Database(server.settings.resolved_database_url)
        try:
            yield Store(kind, server, db, s3 if kind == "s3" else None, bucket)
        finally:
            db.close()


@pytest.fixture
def owner(store: Store) -> Iterator[Tenant]:
    tenant = make_tenant(store.db, store.server.url)
    yield tenant
    tenant.client.close()


def _unique_apk(size: int = 64 * 1024) -> bytes:
    return apk_bytes(extra={"assets/noise.bin": secrets.token_bytes(size)})


def _upload(tenant: Tenant, content: bytes, **fields: str) -> dict[str, Any]:
    response = upload_app(tenant, content, **fields)
    assert response.status_code == 200, response.text
    file: dict[str, Any] = response.json()["file"]
    return file


def _purge(store: Store, *args: str, now: datetime | None = None) -> str:
    """The purge, in this process (what the server runs periodically and `qualgent admin purge` runs)."""
    from qualgent.apps.purge import purge
    from qualgent.db.dialect import write_sessionmaker
    from qualgent.db.session import make_engine
    from qualgent.state import make_storage

    settings = store.server.settings
    if args:
        settings = settings.model_copy(update={"app_retention_days": float(args[-1])})

    async def run() -> str:
        engine = make_engine(settings.resolved_database_url, pool_size=1)
        storage = make_storage(settings)
        try:
            return str(await purge(settings, write_sessionmaker(engine), storage, now))
        finally:
            await storage.close()
            await engine.dispose()

    return asyncio.run(run())


def _purge_command(store: Store, *args: str) -> str:
    """`qualgent admin purge` as a command, against the server's database and store."""
    done = subprocess.run(
        [sys.executable, "-m", "qualgent", "admin", "purge", *args],
        env=store.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# ------------------------------------------------------------------------------------------- tests


def test_upload_then_download_through_the_link(store: Store, owner: Tenant) -> None:
    content = _unique_apk()
    file = _upload(owner, content)
    [name] = store.objects(owner.organization_id)
    assert store.read(owner.organization_id, name) == content
    assert store.in_progress() == []

    link = owner.client.get(f"/v1/apps/{file['id']}").json()["link"]
    if store.kind == "s3":
        # The store's own pre-signed URL, valid 5 minutes: the bytes do not pass through the API server.
        assert link.startswith(f"{store.s3.endpoint_url}/{store.bucket}/{PREFIX}/") if store.s3 else False
        assert parse_qs(urlsplit(link).query)["X-Amz-Expires"] == ["300"]
    else:
        assert link.startswith(f"{store.server.url}/v1/apps/{file['id']}/download?")
    downloaded = httpx.get(link)
    assert downloaded.status_code == 200
    assert downloaded.content == content

    # The API's own signed download route serves it too (on S3, by redirecting to the store).
    ours = signed_download_url(store.server.url, b"test-secret-key", owner.organization_id, file["id"], 300)
    via_api = httpx.get(ours, follow_redirects=True)
    assert via_api.status_code == 200 and via_api.content == content


def test_identical_bytes_are_stored_once_per_organisation(store: Store, owner: Tenant) -> None:
    content = _unique_apk()
    first = _upload(owner, content, app_name="First", version="1")
    second = _upload(owner, content, filename="copy.apk", app_name="Second", version="2")
    assert first["id"] != second["id"]
    assert first["sha256"] == second["sha256"] == hashlib.sha256(content).hexdigest()
    # Two app records with their own names and versions...
    listed = {app["id"]: app for app in owner.client.get("/v1/apps").json()}
    assert (listed[first["id"]]["app_name"], listed[second["id"]]["app_name"]) == ("First", "Second")
    assert listed[second["id"]]["name"] == "copy.apk"
    # ...and one stored object, counted twice.
    assert len(store.objects(owner.organization_id)) == 1
    assert store.blob_refs(owner.organization_id) == {first["sha256"]: 2}
    for app in (first, second):
        assert httpx.get(owner.client.get(f"/v1/apps/{app['id']}").json()["link"]).content == content

    # Another organisation's identical upload is its own object: nothing is shared across tenants.
    other = make_tenant(store.db, store.server.url)
    try:
        _upload(other, content)
        assert len(store.objects(other.organization_id)) == 1
        assert len(store.objects(owner.organization_id)) == 1
    finally:
        other.client.close()


def test_deleted_apps_content_is_purged_after_retention_once_unreferenced(store: Store, owner: Tenant) -> None:
    shared, alone = _unique_apk(), _unique_apk()
    a = _upload(owner, shared, app_name="A")
    b = _upload(owner, shared, app_name="B")
    c = _upload(owner, alone, app_name="C")
    assert len(store.objects(owner.organization_id)) == 2

    assert owner.client.request("DELETE", "/v1/apps", json={"files": [a["id"]]}).status_code == 200
    # Within the retention period nothing is purged.
    assert "0 deleted apps released" in _purge(store)
    assert len(store.objects(owner.organization_id)) == 2
    # Past it, A's reference goes; B still uses the bytes, so they stay.
    assert "1 deleted apps released, 0 stored objects deleted" in _purge(store, "--retention-days", "0")
    assert len(store.objects(owner.organization_id)) == 2
    assert store.blob_refs(owner.organization_id)[a["sha256"]] == 1
    assert httpx.get(owner.client.get(f"/v1/apps/{b['id']}").json()["link"]).content == shared

    assert owner.client.request("DELETE", "/v1/apps", json={"files": [b["id"]]}).status_code == 200
    assert "1 deleted apps released, 1 stored objects deleted" in _purge(store, "--retention-days", "0")
    [left] = store.objects(owner.organization_id)
    assert store.read(owner.organization_id, left) == alone
    assert store.blob_refs(owner.organization_id) == {c["sha256"]: 1}
    # Purging again (with the command this time) changes nothing; the live app is whole.
    assert "0 deleted apps released, 0 stored objects deleted" in _purge_command(store, "--retention-days", "0")
    assert httpx.get(owner.client.get(f"/v1/apps/{c['id']}").json()["link"]).content == alone

    # The same bytes uploaded again after the purge are stored afresh.
    again = _upload(owner, shared)
    assert httpx.get(owner.client.get(f"/v1/apps/{again['id']}").json()["link"]).content == shared


def test_a_large_upload_goes_up_in_parts(store: Store, owner: Tenant) -> None:
    content = apk_bytes(extra={"assets/big.bin": os.urandom(12 * MB)})
    file = _upload(owner, content)
    assert file["file_size"] == len(content)
    [name] = store.objects(owner.organization_id)
    assert hashlib.sha256(store.read(owner.organization_id, name)).hexdigest() == file["sha256"]
    if store.s3 is not None:
        client = store.s3.client()
        try:
            etag = client.head_object(Bucket=store.bucket, Key=f"{PREFIX}/{owner.organization_id}/{name}")["ETag"]
        finally:
            client.close()
        # A multipart object's ETag ends in its number of parts: 12+ MiB in 5 MiB parts is 3.
        assert etag.strip('"').endswith("-3"), etag
    assert store.in_progress() == []


def test_refused_uploads_leave_nothing_in_the_store(store: Store, owner: Tenant) -> None:
    # Over the limit, streamed without a Content-Length: refused mid-stream after parts went up.
    request = owner.client.build_request(
        "POST",
        "/v1/apps/upload",
        data={"app_name": "Big", "version": "1"},
        files={"file": ("big.apk", apk_bytes(extra={"assets/x.bin": os.urandom(LIMIT + MB)}), "application/zip")},
    )
    body = request.read()

    def stream() -> Iterator[bytes]:
        for i in range(0, len(body), MB):
            yield body[i : i + MB]

    response = owner.client.post(
        "/v1/apps/upload", content=stream(), headers={"Content-Type": request.headers["content-type"]}
    )
    assert_error(response, 413, "payload_too_large")
    # Not a package at all, 7 MiB of it (more than a part).
    assert_error(upload_app(owner, os.urandom(7 * MB), filename="fake.apk"), 422, "invalid_package")
    assert owner.client.get("/v1/apps").json() == []
    assert store.objects(owner.organization_id) == []
    assert store.in_progress() == []


def test_resumable_upload_lands_in_the_store(store: Store, owner: Tenant) -> None:
    content = apk_bytes(extra={"assets/big.bin": os.urandom(6 * MB)})
    uploader = tus.TusClient(f"{store.server.url}/v1/apps/uploads/", headers={"X-Api-Key": owner.key}).uploader(
        file_stream=io.BytesIO(content),
        chunk_size=2 * MB,
        metadata={"filename": "big.apk", "app_name": "Tus", "version": "1"},
    )
    uploader.upload_chunk()
    resumed = tus.TusClient(f"{store.server.url}/v1/apps/uploads/", headers={"X-Api-Key": owner.key}).uploader(
        file_stream=io.BytesIO(content), chunk_size=2 * MB, url=uploader.url
    )
    assert resumed.offset == 2 * MB
    resumed.upload()
    status = owner.client.get(urlsplit(uploader.url).path).json()
    assert status["app"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert httpx.get(status["app"]["link"]).content == content
    [name] = store.objects(owner.organization_id)
    assert store.read(owner.organization_id, name) == content


def test_storage_url_must_be_s3_or_unset(tmp_path: Path) -> None:
    from qualgent.config import Settings
    from qualgent.state import make_storage

    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        make_storage(Settings(_env_file=None, data_dir=tmp_path, storage_url="ftp://example.com/x"))


def test_a_run_fetches_its_build_from_the_store_and_keeps_its_screenshots_there(
    store: Store, owner: Tenant, tmp_path: Path
) -> None:
    """A device agent downloads the build through the app's link (on S3, the store's own pre-signed
    URL), checks its SHA-256 and runs the flow; the flow's appId is checked against the package."""
    file = _upload(owner, _unique_apk())
    flows = {
        "passed": "appId: com.example.app\n---\n- launchApp\n- takeScreenshot: launched\n",
        "failed": "appId: com.other.app\n---\n- launchApp\n",
    }
    runs = {}
    for expected, flow in flows.items():
        case = create_test_case(owner, name=f"On {store.kind}: {expected}", flow=flow)
        queued = owner.client.post(
            "/v1/test-cases/run",
            json={"jobs": [{"test_case_id": case["id"], "app_file_id": file["id"], "device": PIXEL_7}]},
        )
        assert queued.status_code == 200, queued.text
        runs[expected] = queued.json()["jobs"][0]["id"]
    devices = simulated_devices(["Pixel 7"])
    with running_agent(store.server.url, agent_token(store.db), devices, tmp_path, step_seconds=0.01):
        deadline = time.monotonic() + 60
        status: dict[str, str] = {}
        while time.monotonic() < deadline:
            status = {k: owner.client.get(f"/v1/jobs/status/{r}").json()["status"] for k, r in runs.items()}
            if all(s in ("passed", "failed") for s in status.values()):
                break
            time.sleep(0.1)
    assert status == {"passed": "passed", "failed": "failed"}
    failure = owner.client.get(f"/v1/jobs/status/{runs['failed']}").json()["failure"]
    assert "com.other.app" in failure["message"] and "com.example.app" in failure["message"]
    report = owner.client.get(f"/v1/jobs/{runs['passed']}/report").json()
    shot = next(step["screenshot"] for step in report["steps"] if step.get("screenshot"))
    assert httpx.get(shot).content.startswith(b"\x89PNG")
    if store.s3 is not None:
        assert any("/screenshots/" in key for key in store.s3.keys(store.bucket, f"{PREFIX}/{owner.organization_id}/"))


def test_expired_resumable_uploads_and_their_bytes_are_purged(store: Store, owner: Tenant) -> None:
    tus_headers = {"Tus-Resumable": "1.0.0"}
    locations = []
    for name in ("one", "two"):
        created = owner.client.post(
            "/v1/apps/uploads/",
            headers={
                **tus_headers,
                "Upload-Length": "1000",
                "Upload-Metadata": f"filename {base64.b64encode(name.encode() + b'.apk').decode()},"
                f"app_name {base64.b64encode(b'A').decode()},version {base64.b64encode(b'1').decode()}",
            },
        )
        assert created.status_code == 201, created.text
        location = urlsplit(created.headers["Location"]).path
        sent = owner.client.patch(
            location,
            content=b"x" * 400,
            headers={**tus_headers, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        )
        assert sent.status_code == 204, sent.text
        locations.append(location)
    parts = [store.server.settings.tus_dir / f"{loc.rsplit('/', 1)[-1]}.part" for loc in locations]
    assert all(p.exists() for p in parts)

    # Within the expiry nothing goes; a day later (the default expiry) both have expired.
    assert "0 expired uploads removed" in _purge(store)
    assert "2 expired uploads removed" in _purge(store, now=datetime.now(UTC) + timedelta(days=1, minutes=1))
    for location, part in zip(locations, parts, strict=True):
        assert owner.client.head(location, headers=tus_headers).status_code == 404
        assert not part.exists()
