"""The only place a run changes state.

Every change is an UPDATE whose WHERE names the state it expects (and, for an agent's reports, the
attempt and agent), so two actors racing on one run cannot both win: the loser's UPDATE matches no row.
A change into or out of ``running`` adjusts ``organizations.running_runs`` in the same transaction,
which is what keeps the per-organisation cap exact under concurrent claims.

States: queued → running → passed | failed | cancelled; running → queued again when an agent's lease
expires and attempts remain; queued → failed (queue timeout) | cancelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, case, exists, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.base import utcnow
from qualgent.db.models import Device, Organization, RunAttempt, TestRun

TERMINAL = frozenset({"passed", "failed", "cancelled"})
FailureKind = Literal["test", "timeout", "infrastructure"]
FinalStatus = Literal["passed", "failed", "cancelled"]


@dataclass(frozen=True)
class DeviceSpec:
    device_id: str
    name: str
    platform: str
    os_version: str


@dataclass(frozen=True)
class Claimed:
    run_id: str
    attempt: int
    device_id: str
    device_name: str
    lease_expires_at: datetime


# Our UPDATEs name rows by key and nothing reads ORM objects of these rows afterwards in the same
# transaction, so the ORM need not find and refresh matching objects in the session after each one
# (its default "evaluate" pass costs more than the statement on the hot path of every run).
NO_SYNC = {"synchronize_session": False}


def _is_sqlite(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def _owned(run_id: str, attempt: int, agent_id: str) -> tuple[Any, ...]:
    """The run is still this agent's running attempt: the condition every agent report is made on."""
    return (TestRun.id == run_id, TestRun.status == "running", TestRun.attempt == attempt, TestRun.agent_id == agent_id)


async def _left_running(
    session: AsyncSession,
    run_id: str,
    attempt: int,
    organization_id: str,
    device_id: str | None,
    outcome: str,
    message: str | None,
    now: datetime,
) -> None:
    """What follows any change out of `running`, in the same transaction: the organisation's count,
    the device and the attempt's record."""
    await _adjust_running(session, organization_id, -1)
    await _release_device(session, device_id, run_id)
    await _close_attempt(session, run_id, attempt, outcome, message, now)


async def _adjust_running(session: AsyncSession, organization_id: str, delta: int) -> None:
    await session.execute(
        update(Organization)
        .where(Organization.id == organization_id)
        .values(running_runs=Organization.running_runs + delta),
        execution_options=NO_SYNC,
    )


async def _release_device(session: AsyncSession, device_id: str | None, run_id: str) -> None:
    if device_id:
        await session.execute(
            update(Device).where(Device.id == device_id, Device.current_run_id == run_id).values(current_run_id=None),
            execution_options=NO_SYNC,
        )


async def _close_attempt(
    session: AsyncSession, run_id: str, number: int, outcome: str, message: str | None, now: datetime
) -> None:
    await session.execute(
        update(RunAttempt)
        .where(RunAttempt.run_id == run_id, RunAttempt.number == number, RunAttempt.outcome.is_(None))
        .values(outcome=outcome, message=message, finished_at=now),
        execution_options=NO_SYNC,
    )


# ----------------------------------------------------------------------------------------------- claim


def candidate_statement(devices: Sequence[DeviceSpec], default_cap: int) -> Any:
    """The run ``claim`` would take for these devices: best priority, then oldest, organisation under
    its cap. Also run read-only (outside any transaction) to skip claim attempts that would find nothing."""
    specs = [(d.name, d.platform, d.os_version) for d in devices]
    cap = func.coalesce(Organization.max_parallel_runs, default_cap)
    run_spec = tuple_(TestRun.device_name, TestRun.device_platform, TestRun.device_os_version)
    return (
        select(
            TestRun.id, TestRun.organization_id, TestRun.device_name, TestRun.device_platform, TestRun.device_os_version
        )
        .join(Organization, Organization.id == TestRun.organization_id)
        .where(TestRun.status == "queued", run_spec.in_(specs), Organization.running_runs < cap)
        .order_by(TestRun.priority_rank.desc(), TestRun.id)
        .limit(1)
    )


async def claim(
    session: AsyncSession,
    *,
    agent_id: str,
    devices: Sequence[DeviceSpec],
    default_cap: int,
    lease_seconds: float,
    max_runs: int = 1,
) -> list[Claimed]:
    """Hand the best queued runs that ``devices`` can take to the agent, at most one per device and
    ``max_runs`` in all (an agent with several free devices claims for all of them in one go).

    Best: highest priority, then oldest; only from organisations under their parallel-run cap. On
    PostgreSQL the pick, the cap check and the state change are one statement (SKIP LOCKED, so
    concurrent claimers never wait on each other's candidates; the organisation row's conditional
    increment serialises claims of one organisation, so the cap holds). On SQLite the session is a
    writer (BEGIN IMMEDIATE), which serialises claims outright.
    """
    now = utcnow()
    lease = now + timedelta(seconds=lease_seconds)
    free = list(devices)
    claimed: list[Claimed] = []
    while free and len(claimed) < max_runs:
        one = await _claim_one(session, agent_id, free, default_cap, now, lease)
        if one is None:
            break
        claimed.append(one)
        free = [d for d in free if d.device_id != one.device_id]
    if claimed:
        await session.execute(
            insert(RunAttempt),
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
    return claimed


async def _claim_one(
    session: AsyncSession,
    agent_id: str,
    devices: Sequence[DeviceSpec],
    default_cap: int,
    now: datetime,
    lease: datetime,
) -> Claimed | None:
    cap = func.coalesce(Organization.max_parallel_runs, default_cap)
    candidate = candidate_statement(devices, default_cap)
    # The first free device of each model: the run goes to the one of its model.
    device_for: dict[tuple[str, str, str], DeviceSpec] = {}
    for d in devices:
        device_for.setdefault((d.name, d.platform, d.os_version), d)
    start = {
        "status": "running",
        "attempt": TestRun.attempt + 1,
        "agent_id": agent_id,
        "lease_expires_at": lease,
        "heartbeat_at": now,
        "started_at": now,
        "progress": 0,
        "updated_at": now,
    }
    returning = (TestRun.id, TestRun.attempt, TestRun.device_id, TestRun.device_name)

    if _is_sqlite(session):
        picked = (await session.execute(candidate)).first()
        if picked is None:
            return None
        run_id, org_id, *spec = picked
        device = device_for[(spec[0], spec[1], spec[2])]
        bumped = await session.execute(
            update(Organization)
            .where(Organization.id == org_id, Organization.running_runs < cap)
            .values(running_runs=Organization.running_runs + 1)
            .returning(Organization.id),
            execution_options=NO_SYNC,
        )
        if bumped.first() is None:
            return None
        row = (
            await session.execute(
                update(TestRun)
                .where(TestRun.id == run_id, TestRun.status == "queued")
                .values(**start, device_id=device.device_id)
                .returning(*returning),
                execution_options=NO_SYNC,
            )
        ).first()
    else:
        cand = candidate.with_for_update(of=TestRun, skip_locked=True).cte("candidate")
        org = (
            update(Organization)
            .where(Organization.id == cand.c.organization_id, Organization.running_runs < cap)
            # func.now(): a second `updated_at` bind in one statement would clash with the run's.
            .values(running_runs=Organization.running_runs + 1, updated_at=func.now())
            .returning(Organization.id)
            .cte("bumped")
        )
        # The device is picked in the same statement: the free device of the run's model.
        device_id = case(
            *[
                (
                    and_(TestRun.device_name == n, TestRun.device_platform == p, TestRun.device_os_version == v),
                    d.device_id,
                )
                for (n, p, v), d in device_for.items()
            ]
        )
        # Executed at Core level: the ORM cannot map RETURNING rows of an UPDATE built on CTEs.
        connection = await session.connection()
        row = (
            await connection.execute(
                update(TestRun)
                .where(TestRun.id == cand.c.id, exists(select(org.c.id)))
                .values(**start, device_id=device_id)
                .returning(*returning)
            )
        ).first()
    if row is None:
        return None

    run_id, attempt, device_id_taken, device_name = row
    assert device_id_taken is not None  # set by the statement above
    taken = await session.execute(
        update(Device)
        .where(Device.id == device_id_taken, Device.current_run_id.is_(None))
        .values(current_run_id=run_id)
        .returning(Device.id),
        execution_options=NO_SYNC,
    )
    if taken.first() is None:
        # The device was taken by another claim since the agent offered it: give the runs back.
        raise DeviceBusy(device_id_taken)
    return Claimed(
        run_id=run_id, attempt=attempt, device_id=device_id_taken, device_name=device_name, lease_expires_at=lease
    )


class DeviceBusy(Exception):
    """Raised inside a claim's transaction so that it rolls back whole."""


# ------------------------------------------------------------------------------------ agent reports


async def heartbeat(
    session: AsyncSession, run_id: str, attempt: int, agent_id: str, lease_seconds: float, progress: int | None
) -> tuple[bool, datetime] | None:
    """Extend the lease. Returns (cancel requested, new lease expiry), or None if the run moved on."""
    now = utcnow()
    lease = now + timedelta(seconds=lease_seconds)
    values: dict[str, Any] = {"lease_expires_at": lease, "heartbeat_at": now}
    if progress is not None:
        values["progress"] = max(0, min(99, progress))
    row = (
        await session.execute(
            update(TestRun)
            .where(*_owned(run_id, attempt, agent_id))
            .values(**values)
            .returning(TestRun.cancel_requested),
            execution_options=NO_SYNC,
        )
    ).first()
    return None if row is None else (bool(row[0]), lease)


async def finish(
    session: AsyncSession,
    run_id: str,
    attempt: int,
    agent_id: str,
    status: FinalStatus,
    failure: tuple[FailureKind, str, int | None] | None,
) -> Literal["done", "repeat", "moved_on"]:
    """An agent reports the end of its attempt. A repeat of the same report is "repeat" (answer 200);
    a report for a run that has moved on (requeued, cancelled, taken by another attempt) is "moved_on"."""
    now = utcnow()
    kind, message, step = failure if failure else (None, None, None)
    row = (
        await session.execute(
            update(TestRun)
            .where(*_owned(run_id, attempt, agent_id))
            .values(
                status=status,
                progress=100,
                finished_at=now,
                updated_at=now,
                lease_expires_at=None,
                failure_kind=kind,
                failure_message=message,
                failure_step=step,
            )
            .returning(TestRun.organization_id, TestRun.device_id),
            execution_options=NO_SYNC,
        )
    ).first()
    if row is not None:
        org_id, device_id = row
        await _left_running(session, run_id, attempt, org_id, device_id, status, message, now)
        return "done"
    current = (
        await session.execute(select(TestRun.status, TestRun.attempt, TestRun.agent_id).where(TestRun.id == run_id))
    ).first()
    if current is not None and tuple(current) == (status, attempt, agent_id):
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


# -------------------------------------------------------------------------------------------- reaper


async def reap_expired_leases(session: AsyncSession, limit: int = 200) -> int:
    """Runs whose agent stopped renewing its lease: back to the queue while attempts remain, else failed
    (infrastructure). A run whose cancellation was pending is cancelled."""
    now = utcnow()
    rows = (
        await session.execute(
            select(TestRun.id, TestRun.attempt, TestRun.max_attempts, TestRun.cancel_requested, TestRun.device_id)
            .where(TestRun.status == "running", TestRun.lease_expires_at < now)
            .limit(limit)
            # PostgreSQL: lock these runs up front and pass over those an agent is reporting on right
            # now. Waiting for one of them while holding an organisation's row (taken for an earlier
            # run) deadlocks with that report, which takes the run's row, then the organisation's.
            .with_for_update(skip_locked=True)
        )
    ).all()
    changed = 0
    for run_id, attempt, max_attempts, cancel_requested, device_id in rows:
        lost = f"Lost contact with the device agent during attempt {attempt} (its lease expired)."
        values: dict[str, Any]
        if cancel_requested:
            values = {"status": "cancelled", "progress": 100, "finished_at": now}
        elif attempt < max_attempts:
            values = {"status": "queued", "progress": 0, "queued_at": now, "device_id": None, "agent_id": None}
        else:
            values = {
                "status": "failed",
                "progress": 100,
                "finished_at": now,
                "failure_kind": "infrastructure",
                "failure_message": f"{lost} Gave up after {attempt} attempts.",
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
        if row is None:
            continue
        await _left_running(session, run_id, attempt, row[0], device_id, "lost", lost, now)
        changed += 1
    return changed


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
        .returning(TestRun.id),
        execution_options=NO_SYNC,
    )
    changed += len(stale.all())

    running = (
        await session.execute(
            select(TestRun.id, TestRun.attempt, TestRun.started_at, TestRun.timeout_seconds).where(
                TestRun.status == "running"
            )
        )
    ).all()
    for run_id, attempt, started_at, timeout_seconds in running:
        limit = timeout_seconds or default_execution_timeout
        if started_at is None or started_at + timedelta(seconds=limit) > now:
            continue
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
        if row is None:
            continue
        await _left_running(session, run_id, attempt, row[0], row[1], "timeout", message, now)
        changed += 1
    return changed
