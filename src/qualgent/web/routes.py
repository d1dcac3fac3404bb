"""The dashboard: pages for people, scoped to the signed-in person's organisation exactly like the API.

Routes stay thin: web/service.py gathers what a page shows through the API's own services and
repositories, web/sessions.py signs people in and out, and templates render it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Header, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from starlette.responses import RedirectResponse, Response

from qualgent.apps import service as apps_service
from qualgent.auth.service import authenticate
from qualgent.deps import SessionDep, StateDep
from qualgent.errors import NotFound, Unauthorized, Unprocessable
from qualgent.events import service as events_service
from qualgent.events.schemas import EventFilter
from qualgent.ids import has_shape
from qualgent.organisations import service as organisations
from qualgent.organisations.schemas import OrganizationSettingsPatch
from qualgent.runs import artifacts, reports
from qualgent.runs import service as runs_service
from qualgent.runs.repository import RunRepository
from qualgent.runs.schemas import MAX_TEST_RETRIES
from qualgent.secrets import service as secrets_service
from qualgent.secrets.schemas import MAX_SECRETS
from qualgent.web import service
from qualgent.web.deps import FormUserDep, WebUserDep
from qualgent.web.errors import safe_next
from qualgent.web.sessions import (
    SIGN_IN_CSRF_COOKIE,
    check_csrf,
    clear_session_cookie,
    current_user,
    set_session_cookie,
    set_sign_in_csrf_cookie,
    sign_in_csrf,
)
from qualgent.web.sessions import sign_in as open_session
from qualgent.web.sessions import sign_out as close_session
from qualgent.web.templating import SECURITY_HEADERS, TERMINAL, highlight_flow, render

router = APIRouter(include_in_schema=False)

Id = Annotated[str, Query(max_length=64)]
OptionalFilter = Annotated[str | None, Query(max_length=200)]


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


# ------------------------------------------------------------------------------------------ sign-in


@router.get("/", response_class=HTMLResponse)
async def home() -> Response:
    return _see_other("/test-runs")


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(
    request: Request, session: SessionDep, state: StateDep, next: Annotated[str | None, Query(max_length=2000)] = None
) -> Response:
    if await current_user(request, session, state) is not None:
        return _see_other(safe_next(next))
    return _sign_in_form(request, state, next, None, 200)


def _sign_in_form(request: Request, state: StateDep, next: str | None, error: str | None, status: int) -> Response:
    token = sign_in_csrf(request)
    response = render(
        request,
        "sign_in.html",
        {"user": None, "csrf_token": token, "next": safe_next(next), "error": error},
        status_code=status,
    )
    set_sign_in_csrf_cookie(response, state, token)
    return response


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(
    request: Request,
    session: SessionDep,
    state: StateDep,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str | None, Form(max_length=200)] = None,
    next: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    check_csrf(request.cookies.get(SIGN_IN_CSRF_COOKIE, ""), csrf_token)
    try:
        cookie = await open_session(request, session, state, email, password)
    except Unauthorized as exc:
        return _sign_in_form(request, state, next, exc.message, 401)
    response = _see_other(safe_next(next))
    set_session_cookie(response, state, cookie)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: SessionDep, state: StateDep, user: FormUserDep) -> Response:
    await close_session(request, session, state)
    response = _see_other("/sign-in")
    clear_session_cookie(response, state)
    return response


# ---------------------------------------------------------------------------------------- test runs


@router.get("/test-runs", response_class=HTMLResponse)
async def runs_page(
    request: Request,
    session: SessionDep,
    state: StateDep,
    user: WebUserDep,
    status: OptionalFilter = None,
    app_id: OptionalFilter = None,
    device: OptionalFilter = None,
    test_case_id: OptionalFilter = None,
) -> Response:
    filters = service.RunFilters.parse(status, app_id, device, test_case_id)
    return render(
        request,
        "runs.html",
        {
            "user": user,
            "filters": filters,
            "query": filters.query(),
            "choices": await service.filter_choices(session, state, user.principal),
            "runs": await service.run_list(state, user.principal, filters),
        },
    )


@router.get("/test-runs/rows", response_class=HTMLResponse)
async def runs_rows(
    request: Request,
    state: StateDep,
    user: WebUserDep,
    status: OptionalFilter = None,
    app_id: OptionalFilter = None,
    device: OptionalFilter = None,
    test_case_id: OptionalFilter = None,
) -> Response:
    """The run list's rows alone, polled by the list page to stay current."""
    filters = service.RunFilters.parse(status, app_id, device, test_case_id)
    runs = await service.run_list(state, user.principal, filters)
    return render(request, "_run_rows.html", {"runs": runs})


@router.get("/test-runs/events")
async def run_events(
    state: StateDep,
    user: WebUserDep,
    ids: Annotated[str | None, Query(max_length=64 * 100, pattern=r"^[A-Za-z0-9_,]*$")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", pattern=r"^[0-9]{1,18}$")] = None,
    max_seconds: Annotated[float | None, Query(ge=0, le=86_400)] = None,
) -> Response:
    """The live pages' event stream (the API's GET /v1/jobs/events for a signed-in person): a change of
    one of the page's runs makes the page fetch its fragment at once rather than at its next poll."""
    run_ids = [i for i in ids.split(",") if has_shape(i, "run")] or ["-"] if ids is not None else None
    body = await events_service.open_stream(
        state.events,
        state.reader,
        user.principal.organization_id,
        EventFilter.of(run_ids, None, None),
        last_event_id=int(last_event_id) if last_event_id is not None else None,
        heartbeat=state.settings.events_heartbeat_seconds,
        max_seconds=max_seconds,
    )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


@router.get("/test-runs/{run_id}", response_class=HTMLResponse)
async def run_page(run_id: str, request: Request, session: SessionDep, state: StateDep) -> Response:
    """A run's page (every run's ``link``). Signed in, or with an API key, it shows the run; otherwise how
    to see it."""
    if not has_shape(run_id, "run"):
        raise NotFound(f"No test run {run_id}.")
    user = await current_user(request, session, state)
    if user is not None:
        view = await service.run_view(session, state, user.principal, run_id)
        return render(request, "run.html", {"user": user, "view": view, "run_id": run_id})
    if request.headers.get("x-api-key"):
        principal = await authenticate(request, state)
        row = await RunRepository(session, principal.organization_id, state.reader).view(run_id)
        if row is None:
            raise NotFound(f"No test run {run_id}.")
        return render(request, "run_summary.html", {"user": None, "run": runs_service.to_out(state, row)})
    base_url = state.settings.public_base_url.rstrip("/")
    return render(request, "run_anonymous.html", {"user": None, "run_id": run_id, "base_url": base_url})


@router.get("/test-runs/{run_id}/live", response_class=HTMLResponse)
async def run_live(run_id: str, request: Request, session: SessionDep, state: StateDep, user: WebUserDep) -> Response:
    """The changing part of a run's page, polled while the run moves; says when it will not change again."""
    view = await service.run_view(session, state, user.principal, run_id)
    response = render(request, "_run_live.html", {"user": user, "view": view, "run_id": run_id})
    response.headers["X-Live-Final"] = "1" if view.run.status in TERMINAL else "0"
    return response


@router.post("/test-runs/{run_id}/cancel")
async def cancel_run(run_id: str, session: SessionDep, user: FormUserDep) -> Response:
    await runs_service.cancel(session, user.principal, run_id)
    return _see_other(f"/test-runs/{run_id}")


@router.get("/test-runs/{run_id}/report.json")
async def run_report_json(run_id: str, session: SessionDep, state: StateDep, user: WebUserDep) -> Response:
    report = await service.run_report(session, state, user.principal, run_id)
    return Response(
        report.model_dump_json(indent=2),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{run_id}.json"', **SECURITY_HEADERS},
    )


@router.get("/test-runs/{run_id}/junit.xml")
async def run_junit(run_id: str, session: SessionDep, state: StateDep, user: WebUserDep) -> Response:
    report = await service.run_report(session, state, user.principal, run_id)
    return Response(
        reports.to_junit(report),
        media_type="application/xml",
        headers={"Content-Disposition": f'attachment; filename="{run_id}.junit.xml"', **SECURITY_HEADERS},
    )


@router.get("/test-runs/{run_id}/screenshots/{attempt}/{index}.png")
async def run_screenshot(
    run_id: str, attempt: int, index: int, session: SessionDep, state: StateDep, user: WebUserDep
) -> Response:
    key = await service.screenshot_key(session, state, user.principal, run_id, attempt, index)
    headers = {"Cache-Control": "private, max-age=300"}
    local = state.storage.path(key)
    if (
        local is None
    ):  # object storage: a screenshot is small, stream it through (the page's policy allows only this server)
        return StreamingResponse(state.storage.open(key), media_type="image/png", headers=headers)
    return FileResponse(local, media_type="image/png", headers=headers)


@router.get("/test-runs/{run_id}/artifacts/{attempt}/{name}")
async def run_artifact(
    run_id: str, attempt: int, name: str, request: Request, session: SessionDep, state: StateDep, user: WebUserDep
) -> Response:
    """A run's video (played on its page; Range requests let the player seek) or device log."""
    found = await service.artifact(session, state, user.principal, run_id, attempt, name)
    # Served from this server even on object storage: the page's policy lets media come from here only.
    return artifacts.serve(state, found, request.headers.get("range"), redirect=False)


# --------------------------------------------------------------------------------------------- apps


@router.get("/apps", response_class=HTMLResponse)
async def apps_page(request: Request, session: SessionDep, state: StateDep, user: WebUserDep) -> Response:
    apps = await service.app_list(session, state, user.principal)
    return render(
        request, "apps.html", {"user": user, "apps": apps, "max_upload_bytes": state.settings.max_upload_bytes}
    )


@router.post("/apps/upload")
async def upload_app(
    request: Request,
    session: SessionDep,
    state: StateDep,
    user: WebUserDep,
) -> Response:
    """Streams the build like POST /v1/apps/upload. The CSRF token comes in a header (the page's script,
    which shows progress) or, from the plain form, as its first field, checked before the file part
    begins (never in the URL, where logs and Referer headers would keep it)."""
    sent = request.headers.get("x-csrf-token")
    if sent:
        check_csrf(user.csrf_token, sent)

    def form_token(fields: dict[str, str]) -> None:
        if not sent:
            check_csrf(user.csrf_token, fields.get("csrf_token"))

    uploaded = await apps_service.receive_upload(request, session, state, user.principal, before_file=form_token)
    if sent:
        return JSONResponse(uploaded.model_dump(mode="json"))
    return _see_other("/apps")


@router.post("/apps/{app_id}/delete")
async def delete_app(app_id: str, session: SessionDep, user: FormUserDep) -> Response:
    await apps_service.delete_apps(session, user.principal, [app_id])
    return _see_other("/apps")


# ------------------------------------------------------------------------------------- test cases


@router.get("/test-cases", response_class=HTMLResponse)
async def test_cases_page(
    request: Request,
    session: SessionDep,
    state: StateDep,
    user: WebUserDep,
    category: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    catalogue = await service.test_case_list(session, state, user.principal, category)
    return render(request, "test_cases.html", {"user": user, "catalogue": catalogue})


@router.get("/test-cases/{test_case_id}", response_class=HTMLResponse)
async def test_case_page(
    test_case_id: str, request: Request, session: SessionDep, state: StateDep, user: WebUserDep
) -> Response:
    page = await service.test_case_page(session, state, user.principal, test_case_id)
    case = page.case
    context: dict[str, Any] = {
        "user": user,
        "case": case,
        "history": page.history,
        "chart": page.chart,
        "flow_html": highlight_flow(case.flow) if case.flow else None,
        "devices": state.devices.devices,
        "device_value": service.device_value,
        "apps": await service.app_list(session, state, user.principal),
    }
    return render(request, "test_case.html", context)


@router.post("/test-cases/{test_case_id}/run")
async def run_test_case(
    test_case_id: str,
    session: SessionDep,
    state: StateDep,
    user: FormUserDep,
    device: Annotated[str, Form(max_length=300)],
    app_file_id: Annotated[str, Form(max_length=64)] = "",
    priority: Annotated[str, Form(max_length=10)] = "medium",
    record_video: Annotated[str | None, Form(max_length=10)] = None,
) -> Response:
    queued = await service.queue_one(
        session, state, user.principal, test_case_id, device, app_file_id, priority, record_video=bool(record_video)
    )
    return _see_other(f"/test-runs/{queued.id}")


@router.post("/test-cases/{test_case_id}/quarantine")
async def quarantine_test_case(
    test_case_id: str,
    session: SessionDep,
    user: FormUserDep,
    quarantined: Annotated[str, Form(max_length=5)],
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """The test case page's quarantine switch, like PUT / DELETE /v1/test-cases/{id}/quarantine."""
    await service.set_quarantine(session, user.principal, test_case_id, quarantined == "1", reason)
    return _see_other(f"/test-cases/{test_case_id}")


# ----------------------------------------------------------------------------------------- batches


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
async def batch_page(
    batch_id: str, request: Request, session: SessionDep, state: StateDep, user: WebUserDep
) -> Response:
    batch = await service.batch_view(session, state, user.principal, batch_id)
    return render(request, "batch.html", {"user": user, "batch": batch})


# ----------------------------------------------------------------------------------------- devices


@router.get("/devices", response_class=HTMLResponse)
async def devices_page(request: Request, session: SessionDep, state: StateDep, user: WebUserDep) -> Response:
    groups = await service.devices_by_type(session, state)
    return render(request, "devices.html", {"user": user, "groups": groups})


# ------------------------------------------------------------------------------ settings: developer


async def _developer_page(
    request: Request, session: SessionDep, user: Any, new_key: Any = None, status: int = 200
) -> Response:
    keys = await organisations.list_keys(session, user.principal.organization_id)
    return render(
        request,
        "developer.html",
        {"user": user, "keys": sorted(keys, key=lambda k: k.id, reverse=True), "new_key": new_key},
        status_code=status,
    )


@router.get("/settings/developer", response_class=HTMLResponse)
async def developer_page(request: Request, session: SessionDep, user: WebUserDep) -> Response:
    return await _developer_page(request, session, user)


@router.post("/settings/developer/keys", response_class=HTMLResponse)
async def generate_key(
    request: Request,
    session: SessionDep,
    user: FormUserDep,
    name: Annotated[str, Form(max_length=200)] = "",
    write: Annotated[str | None, Form(max_length=10)] = None,
) -> Response:
    """A new key, shown in this response only (never in a URL, never stored)."""
    new_key = await organisations.create_key(
        session, user.principal.user_id, name=name.strip(), scopes="read write" if write else "read"
    )
    return await _developer_page(request, session, user, new_key)


@router.post("/settings/developer/keys/{key_id}/revoke")
async def revoke_key(key_id: str, session: SessionDep, user: FormUserDep) -> Response:
    await organisations.revoke_key_of_organization(session, user.principal.organization_id, key_id)
    return _see_other("/settings/developer")


# --------------------------------------------------------------------------- settings: organisation


async def _organization_page(
    request: Request, session: SessionDep, state: StateDep, user: Any, error: str | None = None, status: int = 200
) -> Response:
    settings = await organisations.settings_of(
        session, user.principal.organization_id, state.settings.default_parallel_runs
    )
    context = {"user": user, "settings": settings, "error": error, "max_retries": MAX_TEST_RETRIES}
    return render(request, "organization.html", context, status_code=status)


@router.get("/settings/organization", response_class=HTMLResponse)
async def organization_page(request: Request, session: SessionDep, state: StateDep, user: WebUserDep) -> Response:
    return await _organization_page(request, session, state, user)


@router.post("/settings/organization", response_class=HTMLResponse)
async def change_organization(
    request: Request,
    session: SessionDep,
    state: StateDep,
    user: FormUserDep,
    default_retries: Annotated[str, Form(max_length=5)],
    quarantine_exit_passes: Annotated[str, Form(max_length=5)],
    auto_quarantine: Annotated[str | None, Form(max_length=5)] = None,
) -> Response:
    """Like PATCH /v1/organization/settings."""
    try:
        patch = OrganizationSettingsPatch(
            default_retries=int(default_retries),
            quarantine_exit_passes=int(quarantine_exit_passes),
            auto_quarantine=bool(auto_quarantine),
        )
    except ValueError:  # pydantic's ValidationError too
        message = f"Test retries are 0 to {MAX_TEST_RETRIES}; passes to leave quarantine 0 to 100."
        return await _organization_page(request, session, state, user, message, 422)
    await organisations.change_settings(
        session, user.principal.organization_id, patch, state.settings.default_parallel_runs
    )
    return _see_other("/settings/organization")


# -------------------------------------------------------------------------------- settings: secrets


async def _secrets_page(
    request: Request, session: SessionDep, user: Any, error: str | None = None, name: str = "", status: int = 200
) -> Response:
    secrets = await secrets_service.list_secrets(session, user.principal.organization_id)
    context = {"user": user, "secrets": secrets, "error": error, "name": name, "max_secrets": MAX_SECRETS}
    return render(request, "secrets.html", context, status_code=status)


@router.get("/settings/secrets", response_class=HTMLResponse)
async def secrets_page(request: Request, session: SessionDep, user: WebUserDep) -> Response:
    return await _secrets_page(request, session, user)


@router.post("/settings/secrets", response_class=HTMLResponse)
async def set_secret(
    request: Request,
    session: SessionDep,
    state: StateDep,
    user: FormUserDep,
    name: Annotated[str, Form(max_length=200)],
    value: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    """Like PUT /v1/secrets/{name}; the value never comes back, not even on a refused form."""
    name = name.strip()
    try:
        await secrets_service.put(session, state.secrets_key, user.principal.organization_id, name, value)
    except Unprocessable as exc:
        return await _secrets_page(request, session, user, exc.message, name, 422)
    return _see_other("/settings/secrets")


@router.post("/settings/secrets/{name}/delete")
async def delete_secret(name: str, session: SessionDep, user: FormUserDep) -> Response:
    await secrets_service.delete(session, user.principal.organization_id, name)
    return _see_other("/settings/secrets")
