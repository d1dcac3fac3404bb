"""The live event stream (GET /v1/jobs/events) against real servers on SQLite and PostgreSQL: events for
queued, started and finished runs (the agent protocol spoken by hand), filters, resuming with
Last-Event-ID, tenancy, heartbeats, and two `qualgent serve` processes on one database (a change made
through one reaches a stream held by the other)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qualgent.events.schemas import RunEventOut
from tests.fixtures.factories import Database, Tenant, create_test_case, make_tenant, upload_app
from tests.fixtures.hand_agent import HandAgent, phone, tag
from tests.fixtures.processes import processes, serve_env
from tests.fixtures.servers import LiveServer
from tests.fixtures.sse import EventStream

FLOW = "appId: com.example.app\n---\n- launchApp\n"


def _queue(tenant: Tenant, device_tag: str, n: int = 1) -> tuple[list[str], str]:
    """``n`` runs for a device tagged ``device_tag`` (only a test's own hand agent takes them)."""
    app = upload_app(tenant)
    assert app.status_code == 200, app.text
    case = create_test_case(tenant, name=f"Events {uuid.uuid4().hex[:6]}", flow=FLOW)
    jobs = [
        {"test_case_id": case["id"], "app_file_id": app.json()["file"]["id"], "device_selector": {"tags": [device_tag]}}
        for _ in range(n)
    ]
    response = tenant.client.post("/v1/test-cases/run", json={"jobs": jobs})
    assert response.status_code == 200, response.text
    return [j["id"] for j in response.json()["jobs"]], response.json()["batch_id"]


def _stream(server: LiveServer | str, tenant: Tenant, **params: Any) -> EventStream:
    url = server if isinstance(server, str) else server.url
    headers = params.pop("headers", {})
    return EventStream(url, tenant.key, params=params, headers=headers)


def _cancel(tenant: Tenant, run_id: str) -> None:
    response = tenant.client.post(f"/v1/jobs/{run_id}/cancel")
    assert response.status_code == 200, response.text


@pytest.fixture
def agent(server: LiveServer, db: Database) -> Iterator[tuple[HandAgent, str]]:
    t = tag()
    hand = HandAgent(server, db, [phone("a", t)])
    yield hand, t
    hand.close()


def test_queued_started_and_finished_arrive_in_order(
    server: LiveServer, tenant: Tenant, agent: tuple[HandAgent, str]
) -> None:
    hand, device_tag = agent
    with _stream(server, tenant) as stream:
        assert stream.response_headers["content-type"].startswith("text/event-stream")
        assert stream.response_headers["cache-control"] == "no-cache"
        [run_id], batch_id = _queue(tenant, device_tag)
        stream.wait_for(lambda: stream.of_run(run_id), "run.queued")
        claimed = hand.claim("a")
        assert claimed is not None and claimed["id"] == run_id
        stream.wait_for(lambda: len(stream.of_run(run_id)) >= 2, "run.started")
        hand.fail(claimed)
        stream.wait_for(lambda: len(stream.of_run(run_id)) >= 3, "run.finished")

    events = stream.of_run(run_id)
    assert [(e.event, e.data["status"]) for e in events] == [
        ("run.queued", "queued"),
        ("run.started", "running"),
        ("run.finished", "failed"),
    ]
    ids = [e.id for e in events if e.id is not None]
    assert ids == sorted(ids) and len(set(ids)) == 3
    for event in events:
        body = RunEventOut.model_validate(event.data)  # the documented shape
        assert body.id == event.id and body.type == event.event
        assert body.batch_id == batch_id
        assert body.link == f"{server.url}/test-runs/{run_id}"
    assert [e.data["attempt"] for e in events] == [0, 1, 1]
    assert events[-1].data["failure_kind"] == "test"
    # Every event is its run's: nothing of another run of this organisation came.
    assert {e.data["run_id"] for e in stream.events} == {run_id}


def test_filters_by_runs_batch_and_status(server: LiveServer, tenant: Tenant) -> None:
    device_tag = tag()  # no device has it: the runs stay queued until cancelled
    with (
        _stream(server, tenant) as everything,
        _stream(server, tenant, status=["cancelled"]) as cancelled_only,
    ):
        (first, second), batch = _queue(tenant, device_tag, n=2)
        (third,), other_batch = _queue(tenant, device_tag)
        with (
            _stream(server, tenant, ids=f"{second},run_nothing") as by_id,
            _stream(server, tenant, batch_id=other_batch) as by_batch,
        ):
            for run_id in (first, second, third):
                _cancel(tenant, run_id)
            everything.wait_for(lambda: len(everything.events) >= 6, "every event")
            by_id.wait_for(lambda: by_id.events, "the second run's cancellation")
            by_batch.wait_for(lambda: by_batch.events, "the third run's cancellation")
            cancelled_only.wait_for(lambda: len(cancelled_only.events) >= 3, "three cancellations")
            time.sleep(0.5)  # anything else would have come by now

    assert sorted((e.data["run_id"], e.data["status"]) for e in everything.events) == sorted(
        [(r, s) for r in (first, second, third) for s in ("queued", "cancelled")]
    )
    # Opened after the runs were queued: only the cancellations.
    assert [(e.data["run_id"], e.event) for e in by_id.events] == [(second, "run.finished")]
    assert [(e.data["run_id"], e.data["batch_id"]) for e in by_batch.events] == [(third, other_batch)]
    assert sorted(e.data["run_id"] for e in cancelled_only.events) == sorted([first, second, third])
    assert {e.data["status"] for e in cancelled_only.events} == {"cancelled"}
    assert batch != other_batch


def test_last_event_id_replays_what_was_missed(server: LiveServer, tenant: Tenant) -> None:
    device_tag = tag()
    with _stream(server, tenant) as first:
        (a, b), _ = _queue(tenant, device_tag, n=2)
        first.wait_for(lambda: len(first.events) >= 2, "both runs queued")
    seen = first.events[-1].id
    assert seen is not None
    # While no stream is open: both runs cancelled.
    _cancel(tenant, a)
    _cancel(tenant, b)

    for how in ({"headers": {"Last-Event-ID": str(seen)}}, {"last_event_id": seen}):
        with _stream(server, tenant, **how) as resumed:
            resumed.wait_for(lambda: len(resumed.events) >= 2, "the missed cancellations")
            time.sleep(0.3)
        assert [(e.data["run_id"], e.data["status"]) for e in resumed.events] == [(a, "cancelled"), (b, "cancelled")]
        assert all(e.id is not None and e.id > seen for e in resumed.events)

    # Resumed from before the first, with a filter: the same filter applies to what is replayed; then
    # live events follow the replay.
    start = first.events[0].id
    assert start is not None
    (c,), _ = _queue(tenant, device_tag)
    with _stream(server, tenant, ids=f"{b},{c}", headers={"Last-Event-ID": str(start - 1)}) as filtered:
        filtered.wait_for(lambda: len(filtered.events) >= 3, "b's two events and c's queueing")
        _cancel(tenant, c)
        filtered.wait_for(lambda: len(filtered.events) >= 4, "c's cancellation, live")
    assert [(e.data["run_id"], e.data["status"]) for e in filtered.events] == [
        (b, "queued"),
        (b, "cancelled"),
        (c, "queued"),
        (c, "cancelled"),
    ]
    ids = [e.id for e in filtered.events if e.id is not None]
    assert ids == sorted(ids) and len(ids) == 4


def test_another_organisation_sees_none(server: LiveServer, tenant: Tenant, other_tenant: Tenant) -> None:
    device_tag = tag()
    with (
        _stream(server, other_tenant) as theirs,
        _stream(server, tenant) as ours,
    ):
        (run_id,), batch_id = _queue(tenant, device_tag)
        with (
            _stream(server, other_tenant, ids=run_id, headers={"Last-Event-ID": "0"}) as by_id,
            _stream(server, other_tenant, batch_id=batch_id, last_event_id=0) as by_batch,
        ):
            _cancel(tenant, run_id)
            ours.wait_for(lambda: len(ours.events) >= 2, "our own events")
            time.sleep(0.5)
    assert [e.data["run_id"] for e in ours.events] == [run_id, run_id]
    assert theirs.events == [] and by_id.events == [] and by_batch.events == []


def test_heartbeats_keep_a_quiet_stream_open(server: LiveServer, tenant: Tenant) -> None:
    with _stream(server, tenant, heartbeat=1) as stream:
        stream.wait_for(lambda: len([c for c, _ in stream.comments if c == "heartbeat"]) >= 2, "two heartbeats", 5)
    beats = [at for text, at in stream.comments if text == "heartbeat"]
    assert 0.7 < beats[1] - beats[0] < 1.6
    assert stream.events == []


def test_max_seconds_ends_the_stream(server: LiveServer, tenant: Tenant) -> None:
    started = time.monotonic()
    stream = _stream(server, tenant, max_seconds=1).start()
    stream.wait_for(lambda: stream.ended, "the end of the stream", 5)
    stream.close()
    assert 0.9 < time.monotonic() - started < 4
    assert stream.error is None


def test_bad_requests(server: LiveServer, tenant: Tenant) -> None:
    url = f"{server.url}/v1/jobs/events"
    assert httpx.get(url).status_code == 401
    for params, headers in (
        ({}, {"Last-Event-ID": "abc"}),
        ({"last_event_id": "-1"}, {}),
        ({"status": "finished"}, {}),
        ({"heartbeat": "0"}, {}),
    ):
        response = httpx.get(url, params=params, headers={"X-Api-Key": tenant.key, **headers})
        assert response.status_code == 422, (params, headers, response.text)
        assert response.json()["success"] is False


@pytest.mark.parametrize("backend_name", ["sqlite", "postgresql"])
def test_a_change_through_one_process_reaches_a_stream_on_another(backend_name: str, tmp_path: Path) -> None:
    """Two `qualgent serve` processes on one database: the database carries the events, not memory."""
    settings = {"embedded_agent": "false", "events_poll_seconds": "0.05"}
    with serve_env(backend_name, tmp_path, **settings) as (env, url), processes() as procs:
        first = procs.serve(env, tmp_path / "first.log")
        second = procs.serve(env, tmp_path / "second.log")
        db = Database(url)
        tenant = make_tenant(db, first.url)
        try:
            with _stream(second.url, tenant) as stream:
                (run_id,), _ = _queue(tenant, tag())  # through the first process
                stream.wait_for(lambda: stream.of_run(run_id), "run.queued from the other process")
                queued_at = time.monotonic()
                _cancel(tenant, run_id)
                stream.wait_for(lambda: len(stream.of_run(run_id)) >= 2, "run.finished from the other process")
                delay = stream.of_run(run_id)[1].at - queued_at
            assert [e.data["status"] for e in stream.of_run(run_id)] == ["queued", "cancelled"]
            assert delay < 1.0, delay
            # And back: a stream on the first sees a change made through the second.
            other = httpx.Client(base_url=second.url, headers={"X-Api-Key": tenant.key}, timeout=30)
            with _stream(first.url, tenant) as back:
                (again,), _ = _queue(tenant, tag())
                response = other.post(f"/v1/jobs/{again}/cancel")
                assert response.status_code == 200, response.text
                back.wait_for(lambda: len(back.of_run(again)) >= 2, "the second process's change")
            other.close()
        finally:
            tenant.client.close()
            db.close()
        for server in (first, second):
            assert "Traceback" not in server.output(), server.output()


def test_the_purge_deletes_old_events_and_ids_are_never_reused(
    server: LiveServer, db: Database, tenant: Tenant
) -> None:
    from qualgent.db.base import utcnow
    from qualgent.events.repository import delete_before

    (old,), _ = _queue(tenant, tag())
    catch_up = {"last_event_id": 0, "max_seconds": 0, "ids": old}
    with _stream(server, tenant, **catch_up) as before:
        before.wait_for(lambda: before.ended, "the end of the catch-up")
    [queued] = before.events
    assert queued.data["run_id"] == old

    # As the purge does once events are older than QUALGENT_EVENTS_RETENTION_HOURS.
    assert db.run(lambda session: delete_before(session, utcnow())) >= 1
    with _stream(server, tenant, **catch_up) as after:
        after.wait_for(lambda: after.ended, "the end of the catch-up")
    assert after.events == []

    # The next event's ID is above every ID given before (SQLite: AUTOINCREMENT, not max + 1).
    (new,), _ = _queue(tenant, tag())
    with _stream(server, tenant, last_event_id=0, max_seconds=0, ids=new) as latest:
        latest.wait_for(lambda: latest.ended, "the end of the catch-up")
    [event] = latest.events
    assert queued.id is not None and event.id is not None and event.id > queued.id


def test_run_wait_follows_the_stream_rather_than_its_poll_interval(
    server: LiveServer, tenant: Tenant, agent: tuple[HandAgent, str], tmp_path: Path
) -> None:
    """`qualgent run --wait --poll-interval 30`: the run ends a second after it started, and the CLI knows
    within a few seconds (woken by the event), not at its next poll."""
    from tests.fixtures.cli import Cli

    hand, device_tag = agent
    app = upload_app(tenant)
    assert app.status_code == 200, app.text
    case = create_test_case(tenant, name=f"Waited {uuid.uuid4().hex[:6]}", flow=FLOW)
    cli = Cli(server.url, tenant.key, tmp_path)
    args = ["run", case["id"], "--device-tag", device_tag, "--app", app.json()["file"]["id"]]
    live = cli.popen(*args, "--wait", "--poll-interval", "30", "--json")
    try:
        live.wait_for_output("Queued 1 run(s)")
        deadline = time.monotonic() + 30
        claimed = None
        while claimed is None:
            assert time.monotonic() < deadline, "the run was never claimable"
            claimed = hand.claim("a")
            time.sleep(0.05)
        time.sleep(1.0)  # past the CLI's first polls: it is in a 30 s pause now
        hand.pass_(claimed)
        finished = time.monotonic()
        result = live.wait(timeout=25)
    finally:
        live.kill()
    took = time.monotonic() - finished
    assert result.code == 0, result
    assert result.json()["summary"] == {"passed": 1}
    assert took < 8, took


@pytest.mark.parametrize("what", ["runs", "batch"])
def test_the_async_sdk_waits_on_the_stream_rather_than_its_poll_interval(
    server: LiveServer, tenant: Tenant, what: str
) -> None:
    """`AsyncClient.wait_for_runs(events=True)` and `wait_for_batches(events=True)` with a 30 s poll
    interval: a run cancelled a second into the wait ends it within seconds (woken by the event), not at
    the next poll. Without events the same wait would take the whole 30 s."""
    from qualgent.client import AsyncClient, Run

    (run_id,), batch_id = _queue(tenant, tag())  # a tag no device has: the run stays queued

    async def wait_and_cancel() -> float:
        async with AsyncClient(api_key=tenant.key, base_url=server.url) as qg:

            async def wait() -> list[Run]:
                if what == "runs":
                    return await qg.wait_for_runs([run_id], poll_interval=30, timeout=25, events=True)
                batches = await qg.wait_for_batches([batch_id], poll_interval=30, timeout=25, events=True)
                return [r for b in batches for r in b.runs or []]

            waiting = asyncio.ensure_future(wait())
            await asyncio.sleep(1.5)  # past the first poll and the stream's start: in a 30 s pause now
            assert not waiting.done()
            await asyncio.to_thread(_cancel, tenant, run_id)
            cancelled = time.monotonic()
            runs = await waiting
            took = time.monotonic() - cancelled
            assert [(r.id, r.status) for r in runs] == [(run_id, "cancelled")]
            return took

    took = asyncio.run(wait_and_cancel())
    assert took < 8, took


def test_stopping_the_server_ends_its_streams_at_once(tmp_path: Path) -> None:
    """SIGTERM with a stream open: the stream ends (its client reconnects elsewhere with Last-Event-ID)
    and the process exits without waiting for it."""
    import signal

    with serve_env("sqlite", tmp_path, embedded_agent="false") as (env, url), processes() as procs:
        server = procs.serve(env, tmp_path / "serve.log", "--log-level", "info")
        db = Database(url)
        tenant = make_tenant(db, server.url)
        try:
            stream = _stream(server.url, tenant, heartbeat=60).start()
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            stream.wait_for(lambda: stream.ended, "the end of the stream", 5)
            ended_in = time.monotonic() - started
            server.proc.wait(timeout=10)
            exited_in = time.monotonic() - started
            stream.close()
        finally:
            tenant.client.close()
            db.close()
        output = server.output()
    assert ended_in < 1, ended_in
    assert exited_in < 3, (exited_in, output)
    assert "Traceback" not in output and "CancelledError" not in output and "ERROR" not in output, output


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_postgresql_streams_see_events_in_id_order_when_transactions_commit_out_of_order(
    backend: str, server: LiveServer, tenant: Tenant, outcome: str
) -> None:
    """PostgreSQL draws an event's ID before its transaction commits. Here a transaction that wrote an
    event (a row as the trigger writes it) stays open while a cancellation writes the next ID and commits.
    The stream holds the later event until the earlier one commits, so it sees events in ID order and an
    ID is a place to resume from; if the earlier one rolls back, the later one goes once every transaction
    that was running has ended, not after a fixed wait. (SQLite has one writer at a time.)"""
    if backend != "postgresql":
        pytest.skip("one writer at a time on SQLite: IDs commit in order")
    import asyncio
    import threading

    import asyncpg  # type: ignore[import-untyped]

    (earlier, later), batch_id = _queue(tenant, tag(), n=2)
    dsn = server.settings.resolved_database_url.replace("postgresql+asyncpg://", "postgresql://")
    written, finish = threading.Event(), threading.Event()
    drawn: list[int] = []

    def open_transaction() -> None:
        async def main() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                transaction = conn.transaction()
                await transaction.start()
                drawn.append(
                    await conn.fetchval(
                        "INSERT INTO run_events (organization_id, run_id, batch_id, type, status, attempt, created_at)"
                        " VALUES ($1, $2, $3, 'run.finished', 'cancelled', 0, now()) RETURNING id",
                        tenant.organization_id,
                        earlier,
                        batch_id,
                    )
                )
                written.set()
                await asyncio.to_thread(finish.wait, 30)
                await (transaction.commit() if outcome == "commit" else transaction.rollback())
            finally:
                await conn.close()

        asyncio.run(main())

    with _stream(server, tenant, ids=f"{earlier},{later}") as stream:
        writer = threading.Thread(target=open_transaction)
        writer.start()
        try:
            assert written.wait(10)
            _cancel(tenant, later)  # the next ID, committed at once
            time.sleep(0.8)
            assert stream.events == [], "an event was sent past one not yet committed"
            finish.set()
            ended = time.monotonic()
            writer.join(timeout=10)
            stream.wait_for(lambda: stream.of_run(later), "the later event")
            waited = stream.of_run(later)[0].at - ended
            time.sleep(0.3)
        finally:
            finish.set()
            writer.join(timeout=10)
    got = [(e.id, e.data["run_id"]) for e in stream.events]
    if outcome == "commit":
        assert got == [(drawn[0], earlier), (drawn[0] + 1, later)]
    else:
        assert got == [(drawn[0] + 1, later)]
    # Not GAP_WAIT (2 s): as soon as the transactions running when the gap was seen have ended (other
    # tests' transactions on the same PostgreSQL server may take a moment).
    assert waited < 1.5, waited


def test_the_dashboard_live_pages_stream(server: LiveServer, db: Database, tenant: Tenant) -> None:
    """GET /test-runs/events: the run events of a signed-in person's organisation (the run page and the
    run list fetch their fragment when one comes); an API key alone is not a dashboard session."""
    from tests.fixtures.web import signed_in_tenant

    signed_in_tenant(db, tenant)
    cookies = dict(tenant.client.cookies)
    (run_id,), _ = _queue(tenant, tag())
    anonymous = httpx.get(f"{server.url}/test-runs/events", headers={"X-Api-Key": tenant.key}, timeout=10)
    assert anonymous.status_code in (401, 303), anonymous.text
    page = tenant.client.get(f"/test-runs/{run_id}")
    assert f'data-live-events="/test-runs/events?ids={run_id}"' in page.text
    stream = EventStream(server.url, "", params={"ids": run_id}, path="/test-runs/events", cookies=cookies)
    stream.headers = {"Last-Event-ID": "0"}
    with stream:
        stream.wait_for(lambda: stream.of_run(run_id), "the run's queueing, replayed")
        _cancel(tenant, run_id)
        stream.wait_for(lambda: len(stream.of_run(run_id)) >= 2, "its cancellation, live")
    assert [e.data["status"] for e in stream.events] == ["queued", "cancelled"]
