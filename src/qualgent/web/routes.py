"""Pages for people. For now: the run page that every run's ``link`` points at."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from qualgent.auth.service import authenticate
from qualgent.deps import SessionDep, StateDep
from qualgent.errors import NotFound
from qualgent.ids import has_shape
from qualgent.runs import service
from qualgent.runs.repository import RunRepository

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


@router.get("/test-runs/{run_id}", response_class=HTMLResponse)
async def run_page(run_id: str, request: Request, session: SessionDep, state: StateDep) -> HTMLResponse:
    """A run's page. With an API key it shows the run; without one, how to see it."""
    if not has_shape(run_id, "run"):
        raise NotFound(f"No test run {run_id}.")
    run_out = None
    if request.headers.get("x-api-key"):
        principal = await authenticate(request, state)
        run = await RunRepository(session, principal.organization_id, state.reader).view(run_id)
        if run is None:
            raise NotFound(f"No test run {run_id}.")
        run_out = service.to_out(state, run)
    return templates.TemplateResponse(
        request,
        "run.html",
        {"run_id": run_id, "run": run_out, "base_url": state.settings.public_base_url.rstrip("/")},
    )
