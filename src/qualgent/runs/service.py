"""Queuing runs (atomically, per batch) and presenting them."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.apps.repository import AppRepository
from qualgent.auth.principal import Principal
from qualgent.batches import service as batches
from qualgent.categories.repository import CategoryRepository
from qualgent.db.base import utcnow
from qualgent.db.models import AppFile, Organization, TestCase, TestRun
from qualgent.db.session import on_commit
from qualgent.devices import selectors
from qualgent.devices.catalogue import PLATFORMS, normalise_platform
from qualgent.devices.repository import TargetRepository
from qualgent.devices.selectors import TargetSpec
from qualgent.errors import BadRequest, NotFound, Unprocessable
from qualgent.ids import new_id
from qualgent.metrics.instruments import RUNS_QUEUED
from qualgent.organisations.repository import OrganisationRepository
from qualgent.runs import transitions
from qualgent.runs.repository import RunRepository
from qualgent.runs.schemas import (
    PRIORITY_RANK,
    CancelOut,
    DeviceIn,
    DeviceRequested,
    DeviceSelector,
    ExecutedBy,
    Failure,
    JobIn,
    LatestRunOut,
    QueuedJob,
    QueuedOut,
    Ref,
    RetriesOut,
    RunOut,
)
from qualgent.state import AppState
from qualgent.test_cases.repository import TestCaseRepository
from qualgent.webhooks.repository import record_events


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


# Target id → its selector as asked (targets never change, so each is parsed once per process).
_selectors: dict[str, dict[str, Any]] = {}


def _selector(row: Any) -> dict[str, Any] | None:
    text = getattr(row, "target_selector", None)
    if text is None:
        return None
    parsed = _selectors.get(row.target_id)
    if parsed is None:
        if len(_selectors) >= 10_000:
            _selectors.clear()
        parsed = _selectors[row.target_id] = json.loads(text)
    return parsed


@cache
def _retries(allowed: int, used: int) -> RetriesOut:
    # A few dozen pairs at most (0–5 each): built once, not on every status request. Never mutated.
    return RetriesOut(allowed=allowed, used=used)


def to_out(state: AppState, row: Any) -> RunOut:
    """A run row from ``RunRepository.view*`` as the API shows it. A late-bound run that no device holds
    (queued, or queued again after its agent was lost) shows what it asked for as its device."""
    failure = None
    if row.failure_kind:
        failure = Failure(kind=row.failure_kind, message=row.failure_message or "", step=row.failure_step)
    common = _common(state, row)
    selector = _selector(row)
    name, os_version = row.device_name, row.device_os_version
    if selector is not None and row.status == "queued":
        name = common["device"] = row.target_label
        os_version = selector.get("os_version", "any")
    return RunOut(
        **common,
        test_case=Ref(id=row.test_case_id, name=row.test_case_name),
        device_details=DeviceRequested(
            name=name, platform=row.device_platform, os_version=os_version, orientation=row.device_orientation
        ),
        attempt=row.attempt,
        failure=failure,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        device_selector=selector,
        retries=_retries(row.test_retries, row.test_retries_used),
        flaky=row.status == "passed" and row.test_retries_used > 0,
        quarantined=bool(row.quarantined),
        batch_id=row.batch_id,
    )


def to_latest(state: AppState, row: Any) -> LatestRunOut:
    return LatestRunOut(**_common(state, row))


@dataclass(frozen=True)
class _Target:
    """Where a run goes: its app and target, and what it shows as its device until a device takes it."""

    app: AppFile
    spec: TargetSpec
    device_name: str
    platform: str  # Android | iOS, as runs store it
    os_version: str
    orientation: str = "portrait"


@dataclass
class _Plan:
    test_case: TestCase
    target: _Target
    priority: str
    timeout_seconds: int | None
    env: dict[str, str] | None = None
    record_video: bool = False
    retries: int | None = None  # the request's; None: the test case's, else the organisation's


@dataclass(frozen=True)
class BatchAsk:
    """What a run or run-all request says about its batch and its runs' test retries."""

    kind: str  # run | run-all
    retries: int | None = None
    group: str | None = None
    cancel_previous: bool = False


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


class _Resolver:
    """Turns what a job (or a run-all) asks for into a target and an app, noting every problem."""

    def __init__(self, state: AppState, apps: AppRepository, problems: _Problems) -> None:
        self.state = state
        self.apps = apps
        self.problems = problems
        self._apps: dict[str, AppFile | None] = {}

    def _platform(self, index: int | None, field: str, value: str | None) -> tuple[bool, str | None]:
        if value is None:
            return True, None
        platform = normalise_platform(value)
        if platform is None:
            self.problems.add(index, field, f"must be android or ios, not {value!r}")
            return False, None
        return True, platform

    async def _app_by_id(self, index: int | None, app_file_id: str) -> AppFile | None:
        if app_file_id not in self._apps:
            self._apps[app_file_id] = await self.apps.get(app_file_id)
        app = self._apps[app_file_id]
        if app is None:
            self.problems.add(index, "app_file_id", f"no app {app_file_id}")
        return app

    async def _app(self, index: int | None, app_file_id: str | None, platform: str) -> AppFile | None:
        if app_file_id is not None:
            app = await self._app_by_id(index, app_file_id)
        else:
            key = f"latest:{platform}"
            if key not in self._apps:
                self._apps[key] = await self.apps.latest(platform)
            app = self._apps[key]
            if app is None:
                self.problems.add(index, "app_file_id", f"no {platform} app uploaded; upload one or pass app_file_id")
        if app is None:
            return None
        if app.os != platform:
            self.problems.add(index, "app_file_id", f"app {app.id} is an {app.os} build but the device is {platform}")
            return None
        return app

    def _spec(self, index: int | None, platform: str, wanted: DeviceSelector | None) -> TargetSpec | None:
        if wanted is None:
            return selectors.selector(platform)
        criteria = wanted.model_dump(exclude={"platform", "any"}, exclude_none=True)
        if wanted.any and criteria:
            self.problems.add(index, "device_selector.any", f"`any` takes no other criterion ({', '.join(criteria)})")
            return None
        try:
            return selectors.selector(
                platform,
                name=wanted.name,
                os_version=wanted.os_version,
                model=wanted.model,
                tags=wanted.tags,
                pool=wanted.pool,
                device_type=wanted.device_type,
            )
        except selectors.SelectorError as exc:
            self.problems.add(index, "device_selector", str(exc))
            return None

    async def resolve(
        self,
        index: int | None,
        *,
        device: DeviceIn | None,
        wanted: DeviceSelector | None,
        app_file_id: str | None,
        platform_in: str | None,
        field: str = "device",
    ) -> _Target | None:
        ok, platform = self._platform(index, "platform", platform_in)
        if not ok:
            return None
        if device is not None and wanted is not None:
            self.problems.add(index, "device_selector", "send device or device_selector, not both")
            return None

        if device is not None:  # one named device: the run keeps it
            device_platform = normalise_platform(device.platform)
            if device_platform is None:
                self.problems.add(index, f"{field}.platform", f"must be android or ios, not {device.platform!r}")
                return None
            if platform is not None and platform != device_platform:
                self.problems.add(index, "platform", f"does not match {field}.platform")
                return None
            found = self.state.devices.find(device.name, device_platform, device.os_version)
            if found is None:
                self.problems.add(
                    index,
                    field,
                    f"no device {device.name!r} ({device.platform} {device.os_version}) in the catalogue; "
                    "see GET /v1/devices/list",
                )
                return None
            app = await self._app(index, app_file_id, device_platform)
            if app is None:
                return None
            spec = selectors.pinned(found.name, found.platform, found.os_version)
            return _Target(app, spec, found.name, found.platform, found.os_version, device.orientation)

        # A platform or a selector: matched when a device claims the run.
        if wanted is not None and wanted.platform is not None:
            ok, own = self._platform(index, "device_selector.platform", wanted.platform)
            if not ok:
                return None
            if platform is not None and own != platform:
                self.problems.add(index, "device_selector.platform", "does not match platform")
                return None
            platform = own
        if platform is None and wanted is not None and app_file_id is not None:
            by_id = await self._app_by_id(index, app_file_id)
            if by_id is None:
                return None
            platform = by_id.os
        if platform is None:
            self.problems.add(
                index, "device", "send a device (with app_file_id), a platform or a device_selector", missing=True
            )
            return None
        if self.state.devices.first_for(platform) is None:
            self.problems.add(index, "platform", f"the catalogue has no {platform} device")
            return None
        late = self._spec(index, platform, wanted)
        if late is None:
            return None
        app = await self._app(index, app_file_id, platform)
        if app is None:
            return None
        return _Target(app, late, late.label() or "", PLATFORMS[platform], late.os_text() or "any")


def _build_runs(
    principal: Principal, plans: list[_Plan], max_attempts: int, order: list[int], org: Organization, batch_id: str
) -> list[TestRun]:
    """The runs of ``plans``; ``order[i]`` is plan i's place in the claim order of this batch. Test
    retries: the request's, else the test case's, else the organisation's default."""
    now = utcnow()
    base = transitions.queue_order_at(now)

    def retries(plan: _Plan) -> int:
        for value in (plan.retries, plan.test_case.retries):
            if value is not None:
                return value
        return org.default_test_retries

    return [
        TestRun(
            id=new_id("run"),
            organization_id=principal.organization_id,
            test_case_id=plan.test_case.id,
            app_id=plan.target.app.id,
            user_id=principal.user_id,
            api_key_id=principal.key_id or None,  # a dashboard session has no key
            device_name=plan.target.device_name,
            device_platform=plan.target.platform,
            device_os_version=plan.target.os_version,
            device_orientation=plan.target.orientation,
            target_id=plan.target.spec.key,
            status="queued",
            priority=plan.priority,
            priority_rank=PRIORITY_RANK[plan.priority],
            queue_order=base + order[i],
            progress=0,
            attempt=0,
            max_attempts=max_attempts,
            timeout_seconds=plan.timeout_seconds or plan.test_case.timeout_seconds,
            env=plan.env,
            record_video=plan.record_video or plan.test_case.record_video,
            queued_at=now,
            test_retries=retries(plan),
            batch_id=batch_id,
            quarantined=plan.test_case.quarantined_at is not None,
            auto_quarantine=org.auto_quarantine,
        )
        for i, plan in enumerate(plans)
    ]


async def _queue(
    session: AsyncSession,
    state: AppState,
    principal: Principal,
    plans: list[_Plan],
    order: list[int],
    ask: BatchAsk,
) -> QueuedOut:
    org = await OrganisationRepository(session).get(principal.organization_id)
    if org is None:
        raise NotFound("This key's organisation no longer exists.")
    # The batch first: cancelling a group's earlier batches locks their runs before anything else.
    batch = await batches.open_batch(session, principal, ask.kind, ask.group, ask.cancel_previous)
    await TargetRepository(session).ensure([plan.target.spec for plan in plans])
    runs = _build_runs(principal, plans, state.settings.max_attempts, order, org, batch.id)
    await RunRepository(session, principal.organization_id).add_all(runs)
    await record_events(session, "run.queued", [(run.organization_id, run.id) for run in runs])
    for run in runs:
        RUNS_QUEUED.labels(run.device_platform.lower()).inc()
    on_commit(session, lambda: state.wakeup.wake(len(runs)))
    return QueuedOut(
        jobs=[QueuedJob(id=run.id, link=run_link(state, run.id), status="queued") for run in runs], batch_id=batch.id
    )


def _check_group(problems: _Problems, ask: BatchAsk) -> None:
    if ask.cancel_previous and ask.group is None:
        problems.add(None, "cancel_previous", "cancels the earlier batches of a group: send `group` too")


async def queue_jobs(
    session: AsyncSession, state: AppState, principal: Principal, jobs: list[JobIn], ask: BatchAsk | None = None
) -> QueuedOut:
    ask = ask or BatchAsk("run")
    org = principal.organization_id
    cases = await TestCaseRepository(session, org).get_many([job.test_case_id for job in jobs])
    problems = _Problems()
    resolver = _Resolver(state, AppRepository(session, org), problems)
    plans: list[_Plan] = []
    for index, job in enumerate(jobs):
        test_case = cases.get(job.test_case_id)
        if test_case is None:
            problems.add(index, "test_case_id", f"no test case {job.test_case_id}")
            continue
        if test_case.status != "active":
            problems.add(index, "test_case_id", f"test case {test_case.id} is inactive")
            continue
        target = await resolver.resolve(
            index, device=job.device, wanted=job.device_selector, app_file_id=job.app_file_id, platform_in=job.platform
        )
        if target is not None:
            retries = job.retries if job.retries is not None else ask.retries
            plans.append(
                _Plan(test_case, target, job.priority, job.timeout_seconds, job.env, job.record_video, retries)
            )
    _check_group(problems, ask)
    problems.raise_if_any()
    # A batch of jobs starts in the order it was sent.
    return await _queue(session, state, principal, plans, list(range(len(plans))), ask)


def selected(tags: list[str] | None, include: list[str] | None, exclude: list[str] | None) -> bool:
    """Maestro's tag filters: with ``include``, at least one of them; never any of ``exclude``."""
    own = set(tags or ())
    if include and own.isdisjoint(include):
        return False
    return not (exclude and not own.isdisjoint(exclude))


async def expected_seconds(
    session: AsyncSession, organization_id: str, test_case_ids: list[str], platform: str
) -> dict[str, float]:
    """How long each test case is expected to run on ``platform`` (Android | iOS): the median of its
    latest passed runs there; a test case with none counts as the median of the others (0 for all when
    none has any, which keeps their order)."""
    durations = await RunRepository(session, organization_id).recent_durations(test_case_ids, platform)
    medians = {case_id: statistics.median(seconds) for case_id, seconds in durations.items() if seconds}
    suite = statistics.median(medians.values()) if medians else 0.0
    return {case_id: medians.get(case_id, suite) for case_id in test_case_ids}


async def _run_all_targets(
    session: AsyncSession,
    resolver: _Resolver,
    problems: _Problems,
    *,
    app_file_id: str | None,
    device: DeviceIn | None,
    devices: list[DeviceIn] | None,
    wanted: DeviceSelector | None,
    platform: str | None,
    mode: str,
) -> list[_Target]:
    """What each test case of a run-all runs on: one target (spread), or one per device (matrix)."""
    if devices is not None:
        found = [
            await resolver.resolve(
                None, device=d, wanted=None, app_file_id=app_file_id, platform_in=platform, field=f"devices[{i}]"
            )
            for i, d in enumerate(devices)
        ]
        named = list({t.spec.key: t for t in found if t is not None}.values())
        problems.raise_if_any()
        if mode == "matrix" or len(named) == 1:
            return named
        first = named[0]
        if len({t.spec.platform for t in named}) > 1 or len({t.app.id for t in named}) > 1:
            problems.add(None, "devices", "spread runs each test case once: its devices must share a platform")
            problems.raise_if_any()
        spec = selectors.one_of(first.spec.platform, [(t.device_name, t.os_version) for t in named])
        return [_Target(first.app, spec, spec.label() or "", first.platform, "any", first.orientation)]

    target = await resolver.resolve(None, device=device, wanted=wanted, app_file_id=app_file_id, platform_in=platform)
    problems.raise_if_any()
    assert target is not None
    if mode == "spread" or target.spec.pinned:
        return [target]
    # A matrix over a selector or a platform: each kind of online device that fits, as named devices.
    kinds = await TargetRepository(session).online_models(target.spec, resolver.apps.organization_id)
    if not kinds:
        raise Unprocessable(
            f"No online device fits {target.device_name!r}; a matrix runs every test case on each kind of online "
            "device that fits. Name the devices (`devices`) or bring one online.",
            code="no_device",
        )
    return [
        _Target(target.app, selectors.pinned(name, platform_shown, os), name, platform_shown, os, target.orientation)
        for name, platform_shown, os in kinds
    ]


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
    device_selector: DeviceSelector | None = None,
    devices: list[DeviceIn] | None = None,
    mode: str = "spread",
    ask: BatchAsk | None = None,
) -> QueuedOut:
    """Every active test case (of the category, with the tags), once on any device that fits (spread)
    or on each device (matrix). Runs are queued longest expected first, so that the suite's wall time
    approaches max(longest run, total run time / devices)."""
    ask = ask or BatchAsk("run-all")
    org = principal.organization_id
    problems = _Problems()
    _check_group(problems, ask)
    selector_platform = device_selector.platform if device_selector is not None else None
    if app_file_id is None and platform is None and selector_platform is None:
        problems.add(None, "app_file_id", "send app_file_id (or a platform to use the newest app)", missing=True)
    problems.raise_if_any()
    given = {"device": device, "devices": devices, "device_selector": device_selector}
    asked = [name for name, value in given.items() if value is not None]
    if len(asked) > 1:
        problems.add(None, asked[1], f"send one of device, devices and device_selector, not {' and '.join(asked)}")
    test_cases = TestCaseRepository(session, org)
    if category_id is not None and await CategoryRepository(session, org).get(category_id) is None:
        problems.add(None, "category_id", f"no category {category_id}")
    problems.raise_if_any()
    resolver = _Resolver(state, AppRepository(session, org), problems)
    targets = await _run_all_targets(
        session,
        resolver,
        problems,
        app_file_id=app_file_id,
        device=device,
        devices=devices,
        wanted=device_selector,
        platform=platform,
        mode=mode,
    )
    cases = [case for case in await test_cases.active(category_id) if selected(case.tags, include_tags, exclude_tags)]
    if not cases:
        where = f" in category {category_id}" if category_id else ""
        if include_tags or exclude_tags:
            where += " with the tags asked for"
        raise Unprocessable(
            f"No active test cases{where}; nothing was queued. Create test cases with POST /v1/test-cases.",
            code="no_test_cases",
        )
    case_ids = [case.id for case in cases]
    expected = {
        platform_shown: await expected_seconds(session, org, case_ids, platform_shown)
        for platform_shown in sorted({t.platform for t in targets})
    }
    plans = [
        _Plan(case, target, priority, timeout_seconds, env, record_video, ask.retries)
        for target in targets
        for case in cases
    ]
    # Longest expected first; among equals, test case order, then device order.
    places = sorted(
        range(len(plans)),
        key=lambda i: (-expected[plans[i].target.platform][plans[i].test_case.id], i % len(cases), i // len(cases)),
    )
    order = [0] * len(plans)
    for place, i in enumerate(places):
        order[i] = place
    return await _queue(session, state, principal, plans, order, ask)


async def cancel(session: AsyncSession, principal: Principal, run_id: str) -> CancelOut:
    repo = RunRepository(session, principal.organization_id)
    run = await repo.get(run_id)
    if run is None:
        raise NotFound(f"No test run {run_id}.")
    status = await transitions.cancel(session, principal.organization_id, run.id)
    if status is None:
        raise Unprocessable(f"Test run {run_id} has already finished ({run.status}).", code="run_finished")
    return CancelOut(id=run.id, status=status)
