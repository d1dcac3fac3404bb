"""Queuing runs (atomically, per batch) and presenting them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.apps.repository import AppRepository
from qualgent.auth.principal import Principal
from qualgent.categories.repository import CategoryRepository
from qualgent.db.base import utcnow
from qualgent.db.models import AppFile, TestCase, TestRun
from qualgent.db.session import on_commit
from qualgent.devices.catalogue import Device, normalise_platform
from qualgent.errors import BadRequest, NotFound, Unprocessable
from qualgent.ids import new_id
from qualgent.runs import transitions
from qualgent.runs.repository import RunRepository
from qualgent.runs.schemas import (
    PRIORITY_RANK,
    CancelOut,
    DeviceIn,
    DeviceRequested,
    ExecutedBy,
    Failure,
    JobIn,
    LatestRunOut,
    QueuedJob,
    Ref,
    RunOut,
)
from qualgent.state import AppState
from qualgent.test_cases.repository import TestCaseRepository


def run_link(state: AppState, run_id: str) -> str:
    return f"{state.settings.public_base_url.rstrip('/')}/test-runs/{run_id}"


def _common(state: AppState, row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "link": run_link(state, row.id),
        "app": Ref(id=row.app_id, name=f"{row.app_name} v{row.app_version}"),
        "status": row.status,
        "priority": row.priority,
        "progress": row.progress,
        "executed_by": ExecutedBy(id=row.user_id, name=row.user_name, email=row.user_email),
        "device": row.device_name,
    }


def to_out(state: AppState, row: Any) -> RunOut:
    """A run row from ``RunRepository.view*`` as the API shows it."""
    failure = None
    if row.failure_kind:
        failure = Failure(kind=row.failure_kind, message=row.failure_message or "", step=row.failure_step)
    return RunOut(
        **_common(state, row),
        test_case=Ref(id=row.test_case_id, name=row.test_case_name),
        device_details=DeviceRequested(
            name=row.device_name,
            platform=row.device_platform,
            os_version=row.device_os_version,
            orientation=row.device_orientation,
        ),
        attempt=row.attempt,
        failure=failure,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def to_latest(state: AppState, row: Any) -> LatestRunOut:
    return LatestRunOut(**_common(state, row))


@dataclass
class _Plan:
    test_case: TestCase
    app: AppFile
    device: Device
    orientation: str
    priority: str
    timeout_seconds: int | None
    env: dict[str, str] | None = None
    record_video: bool = False


class _Problems:
    """Collects every problem of a batch so the response names each bad entry at once."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.missing = False

    def add(self, index: int | None, field: str, issue: str, *, missing: bool = False) -> None:
        entry: dict[str, Any] = {"field": field, "issue": issue}
        if index is not None:
            entry = {"index": index, **entry}
        self.items.append(entry)
        self.missing = self.missing or missing

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if self.missing:
            raise BadRequest("Some jobs are missing required parameters; nothing was queued.", details=self.items)
        raise Unprocessable("Some jobs are invalid; nothing was queued. See details.", details=self.items)


async def _resolve_target(
    state: AppState,
    apps: AppRepository,
    problems: _Problems,
    index: int | None,
    device_in: DeviceIn | None,
    app_file_id: str | None,
    platform_in: str | None,
    app_cache: dict[str, AppFile | None],
) -> tuple[AppFile, Device, str] | None:
    platform = None
    if platform_in is not None:
        platform = normalise_platform(platform_in)
        if platform is None:
            problems.add(index, "platform", f"must be android or ios, not {platform_in!r}")
            return None
    if device_in is None and platform is None:
        problems.add(index, "device", "send a device (with app_file_id), or a platform", missing=True)
        return None

    device: Device | None = None
    if device_in is not None:
        device_platform = normalise_platform(device_in.platform)
        if device_platform is None:
            problems.add(index, "device.platform", f"must be android or ios, not {device_in.platform!r}")
            return None
        if platform is not None and platform != device_platform:
            problems.add(index, "platform", "does not match device.platform")
            return None
        platform = device_platform
        device = state.devices.find(device_in.name, device_platform, device_in.os_version)
        if device is None:
            problems.add(
                index,
                "device",
                f"no device {device_in.name!r} ({device_in.platform} {device_in.os_version}) in the catalogue; "
                "see GET /v1/devices/list",
            )
            return None
    assert platform is not None
    if device is None:
        device = state.devices.first_for(platform)
        if device is None:
            problems.add(index, "platform", f"the catalogue has no {platform} device")
            return None

    if app_file_id is not None:
        if app_file_id not in app_cache:
            app_cache[app_file_id] = await apps.get(app_file_id)
        app = app_cache[app_file_id]
        if app is None:
            problems.add(index, "app_file_id", f"no app {app_file_id}")
            return None
    else:
        cache_key = f"latest:{platform}"
        if cache_key not in app_cache:
            app_cache[cache_key] = await apps.latest(platform)
        app = app_cache[cache_key]
        if app is None:
            problems.add(index, "app_file_id", f"no {platform} app uploaded; upload one or pass app_file_id")
            return None
    if app.os != platform:
        problems.add(index, "app_file_id", f"app {app.id} is an {app.os} build but the device is {platform}")
        return None
    orientation = device_in.orientation if device_in is not None else "portrait"
    return app, device, orientation


def _build_runs(principal: Principal, plans: list[_Plan], max_attempts: int) -> list[TestRun]:
    now = utcnow()
    return [
        TestRun(
            id=new_id("run"),
            organization_id=principal.organization_id,
            test_case_id=plan.test_case.id,
            app_id=plan.app.id,
            user_id=principal.user_id,
            api_key_id=principal.key_id or None,  # a dashboard session has no key
            device_name=plan.device.name,
            device_platform=plan.device.platform,
            device_os_version=plan.device.os_version,
            device_orientation=plan.orientation,
            status="queued",
            priority=plan.priority,
            priority_rank=PRIORITY_RANK[plan.priority],
            progress=0,
            attempt=0,
            max_attempts=max_attempts,
            timeout_seconds=plan.timeout_seconds or plan.test_case.timeout_seconds,
            env=plan.env,
            record_video=plan.record_video or plan.test_case.record_video,
            queued_at=now,
        )
        for plan in plans
    ]


async def queue_jobs(
    session: AsyncSession, state: AppState, principal: Principal, jobs: list[JobIn]
) -> list[QueuedJob]:
    org = principal.organization_id
    apps = AppRepository(session, org)
    cases = await TestCaseRepository(session, org).get_many([job.test_case_id for job in jobs])
    problems = _Problems()
    plans: list[_Plan] = []
    app_cache: dict[str, AppFile | None] = {}
    for index, job in enumerate(jobs):
        test_case = cases.get(job.test_case_id)
        if test_case is None:
            problems.add(index, "test_case_id", f"no test case {job.test_case_id}")
            continue
        if test_case.status != "active":
            problems.add(index, "test_case_id", f"test case {test_case.id} is inactive")
            continue
        target = await _resolve_target(
            state, apps, problems, index, job.device, job.app_file_id, job.platform, app_cache
        )
        if target is not None:
            app, device, orientation = target
            plans.append(
                _Plan(test_case, app, device, orientation, job.priority, job.timeout_seconds, job.env, job.record_video)
            )
    problems.raise_if_any()
    runs = _build_runs(principal, plans, state.settings.max_attempts)
    await RunRepository(session, org).add_all(runs)
    on_commit(session, lambda: state.wakeup.wake(len(runs)))
    return [QueuedJob(id=run.id, link=run_link(state, run.id), status="queued") for run in runs]


def selected(tags: list[str] | None, include: list[str] | None, exclude: list[str] | None) -> bool:
    """Maestro's tag filters: with ``include``, at least one of them; never any of ``exclude``."""
    own = set(tags or ())
    if include and own.isdisjoint(include):
        return False
    return not (exclude and not own.isdisjoint(exclude))


async def queue_all(
    session: AsyncSession,
    state: AppState,
    principal: Principal,
    *,
    app_file_id: str | None,
    device: DeviceIn | None,
    platform: str | None,
    category_id: str | None,
    priority: str,
    timeout_seconds: int | None,
    env: dict[str, str] | None = None,
    include_tags: list[str] | None = None,
    exclude_tags: list[str] | None = None,
    record_video: bool = False,
) -> list[QueuedJob]:
    org = principal.organization_id
    problems = _Problems()
    if app_file_id is None and platform is None:
        problems.add(None, "app_file_id", "send app_file_id (or a platform to use the newest app)", missing=True)
    problems.raise_if_any()
    test_cases = TestCaseRepository(session, org)
    if category_id is not None and await CategoryRepository(session, org).get(category_id) is None:
        problems.add(None, "category_id", f"no category {category_id}")
    target = await _resolve_target(
        state, AppRepository(session, org), problems, None, device, app_file_id, platform, {}
    )
    problems.raise_if_any()
    assert target is not None
    app, chosen, orientation = target
    cases = [case for case in await test_cases.active(category_id) if selected(case.tags, include_tags, exclude_tags)]
    if not cases:
        where = f" in category {category_id}" if category_id else ""
        if include_tags or exclude_tags:
            where += " with the tags asked for"
        raise Unprocessable(
            f"No active test cases{where}; nothing was queued. Create test cases with POST /v1/test-cases.",
            code="no_test_cases",
        )
    plans = [_Plan(case, app, chosen, orientation, priority, timeout_seconds, env, record_video) for case in cases]
    runs = _build_runs(principal, plans, state.settings.max_attempts)
    await RunRepository(session, org).add_all(runs)
    on_commit(session, lambda: state.wakeup.wake(len(runs)))
    return [QueuedJob(id=run.id, link=run_link(state, run.id), status="queued") for run in runs]


async def cancel(session: AsyncSession, principal: Principal, run_id: str) -> CancelOut:
    repo = RunRepository(session, principal.organization_id)
    run = await repo.get(run_id)
    if run is None:
        raise NotFound(f"No test run {run_id}.")
    status = await transitions.cancel(session, principal.organization_id, run.id)
    if status is None:
        raise Unprocessable(f"Test run {run_id} has already finished ({run.status}).", code="run_finished")
    return CancelOut(id=run.id, status=status)
