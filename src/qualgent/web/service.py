"""What the dashboard's pages show, gathered through the same services and repositories as the API, so
a page sees exactly what its organisation's API keys see."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.agents.repository import AgentRepository
from qualgent.apps import service as apps_service
from qualgent.apps.repository import AppRepository
from qualgent.apps.schemas import AppOut
from qualgent.auth.principal import Principal
from qualgent.batches import service as batches_service
from qualgent.batches.schemas import BatchOut
from qualgent.categories.repository import CategoryRepository
from qualgent.db.models import Category
from qualgent.errors import NotFound, Unprocessable
from qualgent.ids import has_shape
from qualgent.quality import service as quality
from qualgent.quality.schemas import HistoryOut
from qualgent.runs import artifacts as run_artifacts
from qualgent.runs import reports
from qualgent.runs import service as runs_service
from qualgent.runs.repository import RunRepository
from qualgent.runs.schemas import DeviceIn, JobIn, QueuedJob, RunOut, RunStatus
from qualgent.state import AppState
from qualgent.test_cases import service as test_cases_service
from qualgent.test_cases.repository import TestCaseRepository
from qualgent.test_cases.schemas import TestCaseDetail, TestCaseOut
from qualgent.web import charts

log = logging.getLogger("qualgent.web")

HISTORY_RUNS = 40  # runs in a test case page's history chart and table

STATUSES: tuple[RunStatus, ...] = ("queued", "running", "passed", "failed", "cancelled")
LIST_LIMIT = 100
CHOICES_LIMIT = 500


@dataclass
class RunFilters:
    status: str | None = None
    app_id: str | None = None
    device: str | None = None
    test_case_id: str | None = None

    @classmethod
    def parse(cls, status: str | None, app_id: str | None, device: str | None, test_case_id: str | None) -> RunFilters:
        status = status or None
        if status is not None and status not in STATUSES:
            raise Unprocessable(f"Unknown status {status!r}; use one of {', '.join(STATUSES)}.")
        return cls(status, app_id or None, device or None, test_case_id or None)

    def query(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v}


async def run_list(state: AppState, principal: Principal, filters: RunFilters) -> list[RunOut]:
    # An ID of the wrong shape matches nothing, as on GET /v1/jobs/list.
    if (filters.app_id and not has_shape(filters.app_id, "file")) or (
        filters.test_case_id and not has_shape(filters.test_case_id, "tc")
    ):
        return []
    rows = await RunRepository.for_reads(state.reader, principal.organization_id).view_page(
        LIST_LIMIT,
        None,
        status=filters.status,
        test_case_id=filters.test_case_id,
        app_id=filters.app_id,
        device_name=filters.device,
    )
    return [runs_service.to_out(state, row) for row in rows]


@dataclass
class FilterChoices:
    apps: list[Any]
    test_cases: list[Any]
    devices: list[str]
    statuses: tuple[str, ...] = STATUSES


async def filter_choices(session: AsyncSession, state: AppState, principal: Principal) -> FilterChoices:
    org = principal.organization_id
    apps = await AppRepository(session, org).page(CHOICES_LIMIT, None)
    cases = await TestCaseRepository(session, org).page(CHOICES_LIMIT, None, None)
    devices = sorted({d.name for d in state.devices.devices})
    return FilterChoices(list(apps), list(cases), devices)


@dataclass
class AttemptView:
    number: int
    device: str
    started_at: Any
    finished_at: Any
    outcome: str | None
    message: str | None
    steps: list[Any] = field(default_factory=list)
    # Why it was made: "test" (a test retry), "infrastructure" (its agent was lost before), None (the first).
    retry: str | None = None
    # Artifacts: the attempt's own screen recordings, its device logs, and videos of steps (stopRecording).
    videos: list[Any] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)
    step_videos: dict[int, list[Any]] = field(default_factory=dict)


@dataclass
class RunView:
    run: RunOut
    attempts: list[AttemptView]
    queue: Any | None
    # A failed run's device log: its last lines, shown by the failing step, and the log itself (its link).
    log_tail: list[str] | None = None
    tail_of: Any | None = None

    @property
    def finished(self) -> bool:
        return self.run.status in ("passed", "failed", "cancelled")

    @property
    def failing_step(self) -> Any | None:
        if self.run.failure is None or self.run.failure.step is None or not self.attempts:
            return None
        return next((s for s in self.attempts[-1].steps if s.index == self.run.failure.step), None)


async def run_view(session: AsyncSession, state: AppState, principal: Principal, run_id: str) -> RunView:
    repo = RunRepository(session, principal.organization_id, state.reader)
    row = await repo.view(run_id)
    if row is None:
        raise NotFound(f"No test run {run_id}.")
    attempts = []
    artifacts: dict[int, list[Any]] = {}
    for artifact in await repo.artifacts(row.id):
        artifacts.setdefault(artifact.attempt, []).append(artifact)
    previous = None
    for attempt in await repo.attempts(row.id):
        steps = await repo.steps(row.id, attempt.number)
        view = AttemptView(
            attempt.number,
            attempt.device_name,
            attempt.started_at,
            attempt.finished_at,
            attempt.outcome,
            attempt.message,
            list(steps),
            reports.retry_reason(previous),
        )
        previous = attempt
        for artifact in artifacts.get(attempt.number, []):
            if artifact.kind == "log":
                view.logs.append(artifact)
            elif artifact.step_index is not None:
                view.step_videos.setdefault(artifact.step_index, []).append(artifact)
            else:
                view.videos.append(artifact)
        attempts.append(view)
    queue = None
    if row.status == "queued":
        reason, position, eta = await repo.queue_info(row, state.settings.default_parallel_runs)
        queue = {"reason": reason.replace("_", " "), "position": position, "eta_seconds": eta}
    run_view = RunView(runs_service.to_out(state, row), attempts, queue)
    if row.failure_kind and attempts and attempts[-1].logs:
        run_view.tail_of = attempts[-1].logs[0]
        try:
            run_view.log_tail = await run_artifacts.tail(state, run_view.tail_of)
        except Exception:
            # The page still shows the run (and the log's link) when the store does not answer.
            log.warning("run %s: cannot read the device log's end", row.id, exc_info=True)
    return run_view


async def artifact(
    session: AsyncSession, state: AppState, principal: Principal, run_id: str, attempt: int, name: str
) -> Any:
    """One of a run's videos or device logs (its ``run_artifacts`` row), as the run's page links it."""
    found = await RunRepository(session, principal.organization_id, state.reader).artifact(run_id, attempt, name)
    if found is None:
        raise NotFound("No such artifact.")
    return found


async def run_report(session: AsyncSession, state: AppState, principal: Principal, run_id: str) -> Any:
    _run, report = await reports.build(RunRepository(session, principal.organization_id, state.reader), state, run_id)
    return report


async def screenshot_key(
    session: AsyncSession, state: AppState, principal: Principal, run_id: str, attempt: int, index: int
) -> str:
    if not has_shape(run_id, "run"):
        raise NotFound("No such screenshot.")
    steps = await RunRepository(session, principal.organization_id, state.reader).steps(run_id, attempt)
    step = next((s for s in steps if s.index == index and s.screenshot_key), None)
    if step is None:
        raise NotFound("No such screenshot.")
    key: str = step.screenshot_key
    return key


async def app_list(session: AsyncSession, state: AppState, principal: Principal) -> list[AppOut]:
    apps = await AppRepository(session, principal.organization_id).page(CHOICES_LIMIT, None)
    return [apps_service.to_out(state, app) for app in apps]


@dataclass
class CatalogueView:
    categories: list[Category]
    test_cases: list[TestCaseOut]
    category: Category | None


async def test_case_list(
    session: AsyncSession, state: AppState, principal: Principal, category_id: str | None
) -> CatalogueView:
    org = principal.organization_id
    categories = list(await CategoryRepository(session, org).page(CHOICES_LIMIT, None))
    category = None
    if category_id:
        category = await CategoryRepository(session, org).get(category_id)
        if category is None:
            raise NotFound(f"No category {category_id}.")
    cases = await TestCaseRepository(session, org).page(CHOICES_LIMIT, None, category_id or None)
    return CatalogueView(categories, await test_cases_service.list_out(session, state, org, cases), category)


async def test_case_detail(session: AsyncSession, state: AppState, principal: Principal, test_case_id: str) -> Any:
    return await test_cases_service.detail(session, state, principal.organization_id, test_case_id)


@dataclass
class TestCasePage:
    __test__ = False  # not a pytest class

    case: TestCaseDetail
    history: HistoryOut
    chart: Markup


async def test_case_page(
    session: AsyncSession, state: AppState, principal: Principal, test_case_id: str
) -> TestCasePage:
    org = principal.organization_id
    case = await test_cases_service.detail(session, state, org, test_case_id)
    history, _more = await test_cases_service.history(session, state, org, case.id, HISTORY_RUNS, None)
    return TestCasePage(case, history, charts.history_chart(history.runs))


async def set_quarantine(session: AsyncSession, principal: Principal, test_case_id: str, on: bool, reason: str) -> None:
    await quality.set_quarantine(session, principal.organization_id, test_case_id, on, reason.strip() or None)


async def batch_view(session: AsyncSession, state: AppState, principal: Principal, batch_id: str) -> BatchOut:
    if not has_shape(batch_id, "batch"):
        raise NotFound(f"No batch {batch_id}.")
    return await batches_service.batch_out(session, state, principal, batch_id, with_runs=True)


def device_value(device: Any) -> str:
    return f"{device.name}|{device.platform}|{device.os_version}"


async def queue_one(
    session: AsyncSession,
    state: AppState,
    principal: Principal,
    test_case_id: str,
    device: str,
    app_file_id: str,
    priority: str,
    *,
    record_video: bool = False,
) -> QueuedJob:
    """Queue one run from the test case page's form, through the API's own queuing service."""
    parts = device.split("|")
    if len(parts) != 3:
        raise Unprocessable("Choose a device from the list.", details=[{"field": "device", "issue": "unknown device"}])
    try:
        job = JobIn(
            test_case_id=test_case_id,
            app_file_id=app_file_id or None,
            device=DeviceIn(name=parts[0], platform=parts[1], os_version=parts[2]),
            priority=priority,  # validated by the model
            record_video=record_video,
        )
    except ValidationError as exc:
        details = [{"field": ".".join(str(p) for p in e["loc"]), "issue": e["msg"]} for e in exc.errors()]
        raise Unprocessable("The run's settings are invalid; see details.", details=details) from None
    [queued] = (await runs_service.queue_jobs(session, state, principal, [job])).jobs
    return queued


async def devices_by_type(session: AsyncSession, state: AppState) -> dict[str, list[dict[str, Any]]]:
    return state.devices.by_type(await AgentRepository(session).availability())
