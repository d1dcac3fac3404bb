from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from qualgent.deps import PrincipalDep, SessionDep, StateDep
from qualgent.errors import NotFound
from qualgent.ids import has_shape
from qualgent.lenient_json import LenientJSONRoute
from qualgent.pagination import PageDep, set_next_link
from qualgent.runs import service
from qualgent.runs.repository import RunRepository
from qualgent.runs.schemas import CancelOut, RunListOut, RunOut, RunStatus

router = APIRouter(prefix="/v1/jobs", tags=["Jobs"], route_class=LenientJSONRoute)


@router.get("/list", response_model=RunListOut)
async def list_jobs(
    request: Request,
    response: Response,
    session: SessionDep,
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
            description="Comma-separated run IDs: the state of many runs in one request.",
        ),
    ] = None,
) -> RunListOut:
    """List all test runs in your organization, newest first."""
    # An ID of the wrong shape matches nothing; it never reaches the database (PostgreSQL refuses NUL).
    id_list = [i for i in ids.split(",") if has_shape(i, "run")] if ids is not None else None
    unmatchable = (test_case_id and not has_shape(test_case_id, "tc")) or (app_id and not has_shape(app_id, "file"))
    rows = (
        []
        if unmatchable
        else await RunRepository(session, principal.organization_id, state.reader).view_page(
            page.limit + 1, page.cursor, status=status, test_case_id=test_case_id, app_id=app_id, ids=id_list
        )
    )
    items = rows[: page.limit]
    set_next_link(request, response, items[-1].id if len(rows) > page.limit else None, state.settings.public_base_url)
    return RunListOut(test_runs=[service.to_out(state, run) for run in items])


@router.get("/status/{test_run_id}", response_model=RunOut)
async def job_status(test_run_id: str, session: SessionDep, state: StateDep, principal: PrincipalDep) -> RunOut:
    """Get the status of a specific test run."""
    run = await RunRepository(session, principal.organization_id, state.reader).view(test_run_id)
    if run is None:
        raise NotFound(f"No test run {test_run_id}.")
    return service.to_out(state, run)


@router.post("/{test_run_id}/cancel", response_model=CancelOut)
async def cancel_job(test_run_id: str, session: SessionDep, principal: PrincipalDep) -> CancelOut:
    """Cancel a run: a queued one at once, a running one at its agent's next heartbeat."""
    return await service.cancel(session, principal, test_run_id)
