"""Batches: every run / run-all request makes one; its counts, wall time and gate verdict; a group's
newer batch cancelling the older ones' unfinished runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.auth.principal import Principal
from qualgent.batches.repository import BatchRepository
from qualgent.batches.schemas import BatchCounts, BatchOut, Verdict
from qualgent.db.base import utcnow
from qualgent.db.models import Batch
from qualgent.errors import NotFound
from qualgent.ids import new_id
from qualgent.runs import transitions
from qualgent.runs.repository import RunRepository
from qualgent.state import AppState

MAX_LISTED_RUNS = 10_000


async def open_batch(
    session: AsyncSession, principal: Principal, kind: str, group: str | None, cancel_previous: bool
) -> Batch:
    """A new batch for a request's runs. With ``cancel_previous``, the unfinished runs of the group's
    earlier batches are cancelled first, in this transaction: before any target is written or any run
    inserted, so run rows are locked before anything else, as everywhere (runs/transitions.py)."""
    batch = Batch(id=new_id("batch"), organization_id=principal.organization_id, user_id=principal.user_id, kind=kind)
    batch.group_key = group
    repo = BatchRepository(session, principal.organization_id)
    if group is not None and cancel_previous:
        earlier = await repo.earlier_in_group(group, batch.id)
        await transitions.cancel_batches(session, principal.organization_id, earlier)
        await repo.mark_superseded(earlier, batch.id)
    await repo.add(batch)
    return batch


@dataclass
class _Tally:
    counts: dict[str, int] = field(default_factory=dict)
    gating: set[str] = field(default_factory=set)  # outcomes of runs not in quarantine
    flaky: int = 0
    retries: int = 0
    quarantined: int = 0
    quarantined_failed: int = 0
    finished_at: Any = None


def _tally(rows: Sequence[Any]) -> _Tally:
    t = _Tally()
    for status, failure_kind, quarantined, retried, runs, retries_used, finished_at in rows:
        t.counts[status] = t.counts.get(status, 0) + int(runs)
        t.retries += int(retries_used or 0)
        if status == "passed" and retried:
            t.flaky += int(runs)
        if finished_at is not None and (t.finished_at is None or finished_at > t.finished_at):
            t.finished_at = finished_at
        if quarantined:
            t.quarantined += int(runs)
            if status != "passed":
                t.quarantined_failed += int(runs)
            continue
        if status == "failed":
            t.gating.add("test" if failure_kind == "test" else "infrastructure")
        elif status == "cancelled":
            t.gating.add("infrastructure")
        elif status == "passed":
            t.gating.add("flaky" if retried else "passed")
    return t


def verdict_of(outcomes: set[str]) -> Verdict:
    """The gate over the outcomes of a finished batch's runs that are not in quarantine."""
    if "test" in outcomes:
        return "failed"
    if "infrastructure" in outcomes:
        return "infrastructure"
    if "flaky" in outcomes:
        return "flaky-passed"
    return "passed"


async def batch_out(
    session: AsyncSession,
    state: AppState,
    principal: Principal,
    batch_id: str,
    *,
    with_runs: bool = False,
    with_queue: bool = False,
) -> BatchOut:
    batch = await BatchRepository(session, principal.organization_id).get(batch_id)
    if batch is None:
        raise NotFound(f"No batch {batch_id}.")
    runs_repo = RunRepository(session, principal.organization_id, state.reader)
    t = _tally(await runs_repo.batch_counts(batch.id))
    total = sum(t.counts.values())
    finished = t.counts.get("queued", 0) + t.counts.get("running", 0) == 0
    end = t.finished_at if finished and t.finished_at is not None else utcnow()
    out = BatchOut(
        id=batch.id,
        kind="run-all" if batch.kind == "run-all" else "run",
        group=batch.group_key,
        superseded_by=batch.superseded_by,
        created_at=batch.created_at,
        finished=finished,
        finished_at=t.finished_at if finished else None,
        wall_seconds=round(max(0.0, (end - batch.created_at).total_seconds()), 3),
        total=total,
        counts=BatchCounts(**t.counts),
        flaky=t.flaky,
        test_retries=t.retries,
        quarantined=t.quarantined,
        quarantined_failed=t.quarantined_failed,
        verdict=verdict_of(t.gating) if finished and total else None,
    )
    if with_runs:
        from qualgent.runs import service as runs_service  # runs.service imports this module
        from qualgent.runs.schemas import QueueInfo

        rows = list(await runs_repo.view_page(MAX_LISTED_RUNS, None, batch_id=batch.id))
        rows.reverse()  # queued order: IDs grow with creation
        out.runs = [runs_service.to_out(state, row) for row in rows]
        if with_queue:
            waits = await runs_repo.queue_infos(rows, state.settings.default_parallel_runs)
            for run in out.runs:
                if run.id in waits:
                    reason, position, eta = waits[run.id]
                    run.queue = QueueInfo(reason=reason, position=position, eta_seconds=eta)
    return out
