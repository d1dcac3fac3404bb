"""Idempotency-Key on POST run, run-all and upload, against the live server on SQLite and PostgreSQL:
a repeat within 24 hours answers the first response and queues (or stores) nothing new; the same key
with another body is 422; concurrent repeats never double-queue; errors are not remembered."""

from __future__ import annotations

import concurrent.futures
import threading
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.base import utcnow
from qualgent.db.models import AppFile, Blob, IdempotencyKey, TestRun
from tests.fixtures.contract import assert_error
from tests.fixtures.factories import PIXEL_7, Database, Tenant, apk_bytes, create_test_case, upload_app
from tests.fixtures.servers import LiveServer


def _app(tenant: Tenant) -> str:
    response = upload_app(tenant)
    assert response.status_code == 200, response.text
    return str(response.json()["file"]["id"])


def _runs_of(db: Database, tenant: Tenant) -> int:
    async def count(session: AsyncSession) -> int:
        return int(
            await session.scalar(
                select(func.count()).select_from(TestRun).where(TestRun.organization_id == tenant.organization_id)
            )
            or 0
        )

    return db.run(count)


def _post_run(tenant: Tenant, body: dict[str, Any], key: str | None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return tenant.client.post("/v1/test-cases/run", json=body, headers=headers)


def test_a_repeated_run_returns_the_first_answer_and_queues_nothing(tenant: Tenant, db: Database) -> None:
    case = create_test_case(tenant, flow="- launchApp\n")
    body = {"jobs": [{"test_case_id": case["id"], "app_file_id": _app(tenant), "device": PIXEL_7}] * 2}
    first = _post_run(tenant, body, "build-1234-run")
    assert first.status_code == 200, first.text
    assert _runs_of(db, tenant) == 2
    again = _post_run(tenant, body, "build-1234-run")
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert _runs_of(db, tenant) == 2
    # Without a key, or with another one, the same body queues again.
    assert _post_run(tenant, body, None).status_code == 200
    other = _post_run(tenant, body, "build-1235-run")
    assert other.status_code == 200 and other.json() != first.json()
    assert _runs_of(db, tenant) == 6


def test_the_same_key_with_another_body_is_422_and_queues_nothing(tenant: Tenant, db: Database) -> None:
    case = create_test_case(tenant, flow="- launchApp\n")
    app = _app(tenant)
    job = {"test_case_id": case["id"], "app_file_id": app, "device": PIXEL_7}
    assert _post_run(tenant, {"jobs": [job]}, "k-1").status_code == 200
    reused = _post_run(tenant, {"jobs": [{**job, "priority": "high"}]}, "k-1")
    assert_error(reused, 422, "idempotency_key_reused")
    # The same key on another route is another request too.
    run_all = tenant.client.post(
        "/v1/test-cases/run-all", json={"app_file_id": app, "device": PIXEL_7}, headers={"Idempotency-Key": "k-1"}
    )
    assert_error(run_all, 422, "idempotency_key_reused")
    assert _runs_of(db, tenant) == 1


def test_run_all_is_idempotent(tenant: Tenant, db: Database) -> None:
    for n in range(3):
        create_test_case(tenant, name=f"Case {n}", flow="- launchApp\n")
    body = {"app_file_id": _app(tenant), "device": PIXEL_7}
    headers = {"Idempotency-Key": "pipeline-77/run-all"}
    first = tenant.client.post("/v1/test-cases/run-all", json=body, headers=headers)
    assert first.status_code == 200 and len(first.json()["jobs"]) == 3
    again = tenant.client.post("/v1/test-cases/run-all", json=body, headers=headers)
    assert again.json() == first.json()
    assert _runs_of(db, tenant) == 3


def test_a_repeated_upload_returns_the_first_app_and_stores_nothing(
    tenant: Tenant, db: Database, server: LiveServer
) -> None:
    content = apk_bytes(extra={"assets/unique.txt": b"idempotent upload"})
    headers = {"Idempotency-Key": "upload-abc"}

    def send(data: bytes, version: str = "1.0.0") -> httpx.Response:
        files = {"file": ("app.apk", data, "application/octet-stream")}
        return tenant.client.post(
            "/v1/apps/upload", data={"app_name": "MyApp", "version": version}, files=files, headers=headers
        )

    first = send(content)
    assert first.status_code == 200, first.text
    again = send(content)
    assert again.status_code == 200 and again.json() == first.json()

    async def rows(session: AsyncSession) -> list[AppFile]:
        result = await session.scalars(select(AppFile).where(AppFile.organization_id == tenant.organization_id))
        return list(result)

    [stored] = db.run(rows)
    assert stored.id == first.json()["file"]["id"]

    async def references(session: AsyncSession) -> int:
        return int(
            await session.scalar(
                select(Blob.ref_count).where(
                    Blob.organization_id == tenant.organization_id, Blob.sha256 == stored.sha256
                )
            )
        )

    # The repeat's reference to the (shared) content is dropped with its row; the content stays the first's.
    assert db.run(references) == 1
    link = tenant.client.get(f"/v1/apps/{stored.id}").json()["link"]
    assert httpx.get(link, follow_redirects=True).content == content
    # The repeat's own copy of the file was removed: only the first upload's file is on disk.
    org_dir = server.settings.data_dir / "apps" / tenant.organization_id
    files_on_disk = [p for p in server.settings.data_dir.rglob("*") if p.is_file() and tenant.organization_id in str(p)]
    assert len(files_on_disk) == 1, (org_dir, files_on_disk)
    # Another file (or another version) under the same key is another request.
    assert_error(send(apk_bytes(extra={"assets/other.txt": b"x"})), 422, "idempotency_key_reused")
    assert_error(send(content, version="2.0.0"), 422, "idempotency_key_reused")
    assert len(db.run(rows)) == 1


def test_concurrent_repeats_queue_once(tenant: Tenant, db: Database, server: LiveServer) -> None:
    case = create_test_case(tenant, flow="- launchApp\n")
    body = {"jobs": [{"test_case_id": case["id"], "app_file_id": _app(tenant), "device": PIXEL_7}]}
    start = threading.Barrier(8)

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, headers={"X-Api-Key": tenant.key}, timeout=30) as client:
            start.wait()
            return client.post("/v1/test-cases/run", json=body, headers={"Idempotency-Key": "race"})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    assert len({a.text for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 7
    assert _runs_of(db, tenant) == 1


def test_errors_are_not_remembered(tenant: Tenant, db: Database) -> None:
    case = create_test_case(tenant, flow="- launchApp\n")
    app = _app(tenant)
    bad = {"jobs": [{"test_case_id": "tc_doesnotexist00000000000000", "app_file_id": app, "device": PIXEL_7}]}
    assert _post_run(tenant, bad, "retry-me").status_code == 422
    good = {"jobs": [{"test_case_id": case["id"], "app_file_id": app, "device": PIXEL_7}]}
    assert _post_run(tenant, good, "retry-me").status_code == 200
    assert _runs_of(db, tenant) == 1


def test_keys_belong_to_an_organisation(tenant: Tenant, other_tenant: Tenant, db: Database) -> None:
    results = []
    for t in (tenant, other_tenant):
        case = create_test_case(t, flow="- launchApp\n")
        body = {"jobs": [{"test_case_id": case["id"], "app_file_id": _app(t), "device": PIXEL_7}]}
        response = _post_run(t, body, "shared-key")
        assert response.status_code == 200, response.text
        results.append(response.json())
    assert results[0] != results[1]
    assert _runs_of(db, tenant) == 1 and _runs_of(db, other_tenant) == 1


def test_a_key_expires_after_24_hours(tenant: Tenant, db: Database) -> None:
    case = create_test_case(tenant, flow="- launchApp\n")
    body = {"jobs": [{"test_case_id": case["id"], "app_file_id": _app(tenant), "device": PIXEL_7}]}
    first = _post_run(tenant, body, "old-key")

    async def age(session: AsyncSession) -> None:
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.organization_id == tenant.organization_id)
            .values(created_at=utcnow() - timedelta(hours=24, minutes=1))
        )

    async def keys(session: AsyncSession) -> list[str]:
        rows = await session.scalars(
            select(IdempotencyKey.key).where(IdempotencyKey.organization_id == tenant.organization_id)
        )
        return sorted(rows)

    db.run(age)
    later = _post_run(tenant, body, "old-key")  # an expired key is a new request
    assert later.status_code == 200 and later.json() != first.json()
    assert "idempotent-replayed" not in later.headers
    assert _runs_of(db, tenant) == 2
    assert _post_run(tenant, body, "old-key").json() == later.json()  # and is remembered afresh

    db.run(age)
    assert _post_run(tenant, body, "new-key").status_code == 200
    assert db.run(keys) == ["new-key"]  # a new claim forgot the expired keys: none accumulate


def test_malformed_keys_are_400(tenant: Tenant, db: Database) -> None:
    case = create_test_case(tenant, flow="- launchApp\n")
    body = {"jobs": [{"test_case_id": case["id"], "app_file_id": _app(tenant), "device": PIXEL_7}]}
    for key in ("", "has space", "x" * 256, "naïve"):
        response = tenant.client.post("/v1/test-cases/run", json=body, headers={"Idempotency-Key": key.encode("utf-8")})
        assert_error(response, 400, "invalid_idempotency_key")
    assert _runs_of(db, tenant) == 0
