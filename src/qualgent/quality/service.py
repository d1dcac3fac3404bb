"""Flaky tests and quarantine: the rules, a test case's figures and history, and what follows a run's end.

A test case is **flaky** when, within 14 days, it passed and failed (as `test`) on the same build
(SHA-256) on the same kind of device (name, platform, OS version), or passed on a test retry; or when
its result flipped (differed from the run before on that kind of device) in more than 30 % of its last
20 runs on some kind of device, counted once at least 5 runs are there. Only runs that passed or failed
as `test` count: infrastructure failures, timeouts and cancellations say nothing about the test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.base import utcnow
from qualgent.db.models import TestCase
from qualgent.errors import NotFound
from qualgent.organisations.repository import OrganisationRepository
from qualgent.quality.repository import QualityRepository
from qualgent.quality.schemas import QuarantineOut, TestCaseStats
from qualgent.runs.transitions import Ended
from qualgent.test_cases.repository import TestCaseRepository

SAME_BUILD_DAYS = 14
FLIP_WINDOW = 20
FLIP_SHARE = 0.30
FLIP_MIN_RUNS = 5
STATS_RUNS = 50


@dataclass(frozen=True)
class Flakiness:
    flaky: bool
    reason: str | None = None


@dataclass(frozen=True)
class Assessment:
    stats: TestCaseStats
    flakiness: Flakiness


def _percentile(sorted_values: Sequence[float], share: float) -> float:
    """Nearest rank: the smallest value with at least ``share`` of the values at or below it."""
    return sorted_values[max(0, math.ceil(share * len(sorted_values)) - 1)]


def stats_of(rows: Sequence[Any]) -> TestCaseStats:
    """Figures over decided runs (newest first, at most STATS_RUNS)."""
    rows = rows[:STATS_RUNS]
    if not rows:
        return TestCaseStats(runs=0, pass_rate=None, flaky_rate=None, p50_seconds=None, p90_seconds=None)
    passed = [r for r in rows if r.status == "passed"]
    flaky = [r for r in passed if r.test_retries_used > 0]
    durations = sorted(
        max(0.0, (r.finished_at - r.started_at).total_seconds()) for r in passed if r.started_at and r.finished_at
    )
    return TestCaseStats(
        runs=len(rows),
        pass_rate=round(len(passed) / len(rows), 4),
        flaky_rate=round(len(flaky) / len(rows), 4),
        p50_seconds=round(_percentile(durations, 0.5), 3) if durations else None,
        p90_seconds=round(_percentile(durations, 0.9), 3) if durations else None,
    )


def _kind(row: Any) -> tuple[str, str, str]:
    return (row.device_name, row.device_platform, row.device_os_version)


def flips(rows: Sequence[Any], since: datetime | None = None) -> Flakiness:
    """The flip rule over decided runs (newest first): on each kind of device, the share of its last
    FLIP_WINDOW runs whose result differs from the run before it (the run just before the window
    included). Runs that finished before ``since`` are left out."""
    by_kind: dict[tuple[str, str, str], list[bool]] = {}
    for row in rows:
        if since is not None and row.finished_at < since:
            continue
        by_kind.setdefault(_kind(row), []).append(row.status == "passed")
    worst: tuple[float, int, int, str] | None = None
    for kind, results in by_kind.items():
        window = results[:FLIP_WINDOW]
        if len(window) < FLIP_MIN_RUNS:
            continue
        flipped = sum(results[i] != results[i + 1] for i in range(len(window)) if i + 1 < len(results))
        share = flipped / len(window)
        if share > FLIP_SHARE and (worst is None or share > worst[0]):
            worst = (share, flipped, len(window), kind[0])
    if worst is None:
        return Flakiness(False)
    share, count, size, device = worst
    return Flakiness(True, f"its result flipped in {count} of its last {size} runs on {device} ({share:.0%})")


def _same_build_reason(conflict: Any) -> str:
    _case, sha256, device, passed, failed, _retried_pass = conflict
    if passed and failed:
        return f"it passed and failed on build {sha256[:12]} on {device} within {SAME_BUILD_DAYS} days"
    return f"it passed on a retry on build {sha256[:12]} on {device} within {SAME_BUILD_DAYS} days"


async def assess(
    repo: QualityRepository, test_case_ids: Sequence[str], since: datetime | None = None
) -> dict[str, Assessment]:
    """Figures and flakiness of these test cases. ``since`` leaves evidence older than that moment out
    of the flakiness (automatic quarantine weighs only what followed a test case's leaving quarantine)."""
    if not test_case_ids:
        return {}
    start = utcnow() - timedelta(days=SAME_BUILD_DAYS)
    conflicts = await repo.same_build_conflicts(test_case_ids, max(start, since) if since else start)
    rows: dict[str, list[Any]] = {case_id: [] for case_id in test_case_ids}
    for row in await repo.recent_results(test_case_ids, STATS_RUNS):
        rows[row.test_case_id].append(row)
    out = {}
    for case_id in test_case_ids:
        conflict = conflicts.get(case_id)
        flakiness = Flakiness(True, _same_build_reason(conflict)) if conflict else flips(rows[case_id], since)
        out[case_id] = Assessment(stats_of(rows[case_id]), flakiness)
    return out


def quarantine_out(case: TestCase) -> QuarantineOut | None:
    if case.quarantined_at is None:
        return None
    source = "flaky" if case.quarantine_source == "flaky" else "manual"
    return QuarantineOut(since=case.quarantined_at, source=source, reason=case.quarantine_reason)


# ------------------------------------------------------------------------------------------ quarantine


def _enter(case: TestCase, source: str, reason: str | None) -> None:
    case.quarantined_at = utcnow()
    case.quarantine_source = source
    case.quarantine_reason = reason[:500] if reason else None


def _leave(case: TestCase) -> None:
    case.quarantined_at = None
    case.quarantine_source = None
    case.quarantine_reason = None
    case.quarantine_ended_at = utcnow()


async def set_quarantine(
    session: AsyncSession, organization_id: str, test_case_id: str, on: bool, reason: str | None = None
) -> TestCase:
    """Put a test case in quarantine by hand (again: the reason changes, the date stays), or take it out.
    Runs queued from then on carry the new state; runs already queued keep theirs."""
    case = await TestCaseRepository(session, organization_id).get_for_update(test_case_id)
    if case is None:
        raise NotFound(f"No test case {test_case_id}.")
    if on and case.quarantined_at is None:
        _enter(case, "manual", reason)
    elif on:
        case.quarantine_source = "manual"
        if reason is not None:
            case.quarantine_reason = reason[:500]
    elif case.quarantined_at is not None:
        _leave(case)
    await session.flush()
    return case


async def after_runs_ended(session: AsyncSession, ended: Sequence[Ended]) -> None:
    """In the transaction of agents' reports, for runs of quarantined test cases or of organisations that
    quarantine flaky test cases: a quarantined test case leaves quarantine after the organisation's
    number of passes in a row (first attempts, since it entered); a flaky one enters it when its
    organisation quarantines automatically. Test cases' rows are locked after runs, organisations and
    devices, as nothing else here locks them before those."""
    final = [e for e in ended if e.status in ("passed", "failed")]
    by_case: dict[tuple[str, str], list[Ended]] = {}
    for e in final:
        by_case.setdefault((e.organization_id, e.test_case_id), []).append(e)
    orgs = OrganisationRepository(session)
    for (organization_id, test_case_id), runs in sorted(by_case.items()):
        org = await orgs.get(organization_id)
        case = await TestCaseRepository(session, organization_id).get_for_update(test_case_id)
        if org is None or case is None:
            continue
        repo = QualityRepository(session, organization_id)
        if case.quarantined_at is not None:
            passes = org.quarantine_exit_passes
            clean = any(e.quarantined and e.status == "passed" and not e.flaky for e in runs)
            if passes > 0 and clean:
                recent = await repo.results_since(test_case_id, case.quarantined_at, passes)
                if len(recent) == passes and all(s == "passed" and used == 0 for s, used in recent):
                    _leave(case)
        elif org.auto_quarantine and any(e.auto_quarantine for e in runs):
            found = (await assess(repo, [test_case_id], case.quarantine_ended_at))[test_case_id]
            if found.flakiness.flaky:
                _enter(case, "flaky", f"Flaky: {found.flakiness.reason}.")
    await session.flush()
