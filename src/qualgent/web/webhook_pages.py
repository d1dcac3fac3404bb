"""The dashboard's Settings → Webhooks: endpoints (the secret shown once, at creation), enabling and
disabling, deleting, and each endpoint's delivery log with redelivery. The same services as the API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from qualgent.db.session import on_commit
from qualgent.deps import SessionDep, StateDep
from qualgent.errors import Unprocessable
from qualgent.state import AppState
from qualgent.web.deps import FormUserDep, WebUserDep
from qualgent.web.templating import render
from qualgent.webhooks import service
from qualgent.webhooks.schemas import EVENT_TYPES, MAX_ENDPOINTS, WebhookIn, WebhookPatch

router = APIRouter(include_in_schema=False)

DELIVERIES_SHOWN = 50


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _wake(session: Any, state: AppState) -> None:
    if state.webhooks is not None:
        on_commit(session, state.webhooks.wake)


async def _list_page(
    request: Request,
    session: SessionDep,
    user: Any,
    *,
    created: Any = None,
    error: str | None = None,
    form: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    endpoints = await service.list_endpoints(session, user.principal.organization_id)
    context = {
        "user": user,
        "endpoints": endpoints,
        "created": created,
        "error": error,
        "form": form or {"events": list(EVENT_TYPES)},
        "event_types": EVENT_TYPES,
        "max_endpoints": MAX_ENDPOINTS,
    }
    return render(request, "webhooks.html", context, status_code=status)


@router.get("/settings/webhooks", response_class=HTMLResponse)
async def webhooks_page(request: Request, session: SessionDep, user: WebUserDep) -> Response:
    return await _list_page(request, session, user)


@router.post("/settings/webhooks", response_class=HTMLResponse)
async def create_webhook(
    request: Request,
    session: SessionDep,
    state: StateDep,
    user: FormUserDep,
    url: Annotated[str, Form(max_length=2000)] = "",
    events: Annotated[list[str] | None, Form()] = None,
    kind: Annotated[str, Form(max_length=10)] = "webhook",
    description: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Like POST /v1/webhooks; the secret is in this response only."""
    form = {"url": url.strip(), "events": events or [], "kind": kind, "description": description.strip()}
    try:
        body = WebhookIn.model_validate(form)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(p) for p in problem["loc"][:1]) or "form"
        message = f"{field}: {problem['msg']}" if field != "events" else "Choose at least one known event."
        return await _list_page(request, session, user, error=message, form=form, status=422)
    try:
        created = await service.create(session, state, user.principal.organization_id, body)
    except Unprocessable as exc:
        return await _list_page(request, session, user, error=exc.message, form=form, status=422)
    return await _list_page(request, session, user, created=created)


@router.get("/settings/webhooks/{webhook_id}", response_class=HTMLResponse)
async def webhook_page(webhook_id: str, request: Request, session: SessionDep, user: WebUserDep) -> Response:
    organization_id = user.principal.organization_id
    endpoint = await service.get(session, organization_id, webhook_id)
    deliveries, _ = await service.deliveries(session, organization_id, webhook_id, DELIVERIES_SHOWN, None)
    context = {"user": user, "endpoint": endpoint, "deliveries": deliveries}
    return render(request, "webhook.html", context)


@router.post("/settings/webhooks/{webhook_id}/enabled")
async def set_enabled(
    webhook_id: str,
    session: SessionDep,
    state: StateDep,
    user: FormUserDep,
    enabled: Annotated[bool, Form()] = False,
) -> Response:
    patch = WebhookPatch(enabled=enabled)
    await service.update(session, state, user.principal.organization_id, webhook_id, patch)
    if enabled:
        _wake(session, state)
    return _see_other(f"/settings/webhooks/{webhook_id}")


@router.post("/settings/webhooks/{webhook_id}/delete")
async def delete_webhook(webhook_id: str, session: SessionDep, user: FormUserDep) -> Response:
    await service.delete(session, user.principal.organization_id, webhook_id)
    return _see_other("/settings/webhooks")


@router.post("/settings/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver")
async def redeliver(
    webhook_id: str, delivery_id: str, session: SessionDep, state: StateDep, user: FormUserDep
) -> Response:
    await service.redeliver(session, state, user.principal.organization_id, webhook_id, delivery_id)
    _wake(session, state)
    return _see_other(f"/settings/webhooks/{webhook_id}")
