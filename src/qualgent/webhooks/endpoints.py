from __future__ import annotations

from fastapi import APIRouter, Request, Response

from qualgent.db.session import on_commit
from qualgent.deps import PrincipalDep, SessionDep, StateDep
from qualgent.lenient_json import LenientJSONRoute
from qualgent.openapi import errors
from qualgent.pagination import PageDep, set_next_link
from qualgent.webhooks import service
from qualgent.webhooks.schemas import (
    DeletedWebhookOut,
    DeliveryListOut,
    DeliveryOut,
    WebhookCreatedOut,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
)

router = APIRouter(prefix="/v1/webhooks", tags=["Webhooks"], route_class=LenientJSONRoute)


@router.post("", response_model=WebhookCreatedOut, status_code=201)
async def create_webhook(
    body: WebhookIn, session: SessionDep, state: StateDep, principal: PrincipalDep
) -> WebhookCreatedOut:
    """Add an endpoint that receives your organization's run events; its signing secret is shown only now."""
    return await service.create(session, state, principal.organization_id, body)


@router.get("", response_model=list[WebhookOut])
async def list_webhooks(session: SessionDep, principal: PrincipalDep) -> list[WebhookOut]:
    """List your organization's webhook endpoints (never their secrets)."""
    return await service.list_endpoints(session, principal.organization_id)


@router.get("/{webhook_id}", response_model=WebhookOut)
async def get_webhook(webhook_id: str, session: SessionDep, principal: PrincipalDep) -> WebhookOut:
    """Get a webhook endpoint: its events, whether it is enabled, and why the server disabled it if it did."""
    return await service.get(session, principal.organization_id, webhook_id)


@router.patch("/{webhook_id}", response_model=WebhookOut)
async def update_webhook(
    webhook_id: str, body: WebhookPatch, session: SessionDep, state: StateDep, principal: PrincipalDep
) -> WebhookOut:
    """Change a webhook endpoint's URL, events or description, or enable or disable it."""
    out = await service.update(session, state, principal.organization_id, webhook_id, body)
    if body.enabled and state.webhooks is not None:
        on_commit(session, state.webhooks.wake)
    return out


@router.delete("/{webhook_id}", response_model=DeletedWebhookOut)
async def delete_webhook(webhook_id: str, session: SessionDep, principal: PrincipalDep) -> DeletedWebhookOut:
    """Delete a webhook endpoint and its delivery log; messages not yet delivered are dropped."""
    await service.delete(session, principal.organization_id, webhook_id)
    return DeletedWebhookOut(deleted=webhook_id)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryListOut)
async def list_deliveries(
    webhook_id: str,
    request: Request,
    response: Response,
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
    page: PageDep,
) -> DeliveryListOut:
    """The endpoint's delivery log, newest first: each message's status, attempts, and its last answer."""
    items, next_cursor = await service.deliveries(
        session, principal.organization_id, webhook_id, page.limit, page.cursor
    )
    set_next_link(request, response, next_cursor, state.settings.public_base_url)
    return DeliveryListOut(deliveries=items)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryOut,
    responses=errors((404, "Unknown endpoint or delivery, or another organisation's.")),
)
async def redeliver(
    webhook_id: str, delivery_id: str, session: SessionDep, state: StateDep, principal: PrincipalDep
) -> DeliveryOut:
    """Send a message again, now (same `webhook-id`), with a fresh day of retries."""
    out = await service.redeliver(session, state, principal.organization_id, webhook_id, delivery_id)
    if state.webhooks is not None:
        on_commit(session, state.webhooks.wake)
    return out
