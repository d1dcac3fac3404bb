"""Webhook endpoints of an organisation: create (the secret shown once), list, change, delete; their
delivery logs and redelivery. Delivery itself is the worker's (webhooks/worker.py)."""

from __future__ import annotations

import base64
import ipaddress
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.db.base import utcnow
from qualgent.db.models import WebhookEndpoint
from qualgent.errors import NotFound, Unprocessable
from qualgent.ids import new_id
from qualgent.secrets import crypto
from qualgent.state import AppState
from qualgent.webhooks.repository import DeliveryRepository, EndpointRepository
from qualgent.webhooks.schemas import (
    EVENT_TYPES,
    MAX_ENDPOINTS,
    DeliveryOut,
    WebhookCreatedOut,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
)


def sealed_name(endpoint_id: str) -> str:
    """What the sealed secret of an endpoint is bound to (secrets/crypto.py's associated data)."""
    return f"webhook:{endpoint_id}"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def address_allowed(address: str) -> bool:
    """A public unicast address: not loopback, private, link-local (cloud metadata), shared, reserved,
    multicast or unspecified. An IPv4 address written as IPv6 is judged as IPv4."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, allow_private: bool) -> None:
    """The URL's shape, and a host that is plainly not public (checked again on the resolved address at
    every delivery: a name can resolve anywhere later)."""
    problem = None
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        parts, host, problem = None, None, "is not a valid URL"
    if problem is None and (parts is None or parts.scheme not in ("http", "https")):
        problem = "must be an http or https URL"
    elif problem is None and not host:
        problem = "has no host"
    elif problem is None and parts is not None and (parts.username or parts.password):
        problem = "must not carry a user name or password"
    elif problem is None and any(c in url for c in "\x00\r\n \t"):
        problem = "must not contain spaces or control characters"
    elif problem is None and not allow_private and host is not None:
        if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
            problem = "names a local host; webhooks go to public addresses only"
        else:
            try:
                if not address_allowed(host):
                    problem = "is not a public address; webhooks go to public addresses only"
            except ValueError:
                pass  # a name: checked when it is resolved, at delivery
    if problem is not None:
        raise Unprocessable(f"The webhook URL {problem}.", details=[{"field": "url", "issue": problem}])


def shown_url(kind: str, url: str) -> str:
    """A Slack incoming-webhook URL is its own secret: only its start is kept in the clear."""
    if kind != "slack":
        return url
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path[:10]}…"


def to_out(endpoint: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(
        id=endpoint.id,
        kind="slack" if endpoint.kind == "slack" else "webhook",
        url=endpoint.url,
        events=[e for e in EVENT_TYPES if e in endpoint.events.split()],
        description=endpoint.description,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        failing_since=endpoint.failing_since,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


async def create(session: AsyncSession, state: AppState, organization_id: str, body: WebhookIn) -> WebhookCreatedOut:
    check_url(body.url, state.settings.webhooks_allow_private)
    repo = EndpointRepository(session, organization_id)
    if await repo.count() >= MAX_ENDPOINTS:
        raise Unprocessable(
            f"An organisation has at most {MAX_ENDPOINTS} webhook endpoints; delete one first.",
            code="too_many_webhooks",
        )
    endpoint_id = new_id("whk")
    secret = new_secret() if body.kind == "webhook" else None
    sealed = secret if secret is not None else body.url
    now = utcnow()
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        organization_id=organization_id,
        kind=body.kind,
        url=shown_url(body.kind, body.url),
        description=body.description,
        events=" ".join(sorted(set(body.events))),
        secret_ciphertext=crypto.encrypt(state.secrets_key, organization_id, sealed_name(endpoint_id), sealed),
        enabled=True,
        created_at=now,
        updated_at=now,
    )
    await repo.add(endpoint)
    return WebhookCreatedOut(**to_out(endpoint).model_dump(), secret=secret)


async def _endpoint(session: AsyncSession, organization_id: str, endpoint_id: str) -> WebhookEndpoint:
    endpoint = await EndpointRepository(session, organization_id).get(endpoint_id)
    if endpoint is None:
        raise NotFound(f"No webhook endpoint {endpoint_id}.")
    return endpoint


async def list_endpoints(session: AsyncSession, organization_id: str) -> list[WebhookOut]:
    return [to_out(e) for e in await EndpointRepository(session, organization_id).list()]


async def get(session: AsyncSession, organization_id: str, endpoint_id: str) -> WebhookOut:
    return to_out(await _endpoint(session, organization_id, endpoint_id))


def _refuse_null(body: WebhookPatch) -> None:
    nulls = [name for name in body.model_fields_set if getattr(body, name) is None]
    if nulls:
        raise Unprocessable(
            f"{', '.join(nulls)} cannot be null; leave a field out to keep it.",
            details=[{"field": name, "issue": "null"} for name in nulls],
        )


async def update(
    session: AsyncSession, state: AppState, organization_id: str, endpoint_id: str, body: WebhookPatch
) -> WebhookOut:
    _refuse_null(body)
    endpoint = await _endpoint(session, organization_id, endpoint_id)
    if body.url is not None:
        check_url(body.url, state.settings.webhooks_allow_private)
        endpoint.url = shown_url(endpoint.kind, body.url)
        if endpoint.kind == "slack":
            name = sealed_name(endpoint.id)
            endpoint.secret_ciphertext = crypto.encrypt(state.secrets_key, organization_id, name, body.url)
    if body.events is not None:
        endpoint.events = " ".join(sorted(set(body.events)))
    if body.description is not None:
        endpoint.description = body.description
    if body.enabled is not None:
        if body.enabled and not endpoint.enabled:
            endpoint.disabled_reason = None
            endpoint.failing_since = None
        endpoint.enabled = body.enabled
    endpoint.updated_at = utcnow()
    await session.flush()
    return to_out(endpoint)


async def delete(session: AsyncSession, organization_id: str, endpoint_id: str) -> None:
    endpoint = await _endpoint(session, organization_id, endpoint_id)
    await EndpointRepository(session, organization_id).remove(endpoint)


def delivery_out(row: object) -> DeliveryOut:
    return DeliveryOut.model_validate(row, from_attributes=True)


async def deliveries(
    session: AsyncSession, organization_id: str, endpoint_id: str, limit: int, cursor: str | None
) -> tuple[list[DeliveryOut], str | None]:
    """A page of the endpoint's deliveries, newest first, and the cursor of the next page."""
    await _endpoint(session, organization_id, endpoint_id)
    rows = await DeliveryRepository(session, organization_id).page(endpoint_id, limit + 1, cursor)
    items = rows[:limit]
    return [delivery_out(r) for r in items], items[-1].id if len(rows) > limit else None


async def redeliver(
    session: AsyncSession, state: AppState, organization_id: str, endpoint_id: str, delivery_id: str
) -> DeliveryOut:
    """Send a message again (same ``webhook-id``, so a receiver that keeps IDs sees it is the same), now,
    with a fresh retry window; a delivery still pending is just made due now."""
    await _endpoint(session, organization_id, endpoint_id)
    delivery = await DeliveryRepository(session, organization_id).of_endpoint(endpoint_id, delivery_id)
    if delivery is None:
        raise NotFound(f"No delivery {delivery_id} of webhook endpoint {endpoint_id}.")
    now = utcnow()
    delivery.status = "pending"
    delivery.next_attempt_at = now
    delivery.retry_until = now + timedelta(seconds=state.settings.webhook_retry_window)
    delivery.updated_at = now
    await session.flush()
    return delivery_out(delivery)
