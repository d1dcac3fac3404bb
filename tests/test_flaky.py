"""Flaky test cases and quarantine: the rules (same build within 14 days, flips in the last 20 runs), a
test case's history and figures, quarantine by hand and automatic, leaving it after passes in a row, and
the gate (CLI exit code) ignoring quarantined test cases. Real servers on SQLite and PostgreSQL; history is
written as earlier days' runs would have left it, or made by the agent protocol spoken by hand."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from qualgent.db.models import TestRun
from qualgent.ids import new_id
from qualgent.quality import service as quality
from tests.fixtures.cli import Cli
from tests.fixtures.factories import Database, Tenant, apk_bytes, create_test_case, make_tenant, upload_app
from tests.fixtures.hand_agent import HandAgent, phone, tag
from tests.fixtures.servers import LiveServer, live_server
from tests.fixtures.web import signed_in_tenant

FLOW = "appId: com.example.app\n---\n- launchApp\n- tapOn: Checkout\n"


@pytest.fixture(scope="module")
def fl_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(backend, tmp_path_factory.mktemp(f"flaky-{backend}"), reaper_interval=0.2) as srv:
        yield srv


@pytest.fixture(scope="module")
def fl_db(fl_server: LiveServer) -> Iterator[Database]:
    database = Database(fl_server.settings.resolved_database_url)
    yield database
    database.close()


@pytest.fixture
def org(fl_db: Database, fl_server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(fl_db, fl_server.url)
    yield t
    for status in ("queued", "running"):
        for run in t.client.get("/v1/jobs/list", params={"status": status}).json()["test_runs"]:
            t.client.post(f"/v1/jobs/{run['id']}/cancel")
    t.client.close()


def _app(tenant: Tenant, version: str = "1.0.0") -> dict[str, Any]:
    # Each build different bytes: a SHA-256 of its own.
    content = apk_bytes(extra={"assets/build.txt": uuid.uuid4().bytes})
    response = upload_app(tenant, content, version=version)
    assert response.status_code == 200, response.text
    file: dict[str, Any] = response.json()["file"]
    return file


def _case(tenant: Tenant, **fields: Any) -> str:
    return str(create_test_case(tenant, name=f"Checkout {uuid.uuid4().hex[:6]}", flow=FLOW, **fields)["id"])


@dataclass
class Past:
    """A run of an earlier day: its result, build and device."""

    status: str  # passed | failed | cancelled
    app: str
    days_ago: float = 1.0
    kind: str | None = "test"  # the failure's kind, for a failed run
    device: str = "Pixel 7"
    seconds: float = 30.0
    retries_used: int = 0


def _seed(db: Database, tenant: Tenant, case_id: str, runs: list[Past]) -> None:
    """Finished runs of ``case_id`` as earlier days' runs left them, oldest last in ``runs`` order given
    (each a minute before the one listed before it, within its day)."""

    async def seed(session: Any) -> None:
        template = (
            await session.execute(
                text("SELECT user_id, target_id FROM test_runs WHERE organization_id = :o LIMIT 1"),
                {"o": tenant.organization_id},
            )
        ).one()
        now = datetime.now(UTC)
        for n, past in enumerate(runs):
            finished = now - timedelta(days=past.days_ago, minutes=n)
            session.add(
                TestRun(
                    id=new_id("run"),
                    organization_id=tenant.organization_id,
                    test_case_id=case_id,
                    app_id=past.app,
                    user_id=template.user_id,
                    device_name=past.device,
                    device_platform="Android",
                    device_os_version="14.0",
                    target_id=template.target_id,
                    status=past.status,
                    priority="medium",
                    priority_rank=1,
                    progress=100,
                    attempt=1 + past.retries_used,
                    test_retries=past.retries_used,
                    test_retries_used=past.retries_used,
                    queued_at=finished - timedelta(seconds=past.seconds + 1),
                    started_at=finished - timedelta(seconds=past.seconds),
                    finished_at=finished,
                    failure_kind=past.kind if past.status == "failed" else None,
                    failure_message="failed" if past.status == "failed" else None,
                )
            )
        await session.flush()

    db.run(seed)


def _with_template(tenant: Tenant, app: str, case_id: str) -> None:
    """A first run, so seeded history has a user and a target to refer to."""
    job = {"test_case_id": case_id, "app_file_id": app, "platform": "android"}
    queued = tenant.client.post("/v1/test-cases/run", json={"jobs": [job]})
    assert queued.status_code == 200, queued.text
    tenant.client.post(f"/v1/jobs/{queued.json()['jobs'][0]['id']}/cancel")


def _test_case(tenant: Tenant, case_id: str) -> dict[str, Any]:
    response = tenant.client.get(f"/v1/test-cases/{case_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# ------------------------------------------------------------------------------ the rules, alone


@dataclass
class Row:
    status: str
    device_name: str = "Pixel 7"
    device_platform: str = "Android"
    device_os_version: str = "14.0"
    test_retries_used: int = 0
    started_at: datetime | None = None
    finished_at: datetime = datetime(2026, 12, 1, tzinfo=UTC)


def _rows(results: str, device: str = "Pixel 7") -> list[Row]:
    """Newest first: "PF" is a pass after a failure."""
    return [Row("passed" if r == "P" else "failed", device_name=device) for r in results]


@pytest.mark.parametrize(
    ("results", "flaky"),
    [
        ("PF" * 10, True),  # every run flipped
        ("P" * 19 + "F", False),  # one regression, fixed: 1 flip in 20
        ("PPPPPFFFFF" + "P" * 10, False),  # 2 flips of 20: 10 %
        ("PFPFPF" + "P" * 15, False),  # 6 of the last 20 runs flipped: 30 %, not more
        ("PFPFPFPF" + "F" * 13, True),  # 7 of 20: 35 %
        ("PFPF", False),  # 4 runs: too few to judge by flips
        ("PFPFP", True),  # 5 runs, 4 flips
    ],
)
def test_the_flip_rule(results: str, flaky: bool) -> None:
    assert quality.flips(_rows(results)).flaky is flaky


def test_flips_count_per_kind_of_device() -> None:
    """A suite run as a matrix where the test always passes on one device and always fails on another
    alternates between them: that is a device problem, not a flaky test."""
    interleaved = [r for pair in zip(_rows("P" * 10), _rows("F" * 10, "Galaxy S23"), strict=True) for r in pair]
    assert quality.flips(interleaved).flaky is False
    shaky = quality.flips(interleaved + _rows("PFPFPFPF", "Pixel 8"))
    assert shaky.flaky and shaky.reason and "Pixel 8" in shaky.reason


def test_flips_before_a_moment_do_not_count() -> None:
    rows = _rows("PFPFPFPF")
    for i, row in enumerate(rows):
        row.finished_at = datetime(2026, 12, 1, tzinfo=UTC) - timedelta(days=i)
    assert quality.flips(rows).flaky
    assert not quality.flips(rows, since=datetime(2026, 11, 28, 12, tzinfo=UTC)).flaky  # 4 runs left


def test_figures_of_a_test_case() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    rows = [
        Row("passed", started_at=start, finished_at=start + timedelta(seconds=s), test_retries_used=u)
        for s, u in ((10, 0), (20, 0), (30, 1), (40, 0), (100, 0))
    ]
    rows.append(Row("failed", started_at=start, finished_at=start + timedelta(seconds=5)))
    stats = quality.stats_of(rows)
    assert (stats.runs, stats.pass_rate, stats.flaky_rate) == (6, round(5 / 6, 4), round(1 / 6, 4))
    assert (stats.p50_seconds, stats.p90_seconds) == (30.0, 100.0)  # nearest rank, passed runs only
    assert quality.stats_of([]).pass_rate is None


# --------------------------------------------------------------------------------- over the API


def test_passing_and_failing_on_the_same_build_within_14_days_is_flaky(
    org: Tenant, fl_db: Database, fl_server: LiveServer
) -> None:
    build, other = _app(org), _app(org, "1.0.1")
    same, apart, old, devices, infra, retried = (_case(org) for _ in range(6))
    _with_template(org, build["id"], same)
    _seed(fl_db, org, same, [Past("passed", build["id"]), Past("failed", build["id"], days_ago=3)])
    _seed(fl_db, org, apart, [Past("passed", build["id"]), Past("failed", other["id"])])  # a regression
    _seed(fl_db, org, old, [Past("passed", build["id"], days_ago=15), Past("failed", build["id"], days_ago=16)])
    _seed(fl_db, org, devices, [Past("passed", build["id"]), Past("failed", build["id"], device="Samsung Galaxy S23")])
    # An infrastructure failure says nothing about the test.
    _seed(fl_db, org, infra, [Past("passed", build["id"]), Past("failed", build["id"], kind="infrastructure")])
    _seed(fl_db, org, retried, [Past("passed", build["id"], retries_used=1)])  # passed on a retry

    flaky = _test_case(org, same)
    assert flaky["flaky"] is True
    assert build["sha256"][:12] in flaky["flaky_reason"] and "Pixel 7" in flaky["flaky_reason"]
    assert "retry" in _test_case(org, retried)["flaky_reason"]
    for case_id in (apart, old, devices, infra):
        assert _test_case(org, case_id)["flaky"] is False, case_id
    listed = {c["id"]: c for c in org.client.get("/v1/test-cases/list").json()}
    assert listed[same]["flaky"] is True and listed[apart]["flaky"] is False
    assert listed[infra]["stats"]["runs"] == 1  # the infrastructure failure is not counted


def test_a_test_case_that_flips_often_is_flaky(org: Tenant, fl_db: Database) -> None:
    builds = [_app(org, f"2.0.{i}")["id"] for i in range(8)]  # a new build each time: only flips count
    flipping, steady = _case(org), _case(org)
    _with_template(org, builds[0], flipping)
    _seed(fl_db, org, flipping, [Past("passed" if i % 2 else "failed", builds[i]) for i in range(8)])
    _seed(fl_db, org, steady, [Past("passed" if i < 5 else "failed", builds[i]) for i in range(8)])
    body = _test_case(org, flipping)
    assert body["flaky"] is True and "flipped in 7 of its last 8 runs" in body["flaky_reason"]
    assert _test_case(org, steady)["flaky"] is False


def test_history_lists_recent_runs_with_build_device_duration_and_attempts(org: Tenant, fl_db: Database) -> None:
    build = _app(org, "3.1.4")
    case_id = _case(org)
    _with_template(org, build["id"], case_id)
    _seed(
        fl_db,
        org,
        case_id,
        [
            Past("passed", build["id"], seconds=12, retries_used=1),
            Past("failed", build["id"], seconds=40),
            Past("passed", build["id"], seconds=20, device="Pixel 8"),
        ],
    )
    response = org.client.get(f"/v1/test-cases/{case_id}/history", params={"limit": 2})
    assert response.status_code == 200, response.text
    history = response.json()
    assert history["test_case"]["id"] == case_id and history["flaky"] is True
    assert history["stats"]["runs"] == 3 and history["stats"]["flaky_rate"] == round(1 / 3, 4)
    newest, second = history["runs"]
    # Newest first (by ID; the cancelled first run is older than these), a page of two.
    assert (newest["status"], newest["flaky"], newest["attempts"]) == ("passed", False, 1)
    assert newest["app"] == {"id": build["id"], "name": "MyApp v3.1.4", "version": "3.1.4", "sha256": build["sha256"]}
    assert (newest["device"], newest["duration_seconds"]) == ("Pixel 8", 20.0)
    assert (second["status"], second["failure"]["kind"], second["duration_seconds"]) == ("failed", "test", 40.0)
    assert 'rel="next"' in response.headers["Link"]
    cursor = response.headers["Link"].split("cursor=")[1].split(">")[0]
    rest = org.client.get(f"/v1/test-cases/{case_id}/history", params={"limit": 2, "cursor": cursor}).json()
    assert [r["status"] for r in rest["runs"]] == ["passed", "cancelled"]
    assert rest["runs"][0]["flaky"] is True and rest["runs"][0]["retries"] == {"allowed": 1, "used": 1}
    assert org.client.get(f"/v1/test-cases/{new_id('tc')}/history").status_code == 404


# --------------------------------------------------------------------------------------- quarantine


def test_quarantine_by_hand(org: Tenant) -> None:
    app = _app(org)
    case_id = _case(org)
    put = org.client.put(f"/v1/test-cases/{case_id}/quarantine", json={"reason": "backend down in staging"})
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["quarantined"] is True
    assert body["quarantine"]["source"] == "manual" and body["quarantine"]["reason"] == "backend down in staging"
    # Runs queued from now on carry it; they still run.
    job = {"test_case_id": case_id, "app_file_id": app["id"], "platform": "android"}
    queued = org.client.post("/v1/test-cases/run", json={"jobs": [job]}).json()["jobs"][0]
    assert org.client.get(f"/v1/jobs/status/{queued['id']}").json()["quarantined"] is True
    # Again: the date stays, the reason may change; a body is optional.
    again = org.client.put(f"/v1/test-cases/{case_id}/quarantine").json()
    assert again["quarantine"]["since"] == body["quarantine"]["since"]
    off = org.client.delete(f"/v1/test-cases/{case_id}/quarantine")
    assert off.status_code == 200 and off.json()["quarantined"] is False and off.json()["quarantine"] is None
    queued = org.client.post("/v1/test-cases/run", json={"jobs": [job]}).json()["jobs"][0]
    assert org.client.get(f"/v1/jobs/status/{queued['id']}").json()["quarantined"] is False
    assert org.client.put(f"/v1/test-cases/{case_id}/quarantine", json={"oops": 1}).status_code == 422


def _run_once(tenant: Tenant, agent: HandAgent, device: str, case_id: str, app: str, device_tag: str, ok: bool) -> str:
    job = {"test_case_id": case_id, "app_file_id": app, "device_selector": {"tags": [device_tag]}}
    queued = tenant.client.post("/v1/test-cases/run", json={"jobs": [job]})
    assert queued.status_code == 200, queued.text
    run = agent.claim(device)
    assert run is not None and run["id"] == queued.json()["jobs"][0]["id"]
    if ok:
        agent.pass_(run)
    else:
        agent.fail(run)
    return str(run["id"])


def test_automatic_quarantine_and_leaving_it_after_passes_in_a_row(
    org: Tenant, fl_server: LiveServer, fl_db: Database
) -> None:
    settings = org.client.patch(
        "/v1/organization/settings", json={"auto_quarantine": True, "quarantine_exit_passes": 2}
    )
    assert settings.status_code == 200 and settings.json()["auto_quarantine"] is True
    build = _app(org)["id"]
    case_id = _case(org)
    t = tag()
    agent = HandAgent(fl_server, fl_db, [phone("a", t)])
    try:
        _run_once(org, agent, "a", case_id, build, t, ok=True)
        assert _test_case(org, case_id)["quarantined"] is False
        # Failed on the build it passed on: flaky, so into quarantine as the run ends.
        _run_once(org, agent, "a", case_id, build, t, ok=False)
        body = _test_case(org, case_id)
        assert body["flaky"] is True and body["quarantined"] is True
        assert body["quarantine"]["source"] == "flaky" and body["quarantine"]["reason"].startswith("Flaky: ")
        # Two passes in a row (first attempts) take it out.
        first = _run_once(org, agent, "a", case_id, build, t, ok=True)
        assert org.client.get(f"/v1/jobs/status/{first}").json()["quarantined"] is True
        assert _test_case(org, case_id)["quarantined"] is True
        _run_once(org, agent, "a", case_id, build, t, ok=True)
        after = _test_case(org, case_id)
        assert after["quarantined"] is False
        # Still flaky by its history, but what went before its release does not put it back.
        assert after["flaky"] is True
        _run_once(org, agent, "a", case_id, build, t, ok=True)
        assert _test_case(org, case_id)["quarantined"] is False
        # New evidence does.
        _run_once(org, agent, "a", case_id, build, t, ok=False)
        assert _test_case(org, case_id)["quarantined"] is True
    finally:
        agent.close()


def test_without_automatic_quarantine_flaky_test_cases_are_only_flagged(
    org: Tenant, fl_server: LiveServer, fl_db: Database
) -> None:
    build = _app(org)["id"]
    case_id = _case(org)
    t = tag()
    agent = HandAgent(fl_server, fl_db, [phone("a", t)])
    try:
        _run_once(org, agent, "a", case_id, build, t, ok=True)
        _run_once(org, agent, "a", case_id, build, t, ok=False)
    finally:
        agent.close()
    body = _test_case(org, case_id)
    assert (body["flaky"], body["quarantined"]) == (True, False)


def test_the_cli_shows_history_quarantines_and_a_quarantined_failure_does_not_fail_the_gate(
    org: Tenant, fl_server: LiveServer, fl_db: Database, tmp_path: Path
) -> None:
    build = _app(org)
    case = create_test_case(org, name=f"Payment {uuid.uuid4().hex[:6]}", flow=FLOW)
    cli = Cli(fl_server.url, org.key, tmp_path)
    quarantined = cli("test-cases", "quarantine", case["name"], "--reason", "known issue")
    assert quarantined.code == 0 and "in quarantine" in quarantined.stdout, quarantined.stderr
    listed = cli("test-cases", "list")
    assert "quarantined" in listed.stdout

    t = tag()
    agent = HandAgent(fl_server, fl_db, [phone("a", t)])
    try:
        live = cli.popen(
            "run", case["id"], "--app", build["id"], "--platform", "android", "--device-tag", t,
            "--wait", "--timeout", "60", "--poll-interval", "0.2",
        )  # fmt: skip
        run = None
        for _ in range(200):
            run = agent.claim("a")
            if run is not None:
                break
            time.sleep(0.05)
        assert run is not None
        agent.fail(run)
        done = live.wait(60)
    finally:
        agent.close()
    # Failed, reported, not gating: exit 0.
    assert done.code == 0, done
    assert "QUARANTINED (not gating), FAILED" in done.stdout

    history = cli("test-cases", "history", case["id"], "--json")
    assert history.code == 0, history.stderr
    [run_row] = history.json()["runs"]
    assert (run_row["status"], run_row["quarantined"]) == ("failed", True)
    table = cli("test-cases", "history", case["id"])
    assert build["sha256"][:12] in table.stdout and "quarantined" in table.stdout

    released = cli("test-cases", "quarantine", case["id"], "--off")
    assert released.code == 0 and "out of quarantine" in released.stdout


# ----------------------------------------------------------------------------------------- dashboard


def test_the_test_case_page_shows_history_flaky_badge_and_a_quarantine_switch(org: Tenant, fl_db: Database) -> None:
    build = _app(org)
    case_id = _case(org)
    _with_template(org, build["id"], case_id)
    _seed(fl_db, org, case_id, [Past("passed", build["id"], seconds=8), Past("failed", build["id"], seconds=30)])
    csrf = signed_in_tenant(fl_db, org)
    page = org.client.get(f"/test-cases/{case_id}")
    assert page.status_code == 200, page.text
    html = page.text
    assert 'id="flaky-badge"' in html and 'id="history-runs"' in html
    # The chart: an SVG drawn on the server, a bar per run with its result as a class, no inline style.
    assert '<svg class="history-chart"' in html
    assert html.count('<rect class="bar') == 3  # the cancelled first run, the pass, the failure
    assert 'class="bar failed"' in html and 'class="bar passed"' in html and 'class="bar cancelled"' in html
    assert "style=" not in html.split('<svg class="history-chart"')[1].split("</svg>")[0]
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]

    switched = org.client.post(
        f"/test-cases/{case_id}/quarantine",
        data={"csrf_token": csrf, "quarantined": "1", "reason": "flaky in CI"},
        follow_redirects=False,
    )
    assert switched.status_code == 303
    assert _test_case(org, case_id)["quarantine"]["reason"] == "flaky in CI"
    assert 'id="quarantine-off"' in org.client.get(f"/test-cases/{case_id}").text
    listing = org.client.get("/test-cases").text
    assert 'class="badge quarantined"' in listing and 'class="badge flaky"' in listing
    refused = org.client.post(
        f"/test-cases/{case_id}/quarantine", data={"csrf_token": "nope", "quarantined": "0"}, follow_redirects=False
    )
    assert refused.status_code == 403
    assert _test_case(org, case_id)["quarantined"] is True
