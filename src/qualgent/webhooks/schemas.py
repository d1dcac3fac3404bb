from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from qualgent.openapi import omittable

EventType = Literal["run.queued", "run.started", "run.finished", "batch.finished"]
EVENT_TYPES: tuple[EventType, ...] = ("run.queued", "run.started", "run.finished", "batch.finished")
Kind = Literal["webhook", "slack"]
DeliveryStatus = Literal["pending", "delivered", "failed"]

MAX_ENDPOINTS = 20
MAX_URL = 2000

Url = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_URL)]
Description = Annotated[str, StringConstraints(strict=True, max_length=200)]
Events = Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES))]


class WebhookIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"url": "https://ci.example.com/qualgent", "events": ["run.finished", "batch.finished"]}]
        },
    )

    url: Url = Field(description="Where deliveries are POSTed: http or https, a public address.")
    events: Events = Field(description="The event types to deliver.")
    kind: Kind = Field(
        default="webhook",
        description="`webhook`: signed JSON (Standard Webhooks). `slack`: a Slack incoming-webhook URL that "
        "gets a Block Kit message on `batch.finished`, and on `run.finished` when the run failed.",
    )
    description: Description = Field(default="", description="A note for people: what this endpoint is for.")


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"enabled": False}]})

    url: Url | SkipJsonSchema[None] = omittable("A new URL.")
    events: Events | SkipJsonSchema[None] = omittable("The event types to deliver, replacing the current ones.")
    description: Description | SkipJsonSchema[None] = omittable("A new description.")
    enabled: bool | SkipJsonSchema[None] = omittable(
        "Enable or disable. Enabling clears the reason the server disabled it; deliveries waiting resume."
    )


class WebhookOut(BaseModel):
    """An endpoint. Its signing secret is shown once, when it is created."""

    id: str
    kind: Kind
    url: str = Field(description="The URL; a Slack URL shows only its start (the rest is its secret).")
    events: list[EventType]
    description: str
    enabled: bool
    disabled_reason: str | None = Field(description="Why the server disabled it, when it did.")
    failing_since: datetime | None = Field(description="First failed delivery since the last success.")
    created_at: datetime
    updated_at: datetime


class WebhookCreatedOut(WebhookOut):
    secret: str | None = Field(
        description="The signing secret (`whsec_…`), shown only now: give it to the receiver's "
        "`standardwebhooks` verifier. None for Slack."
    )


class DeliveryOut(BaseModel):
    """One message to the endpoint and how its delivery went (the last attempt)."""

    id: str = Field(description="The message ID, sent as `webhook-id` (the same on every attempt).")
    event_type: EventType
    subject_id: str | None = Field(description="The run or batch the event is about.")
    status: DeliveryStatus
    attempts: int
    response_status: int | None = Field(description="The HTTP status of the last attempt's answer.")
    duration_ms: int | None = Field(description="How long the last attempt took.")
    error: str | None = Field(description="Why the last attempt failed, when it did.")
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = Field(description="When the next attempt is due (pending only).")


class DeliveryListOut(BaseModel):
    deliveries: list[DeliveryOut]


class DeletedWebhookOut(BaseModel):
    success: Literal[True] = True
    deleted: str
