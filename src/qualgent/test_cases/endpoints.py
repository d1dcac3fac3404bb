from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response

from qualgent.categories.schemas import DeletedOut
from qualgent.deps import PrincipalDep, SessionDep, StateDep
from qualgent.idempotency import service as idempotency
from qualgent.idempotency.service import IdempotencyKeyDep
from qualgent.lenient_json import LenientJSONRoute
from qualgent.pagination import CursorQuery, PageDep, PageParams, page_params, set_next_link
from qualgent.quality import service as quality
from qualgent.quality.schemas import HistoryOut, QuarantineIn
from qualgent.runs import service as runs
from qualgent.runs.schemas import QueuedOut, RunAllIn, RunIn
from qualgent.test_cases import service
from qualgent.test_cases.repository import TestCaseRepository
from qualgent.test_cases.schemas import TestCaseDetail, TestCaseIn, TestCaseOut, TestCasePatch

router = APIRouter(prefix="/v1/test-cases", tags=["Test Cases"], route_class=LenientJSONRoute)


@router.get("/list", response_model=list[TestCaseOut])
async def list_test_cases(
    request: Request,
    response: Response,
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
    page: PageDep,
    category: Annotated[str | None, Query(max_length=64, description="Only test cases in this category.")] = None,
) -> list[TestCaseOut]:
    """List all test cases in your organization, optionally filtered by category."""
    org = principal.organization_id
    rows = await TestCaseRepository(session, org).page(page.limit + 1, page.cursor, category)
    items = rows[: page.limit]
    set_next_link(request, response, items[-1].id if len(rows) > page.limit else None, state.settings.public_base_url)
    return await service.list_out(session, state, org, items)


@router.post("/run", response_model=QueuedOut, responses=idempotency.RESPONSES)
async def run_test_cases(
    body: RunIn, session: SessionDep, state: StateDep, principal: PrincipalDep, key: IdempotencyKeyDep
) -> QueuedOut | Response:
    """Queue test runs; the batch is atomic (any invalid entry queues nothing)."""

    async def queue() -> QueuedOut:
        ask = runs.BatchAsk("run", body.retries, body.group, body.cancel_previous)
        return await runs.queue_jobs(session, state, principal, body.jobs, ask)

    fingerprint = idempotency.fingerprint("POST", "/v1/test-cases/run", idempotency.digest(body.model_dump_json()))
    return await idempotency.once(session, principal, key, fingerprint, queue)


@router.post("/run-all", response_model=QueuedOut, responses=idempotency.RESPONSES)
async def run_all_test_cases(
    body: RunAllIn, session: SessionDep, state: StateDep, principal: PrincipalDep, key: IdempotencyKeyDep
) -> QueuedOut | Response:
    """Run all active test cases (optionally of one category) against an application."""

    async def queue() -> QueuedOut:
        return await runs.queue_all(
            session,
            state,
            principal,
            app_file_id=body.app_file_id,
            device=body.device,
            platform=body.platform,
            category_id=body.category_id,
            priority=body.priority,
            timeout_seconds=body.timeout_seconds,
            env=body.env,
            include_tags=body.include_tags,
            exclude_tags=body.exclude_tags,
            record_video=body.record_video,
            device_selector=body.device_selector,
            devices=body.devices,
            mode=body.mode,
            ask=runs.BatchAsk("run-all", body.retries, body.group, body.cancel_previous),
        )

    fingerprint = idempotency.fingerprint("POST", "/v1/test-cases/run-all", idempotency.digest(body.model_dump_json()))
    return await idempotency.once(session, principal, key, fingerprint, queue)


@router.post("", response_model=TestCaseDetail, status_code=201)
async def create_test_case(
    body: TestCaseIn, session: SessionDep, state: StateDep, principal: PrincipalDep
) -> TestCaseDetail:
    """Create a test case."""
    test_case_id = await service.create(session, principal.organization_id, body)
    return await service.detail(session, state, principal.organization_id, test_case_id)


@router.get("/{test_case_id}", response_model=TestCaseDetail)
async def get_test_case(
    test_case_id: str, session: SessionDep, state: StateDep, principal: PrincipalDep
) -> TestCaseDetail:
    """Get one test case, with its flow."""
    return await service.detail(session, state, principal.organization_id, test_case_id)


@router.get(
    "/{test_case_id}/files/{file_path:path}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."}},
)
async def get_test_case_file(
    test_case_id: str, file_path: str, session: SessionDep, principal: PrincipalDep
) -> Response:
    """Download one of a test case's files (its path as listed in `files`)."""
    content, media_type = await service.file(session, principal.organization_id, test_case_id, file_path)
    name = quote(file_path.rsplit("/", 1)[-1], safe="")
    return Response(
        content,
        media_type=media_type,
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/{test_case_id}/history", response_model=HistoryOut)
async def test_case_history(
    test_case_id: str,
    request: Request,
    response: Response,
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200, description="Runs per page (1–200).")] = 50,
    cursor: CursorQuery = None,
) -> HistoryOut:
    """A test case's recent runs (app version and SHA-256, device, duration, attempts, result), flakiness and figures."""
    page = PageParams(limit, cursor) if cursor is None else await page_params(limit, cursor)
    out, more = await service.history(session, state, principal.organization_id, test_case_id, page.limit, page.cursor)
    set_next_link(request, response, out.runs[-1].id if more else None, state.settings.public_base_url)
    return out


@router.put("/{test_case_id}/quarantine", response_model=TestCaseDetail)
async def quarantine_test_case(
    test_case_id: str,
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
    body: QuarantineIn | None = None,
) -> TestCaseDetail:
    """Put a test case in quarantine: its runs still run and are reported, but never fail a gate."""
    reason = body.reason if body is not None else None
    await quality.set_quarantine(session, principal.organization_id, test_case_id, True, reason)
    return await service.detail(session, state, principal.organization_id, test_case_id)


@router.delete("/{test_case_id}/quarantine", response_model=TestCaseDetail)
async def release_test_case(
    test_case_id: str, session: SessionDep, state: StateDep, principal: PrincipalDep
) -> TestCaseDetail:
    """Take a test case out of quarantine: its runs gate again."""
    await quality.set_quarantine(session, principal.organization_id, test_case_id, False)
    return await service.detail(session, state, principal.organization_id, test_case_id)


@router.patch("/{test_case_id}", response_model=TestCaseDetail)
async def update_test_case(
    test_case_id: str, body: TestCasePatch, session: SessionDep, state: StateDep, principal: PrincipalDep
) -> TestCaseDetail:
    """Change a test case's fields."""
    await service.update(session, principal.organization_id, test_case_id, body)
    return await service.detail(session, state, principal.organization_id, test_case_id)


@router.delete("/{test_case_id}", response_model=DeletedOut)
async def delete_test_case(test_case_id: str, session: SessionDep, principal: PrincipalDep) -> DeletedOut:
    """Delete a test case; its past runs remain."""
    await service.delete(session, principal.organization_id, test_case_id)
    return DeletedOut(deleted=[test_case_id])
