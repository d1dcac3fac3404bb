"""What a run records besides screenshots: a video of the device's screen and the device's log.

Real agents run flows on simulated devices (which encode real H.264 MP4s of their screens and keep a
log of what each step did) against a live server, on both databases and both stores (local disk, and
S3 through moto's server as in tests/test_app_storage.py). The video and the log are uploaded through
the agent route, listed in the run's report with pre-signed links, played and shown on the run's page,
hidden from other organisations, and deleted with the run's screenshots once the run is old.
"""

from __future__ import annotations

import io
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.client import Client
from qualgent.db.models import RunArtifact, RunStep, TestRun
from qualgent.signing import signed_path_url
from tests.fixtures.agents import agent_token, running_agent, simulated_devices
from tests.fixtures.cli import Cli
from tests.fixtures.factories import (
    IPHONE_14_PRO,
    Database,
    Tenant,
    create_test_case,
    ipa_bytes,
    make_tenant,
    upload_app,
)
from tests.fixtures.flows import FAILING_FLOW, PASSING_FLOW, TEXTS
from tests.fixtures.processes import clean_env
from tests.fixtures.s3 import LocalS3, local_s3
from tests.fixtures.servers import LiveServer, live_server
from tests.fixtures.web import set_password, sign_in

MB = 1024 * 1024
VIDEO_LIMIT = 2 * MB  # a simulated recording of a short flow is tens of kilobytes
LOG_LIMIT = 64 * 1024
PREFIX = "store"
SECRET = b"test-secret-key"

RECORDING_FLOW = """appId: com.example.app
---
- launchApp
- startRecording: videos/login
- tapOn: Sign in
- assertVisible: Welcome back
- stopRecording
- back
"""


@dataclass
class Store:
    kind: str
    server: LiveServer
    db: Database
    s3: LocalS3 | None = None
    bucket: str = ""

    def keys(self, organization_id: str) -> set[str]:
        """Every stored object of the organisation (names relative to its folder)."""
        if self.s3 is None:
            root = self.server.settings.data_dir / "apps" / organization_id
            return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()
        prefix = f"{PREFIX}/{organization_id}/"
        return {key[len(prefix) :] for key in self.s3.keys(self.bucket, prefix)}

    def in_progress(self) -> list[Any]:
        """S3 multipart uploads neither completed nor aborted; local staging files."""
        if self.s3 is None:
            tmp = self.server.settings.data_dir / "tmp"
            return sorted(tmp.glob("upload-*.part")) if tmp.exists() else []
        return self.s3.multipart_uploads(self.bucket)

    def env(self) -> dict[str, str]:
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


@pytest.fixture(scope="session")
def s3() -> Iterator[LocalS3]:
    with local_s3() as server:
        yield server


@pytest.fixture(scope="module", params=["local", "s3"])
def store(
    request: pytest.FixtureRequest, backend: str, s3: LocalS3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    kind = str(request.param)
    overrides: dict[str, Any] = {"max_video_bytes": VIDEO_LIMIT, "max_device_log_bytes": LOG_LIMIT}
    bucket = ""
    if kind == "s3":
        bucket = s3.new_bucket()
        overrides.update(s3.settings(bucket, PREFIX))
    with live_server(backend, tmp_path_factory.mktemp(f"artifacts-{kind}-{backend}"), **overrides) as server:
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


# ------------------------------------------------------------------------------------------ helpers


def _app(tenant: Tenant) -> str:
    response = upload_app(tenant, ipa_bytes(texts=TEXTS), filename="Example.ipa", app_name="Example", version="1")
    assert response.status_code == 200, response.text
    return str(response.json()["file"]["id"])


def _queue(tenant: Tenant, case_id: str, app_id: str, **extra: Any) -> str:
    job = {"test_case_id": case_id, "app_file_id": app_id, "device": IPHONE_14_PRO, **extra}
    response = tenant.client.post("/v1/test-cases/run", json={"jobs": [job]})
    assert response.status_code == 200, response.text
    return str(response.json()["jobs"][0]["id"])


def _wait(tenant: Tenant, run_ids: list[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        states = {run_id: tenant.client.get(f"/v1/jobs/status/{run_id}").json() for run_id in run_ids}
        if all(s["status"] in ("passed", "failed", "cancelled") for s in states.values()):
            return states
        assert time.monotonic() < deadline, states
        time.sleep(0.1)


def _execute(store: Store, tenant: Tenant, cache: Path, run_ids: list[str], **agent: Any) -> dict[str, Any]:
    """Run the queued runs on a real agent with a simulated iPhone; their final states."""
    token = agent_token(store.db)
    with running_agent(store.server.url, token, simulated_devices(["iPhone 14 Pro"]), cache, **agent):
        return _wait(tenant, run_ids)


def _report(tenant: Tenant, run_id: str) -> dict[str, Any]:
    response = tenant.client.get(f"/v1/jobs/{run_id}/report")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in report["artifacts"]}


def _download(store: Store, link: str, **headers: str) -> httpx.Response:
    """A pre-signed link as a client follows it: on S3 the API redirects to the store's own URL."""
    first = httpx.get(link, headers=headers)
    if store.kind == "s3":
        assert first.status_code == 307, first.text
        assert store.s3 is not None and first.headers["location"].startswith(store.s3.endpoint_url)
        return httpx.get(first.headers["location"], headers=headers)
    return first


def assert_h264_mp4(data: bytes) -> None:
    """An MP4 (ISO BMFF: the file opens with its `ftyp` box) whose video stream is H.264 (avc1)."""
    import av

    assert len(data) > 1000, len(data)
    assert data[4:8] == b"ftyp", data[:16]
    assert b"avc1" in data
    with av.open(io.BytesIO(data)) as container:
        [stream] = container.streams.video
        assert stream.codec_context.name == "h264"
        frames = sum(1 for _ in container.decode(stream))
    assert frames >= 2


def _signed_in(tenant: Tenant, db: Database) -> None:
    set_password(db, tenant.user_email)
    sign_in(tenant.client, tenant.user_email)


def _rows(db: Database, run_id: str) -> tuple[list[Any], list[Any]]:
    """The run's artifact rows and step rows, straight from the database."""

    async def read(session: AsyncSession) -> tuple[list[Any], list[Any]]:
        artifacts = (await session.execute(select(RunArtifact).where(RunArtifact.run_id == run_id))).scalars()
        steps = (await session.execute(select(RunStep).where(RunStep.run_id == run_id))).scalars()
        return list(artifacts), list(steps)

    return db.run(read)


# -------------------------------------------------------------------------------- recorded runs


def test_a_recorded_run_has_a_real_video_and_the_device_log(store: Store, owner: Tenant, tmp_path: Path) -> None:
    case = create_test_case(owner, flow=PASSING_FLOW)
    assert case["record_video"] is False
    run_id = _queue(owner, case["id"], _app(owner), record_video=True)
    assert _execute(store, owner, tmp_path, [run_id])[run_id]["status"] == "passed"

    report = _report(owner, run_id)
    assert [a["name"] for a in report["artifacts"]] == ["run.mp4", "device.log"]  # videos first
    video, device_log = report["artifacts"]
    assert (video["kind"], video["content_type"], video["step"]) == ("video", "video/mp4", None)
    assert (device_log["kind"], device_log["content_type"], device_log["step"]) == (
        "log",
        "text/plain; charset=utf-8",
        None,
    )
    assert {f"artifacts/{run_id}/1-run.mp4", f"artifacts/{run_id}/1-device.log"} <= store.keys(owner.organization_id)

    # The video: a real H.264 MP4 of the simulated screen, downloadable in ranges (what lets a player seek).
    downloaded = _download(store, video["link"])
    assert downloaded.status_code == 200
    data = downloaded.content
    assert len(data) == video["size"]
    assert_h264_mp4(data)
    # Shown in the browser (the video plays on the run page's link), from the API or the store alike.
    assert downloaded.headers["content-disposition"] == "inline; filename*=UTF-8''run.mp4"
    assert downloaded.headers["content-type"] == "video/mp4"
    ranged = _download(store, video["link"], Range="bytes=0-99")
    assert ranged.status_code == 206, ranged.text
    assert ranged.content == data[:100]
    assert ranged.headers["content-range"] == f"bytes 0-99/{len(data)}"

    # The device log names every step the device did.
    text = _download(store, device_log["link"]).text
    assert len(text.encode()) == device_log["size"]
    for step in report["steps"]:
        assert step["description"] in text, (step["description"], text)

    # A link opens only what it was signed for: another name, another attempt or another run is refused.
    for tampered in (
        video["link"].replace("/run.mp4", "/device.log"),
        video["link"].replace("/artifacts/1/", "/artifacts/2/"),
        video["link"].replace("signature=", "signature=0"),
    ):
        assert httpx.get(tampered).status_code == 403

    # The run's page plays the video and links the log, from the dashboard's own routes.
    _signed_in(owner, store.db)
    page = owner.client.get(f"/test-runs/{run_id}")
    assert page.status_code == 200
    src = f"/test-runs/{run_id}/artifacts/1/run.mp4"
    assert f'<video controls preload="metadata" src="{src}"' in page.text
    assert f'href="/test-runs/{run_id}/artifacts/1/device.log"' in page.text
    played = owner.client.get(src)
    assert played.status_code == 200 and played.headers["content-type"] == "video/mp4"
    assert played.content == data
    seek = owner.client.get(src, headers={"Range": f"bytes={len(data) - 50}-"})
    assert seek.status_code == 206 and seek.content == data[-50:]
    assert seek.headers["content-range"] == f"bytes {len(data) - 50}-{len(data) - 1}/{len(data)}"
    beyond = owner.client.get(src, headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    assert owner.client.get(f"/test-runs/{run_id}/artifacts/1/device.log").text == text
    assert owner.client.get(f"/test-runs/{run_id}/artifacts/1/other.mp4").status_code == 404

    # Another organisation finds nothing: not on the dashboard, not with a link signed for itself.
    other = make_tenant(store.db, store.server.url)
    try:
        _signed_in(other, store.db)
        assert other.client.get(src).status_code == 404
        forged = signed_path_url(
            store.server.url, SECRET, other.organization_id, f"/v1/jobs/{run_id}/artifacts/1/run.mp4", 300
        )
        response = httpx.get(forged)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
        assert owner.organization_id not in response.text
    finally:
        other.client.close()


def test_test_cases_that_record_record_every_run(store: Store, owner: Tenant, tmp_path: Path) -> None:
    app = _app(owner)
    recording = create_test_case(owner, name="Always recorded", flow=PASSING_FLOW, record_video=True)
    assert owner.client.get(f"/v1/test-cases/{recording['id']}").json()["record_video"] is True
    plain = create_test_case(owner, name="Not recorded", flow=PASSING_FLOW)
    recorded_run = _queue(owner, recording["id"], app)  # the request asks for nothing; the test case does
    plain_run = _queue(owner, plain["id"], app)
    states = _execute(store, owner, tmp_path, [recorded_run, plain_run])
    assert {s["status"] for s in states.values()} == {"passed"}

    assert [a["name"] for a in _report(owner, recorded_run)["artifacts"]] == ["run.mp4", "device.log"]
    # A run nobody asked to record has no video, but it has the device's log.
    assert [a["name"] for a in _report(owner, plain_run)["artifacts"]] == ["device.log"]
    # The SDK reads them too.
    with Client(owner.key, store.server.url) as sdk:
        assert sdk.get_test_case(recording["id"]).record_video is True
        [video, device_log] = sdk.run_report(recorded_run).artifacts
        assert (video.name, video.kind, video.step, device_log.kind) == ("run.mp4", "video", None, "log")
        assert video.link.startswith(f"{store.server.url}/v1/jobs/{recorded_run}/artifacts/1/run.mp4?")

    # The option is changed like any other field, and is never null.
    patched = owner.client.patch(f"/v1/test-cases/{recording['id']}", json={"record_video": False})
    assert patched.status_code == 200 and patched.json()["record_video"] is False
    assert owner.client.patch(f"/v1/test-cases/{recording['id']}", json={"record_video": None}).status_code == 422


def test_run_all_records_when_asked(store: Store, owner: Tenant, tmp_path: Path) -> None:
    app = _app(owner)
    create_test_case(owner, name="One", flow=PASSING_FLOW)
    create_test_case(owner, name="Two", flow=PASSING_FLOW)
    response = owner.client.post(
        "/v1/test-cases/run-all", json={"app_file_id": app, "device": IPHONE_14_PRO, "record_video": True}
    )
    assert response.status_code == 200, response.text
    run_ids = [j["id"] for j in response.json()["jobs"]]
    assert len(run_ids) == 2
    _execute(store, owner, tmp_path, run_ids)
    for run_id in run_ids:
        video = _by_name(_report(owner, run_id))["run.mp4"]
        assert_h264_mp4(_download(store, video["link"]).content)


def test_a_failed_run_shows_the_end_of_its_device_log_by_the_failing_step(
    store: Store, owner: Tenant, tmp_path: Path
) -> None:
    # 250 steps that pass before the one that fails: the log is longer than the 200 lines a page shows.
    steps = "".join(f"- tapOn:\n    text: Sign in\n    label: step {n}\n" for n in range(250))
    flow = FAILING_FLOW.replace("- launchApp\n", "- launchApp\n" + steps)
    run_id = _queue(owner, create_test_case(owner, flow=flow)["id"], _app(owner))
    done = _execute(store, owner, tmp_path, [run_id])[run_id]
    assert done["status"] == "failed" and done["failure"]["step"] == 252

    report = _report(owner, run_id)
    assert [a["name"] for a in report["artifacts"]] == ["device.log"]  # no video: none was asked for
    text = _download(store, report["artifacts"][0]["link"]).text
    lines = text.splitlines()
    assert len(lines) == 253 and 'assertVisible "Checkout complete"' in lines[-1]

    _signed_in(owner, store.db)
    page = owner.client.get(f"/test-runs/{run_id}").text
    failing = page.split('id="step-1-252"', 1)[1].split("</li>", 1)[0]
    tail = failing.split('id="device-log-tail"', 1)[1].split("</pre>", 1)[0]
    shown = tail.split(">", 1)[1].strip("\n").split("\n")
    assert len(shown) == 200
    assert shown == [line.replace('"', "&#34;") for line in lines[-200:]]
    assert f'href="/test-runs/{run_id}/artifacts/1/device.log"' in failing
    # Only there: the passing steps have no log of the device's.
    assert page.count('id="device-log-tail"') == 1
    # The failing step's screenshot is on the page and served by this server, whatever the store.
    shot = f"/test-runs/{run_id}/screenshots/1/252.png"
    assert f'src="{shot}"' in failing
    picture = owner.client.get(shot)
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")


def test_a_flow_s_own_recording_is_uploaded_with_its_step(store: Store, owner: Tenant, tmp_path: Path) -> None:
    run_id = _queue(owner, create_test_case(owner, flow=RECORDING_FLOW)["id"], _app(owner))
    assert _execute(store, owner, tmp_path, [run_id])[run_id]["status"] == "passed"
    report = _report(owner, run_id)
    stop = next(s for s in report["steps"] if s["description"].startswith("stopRecording"))
    artifacts = _by_name(report)
    assert set(artifacts) == {"login.mp4", "device.log"}  # the flow's path, made a file name
    assert artifacts["login.mp4"]["step"] == stop["index"] == 4
    assert artifacts["device.log"]["step"] is None
    assert_h264_mp4(_download(store, artifacts["login.mp4"]["link"]).content)

    _signed_in(owner, store.db)
    page = owner.client.get(f"/test-runs/{run_id}").text
    step_item = page.split(f'id="step-1-{stop["index"]}"', 1)[1].split("</li>", 1)[0]
    assert f'<video controls preload="metadata" src="/test-runs/{run_id}/artifacts/1/login.mp4"' in step_item


# The CLI talks to the API only: where the server stores files does not matter, so one store is enough.
@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_the_cli_asks_for_videos(store: Store, owner: Tenant, tmp_path: Path) -> None:
    app = _app(owner)
    case = create_test_case(owner, name="Recorded from CI", flow=PASSING_FLOW)
    cli = Cli(store.server.url, owner.key, tmp_path)
    target = ("--device", "iPhone 14 Pro", "--app", app, "--json")

    def queued(*args: str) -> list[str]:
        done = cli(*args, *target)
        assert done.code == 0, done
        return [job["id"] for job in done.json()["runs"]]

    recorded = queued("run", case["id"], "--record-video") + queued("run-all", "--record-video")
    plain = queued("run", case["id"]) + queued("run-all")
    assert len(recorded) == len(plain) == 2

    async def flags(session: AsyncSession) -> dict[str, bool]:
        rows = await session.execute(select(TestRun.id, TestRun.record_video).where(TestRun.id.in_(recorded + plain)))
        return {run_id: flag for run_id, flag in rows.all()}

    assert store.db.run(flags) == {**dict.fromkeys(recorded, True), **dict.fromkeys(plain, False)}
    for run_id in recorded + plain:
        assert owner.client.post(f"/v1/jobs/{run_id}/cancel").status_code == 200


# ------------------------------------------------------------------------------- the agent route


def _claimed_run(store: Store, tenant: Tenant) -> tuple[str, str, dict[str, str]]:
    """A run claimed by a raw agent (no loop): (run id, agent token, its headers)."""
    run_id = _queue(tenant, create_test_case(tenant, flow="- launchApp\n")["id"], _app(tenant))
    token = agent_token(store.db, "raw")
    headers = {"Authorization": f"Bearer {token}"}
    base = store.server.url
    devices = [{"id": f"raw-{secrets.token_hex(4)}", "name": "iPhone 14 Pro", "platform": "iOS", "os_version": "16.0"}]
    registered = httpx.post(f"{base}/v1/agent/register", json={"devices": devices}, headers=headers)
    assert registered.status_code == 200, registered.text
    device_ids = [d["id"] for d in registered.json()["devices"]]
    claimed = httpx.post(f"{base}/v1/agent/claim", json={"device_ids": device_ids, "wait_seconds": 5}, headers=headers)
    run = claimed.json()["run"]
    assert run is not None and run["id"] == run_id and run["attempt"] == 1, claimed.text
    assert run["record_video"] is False
    return run_id, token, headers


def test_the_artifact_route_refuses_what_it_must(store: Store, owner: Tenant) -> None:
    run_id, _token, headers = _claimed_run(store, owner)
    url = f"{store.server.url}/v1/agent/runs/{run_id}/artifacts"
    video = {"attempt": 1, "kind": "video"}
    mp4 = {**headers, "Content-Type": "video/mp4"}

    def put(name: str, body: Any, params: dict[str, Any] = video, sent: dict[str, str] = mp4) -> httpx.Response:
        return httpx.put(f"{url}/{name}", params=params, content=body, headers=sent, timeout=30)

    # Another attempt, or another agent: the run moved on as far as they know.
    for response in (
        put("run.mp4", b"x", {**video, "attempt": 2}),
        put("run.mp4", b"x", sent={"Authorization": f"Bearer {agent_token(store.db, 'stranger')}"}),
    ):
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "run_moved_on"
    # Names are safe file names.
    for name in ("bad%20name.mp4", ".hidden.mp4", "a..b.mp4", "x" * 201, "caf%C3%A9.mp4", "a%5Cb.mp4"):
        response = put(name, b"x")
        assert response.status_code == 422, (name, response.text)
        assert response.json()["error"]["code"] == "invalid_artifact_name"
    assert put("run.gif", b"x", {**video, "kind": "gif"}).status_code == 422
    html = put("device.log", b"<script>", {"attempt": 1, "kind": "log"}, {**headers, "Content-Type": "text/html"})
    assert html.status_code == 422 and html.json()["error"]["code"] == "invalid_content_type"
    # Over the limit of its kind: refused as declared, and as it streams in (no length announced).
    assert put("run.mp4", b"v" * (VIDEO_LIMIT + 1)).status_code == 413

    def stream(total: int) -> Iterator[bytes]:
        for _ in range(total // 8192 + 1):
            yield b"v" * 8192

    assert put("run.mp4", stream(VIDEO_LIMIT + 10_000)).status_code == 413
    log_params = {"attempt": 1, "kind": "log"}
    assert put("device.log", b"l" * (LOG_LIMIT + 1), log_params, headers).status_code == 413
    # Nothing was kept of any of these.
    assert _report(owner, run_id)["artifacts"] == []
    assert not any(key.startswith("artifacts/") for key in store.keys(owner.organization_id))
    assert store.in_progress() == []

    # An upload within the limit is stored; one of the same name replaces it.
    first = secrets.token_bytes(3000)
    stored = put("clip.mp4", first, {**video, "step": 0})
    assert stored.status_code == 200, stored.text
    assert stored.json() == {"success": True, "name": "clip.mp4", "kind": "video", "size": 3000}
    # Larger than a log may be and than any JSON body (1 MiB): a video has its own limit, and the body
    # limit of the other routes lets it through.
    second = secrets.token_bytes(MB + MB // 2)
    assert put("clip.mp4", stream_of(second), {**video, "step": 0}).status_code == 200
    assert put("device.log", b"line one\nline two\n", log_params, headers).status_code == 200
    [clip, device_log] = _report(owner, run_id)["artifacts"]
    assert (clip["name"], clip["size"], clip["step"]) == ("clip.mp4", len(second), 0)
    assert _download(store, clip["link"]).content == second
    assert device_log["content_type"] == "text/plain; charset=utf-8"
    assert _download(store, device_log["link"]).content == b"line one\nline two\n"
    assert {key for key in store.keys(owner.organization_id) if key.startswith("artifacts/")} == {
        f"artifacts/{run_id}/1-clip.mp4",
        f"artifacts/{run_id}/1-device.log",
    }

    # Once the attempt is over, nothing more is taken for it.
    finished = httpx.post(
        f"{store.server.url}/v1/agent/runs/{run_id}/finish", json={"attempt": 1, "status": "passed"}, headers=headers
    )
    assert finished.status_code == 200, finished.text
    assert put("late.mp4", b"x").status_code == 409
    assert [a["name"] for a in _report(owner, run_id)["artifacts"]] == ["clip.mp4", "device.log"]


def stream_of(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# ------------------------------------------------------------------------------------ retention


def _purge(store: Store, *args: str) -> str:
    """`qualgent admin purge` against the server's database and store."""
    done = subprocess.run(
        [sys.executable, "-m", "qualgent", "admin", "purge", *args],
        env=store.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return " ".join(done.stdout.split())  # as one line, however the terminal wrapped it


def _age(db: Database, run_id: str, days: float) -> None:
    """Make the run look finished ``days`` ago."""

    async def move(session: AsyncSession) -> None:
        finished = await session.scalar(select(TestRun.finished_at).where(TestRun.id == run_id))
        assert finished is not None
        await session.execute(
            update(TestRun).where(TestRun.id == run_id).values(finished_at=finished - timedelta(days=days))
        )

    db.run(move)


def test_the_purge_deletes_old_runs_videos_logs_and_screenshots(store: Store, owner: Tenant, tmp_path: Path) -> None:
    case = create_test_case(owner, flow=FAILING_FLOW, record_video=True)
    app = _app(owner)
    old, recent = _queue(owner, case["id"], app), _queue(owner, case["id"], app)
    _execute(store, owner, tmp_path, [old, recent])
    before = {run_id: _report(owner, run_id) for run_id in (old, recent)}
    for report in before.values():
        assert [a["name"] for a in report["artifacts"]] == ["run.mp4", "device.log"]
        assert report["steps"][-1]["screenshot"] is not None
    kept = {
        key
        for key in store.keys(owner.organization_id)
        if key.startswith((f"artifacts/{recent}/", f"screenshots/{recent}/"))
    }
    assert len(kept) == 3, kept  # the video, the log and the failing step's screenshot
    _age(store.db, old, 100)
    _age(store.db, recent, 10)

    out = _purge(store)
    assert "1 finished runs' artifacts and screenshots deleted (3 stored objects)" in out, out

    after = _report(owner, old)
    assert after["artifacts"] == []
    assert all(step["screenshot"] is None for step in after["steps"])
    # The run itself, its steps and their log lines stay.
    assert after["run"]["status"] == "failed" and after["run"]["failure"] == before[old]["run"]["failure"]
    assert [(s["description"], s["status"], s["logs"]) for s in after["steps"]] == [
        (s["description"], s["status"], s["logs"]) for s in before[old]["steps"]
    ]
    rows, steps = _rows(store.db, old)
    assert rows == [] and all(step.screenshot_key is None for step in steps) and len(steps) == 3
    left = store.keys(owner.organization_id)
    assert not any(key.startswith((f"artifacts/{old}/", f"screenshots/{old}/")) for key in left), left
    # A run within the retention keeps everything.
    assert kept <= left

    def unlinked(report: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in a.items() if k != "link"} for a in report["artifacts"]]

    assert unlinked(_report(owner, recent)) == unlinked(before[recent])
    assert httpx.get(_by_name(_report(owner, recent))["device.log"]["link"], follow_redirects=True).status_code == 200

    # Nothing more to do, until the retention is shorter than the recent run's age.
    assert "0 finished runs' artifacts" in _purge(store)
    assert "1 finished runs' artifacts and screenshots deleted (3 stored objects)" in _purge(
        store, "--run-retention-days", "5"
    )
    assert not any(key.startswith(("artifacts/", "screenshots/")) for key in store.keys(owner.organization_id))


# ------------------------------------------------------------------------------------- timeouts


@pytest.fixture(scope="module")
def patient_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Database]]:
    """A server whose reaper runs once at start only: the agent, not the server, ends a run past its
    timeout (on a normal server either may come first)."""
    with live_server(backend, tmp_path_factory.mktemp(f"patient-{backend}"), reaper_interval=3600) as server:
        db = Database(server.settings.resolved_database_url)
        try:
            yield server, db
        finally:
            db.close()


def test_a_run_past_its_timeout_still_uploads_the_device_log(
    patient_server: tuple[LiveServer, Database], tmp_path: Path
) -> None:
    server, db = patient_server
    tenant = make_tenant(db, server.url)
    try:
        flow = "- launchApp\n" + "- tapOn: Sign in\n" * 200
        run_id = _queue(
            tenant, create_test_case(tenant, flow=flow)["id"], _app(tenant), timeout_seconds=10, record_video=True
        )
        devices = simulated_devices(["iPhone 14 Pro"])
        with running_agent(server.url, agent_token(db), devices, tmp_path, step_seconds=0.1):
            done = _wait(tenant, [run_id], timeout=40)[run_id]
        assert done["status"] == "failed" and done["failure"]["kind"] == "timeout", done
        report = _report(tenant, run_id)
        artifacts = _by_name(report)
        assert set(artifacts) == {"run.mp4", "device.log"}
        text = httpx.get(artifacts["device.log"]["link"]).text
        assert 20 < len(text.splitlines()) < 200 and 'tapOn "Sign in"' in text.splitlines()[-1]
        assert_h264_mp4(httpx.get(artifacts["run.mp4"]["link"]).content)
    finally:
        tenant.client.close()


def test_links_in_the_report_are_the_api_s_own(store: Store, owner: Tenant, tmp_path: Path) -> None:
    """Pre-signed links name the API's route; on S3 it redirects to the store for the bytes."""
    run_id = _queue(owner, create_test_case(owner, flow=PASSING_FLOW)["id"], _app(owner), record_video=True)
    _execute(store, owner, tmp_path, [run_id])
    for artifact in _report(owner, run_id)["artifacts"]:
        parts = urlsplit(artifact["link"])
        assert f"{parts.scheme}://{parts.netloc}" == store.server.url
        assert parts.path == f"/v1/jobs/{run_id}/artifacts/1/{artifact['name']}"
