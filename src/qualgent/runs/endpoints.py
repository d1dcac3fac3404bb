from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from qualgent.agents.schemas import INT32_MAX, MAX_STEP_INDEX
from qualgent.auth.service import authenticate, refuse_failed
from qualgent.deps import PrincipalDep, SessionDep, StateDep, app_state
from qualgent.errors import Forbidden, NotFound
from qualgent.ids import has_shape
from qualgent.lenient_json import LenientJSONRoute
from qualgent.openapi import API_KEY_SECURITY, errors
from qualgent.pagination import PageDep, set_next_link
from qualgent.runs import artifacts, reports, service
from qualgent.runs.repository import RunRepository
from qualgent.runs.schemas import CancelOut, QueueInfo, RunListOut, RunOut, RunReport, RunStatus
from qualgent.signing import MAX_EXPIRES, verify_path
from qualgent.state import AppState

router = APIRouter(prefix="/v1/jobs", tags=["Jobs"], route_class=LenientJSONRoute)


@router.get("/list", response_model=RunListOut)
async def list_jobs(
    request: Request,
    response: Response,
    state: StateDep,
    principal: PrincipalDep,
    page: PageDep,
    status: Annotated[RunStatus | None, Query(description="Only runs in this status.")] = None,
    test_case_id: Annotated[str | None, Query(max_length=64)] = None,
    app_id: Annotated[str | None, Query(max_length=64)] = None,
    ids: Annotated[
        str | None,
        Query(
            max_length=64 * 1000,
            # IDs are ASCII: a URL stays within the HTTP server's 80 KiB for a request's head.
            pattern=r"^[A-Za-z0-9_,]*$",
            description="Comma-separated run IDs (up to 1000): the state of many runs in one request.",
        ),
    ] = None,
    queue: Annotated[
        bool,
        Query(
            description="Also say why each queued run waits (`queue`, as the status route does): the CLI's live view."
        ),
    ] = False,
    batch_id: Annotated[str | None, Query(max_length=64, description="Only runs of this batch.")] = None,
) -> RunListOut:
    """List all test runs in your organization, newest first."""
    # An ID of the wrong shape matches nothing; it never reaches the database (PostgreSQL refuses NUL).
    id_list = [i for i in ids.split(",") if has_shape(i, "run")] if ids is not None else None
    unmatchable = (
        (test_case_id and not has_shape(test_case_id, "tc"))
        or (app_id and not has_shape(app_id, "file"))
        or (batch_id and not has_shape(batch_id, "batch"))
    )
    repo = RunRepository.for_reads(state.reader, principal.organization_id)
    rows = (
        []
        if unmatchable
        else await repo.view_page(
            page.limit + 1,
            page.cursor,
            status=status,
            test_case_id=test_case_id,
            app_id=app_id,
            ids=id_list,
            batch_id=batch_id,
        )
    )
    items = rows[: page.limit]
    set_next_link(request, response, items[-1].id if len(rows) > page.limit else None, state.settings.public_base_url)
    out = [service.to_out(state, run) for run in items]
    if queue:
        waits = await repo.queue_infos(items, state.settings.default_parallel_runs)
        for run in out:
            if run.id in waits:
                reason, position, eta = waits[run.id]
                run.queue = QueueInfo(reason=reason, position=position, eta_seconds=eta)
    return RunListOut(test_runs=out)


# It authenticates inside (the hot-route middleware serves it without FastAPI's dependencies).
@router.get("/status/{test_run_id}", response_model=RunOut, openapi_extra=API_KEY_SECURITY)
async def job_status(test_run_id: str, request: Request) -> Response:
    """Get the status of a specific test run."""
    return await status_response(request, test_run_id)


STATUS_PREFIX = "/v1/jobs/status/"


async def status_response(request: Request, test_run_id: str) -> Response:
    """The status route's work, shared by its FastAPI route and the hot-route middleware that serves it
    (``middleware.HotRoutesMiddleware``: CI pipelines poll this route more than all others together)."""
    state = app_state(request)
    principal = await authenticate(request, state)
    repo = RunRepository.for_reads(state.reader, principal.organization_id)
    run = await repo.view(test_run_id)
    if run is None:
        raise NotFound(f"No test run {test_run_id}.")
    out = service.to_out(state, run)
    if run.status == "queued":
        reason, position, eta = await repo.queue_info(run, state.settings.default_parallel_runs)
        out.queue = QueueInfo(reason=reason, position=position, eta_seconds=eta)
    # Serialised once here rather than have FastAPI validate the model again.
    return Response(out.model_dump_json(), media_type="application/json")


@router.get("/{test_run_id}/report", response_model=RunReport)
async def job_report(
    test_run_id: str,
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
    attempt: Annotated[
        int | None,
        Query(ge=1, le=INT32_MAX, description="List this attempt's steps and artifacts (default: the latest)."),
    ] = None,
) -> RunReport:
    """A run's report: its attempts and each step with status, duration, log lines and screenshot link."""
    _run, report = await reports.build(
        RunRepository(session, principal.organization_id, state.reader), state, test_run_id, attempt=attempt
    )
    return report


@router.get(
    "/{test_run_id}/junit",
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}, "description": "JUnit XML for the run."}},
)
async def job_junit(test_run_id: str, session: SessionDep, state: StateDep, principal: PrincipalDep) -> Response:
    """A run's result as JUnit XML (one test suite per device, one test case per run)."""
    _run, report = await reports.build(
        RunRepository(session, principal.organization_id, state.reader), state, test_run_id
    )
    return Response(reports.to_junit(report), media_type="application/xml")


@router.post("/{test_run_id}/cancel", response_model=CancelOut)
async def cancel_job(test_run_id: str, session: SessionDep, principal: PrincipalDep) -> CancelOut:
    """Cancel a run: a queued one at once, a running one at its agent's next heartbeat."""
    return await service.cancel(session, principal, test_run_id)


# Pre-signed screenshot links carry their own authorisation, like app downloads.
artifacts_router = APIRouter(prefix="/v1/jobs", tags=["Jobs"], route_class=LenientJSONRoute)
_SIGNED = errors(
    (403, "The link's signature is wrong or it has expired (`invalid_signature`)."),
    (429, "Too many failed signatures from this address; wait `Retry-After` seconds."),
)
AttemptPath = Annotated[int, Path(ge=0, le=INT32_MAX, description="The run's attempt.")]
OrgQuery = Annotated[str, Query(max_length=40, description="The organisation the link was signed for.")]
ExpiresQuery = Annotated[int, Query(ge=0, le=MAX_EXPIRES, description="When the link expires (Unix seconds).")]
SignatureQuery = Annotated[str, Query(max_length=128, description="The link's signature.")]


@artifacts_router.get(
    "/{test_run_id}/screenshots/{attempt}/{index}.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The screenshot."}, **_SIGNED},
)
async def screenshot(
    test_run_id: str,
    attempt: AttemptPath,
    index: Annotated[int, Path(ge=0, le=MAX_STEP_INDEX, description="The step's index.")],
    request: Request,
    session: SessionDep,
    state: StateDep,
    org: OrgQuery,
    expires: ExpiresQuery,
    signature: SignatureQuery,
) -> Response:
    """A step's screenshot through a pre-signed link (valid 5 minutes)."""
    await _check_signature(
        request, state, reports.screenshot_path(test_run_id, attempt, index), org, expires, signature
    )
    steps = await RunRepository(session, org, state.reader).steps(test_run_id, attempt)
    step = next((s for s in steps if s.index == index and s.screenshot_key), None)
    if step is None or step.screenshot_key is None:
        raise NotFound("No such screenshot.")
    local = state.storage.path(step.screenshot_key)
    if local is None:  # object storage: a screenshot is small, stream it through
        return StreamingResponse(state.storage.open(step.screenshot_key), media_type="image/png")
    return FileResponse(local, media_type="image/png")


@artifacts_router.get(
    "/{test_run_id}/artifacts/{attempt}/{name}",
    response_class=Response,
    responses={
        200: {"content": {"video/mp4": {}, "text/plain": {}}, "description": "The artifact's bytes."},
        206: {"description": "The range asked for (`Range: bytes=…`)."},
        307: {"description": "On object storage: the store's own pre-signed URL."},
        **_SIGNED,
        **errors(416),
    },
)
async def artifact(
    test_run_id: str,
    attempt: AttemptPath,
    name: str,
    request: Request,
    session: SessionDep,
    state: StateDep,
    org: OrgQuery,
    expires: ExpiresQuery,
    signature: SignatureQuery,
) -> Response:
    """A run's video or device log through a pre-signed link (valid 5 minutes); answers Range requests."""
    await _check_signature(request, state, reports.artifact_path(test_run_id, attempt, name), org, expires, signature)
    row = await RunRepository(session, org, state.reader).artifact(test_run_id, attempt, name)
    if row is None:
        raise NotFound("No such artifact.")
    return artifacts.serve(state, row, request.headers.get("range"), redirect=True)


async def _check_signature(
    request: Request, state: AppState, path: str, org: str, expires: int, signature: str
) -> None:
    """A pre-signed link's own authorisation; failures count like failed API keys (429 past the limit)."""
    if not verify_path(state.signing_key, org, path, expires, signature):
        await refuse_failed(
            request,
            state,
            Forbidden("This link is invalid or has expired; fetch the report again.", code="invalid_signature"),
        )
