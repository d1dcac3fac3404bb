"""Runs that name a platform or a device selector are matched when a device claims them, to any free
online device that fits; run-all spreads a suite over every such device (or runs it on each device, as a
matrix) and queues the longest expected runs first. Real servers on SQLite and PostgreSQL, real agents
over HTTP (or the agent protocol spoken by hand where a test must choose which device asks)."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update

from qualgent.db.models import Organization, TestRun
from qualgent.drivers.base import DeviceConfig
from qualgent.ids import new_id
from tests.fixtures.agents import RunningAgent, agent_token, running_agent
from tests.fixtures.cli import Cli
from tests.fixtures.factories import PIXEL_7, Database, Tenant, create_test_case, make_tenant, upload_app
from tests.fixtures.servers import LiveServer, live_server

FLOW = "appId: com.example.app\n---\n- launchApp\n- back\n"


@pytest.fixture(scope="module")
def lb_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # Agents' devices go offline 8 s after their agent stops (an idle agent is seen every 5 s).
    with live_server(
        backend,
        tmp_path_factory.mktemp(f"late-{backend}"),
        lease_seconds=3,
        heartbeat_seconds=0.3,
        reaper_interval=0.2,
        agent_offline_after=8,
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def lb_db(lb_server: LiveServer) -> Iterator[Database]:
    database = Database(lb_server.settings.resolved_database_url)
    yield database
    database.close()


def _leave_nothing(tenant: Tenant) -> None:
    """Devices serve every organisation: a test's unfinished runs must not reach the next test's devices."""
    for status in ("queued", "running"):
        listed = tenant.client.get("/v1/jobs/list", params={"status": status, "limit": 1000}).json()["test_runs"]
        for run in listed:
            tenant.client.post(f"/v1/jobs/{run['id']}/cancel")


@pytest.fixture
def org(lb_db: Database, lb_server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(lb_db, lb_server.url)
    yield t
    _leave_nothing(t)
    t.client.close()


def _app(tenant: Tenant) -> str:
    response = upload_app(tenant)
    assert response.status_code == 200, response.text
    return str(response.json()["file"]["id"])


def _cases(tenant: Tenant, n: int, flow: str = FLOW) -> list[str]:
    return [create_test_case(tenant, name=f"Case {i} {uuid.uuid4().hex[:6]}", flow=flow)["id"] for i in range(n)]


def _tag() -> str:
    """A tag no other test's device has: selectors on it see only this test's devices."""
    return f"t-{uuid.uuid4().hex[:10]}"


def _device(name: str, os_version: str, *tags: str, platform: str = "Android", kind: str = "phone") -> DeviceConfig:
    return DeviceConfig(f"{name}-{uuid.uuid4().hex[:8]}", name, platform, os_version, kind, "simulator", tags=tags)


def _registered(handle: RunningAgent) -> None:
    deadline = time.monotonic() + 10
    while not handle.agent.registered.is_set():
        assert time.monotonic() < deadline, "the agent did not register"
        time.sleep(0.02)


def _run_all(tenant: Tenant, **body: Any) -> list[str]:
    response = tenant.client.post("/v1/test-cases/run-all", json=body)
    assert response.status_code == 200, response.text
    return [j["id"] for j in response.json()["jobs"]]


def _status(tenant: Tenant, run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = tenant.client.get(f"/v1/jobs/status/{run_id}").json()
    return body


def _wait_all(tenant: Tenant, run_ids: list[str], timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        runs = tenant.client.get("/v1/jobs/list", params={"ids": ",".join(run_ids), "limit": 1000}).json()
        runs = runs["test_runs"]
        if len(runs) == len(run_ids) and all(r["status"] in ("passed", "failed", "cancelled") for r in runs):
            return sorted(runs, key=lambda r: run_ids.index(r["id"]))
        if time.monotonic() > deadline:
            raise AssertionError(f"runs not finished after {timeout} s: {[r['status'] for r in runs]}")
        time.sleep(0.05)


def _attempts(tenant: Tenant, run_id: str) -> list[dict[str, Any]]:
    attempts: list[dict[str, Any]] = tenant.client.get(f"/v1/jobs/{run_id}/report").json()["attempts"]
    return attempts


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# ----------------------------------------------------------------------------- the scenario


def test_a_platform_run_all_spreads_over_every_free_device(
    org: Tenant, lb_server: LiveServer, lb_db: Database, tmp_path: Path
) -> None:
    """The report: `run-all` with `"platform": "android"` ran 4 runs one after another on the first Pixel 7
    while the other Android devices sat free. Now each free Android device takes one."""
    app = _app(org)
    _cases(org, 4)
    tag = _tag()
    devices = [_device(name, os, tag) for name, os in (("Pixel 7", "14.0"), ("Pixel 8", "14.0"), ("Pixel 6", "13.0"))]
    devices.append(_device("Samsung Galaxy S23", "13.0", tag))
    run_ids = _run_all(org, app_file_id=app, platform="android")
    queued = _status(org, run_ids[0])
    assert queued["device"] == "any Android device"
    assert queued["device_details"]["os_version"] == "any"
    assert queued["device_selector"] == {"platform": "android", "any": True}

    token = agent_token(lb_db)
    with running_agent(lb_server.url, token, devices, tmp_path, step_seconds=0.3):
        runs = _wait_all(org, run_ids)
    assert [r["status"] for r in runs] == ["passed"] * 4
    attempts = [_attempts(org, r["id"])[0] for r in runs]
    # Four devices, four runs at once: each on its own device, all overlapping in time.
    assert len({a["device_id"] for a in attempts}) == 4
    assert max(_time(a["started_at"]) for a in attempts) < min(_time(a["finished_at"]) for a in attempts)
    # Once claimed, the run's device fields are the device that took it; what was asked stays visible.
    by_config = {d.name: d for d in devices}
    for run, attempt in zip(runs, attempts, strict=True):
        assert run["device"] == attempt["device"] and run["device"] in by_config
        assert run["device_details"]["name"] == run["device"]
        assert run["device_details"]["os_version"] == by_config[run["device"]].os_version
        assert run["device_selector"] == {"platform": "android", "any": True}


# ------------------------------------------------------------------------- matching, by the protocol


class HandAgent:
    """The agent protocol spoken by hand: register devices, claim for one chosen device, finish."""

    def __init__(self, server: LiveServer, db: Database, devices: list[dict[str, Any]]) -> None:
        self.http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {agent_token(db)}"}, timeout=30
        )
        registered = self.http.post("/v1/agent/register", json={"devices": devices})
        assert registered.status_code == 200, registered.text
        self.ids = {d["config_id"]: d["id"] for d in registered.json()["devices"]}

    def claim(self, config_id: str) -> dict[str, Any] | None:
        body = {"device_ids": [self.ids[config_id]], "wait_seconds": 0}
        response = self.http.post("/v1/agent/claim", json=body)
        assert response.status_code == 200, response.text
        run: dict[str, Any] | None = response.json()["run"]
        return run

    def finish(self, run: dict[str, Any]) -> None:
        body = {"attempt": run["attempt"], "status": "passed"}
        assert self.http.post(f"/v1/agent/runs/{run['id']}/finish", json=body).status_code == 200

    def close(self) -> None:
        self.http.close()


# (config id, name, platform, os_version, device type, tags)
FARM = [
    ("p7", "Pixel 7", "Android", "14.0", "phone", ["lab", "pool:a"]),
    ("p6", "Pixel 6", "Android", "13.0", "phone", ["lab"]),
    ("s23", "Samsung Galaxy S23", "Android", "13", "phone", []),
    ("p8", "Pixel 8", "Android", "15", "phone", ["pool:b"]),
    ("tab", "Pixel Tablet", "Android", "12.1", "tablet", ["lab"]),
    ("ip15", "iPhone 15", "iOS", "17.0", "phone", ["lab"]),
]
ANDROID = {"p7", "p6", "s23", "p8", "tab"}

SELECTORS: list[tuple[dict[str, Any] | None, set[str]]] = [
    (None, ANDROID),  # platform alone
    ({"any": True}, ANDROID),
    ({"name": "pixel 7"}, {"p7"}),
    ({"name": ["Pixel 6", "Pixel 8"]}, {"p6", "p8"}),
    ({"name": "Nokia 3310"}, set()),
    ({"os_version": ">=13"}, {"p7", "p6", "s23", "p8"}),
    ({"os_version": ">13"}, {"p7", "p8"}),
    ({"os_version": "<=13"}, {"p6", "s23", "tab"}),
    ({"os_version": "<13"}, {"tab"}),
    ({"os_version": "==14"}, {"p7"}),
    ({"os_version": "13.0"}, {"p6", "s23"}),
    ({"os_version": "!=13"}, {"p7", "p8", "tab"}),
    ({"os_version": ">=13,<15"}, {"p7", "p6", "s23"}),
    ({"os_version": ">12.0"}, {"p7", "p6", "s23", "p8", "tab"}),
    ({"model": "Pixel *"}, {"p7", "p6", "p8", "tab"}),
    ({"model": "*GALAXY*"}, {"s23"}),
    ({"model": "Pixel ?"}, {"p7", "p6", "p8"}),
    ({"tags": ["lab"]}, {"p7", "p6", "tab"}),
    ({"tags": ["lab", "pool:a"]}, {"p7"}),
    ({"pool": "b"}, {"p8"}),
    ({"device_type": "tablet"}, {"tab"}),
    ({"model": "Pixel *", "os_version": ">=14", "device_type": "phone"}, {"p7", "p8"}),
]


def _with_tag(selector: dict[str, Any], tag: str) -> dict[str, Any]:
    return {**selector, "tags": [*selector.get("tags", []), tag]}


def test_each_selector_kind_matches_the_devices_it_names(org: Tenant, lb_server: LiveServer, lb_db: Database) -> None:
    """Every selector, tried against every device of a farm: exactly the devices that fit claim the run,
    and the run then shows that device."""
    tag = _tag()  # this test's devices only; other tests' devices never claim here
    farm = [
        {"id": f"{cid}-{tag}", "name": n, "platform": p, "os_version": v, "device_type": k, "tags": [*t, tag]}
        for cid, n, p, v, k, t in FARM
    ]
    agent = HandAgent(lb_server, lb_db, farm)
    app = _app(org)
    [case] = _cases(org, 1)
    try:
        for selector, expected in SELECTORS:
            job: dict[str, Any] = {"test_case_id": case, "app_file_id": app, "platform": "android"}
            if selector is not None:
                # The test's own tag too (`any` takes no other criterion, so it goes without).
                job["device_selector"] = selector if selector.get("any") else _with_tag(selector, tag)
            response = org.client.post("/v1/test-cases/run", json={"jobs": [job]})
            assert response.status_code == 200, (selector, response.text)
            run_id = response.json()["jobs"][0]["id"]
            reason = _status(org, run_id)["queue"]["reason"]
            assert reason == ("scheduling" if expected else "no_device"), (selector, reason)
            # The farm's devices ask in turn: the first that fits takes the run, none before it does.
            first_fit = next((cid for cid, *_ in FARM if cid in expected), None)
            took = None
            for cid, name, _platform, os_version, _kind, _tags in FARM:
                run = agent.claim(f"{cid}-{tag}")
                if run is None:
                    continue
                assert run["id"] == run_id, selector
                took = cid
                shown = _status(org, run_id)
                assert shown["status"] == "running"
                assert (shown["device"], shown["device_details"]["os_version"]) == (name, os_version)
                agent.finish(run)
                break
            assert took == first_fit, (selector, took)
            if took is None:
                assert org.client.post(f"/v1/jobs/{run_id}/cancel").json()["status"] == "cancelled"
    finally:
        agent.close()


def test_a_device_that_does_not_fit_never_takes_the_run(org: Tenant, lb_server: LiveServer, lb_db: Database) -> None:
    """Each selector again, now asking with every device that does not fit first: none of them takes it,
    then the first that fits does."""
    tag = _tag()
    farm = [
        {"id": f"{cid}-{tag}", "name": n, "platform": p, "os_version": v, "device_type": k, "tags": [*t, tag]}
        for cid, n, p, v, k, t in FARM
    ]
    agent = HandAgent(lb_server, lb_db, farm)
    app = _app(org)
    [case] = _cases(org, 1)
    try:
        for selector, expected in SELECTORS:
            if not expected:
                continue
            job: dict[str, Any] = {"test_case_id": case, "app_file_id": app, "platform": "android"}
            job["device_selector"] = _with_tag({} if selector is None or selector.get("any") else selector, tag)
            response = org.client.post("/v1/test-cases/run", json={"jobs": [job]})
            assert response.status_code == 200, response.text
            run_id = response.json()["jobs"][0]["id"]
            for cid, *_ in FARM:
                if cid not in expected:
                    assert agent.claim(f"{cid}-{tag}") is None, (selector, cid)
            fitting = sorted(expected)[0]
            run = agent.claim(f"{fitting}-{tag}")
            assert run is not None and run["id"] == run_id, selector
            agent.finish(run)
    finally:
        agent.close()


def test_a_job_that_names_one_device_keeps_that_device(
    org: Tenant, lb_server: LiveServer, lb_db: Database, tmp_path: Path
) -> None:
    """Four runs for the Pixel 7 while three Pixel 8s are free: all four run on the Pixel 7, one after
    another, as the reference's `device` has always meant."""
    app = _app(org)
    [case] = _cases(org, 1)
    jobs = [{"test_case_id": case, "app_file_id": app, "device": PIXEL_7} for _ in range(4)]
    response = org.client.post("/v1/test-cases/run", json={"jobs": jobs})
    assert response.status_code == 200, response.text
    run_ids = [j["id"] for j in response.json()["jobs"]]
    queued = _status(org, run_ids[0])
    assert (queued["device"], queued["device_selector"]) == ("Pixel 7", None)
    devices = [_device("Pixel 7", "14.0")] + [_device("Pixel 8", "14.0") for _ in range(3)]
    with running_agent(lb_server.url, agent_token(lb_db), devices, tmp_path, step_seconds=0.05):
        runs = _wait_all(org, run_ids)
    assert [r["status"] for r in runs] == ["passed"] * 4
    attempts = [_attempts(org, r["id"])[0] for r in runs]
    assert {a["device"] for a in attempts} == {"Pixel 7"}
    assert len({a["device_id"] for a in attempts}) == 1
    spans = sorted((_time(a["started_at"]), _time(a["finished_at"])) for a in attempts)
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(spans))


# ------------------------------------------------------------------------------ concurrent claims


def test_many_devices_claiming_at_once(org: Tenant, lb_server: LiveServer, lb_db: Database, tmp_path: Path) -> None:
    """Three agents with eight devices each claim 60 late-bound runs of two organisations at once: no
    device ever runs two runs, neither organisation passes its cap, and every run runs exactly once."""
    other = make_tenant(lb_db, lb_server.url)
    try:
        caps = {org.organization_id: 5, other.organization_id: 3}

        async def set_caps(session: Any) -> None:
            for org_id, cap in caps.items():
                await session.execute(
                    update(Organization).where(Organization.id == org_id).values(max_parallel_runs=cap)
                )

        lb_db.run(set_caps)
        tag = _tag()
        run_ids: list[str] = []
        for tenant in (org, other):
            app = _app(tenant)
            _cases(tenant, 30)
            run_ids += _run_all(tenant, app_file_id=app, device_selector={"tags": [tag]})
        fleets = [[_device(f"Phone {a}{n}", "14", tag) for n in range(8)] for a in "ABC"]

        seen: list[tuple[int, int, int]] = []  # (org running, other running, devices running two runs)
        stop = threading.Event()

        async def sample(session: Any) -> tuple[int, int, int]:
            counts = dict(
                (
                    await session.execute(
                        text(
                            "SELECT organization_id, count(*) FROM test_runs WHERE status = 'running' "
                            "AND organization_id IN (:a, :b) GROUP BY organization_id"
                        ),
                        {"a": org.organization_id, "b": other.organization_id},
                    )
                ).all()
            )
            doubled = (
                await session.execute(
                    text(
                        "SELECT count(*) FROM (SELECT device_id FROM test_runs WHERE status = 'running' "
                        "GROUP BY device_id HAVING count(*) > 1) AS doubled"
                    )
                )
            ).scalar_one()
            return counts.get(org.organization_id, 0), counts.get(other.organization_id, 0), int(doubled)

        def watch() -> None:
            sampler = Database(lb_db.url)
            try:
                while not stop.is_set():
                    seen.append(sampler.run(sample))
                    time.sleep(0.01)
            finally:
                sampler.close()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        cache = tmp_path
        try:
            with (
                running_agent(lb_server.url, agent_token(lb_db), fleets[0], cache, step_seconds=0.05),
                running_agent(lb_server.url, agent_token(lb_db), fleets[1], cache, step_seconds=0.05),
                running_agent(lb_server.url, agent_token(lb_db), fleets[2], cache, step_seconds=0.05),
            ):
                runs = _wait_all(org, run_ids[:30], timeout=120) + _wait_all(other, run_ids[30:], timeout=120)
        finally:
            stop.set()
            watcher.join(10)
        assert [r["status"] for r in runs] == ["passed"] * 60
        assert len(seen) > 10
        assert max(s[0] for s in seen) <= 5 and max(s[1] for s in seen) <= 3, max(seen)
        assert max(s[0] for s in seen) >= 2, "the first organisation never ran runs in parallel"
        assert all(s[2] == 0 for s in seen)
        by_device: dict[str, list[tuple[datetime, datetime]]] = {}
        for run in runs:
            tenant = org if run["id"] in run_ids[:30] else other
            [attempt] = _attempts(tenant, run["id"])  # each run ran once
            assert run["attempt"] == 1
            by_device.setdefault(attempt["device_id"], []).append(
                (_time(attempt["started_at"]), _time(attempt["finished_at"]))
            )
        assert len(by_device) > 3  # spread over the fleet
        for spans in by_device.values():  # a device's runs one after another, never two at once
            spans.sort()
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    finally:
        _leave_nothing(other)
        other.client.close()


# --------------------------------------------------------------------------------- spread and matrix


def test_spread_runs_each_test_case_once_on_any_fitting_device(
    org: Tenant, lb_server: LiveServer, lb_db: Database, tmp_path: Path
) -> None:
    app = _app(org)
    cases = _cases(org, 6)
    tag = _tag()
    run_ids = _run_all(org, app_file_id=app, mode="spread", device_selector={"tags": [tag], "model": "Pixel *"})
    assert len(run_ids) == 6
    devices = [_device("Pixel 7", "14", tag), _device("Pixel 8", "14", tag), _device("Pixel 6", "13", "other")]
    with running_agent(lb_server.url, agent_token(lb_db), devices, tmp_path, step_seconds=0.1):
        runs = _wait_all(org, run_ids)
    assert sorted(r["test_case"]["id"] for r in runs) == sorted(cases)
    assert {r["device"] for r in runs} == {"Pixel 7", "Pixel 8"}  # both fitting devices, never the Pixel 6
    assert runs[0]["device_selector"] == {"platform": "android", "model": "Pixel *", "tags": [tag]}


def test_spread_over_named_devices_runs_each_once_on_any_of_them(org: Tenant) -> None:
    app = _app(org)
    cases = _cases(org, 3)
    pixel_8 = PIXEL_7 | {"name": "Pixel 8"}
    run_ids = _run_all(org, app_file_id=app, mode="spread", devices=[PIXEL_7, pixel_8])
    assert len(run_ids) == len(cases)
    queued = _status(org, run_ids[0])
    assert queued["device"] == "Pixel 7 (14.0) or Pixel 8 (14.0) (Android)"
    assert queued["device_selector"]["devices"] == [
        {"name": "Pixel 7", "os_version": "14.0"},
        {"name": "Pixel 8", "os_version": "14.0"},
    ]


def test_matrix_runs_each_test_case_on_each_named_device(
    org: Tenant, lb_server: LiveServer, lb_db: Database, tmp_path: Path
) -> None:
    app = _app(org)
    cases = _cases(org, 3)
    pixel_8 = PIXEL_7 | {"name": "Pixel 8"}
    run_ids = _run_all(org, app_file_id=app, mode="matrix", devices=[PIXEL_7, pixel_8])
    assert len(run_ids) == 6
    devices = [_device("Pixel 7", "14.0"), _device("Pixel 8", "14.0"), _device("Pixel 8", "14.0")]
    with running_agent(lb_server.url, agent_token(lb_db), devices, tmp_path, step_seconds=0.05):
        runs = _wait_all(org, run_ids)
    assert [r["status"] for r in runs] == ["passed"] * 6
    assert sorted((r["test_case"]["id"], r["device"]) for r in runs) == sorted(
        (case, name) for case in cases for name in ("Pixel 7", "Pixel 8")
    )
    assert all(r["device_selector"] is None for r in runs)  # each run named its device


def test_matrix_over_a_selector_runs_on_each_kind_of_online_device_that_fits(
    org: Tenant, lb_server: LiveServer, lb_db: Database, tmp_path: Path
) -> None:
    app = _app(org)
    cases = _cases(org, 2)
    tag = _tag()
    devices = [_device("Pixel 7", "14.0", tag), _device("Pixel 7", "14.0", tag), _device("Pixel 6", "13.0", tag)]
    devices.append(_device("Pixel 8", "14.0"))  # online, but not in the selector
    with running_agent(lb_server.url, agent_token(lb_db), devices, tmp_path, step_seconds=0.05) as a:
        _registered(a)
        run_ids = _run_all(org, app_file_id=app, mode="matrix", device_selector={"tags": [tag]})
        runs = _wait_all(org, run_ids)
    assert sorted((r["test_case"]["id"], r["device"]) for r in runs) == sorted(
        (case, name) for case in cases for name in ("Pixel 6", "Pixel 7")
    )
    # Nothing online fits: a matrix has nothing to expand over.
    refused = org.client.post(
        "/v1/test-cases/run-all", json={"app_file_id": app, "mode": "matrix", "device_selector": {"tags": [_tag()]}}
    )
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "no_device"


# ------------------------------------------------------------------------------ no device, the CLI


def test_a_run_no_online_device_fits_says_no_device(
    org: Tenant, lb_server: LiveServer, lb_db: Database, tmp_path: Path
) -> None:
    app = _app(org)
    _cases(org, 1)
    tag = _tag()
    [run_id] = _run_all(org, app_file_id=app, device_selector={"tags": [tag], "os_version": ">=14"})
    assert _status(org, run_id)["queue"]["reason"] == "no_device"
    listed = org.client.get("/v1/jobs/list", params={"ids": run_id, "queue": "true"}).json()["test_runs"]
    assert listed[0]["queue"]["reason"] == "no_device"
    assert org.client.get("/v1/jobs/list", params={"ids": run_id}).json()["test_runs"][0]["queue"] is None

    # A device with the tag but too old an OS still does not fit; one that fits makes it start.
    old = _device("Pixel 6", "13.0", tag)
    fits = _device("Pixel 8", "14.0", tag)
    with running_agent(lb_server.url, agent_token(lb_db), [old], tmp_path) as a:
        _registered(a)
        assert _status(org, run_id)["queue"]["reason"] == "no_device"
    with running_agent(lb_server.url, agent_token(lb_db), [fits], tmp_path):
        [done] = _wait_all(org, [run_id])
    assert (done["status"], done["device"]) == ("passed", "Pixel 8")


def test_a_busy_fitting_device_says_devices_busy(
    org: Tenant, lb_server: LiveServer, lb_db: Database, tmp_path: Path
) -> None:
    app = _app(org)
    long_flow = "appId: com.example.app\n---\n- launchApp\n" + "- back\n" * 30
    _cases(org, 2, flow=long_flow)
    tag = _tag()
    first, second = _run_all(org, app_file_id=app, device_selector={"tags": [tag]})
    with running_agent(
        lb_server.url, agent_token(lb_db), [_device("Pixel 7", "14", tag)], tmp_path, step_seconds=0.2
    ) as a:
        _registered(a)
        deadline = time.monotonic() + 20
        while {_status(org, first)["status"], _status(org, second)["status"]} != {"running", "queued"}:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        waiting = first if _status(org, first)["status"] == "queued" else second
        assert _status(org, waiting)["queue"]["reason"] == "devices_busy"


def test_the_cli_shows_no_device_and_exits_3_after_the_grace(
    org: Tenant, lb_server: LiveServer, tmp_path: Path
) -> None:
    _app(org)
    _cases(org, 2)
    cli = Cli(lb_server.url, org.key, tmp_path)
    started = time.monotonic()
    done = cli(
        "run-all", "--platform", "android", "--latest", "--device-tag", _tag(), "--wait", "--no-device-grace", "1",
        "--poll-interval", "0.2",
    )  # fmt: skip
    took = time.monotonic() - started
    assert done.code == 3, done
    assert took < 30
    assert "waiting: no device fits" in done.stdout, done.stdout
    assert "no online device fits" in done.stdout + done.stderr
    runs = org.client.get("/v1/jobs/list").json()["test_runs"]
    assert [r["status"] for r in runs] == ["cancelled", "cancelled"]  # the CLI's own runs, cancelled


def test_the_cli_waits_out_a_shorter_absence(
    org: Tenant, lb_server: LiveServer, lb_db: Database, tmp_path: Path
) -> None:
    """A device that comes online within the grace period: the runs pass and the CLI exits 0."""
    _app(org)
    _cases(org, 1)
    tag = _tag()
    cli = Cli(lb_server.url, org.key, tmp_path)
    live = cli.popen(
        "run-all", "--platform", "android", "--latest", "--device-tag", tag, "--wait", "--no-device-grace", "20",
        "--poll-interval", "0.2",
    )  # fmt: skip
    live.wait_for_output("waiting: no device fits")
    time.sleep(1)
    with running_agent(lb_server.url, agent_token(lb_db), [_device("Pixel 7", "14", tag)], tmp_path):
        done = live.wait(60)
    assert done.code == 0, done


# ----------------------------------------------------------------------------------- longest first


def _seed_history(db: Database, tenant: Tenant, seconds: dict[str, list[float]], platform: str = "Android") -> None:
    """Passed runs of these test cases that took these many seconds (as an earlier day's runs did)."""

    async def seed(session: Any) -> None:
        template = (
            await session.execute(
                text("SELECT app_id, user_id, target_id FROM test_runs WHERE organization_id = :o LIMIT 1"),
                {"o": tenant.organization_id},
            )
        ).one()
        end = datetime.now(UTC) - timedelta(days=1)
        for case_id, durations in seconds.items():
            for n, took in enumerate(durations):
                finished = end - timedelta(minutes=n)
                session.add(
                    TestRun(
                        id=new_id("run"),
                        organization_id=tenant.organization_id,
                        test_case_id=case_id,
                        app_id=template.app_id,
                        user_id=template.user_id,
                        device_name="Pixel 7",
                        device_platform=platform,
                        device_os_version="14.0",
                        target_id=template.target_id,
                        status="passed",
                        priority="medium",
                        priority_rank=1,
                        progress=100,
                        attempt=1,
                        queued_at=finished - timedelta(seconds=took + 1),
                        started_at=finished - timedelta(seconds=took),
                        finished_at=finished,
                    )
                )
        await session.flush()

    db.run(seed)


def test_run_all_queues_the_longest_expected_runs_first(
    org: Tenant, lb_server: LiveServer, lb_db: Database, tmp_path: Path
) -> None:
    """Expected duration: the median of a test case's recent passed runs on the platform; a test case
    without history counts as the suite's median. The claim takes them in that order."""
    app = _app(org)
    short, long_, middle, new, ios_long = _cases(org, 5)
    # A first run, so that history rows have an app, a user and a target to refer to.
    setup = org.client.post(
        "/v1/test-cases/run", json={"jobs": [{"test_case_id": short, "app_file_id": app, "device": PIXEL_7}]}
    )
    org.client.post(f"/v1/jobs/{setup.json()['jobs'][0]['id']}/cancel")
    _seed_history(
        lb_db,
        org,
        {
            short: [2, 3, 400],  # median 3: one slow outlier does not make it long
            long_: [60, 50, 55],  # median 55
            middle: [10, 12, 11, 9],  # median 10.5
            # `new` has none: it counts as the suite's median, 10.5 (of 3, 55 and 10.5)
        },
    )
    _seed_history(lb_db, org, {ios_long: [500, 500]}, platform="iOS")  # another platform's history: ignored
    tag = _tag()
    run_ids = _run_all(org, app_file_id=app, device_selector={"tags": [tag]})
    by_case = {_status(org, r)["test_case"]["id"]: r for r in run_ids}
    # The response keeps the test cases' order; the queue is longest first.
    assert [_status(org, r)["test_case"]["id"] for r in run_ids] == [short, long_, middle, new, ios_long]
    positions = {case: _status(org, by_case[case])["queue"]["position"] for case in by_case}
    # 10.5 (middle, new, ios_long: without Android history it counts as the median) keep their order.
    assert sorted(positions, key=positions.__getitem__) == [long_, middle, new, ios_long, short]
    # One device takes them one at a time, in that order.
    with running_agent(lb_server.url, agent_token(lb_db), [_device("Pixel 7", "14", tag)], tmp_path):
        runs = _wait_all(org, run_ids)
    started = sorted(runs, key=lambda r: r["started_at"])
    assert [r["test_case"]["id"] for r in started] == [long_, middle, new, ios_long, short]


def test_without_history_the_suite_keeps_its_order(org: Tenant) -> None:
    app = _app(org)
    cases = _cases(org, 4)
    run_ids = _run_all(org, app_file_id=app, device_selector={"tags": [_tag()]})
    positions = [_status(org, r)["queue"]["position"] for r in run_ids]
    assert positions == [1, 2, 3, 4]
    assert [_status(org, r)["test_case"]["id"] for r in run_ids] == cases


# ------------------------------------------------------------------------- the reference's shapes


def test_the_references_request_shapes_still_work(org: Tenant) -> None:
    """The reference's run and run-all bodies (its trailing comma included) queue as before."""
    app = _app(org)
    [case] = _cases(org, 1)
    body = (
        '{"jobs": [{"device": {"name": "Pixel 7", "platform": "Android", "os_version": "14", '
        f'"orientation": "portrait"}}, "test_case_id": "{case}", "app_file_id": "{app}",}}]}}'
    )
    run = org.client.post("/v1/test-cases/run", content=body, headers={"Content-Type": "application/json"})
    assert run.status_code == 200, run.text
    shown = _status(org, run.json()["jobs"][0]["id"])
    assert (shown["device"], shown["device_details"]["os_version"], shown["device_selector"]) == (
        "Pixel 7",
        "14.0",
        None,
    )
    python_shape = {
        "jobs": [
            {"test_case_id": case, "platform": "android", "app_file_id": app, "device": PIXEL_7},
            {"test_case_id": case, "platform": "android"},
        ]
    }
    both = org.client.post("/v1/test-cases/run", json=python_shape)
    assert both.status_code == 200, both.text
    pinned, any_android = (_status(org, j["id"]) for j in both.json()["jobs"])
    assert pinned["device"] == "Pixel 7" and any_android["device"] == "any Android device"
    run_all = org.client.post(
        "/v1/test-cases/run-all",
        json={
            "device": {"name": "Pixel 7", "platform": "Android", "os_version": "14", "orientation": "portrait"},
            "app_file_id": app,
        },
    )
    assert run_all.status_code == 200 and len(run_all.json()["jobs"]) == 1
    assert set(run_all.json()["jobs"][0]) == {"id", "link", "status"}


def test_bad_selectors_are_refused_and_name_the_field(org: Tenant) -> None:
    app = _app(org)
    [case] = _cases(org, 1)
    bad = [
        ({"os_version": "about 13"}, "device_selector"),
        ({"os_version": ">=13,<="}, "device_selector"),
        ({"any": True, "model": "Pixel *"}, "device_selector.any"),
        ({"platform": "windows"}, "device_selector.platform"),
        ({"platform": "ios"}, "device_selector.platform"),  # the job says android
    ]
    for selector, field in bad:
        job = {"test_case_id": case, "app_file_id": app, "platform": "android", "device_selector": selector}
        response = org.client.post("/v1/test-cases/run", json={"jobs": [job]})
        assert response.status_code == 422, (selector, response.text)
        assert response.json()["error"]["details"][0]["field"] == field, (selector, response.text)
    unknown = {"test_case_id": case, "app_file_id": app, "device_selector": {"colour": "red"}}
    assert org.client.post("/v1/test-cases/run", json={"jobs": [unknown]}).status_code == 422
    both = {"test_case_id": case, "app_file_id": app, "device": PIXEL_7, "device_selector": {"any": True}}
    assert org.client.post("/v1/test-cases/run", json={"jobs": [both]}).status_code == 422
    # The platform comes from the app when the selector and the job name none.
    from_app = {"test_case_id": case, "app_file_id": app, "device_selector": {"model": "Pixel *"}}
    queued = org.client.post("/v1/test-cases/run", json={"jobs": [from_app]})
    assert queued.status_code == 200, queued.text
    assert _status(org, queued.json()["jobs"][0]["id"])["device_selector"]["platform"] == "android"
    two = org.client.post(
        "/v1/test-cases/run-all", json={"app_file_id": app, "device": PIXEL_7, "device_selector": {"any": True}}
    )
    assert two.status_code == 422 and two.json()["error"]["details"][0]["field"] == "device_selector"
