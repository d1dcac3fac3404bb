"""The live event stream's messages and filters."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from qualgent.events.repository import Event
from qualgent.runs.schemas import RunStatus

EventType = Literal["run.queued", "run.started", "run.finished"]


class RunEventOut(BaseModel):
    """The ``data`` of one Server-Sent Event (its ``id`` and ``event`` fields are ``id`` and ``type``)."""

    id: int = Field(description="The event's ID: only grows; send it back as Last-Event-ID to resume.")
    type: EventType
    run_id: str
    batch_id: str | None
    status: RunStatus = Field(description="The run's status after the change.")
    attempt: int
    failure_kind: Literal["test", "timeout", "infrastructure"] | None
    at: datetime
    link: str = Field(description="The run's page.")


@dataclass(frozen=True)
class EventFilter:
    """What one stream wants of its organisation's events (None: any)."""

    run_ids: frozenset[str] | None = None
    batch_id: str | None = None
    statuses: frozenset[str] | None = None

    @classmethod
    def of(cls, run_ids: Collection[str] | None, batch_id: str | None, statuses: Collection[str] | None) -> EventFilter:
        return cls(
            frozenset(run_ids) if run_ids is not None else None,
            batch_id,
            frozenset(statuses) if statuses else None,
        )

    def __call__(self, event: Event) -> bool:
        return (
            (self.run_ids is None or event.run_id in self.run_ids)
            and (self.batch_id is None or event.batch_id == self.batch_id)
            and (self.statuses is None or event.status in self.statuses)
        )
