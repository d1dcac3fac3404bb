"""The only place a run changes state.

Every change is an UPDATE whose WHERE names the state it expects (and, for an agent's reports, the
attempt and agent), so two actors racing on one run cannot both win: the loser's UPDATE matches no row.
A change into or out of ``running`` adjusts ``organizations.running_runs`` in the same transaction,
which is what keeps the per-organisation cap exact under concurrent claims.

States: queued → running → passed | failed | cancelled; running → queued again when an agent's lease
expires and attempts remain (an infrastructure retry), or when its attempt failed as `test` and test
retries remain (a test retry, ahead of the queue and preferring another device); queued → failed (queue
timeout) | cancelled.

A run that starts or ends writes its webhook event (``run.started``, ``run.finished``) to the outbox in
the same transaction (webhooks/repository.py: nothing when its organisation has no enabled endpoint).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Literal

from sqlalchemy import (
    Integer,
    String,
    Table,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.base import UTCDateTime, utcnow
from qualgent.db.models import Device, DeviceMatch, Organization, RunAttempt, TestRun
from qualgent.db.session import execute_prebuilt
from qualgent.metrics.instruments import RUNS_FINISHED
from qualgent.webhooks.repository import record_events

TERMINAL = frozenset({"passed", "failed", "cancelled"})
FailureKind = Literal["test", "timeout", "infrastructure"]
FinalStatus = Literal["passed", "failed", "cancelled"]


@dataclass(frozen=True)
class DeviceSpec:
    """A free device offered to a claim, with the targets it fits (``device_matches``)."""

    device_id: str
    name: str
    platform: str
    os_version: str
    targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Claimed:
    run_id: str
    attempt: int
    device_id: str
    device_name: str
    lease_expires_at: datetime
    organization_id: str


# Our UPDATEs name rows by key and nothing reads ORM objects of these rows afterwards in the same
# transaction, so the ORM need not find and refresh matching objects in the session after each one
# (its default "evaluate" pass costs more than the statement on the hot path of every run).
NO_SYNC = {"synchronize_session": False}


def _is_sqlite(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


RUNS, ORGS, DEVICES, ATTEMPTS = _table(TestRun), _table(Organization), _table(Device), _table(RunAttempt)
MATCHES = _table(DeviceMatch)

# Test retries go ahead of the queue (within their priority): their queue order is this plus their
# requeue time in the same units as a new run's, so it is below every new run's (and the 0 of runs from
# before queue orders), and retries among themselves keep the order they failed in.
RETRY_ORDER_BASE = -(1 << 62)


def queue_order_at(now: datetime) -> int:
    """A run queued at ``now`` orders from here (its place in its batch is added): milliseconds << 20."""
    return int(now.timestamp() * 1000) << 20


@dataclass(frozen=True)
class _Left:
    """A run that just left `running`, and what must follow."""

    run_id: str
    attempt: int
    organization_id: str
    device_id: str | None
    outcome: str
    message: str | None
    kind: str | None = None  # the failure's kind, for an attempt that failed
    step: int | None = None


async def _leave_running(session: AsyncSession, left: Sequence[_Left], now: datetime) -> None:
    """What follows runs' changes out of `running`, in the same transaction: their organisations'
    counts, their devices and their attempts' records.

    Lock order on PostgreSQL, the same in every transaction here: runs, then organisations (one UPDATE
    each, in ID order), then devices. A claim takes one organisation (its candidate run, then its
    organisation, then devices), so no two transactions can wait for each other in a circle.
    """
    for organization_id, count in sorted(Counter(x.organization_id for x in left).items()):
        await _adjust_running(session, organization_id, -count)
    for x in left:
        await _release_device(session, x.device_id, x.run_id)
    for x in left:
        await _close_attempt(session, x, now)


@cache
def _adjust_running_statement() -> Any:
    return (
        update(ORGS)
        .where(ORGS.c.id == bindparam("org_id"))
        .values(running_runs=ORGS.c.running_runs + bindparam("delta"))
    )


async def _adjust_running(session: AsyncSession, organization_id: str, delta: int) -> None:
    await execute_prebuilt(session, _adjust_running_statement(), {"org_id": organization_id, "delta": delta})


@cache
def _release_device_statement() -> Any:
    return (
        update(DEVICES)
        .where(DEVICES.c.id == bindparam("device_id_"), DEVICES.c.current_run_id == bindparam("run_id"))
        .values(current_run_id=None)
    )


async def _release_device(session: AsyncSession, device_id: str | None, run_id: str) -> None:
    if device_id:
        await execute_prebuilt(session, _release_device_statement(), {"device_id_": device_id, "run_id": run_id})


@cache
def _close_attempt_statement() -> Any:
    return (
        update(ATTEMPTS)
        .where(
            ATTEMPTS.c.run_id == bindparam("run_id_"),
            ATTEMPTS.c.number == bindparam("number_"),
            ATTEMPTS.c.outcome.is_(None),
        )
        .values(
            outcome=bindparam("outcome_"),
            message=bindparam("message_"),
            finished_at=bindparam("now"),
            failure_kind=bindparam("kind_"),
            failure_step=bindparam("step_"),
        )
    )


async def _close_attempt(session: AsyncSession, left: _Left, now: datetime) -> None:
    await execute_prebuilt(
        session,
        _close_attempt_statement(),
        {
            "run_id_": left.run_id,
            "number_": left.attempt,
            "outcome_": left.outcome,
            "message_": left.message,
            "now": now,
            "kind_": left.kind,
            "step_": left.step,
        },
    )


# ----------------------------------------------------------------------------------------------- claim


def _devices_for(devices: Sequence[DeviceSpec]) -> dict[str, DeviceSpec]:
    """Target → the free device a run of that target goes to. Of the devices that fit a target, the one
    that fits the fewest targets: a device that could also serve other runs stays free for them."""
    device_for: dict[str, DeviceSpec] = {}
    for d in sorted(devices, key=lambda d: len(d.targets)):
        for target in d.targets:
            device_for.setdefault(target, d)
    return device_for


def _alternates(devices: Sequence[DeviceSpec], device_for: dict[str, DeviceSpec]) -> dict[str, DeviceSpec]:
    """Target → another free device that fits it (the next that fits the fewest targets): where a test
    retry goes when the device chosen for its target is the one that failed it."""
    alternate: dict[str, DeviceSpec] = {}
    for d in sorted(devices, key=lambda d: len(d.targets)):
        for target in d.targets:
            if device_for.get(target) is not d:
                alternate.setdefault(target, d)
    return alternate


def _by_target(key: str, targets: int) -> Any:
    """The value bound as ``{key}{i}`` for the run's target ``t{i}``: the device chosen for it (d), its
    name (n) or OS version (v); or the alternate device (a), its name (an) or OS version (av)."""
    return case(
        *[
            (RUNS.c.target_id == bindparam(f"t{i}", type_=String), bindparam(f"{key}{i}", type_=String))
            for i in range(targets)
        ]
    )


@cache
def _candidate_statement(targets: int, one_organisation: bool = False) -> Any:
    """The best queued run of any of ``targets`` targets (bound as t0, t1, …, with d0, d1, …: the free
    device each would go to, and a0, a1, …: another free device that fits it, or NULL), of the
    organisation bound as ``org_id_`` when ``one_organisation``. Read off ix_test_runs_queue in claim
    order. A test retry is not taken for the device that failed it before its ``retry_avoid_until``
    unless another of the free devices fits it (``retry_avoid_until`` is NULL for every other run, which
    the first test settles)."""
    cap = func.coalesce(ORGS.c.max_parallel_runs, bindparam("default_cap", type_=Integer))
    wanted = [bindparam(f"t{i}", type_=String) for i in range(targets)]
    stmt = (
        select(
            RUNS.c.id,
            RUNS.c.organization_id,
            RUNS.c.target_id,
            RUNS.c.retry_avoid_device_id,
            RUNS.c.retry_avoid_until,
        )
        .join(ORGS, ORGS.c.id == RUNS.c.organization_id)
        .where(
            RUNS.c.status == "queued",
            RUNS.c.target_id.in_(wanted),
            ORGS.c.running_runs < cap,
            or_(
                RUNS.c.retry_avoid_until.is_(None),
                RUNS.c.retry_avoid_until <= bindparam("now"),
                RUNS.c.retry_avoid_device_id != _by_target("d", targets),
                _by_target("a", targets).is_not(None),
            ),
        )
        .order_by(RUNS.c.priority_rank.desc(), RUNS.c.queue_order, RUNS.c.id)
        .limit(1)
    )
    return stmt.where(RUNS.c.organization_id == bindparam("org_id_")) if one_organisation else stmt


def candidate(
    devices: Sequence[DeviceSpec],
    default_cap: int,
    organization_id: str | None = None,
    now: datetime | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The statement and parameters of the run ``claim`` would take for these devices: best priority,
    then queue order, organisation under its cap (and only ``organization_id``'s when given). Also run
    read-only (outside any transaction) to skip claim attempts that would find nothing."""
    params: dict[str, Any] = {"default_cap": default_cap, "now": now or utcnow()}
    if organization_id is not None:
        params["org_id_"] = organization_id
    device_for = _devices_for(devices)
    alternate = _alternates(devices, device_for)
    for i, (target, device) in enumerate(device_for.items()):
        params[f"t{i}"] = target
        params[f"d{i}"] = device.device_id
        params[f"a{i}"] = alternate[target].device_id if target in alternate else None
    return _candidate_statement(len(device_for), organization_id is not None), params


@cache
def _insert_attempts_statement() -> Any:
    return insert(ATTEMPTS)


async def claim(
    session: AsyncSession,
    *,
    agent_id: str,
    devices: Sequence[DeviceSpec],
    default_cap: int,
    lease_seconds: float,
    max_runs: int = 1,
    organization_id: str | None = None,
) -> list[Claimed]:
    """Hand the best queued runs that ``devices`` can take to the agent, at most one per device and
    ``max_runs`` in all (an agent with several free devices claims for all of them in one go).

    Best: highest priority, then oldest; only from organisations under their parallel-run cap. On
    PostgreSQL the pick, the cap check and the state change are one statement (SKIP LOCKED, so
    concurrent claimers never wait on each other's candidates; the organisation row's conditional
    increment serialises claims of one organisation, so the cap holds). On SQLite the session is a
    writer (BEGIN IMMEDIATE), which serialises claims outright.

    The runs of one claim are of one organisation (the best run's): a transaction that held two
    organisations' rows, taken in the order of their runs, could deadlock with one that takes them in
    ID order (see ``_leave_running``). With ``organization_id`` (an organisation's agent), only that
    organisation's runs.
    """
    now = utcnow()
    lease = now + timedelta(seconds=lease_seconds)
    free = list(devices)
    claimed: list[Claimed] = []
    while free and len(claimed) < max_runs:
        one = await _claim_one(session, agent_id, free, default_cap, now, lease, organization_id)
        if one is None:
            break
        claimed.append(one)
        organization_id = one.organization_id
        free = [d for d in free if d.device_id != one.device_id]
    if claimed:
        await execute_prebuilt(
            session,
            _insert_attempts_statement(),
            [
                {
                    "run_id": c.run_id,
                    "number": c.attempt,
                    "agent_id": agent_id,
                    "device_id": c.device_id,
                    "device_name": c.device_name,
                    "started_at": now,
                }
                for c in claimed
            ],
        )
        await record_events(session, "run.started", [(c.organization_id, c.run_id) for c in claimed])
    return claimed


def _start_values() -> dict[str, Any]:
    return {
        "status": "running",
        "attempt": RUNS.c.attempt + 1,
        "agent_id": bindparam("agent_id_"),
        "lease_expires_at": bindparam("lease"),
        "heartbeat_at": bindparam("now"),
        "started_at": bindparam("now"),
        "progress": 0,
        "updated_at": bindparam("now"),
    }


_RETURNING = (RUNS.c.id, RUNS.c.attempt, RUNS.c.device_id, RUNS.c.device_name, RUNS.c.organization_id)


@cache
def _sqlite_claim_statements() -> tuple[Any, Any]:
    cap = func.coalesce(ORGS.c.max_parallel_runs, bindparam("default_cap", type_=Integer))
    bump = (
        update(ORGS)
        .where(ORGS.c.id == bindparam("org_id"), ORGS.c.running_runs < cap)
        .values(running_runs=ORGS.c.running_runs + 1)
        .returning(ORGS.c.id)
    )
    start = (
        update(RUNS)
        .where(RUNS.c.id == bindparam("run_id"), RUNS.c.status == "queued")
        .values(
            **_start_values(),
            device_id=bindparam("device_id_"),
            device_name=bindparam("device_name_"),
            device_os_version=bindparam("device_os_"),
        )
        .returning(*_RETURNING)
    )
    return bump, start


@cache
def _postgresql_claim_statement(targets: int, one_organisation: bool) -> Any:
    """Pick, cap check and start in one statement, for ``targets`` targets (bound as for the candidate,
    plus d0, n0, v0, d1, …: the free device each target's run goes to, its name and OS version)."""
    cap = func.coalesce(ORGS.c.max_parallel_runs, bindparam("default_cap", type_=Integer))
    cand = _candidate_statement(targets, one_organisation).with_for_update(of=RUNS, skip_locked=True).cte("candidate")
    org = (
        update(ORGS)
        .where(ORGS.c.id == cand.c.organization_id, ORGS.c.running_runs < cap)
        # func.now(): a second `updated_at` bind in one statement would clash with the run's.
        .values(running_runs=ORGS.c.running_runs + 1, updated_at=func.now())
        .returning(ORGS.c.id)
        .cte("bumped")
    )

    # The device is picked in the same statement, the one chosen for the run's target (the alternate one
    # for a test retry that must avoid it); the run's device fields become that device's (a late-bound
    # run showed what it asked for until now).
    avoided = and_(
        RUNS.c.retry_avoid_until > bindparam("now"), RUNS.c.retry_avoid_device_id == _by_target("d", targets)
    )

    def chosen(key: str, alternate: str) -> Any:
        return case((avoided, _by_target(alternate, targets)), else_=_by_target(key, targets))

    return (
        update(RUNS)
        .where(RUNS.c.id == cand.c.id, exists(select(org.c.id)))
        .values(
            **_start_values(),
            device_id=chosen("d", "a"),
            device_name=chosen("n", "an"),
            device_os_version=chosen("v", "av"),
        )
        .returning(*_RETURNING)
    )


@cache
def _take_device_statement() -> Any:
    return (
        update(DEVICES)
        .where(DEVICES.c.id == bindparam("device_id_"), DEVICES.c.current_run_id.is_(None))
        .values(current_run_id=bindparam("run_id"))
        .returning(DEVICES.c.id)
    )


async def _claim_one(
    session: AsyncSession,
    agent_id: str,
    devices: Sequence[DeviceSpec],
    default_cap: int,
    now: datetime,
    lease: datetime,
    organization_id: str | None,
) -> Claimed | None:
    device_for = _devices_for(devices)
    alternate = _alternates(devices, device_for)
    stmt, params = candidate(devices, default_cap, organization_id, now)
    start = {"agent_id_": agent_id, "lease": lease, "now": now, "default_cap": default_cap}

    if _is_sqlite(session):
        picked = (await execute_prebuilt(session, stmt, params)).first()
        if picked is None:
            return None
        run_id, org_id, target_id, avoid_device, avoid_until = picked
        device = device_for[target_id]
        if avoid_until is not None and avoid_until > now and avoid_device == device.device_id:
            device = alternate[target_id]  # the statement took the run only because there is one
        bump, start_run = _sqlite_claim_statements()
        if (await execute_prebuilt(session, bump, {"org_id": org_id, "default_cap": default_cap})).first() is None:
            return None
        taking = {"device_id_": device.device_id, "device_name_": device.name, "device_os_": device.os_version}
        row = (await execute_prebuilt(session, start_run, {**start, "run_id": run_id, **taking})).first()
    else:
        for i, (target, d) in enumerate(device_for.items()):
            params.update({f"n{i}": d.name, f"v{i}": d.os_version})
            other = alternate.get(target)
            params.update({f"an{i}": other.name if other else None, f"av{i}": other.os_version if other else None})
        claim_stmt = _postgresql_claim_statement(len(device_for), organization_id is not None)
        row = (await execute_prebuilt(session, claim_stmt, {**params, **start})).first()
    if row is None:
        return None

    run_id, attempt, device_id_taken, device_name, run_organization_id = row
    assert device_id_taken is not None  # set by the statement above
    taken = await execute_prebuilt(session, _take_device_statement(), {"device_id_": device_id_taken, "run_id": run_id})
    if taken.first() is None:
        # The device was taken by another claim since the agent offered it: give the runs back.
        raise DeviceBusy(device_id_taken)
    return Claimed(
        run_id=run_id,
        attempt=attempt,
        device_id=device_id_taken,
        device_name=device_name,
        lease_expires_at=lease,
        organization_id=run_organization_id,
    )


class DeviceBusy(Exception):
    """Raised inside a claim's transaction so that it rolls back whole."""


# ------------------------------------------------------------------------------------ agent reports


def _owned_where() -> tuple[Any, ...]:
    """The run is still this agent's running attempt: the condition every agent report is made on."""
    return (
        RUNS.c.id == bindparam("run_id_"),
        RUNS.c.status == "running",
        RUNS.c.attempt == bindparam("attempt_"),
        RUNS.c.agent_id == bindparam("agent_id_"),
    )


@cache
def _heartbeat_statement(with_progress: bool) -> Any:
    values: dict[str, Any] = {"lease_expires_at": bindparam("lease"), "heartbeat_at": bindparam("now")}
    if with_progress:
        values["progress"] = bindparam("progress_")
    return update(RUNS).where(*_owned_where()).values(**values).returning(RUNS.c.cancel_requested)


async def heartbeat(
    session: AsyncSession, run_id: str, attempt: int, agent_id: str, lease_seconds: float, progress: int | None
) -> tuple[bool, datetime] | None:
    """Extend the lease. Returns (cancel requested, new lease expiry), or None if the run moved on."""
    now = utcnow()
    lease = now + timedelta(seconds=lease_seconds)
    params: dict[str, Any] = {"run_id_": run_id, "attempt_": attempt, "agent_id_": agent_id, "lease": lease, "now": now}
    if progress is not None:
        params["progress_"] = max(0, min(99, progress))
    row = (await execute_prebuilt(session, _heartbeat_statement(progress is not None), params)).first()
    return None if row is None else (bool(row[0]), lease)


_ENDED = (
    RUNS.c.organization_id,
    RUNS.c.device_id,
    RUNS.c.test_case_id,
    RUNS.c.test_retries_used,
    RUNS.c.quarantined,
    RUNS.c.auto_quarantine,
)


@cache
def _finish_statements() -> tuple[Any, Any, Any]:
    finish = (
        update(RUNS)
        .where(*_owned_where())
        .values(
            status=bindparam("status_"),
            progress=100,
            finished_at=bindparam("now"),
            updated_at=bindparam("now"),
            lease_expires_at=None,
            failure_kind=bindparam("kind_"),
            failure_message=bindparam("message_"),
            failure_step=bindparam("step_"),
        )
        .returning(*_ENDED)
    )
    current = select(RUNS.c.status, RUNS.c.attempt, RUNS.c.agent_id).where(RUNS.c.id == bindparam("run_id_"))
    attempt = select(ATTEMPTS.c.outcome, ATTEMPTS.c.agent_id).where(
        ATTEMPTS.c.run_id == bindparam("run_id_"), ATTEMPTS.c.number == bindparam("attempt_")
    )
    return finish, current, attempt


@cache
def _retry_statement() -> Any:
    """A test failure with test retries left: the run goes back to the queue, ahead of it, with its device
    to avoid (the one that failed it, now NULL in ``device_id``: SET reads the row as it was) until
    ``avoid_until``, unless no other online device that may run it fits its target (then any device
    may take it)."""
    other_device_fits = exists(
        select(MATCHES.c.device_id)
        .join(DEVICES, DEVICES.c.id == MATCHES.c.device_id)
        .where(
            MATCHES.c.target_id == RUNS.c.target_id,
            DEVICES.c.online.is_(True),
            DEVICES.c.id != RUNS.c.device_id,
            # A device that may run this organisation's runs: a shared agent's or its own agents'.
            or_(DEVICES.c.organization_id.is_(None), DEVICES.c.organization_id == RUNS.c.organization_id),
        )
    )
    return (
        update(RUNS)
        .where(*_owned_where(), RUNS.c.test_retries_used < RUNS.c.test_retries, RUNS.c.cancel_requested == false())
        .values(
            status="queued",
            progress=0,
            queued_at=bindparam("now"),
            updated_at=bindparam("now"),
            lease_expires_at=None,
            agent_id=None,
            device_id=None,
            queue_order=bindparam("order_"),
            test_retries_used=RUNS.c.test_retries_used + 1,
            retry_avoid_device_id=RUNS.c.device_id,
            retry_avoid_until=case((other_device_fits, bindparam("avoid_until", type_=UTCDateTime())), else_=None),
        )
        .returning(
            RUNS.c.organization_id,
            RUNS.c.retry_avoid_device_id,
            RUNS.c.test_case_id,
            RUNS.c.test_retries_used,
            RUNS.c.quarantined,
            RUNS.c.auto_quarantine,
        )
    )


@dataclass(frozen=True)
class Report:
    """An agent's report of the end of its attempt at a run."""

    run_id: str
    attempt: int
    status: FinalStatus
    failure: tuple[FailureKind, str, int | None] | None = None


Outcome = Literal["done", "repeat", "moved_on"]


@dataclass(frozen=True)
class Ended:
    """A run whose attempt a report just ended: finished (``status``), or queued again for a test retry."""

    run_id: str
    organization_id: str
    test_case_id: str
    status: str  # passed | failed | cancelled | queued (a test retry)
    test_retries_used: int
    quarantined: bool  # its test case was in quarantine when it was queued
    auto_quarantine: bool  # its organisation quarantines flaky test cases

    @property
    def retried(self) -> bool:
        return self.status == "queued"

    @property
    def flaky(self) -> bool:
        """Passed on a test retry."""
        return self.status == "passed" and self.test_retries_used > 0


@dataclass
class Finished:
    outcomes: list[Outcome]
    ended: list[Ended]


async def finish(
    session: AsyncSession, agent_id: str, reports: Sequence[Report], *, retry_device_wait: float = 0
) -> Finished:
    """Agents report the end of their attempts, one or several in a transaction. A repeat of the same
    report is "repeat" (answer 200); a report for a run that has moved on (requeued, cancelled, taken by
    another attempt) is "moved_on" and changes nothing.

    An attempt that failed as `test` while the run has test retries left puts the run back in the queue
    instead (a new attempt of the same run follows): ahead of the runs of its priority, and, for
    ``retry_device_wait`` seconds, on any device that fits but the one that failed it, unless that one
    is the only online device that fits.

    Every run's row is changed first, then what follows from it (organisation counts, devices,
    attempts): rows are locked in the same order as everywhere else (runs, in ID order, then
    organisations), so a batch of reports cannot deadlock with the reaper, a claim or a group's
    cancellation (``cancel_batches``).
    """
    now = utcnow()
    finish_stmt, current_stmt, attempt_stmt = _finish_statements()
    outcomes: dict[int, Outcome] = {}
    left: list[_Left] = []
    ended: list[Ended] = []
    for index, report in sorted(enumerate(reports), key=lambda item: item[1].run_id):
        kind, message, step = report.failure if report.failure else (None, None, None)
        owned = {"run_id_": report.run_id, "attempt_": report.attempt, "agent_id_": agent_id}
        row = None
        status: str = report.status
        if report.status == "failed" and kind == "test":
            retry = {"now": now, "order_": RETRY_ORDER_BASE + queue_order_at(now)}
            retry["avoid_until"] = now + timedelta(seconds=retry_device_wait)
            row = (await execute_prebuilt(session, _retry_statement(), {**owned, **retry})).first()
            status = "queued" if row is not None else status
        if row is None:
            values = {"status_": report.status, "now": now, "kind_": kind, "message_": message, "step_": step}
            row = (await execute_prebuilt(session, finish_stmt, {**owned, **values})).first()
        if row is not None:
            if status != "queued":
                RUNS_FINISHED.labels(report.status, kind or "").inc()
            org_id, device_id, test_case_id, retries_used, quarantined, auto = row
            left.append(_Left(report.run_id, report.attempt, org_id, device_id, report.status, message, kind, step))
            ended.append(
                Ended(report.run_id, org_id, test_case_id, status, retries_used, bool(quarantined), bool(auto))
            )
            outcomes[index] = "done"
            continue
        outcomes[index] = await _repeat_or_moved_on(session, current_stmt, attempt_stmt, report, agent_id)
    await _leave_running(session, left, now)
    await record_events(session, "run.finished", [(e.organization_id, e.run_id) for e in ended if not e.retried])
    return Finished([outcomes[i] for i in range(len(reports))], ended)


async def _repeat_or_moved_on(
    session: AsyncSession, current_stmt: Any, attempt_stmt: Any, report: Report, agent_id: str
) -> Outcome:
    """A report that changed nothing: the same report again (its run still ended that way by this agent,
    or, for a test failure, that attempt of it did and the run went on to a retry), or one for a run that
    moved on."""
    current = (await execute_prebuilt(session, current_stmt, {"run_id_": report.run_id})).first()
    if current is not None and tuple(current) == (report.status, report.attempt, agent_id):
        return "repeat"
    if current is not None and report.status == "failed":
        params = {"run_id_": report.run_id, "attempt_": report.attempt}
        attempt = (await execute_prebuilt(session, attempt_stmt, params)).first()
        if attempt is not None and tuple(attempt) == ("failed", agent_id):
            return "repeat"
    return "moved_on"


# --------------------------------------------------------------------------------------- user actions


async def cancel(session: AsyncSession, organization_id: str, run_id: str) -> str | None:
    """Cancel a run: a queued one at once; a running one is flagged and its agent stops it at its next
    heartbeat. Returns the run's status after the call, or None when the run had already finished."""
    now = utcnow()
    queued = await session.execute(
        update(TestRun)
        .where(TestRun.id == run_id, TestRun.organization_id == organization_id, TestRun.status == "queued")
        .values(status="cancelled", progress=100, finished_at=now, updated_at=now)
        .returning(TestRun.id),
        execution_options=NO_SYNC,
    )
    if queued.first() is not None:
        await record_events(session, "run.finished", [(organization_id, run_id)])
        RUNS_FINISHED.labels("cancelled", "").inc()
        return "cancelled"
    running = await session.execute(
        update(TestRun)
        .where(TestRun.id == run_id, TestRun.organization_id == organization_id, TestRun.status == "running")
        .values(cancel_requested=True, updated_at=now)
        .returning(TestRun.id),
        execution_options=NO_SYNC,
    )
    if running.first() is not None:
        return "running"
    return None


async def cancel_batches(session: AsyncSession, organization_id: str, batch_ids: Sequence[str]) -> int:
    """Cancel the unfinished runs of these batches (a newer batch of their group asked for it): queued
    ones at once, running ones flagged for their agents, as ``cancel`` does for one run. Returns how many.

    The runs are locked first, in ID order (PostgreSQL), as a batch of agents' reports locks them: a
    report on two of these runs at the same moment waits for this transaction or this one for it, never
    both for each other.
    """
    if not batch_ids:
        return 0
    now = utcnow()
    unfinished = (
        await session.execute(
            select(TestRun.id, TestRun.status)
            .where(
                TestRun.organization_id == organization_id,
                TestRun.batch_id.in_(list(batch_ids)),
                TestRun.status.in_(("queued", "running")),
            )
            .order_by(TestRun.id)
            .with_for_update()
        )
    ).all()
    queued = [run_id for run_id, status in unfinished if status == "queued"]
    running = [run_id for run_id, status in unfinished if status == "running"]
    changed = 0
    if queued:
        result = await session.execute(
            update(TestRun)
            .where(TestRun.id.in_(queued), TestRun.status == "queued")
            .values(status="cancelled", progress=100, finished_at=now, updated_at=now)
            .returning(TestRun.id),
            execution_options=NO_SYNC,
        )
        cancelled = [row[0] for row in result.all()]
        changed += len(cancelled)
        RUNS_FINISHED.labels("cancelled", "").inc(len(cancelled))
        await record_events(session, "run.finished", [(organization_id, run_id) for run_id in cancelled])
    if running:
        result = await session.execute(
            update(TestRun)
            .where(TestRun.id.in_(running), TestRun.status == "running")
            .values(cancel_requested=True, updated_at=now)
            .returning(TestRun.id),
            execution_options=NO_SYNC,
        )
        changed += len(result.all())
    return changed


# -------------------------------------------------------------------------------------------- reaper


async def reap_expired_leases(session: AsyncSession, limit: int = 200) -> int:
    """Runs whose agent stopped renewing its lease: back to the queue while attempts remain, else failed
    (infrastructure). A run whose cancellation was pending is cancelled. Attempts that followed a test
    failure (test retries) do not count against ``max_attempts``: the two kinds of retry are apart."""
    now = utcnow()
    rows = (
        await session.execute(
            select(
                TestRun.id,
                TestRun.attempt,
                TestRun.max_attempts,
                TestRun.cancel_requested,
                TestRun.device_id,
                TestRun.test_retries_used,
            )
            .where(TestRun.status == "running", TestRun.lease_expires_at < now)
            .limit(limit)
            # PostgreSQL: lock these runs up front and pass over those an agent is reporting on right
            # now. Waiting for one of them while holding an organisation's row (taken for an earlier
            # run) deadlocks with that report, which takes the run's row, then the organisation's.
            .with_for_update(skip_locked=True)
        )
    ).all()
    left: list[_Left] = []
    ended: list[tuple[str, str]] = []
    for run_id, attempt, max_attempts, cancel_requested, device_id, test_retries_used in rows:
        lost = f"Lost contact with the device agent during attempt {attempt} (its lease expired)."
        values: dict[str, Any]
        if cancel_requested:
            values = {"status": "cancelled", "progress": 100, "finished_at": now}
        elif attempt - test_retries_used < max_attempts:
            values = {"status": "queued", "progress": 0, "queued_at": now, "device_id": None, "agent_id": None}
        else:
            values = {
                "status": "failed",
                "progress": 100,
                "finished_at": now,
                "failure_kind": "infrastructure",
                "failure_message": f"{lost} Gave up after {attempt - test_retries_used} attempts.",
                "failure_step": None,
            }
        row = (
            await session.execute(
                update(TestRun)
                .where(
                    TestRun.id == run_id,
                    TestRun.status == "running",
                    TestRun.attempt == attempt,
                    # Still expired when the change is made (no heartbeat renewed it meanwhile).
                    TestRun.lease_expires_at < now,
                )
                .values(**values, lease_expires_at=None, updated_at=now)
                .returning(TestRun.organization_id),
                execution_options=NO_SYNC,
            )
        ).first()
        if row is not None:
            left.append(_Left(run_id, attempt, row[0], device_id, "lost", lost, "infrastructure"))
            if values["status"] != "queued":
                ended.append((row[0], run_id))
                RUNS_FINISHED.labels(values["status"], values.get("failure_kind", "")).inc()
    await _leave_running(session, left, now)
    await record_events(session, "run.finished", ended)
    return len(left)


async def reap_timeouts(session: AsyncSession, *, queue_timeout: float, default_execution_timeout: float) -> int:
    """Runs that waited in the queue, or executed, longer than allowed: failed with kind timeout."""
    now = utcnow()
    changed = 0
    stale = await session.execute(
        update(TestRun)
        .where(TestRun.status == "queued", TestRun.queued_at < now - timedelta(seconds=queue_timeout))
        .values(
            status="failed",
            progress=100,
            finished_at=now,
            updated_at=now,
            failure_kind="timeout",
            failure_message=f"Waited in the queue longer than {int(queue_timeout)} s without a free device.",
        )
        .returning(TestRun.organization_id, TestRun.id),
        execution_options=NO_SYNC,
    )
    timed_out = [(org_id, run_id) for org_id, run_id in stale.all()]
    changed += len(timed_out)

    running = (
        await session.execute(
            select(TestRun.id, TestRun.attempt, TestRun.started_at, TestRun.timeout_seconds).where(
                TestRun.status == "running",
                # Runs on the default timeout that cannot be over it yet are not read at all.
                or_(
                    TestRun.timeout_seconds.is_not(None),
                    TestRun.started_at <= now - timedelta(seconds=default_execution_timeout),
                ),
            )
        )
    ).all()
    overdue = {
        run_id: (attempt, timeout_seconds or default_execution_timeout)
        for run_id, attempt, started_at, timeout_seconds in running
        if started_at is not None
        and started_at + timedelta(seconds=timeout_seconds or default_execution_timeout) <= now
    }
    if overdue and not _is_sqlite(session):
        # PostgreSQL: lock the overdue runs before any organisation row, as every other transaction here
        # does (runs, then organisations), skipping those an agent is reporting on right now; waiting
        # for one of them while holding an organisation's row would deadlock with that report.
        locked = await session.execute(
            select(TestRun.id).where(TestRun.id.in_(list(overdue))).with_for_update(skip_locked=True)
        )
        overdue = {run_id: overdue[run_id] for (run_id,) in locked.all()}
    left: list[_Left] = []
    for run_id, (attempt, limit) in overdue.items():
        message = f"Execution took longer than its timeout of {int(limit)} s."
        row = (
            await session.execute(
                update(TestRun)
                .where(TestRun.id == run_id, TestRun.status == "running", TestRun.attempt == attempt)
                .values(
                    status="failed",
                    progress=100,
                    finished_at=now,
                    updated_at=now,
                    lease_expires_at=None,
                    failure_kind="timeout",
                    failure_message=message,
                )
                .returning(TestRun.organization_id, TestRun.device_id),
                execution_options=NO_SYNC,
            )
        ).first()
        if row is not None:
            left.append(_Left(run_id, attempt, row[0], row[1], "timeout", message, "timeout"))
            timed_out.append((row[0], run_id))
    await _leave_running(session, left, now)
    await record_events(session, "run.finished", timed_out)
    RUNS_FINISHED.labels("failed", "timeout").inc(len(timed_out))
    return changed + len(left)
