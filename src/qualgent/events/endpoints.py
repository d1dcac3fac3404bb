"""GET /v1/jobs/events: the organisation's run changes as Server-Sent Events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from qualgent.deps import PrincipalDep, StateDep
from qualgent.events import service
from qualgent.events.schemas import EventFilter, RunEventOut
from qualgent.ids import has_shape
from qualgent.runs.schemas import RunStatus

router = APIRouter(prefix="/v1/jobs", tags=["Jobs"])

MAX_EVENT_ID = 2**63 - 1
_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A stream of Server-Sent Events, one per change of a run's status: `id` (the event's "
        "ID), `event` (`run.queued`, `run.started` or `run.finished`) and `data` (RunEventOut as JSON); "
        "comment lines (`: heartbeat`) keep it open while nothing happens.",
        # Each event of the stream (OpenAPI 3.2's way of describing one): its data is JSON.
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "required": ["id", "event", "data"],
                    "properties": {
                        "id": {"type": "string", "pattern": "^[0-9]+$"},
                        "event": {"type": "string", "enum": ["run.queued", "run.started", "run.finished"]},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": RunEventOut.model_json_schema(),
                        },
                    },
                }
            }
        },
    }
}


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses=_STREAM,
)
async def job_events(
    state: StateDep,
    principal: PrincipalDep,
    ids: Annotated[
        str | None,
        Query(
            max_length=64 * 1000,
            pattern=r"^[A-Za-z0-9_,]*$",
            description="Only these runs (comma-separated run IDs, up to 1000).",
        ),
    ] = None,
    batch_id: Annotated[str | None, Query(max_length=64, description="Only runs of this batch.")] = None,
    status: Annotated[
        list[RunStatus] | None, Query(description="Only changes into these statuses (repeatable).")
    ] = None,
    last_event_id: Annotated[
        int | None,
        Query(ge=0, le=MAX_EVENT_ID, description="Resume after this event (as the Last-Event-ID header does)."),
    ] = None,
    last_event_id_header: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=r"^[0-9]{1,18}$",
            description="Resume after this event: the events since are sent first (EventSource sends it on "
            "reconnecting).",
        ),
    ] = None,
    heartbeat: Annotated[
        float | None,
        Query(ge=1, le=300, description="Seconds between heartbeat comments while nothing happens."),
    ] = None,
    max_seconds: Annotated[
        float | None,
        Query(
            ge=0,
            le=86_400,
            description="End the stream after this many seconds; 0 sends what was missed since Last-Event-ID and ends.",
        ),
    ] = None,
) -> StreamingResponse:
    """Stream the organisation's run changes (Server-Sent Events), resumable with Last-Event-ID."""
    run_ids = [i for i in ids.split(",") if i] if ids is not None else None
    # An ID of the wrong shape matches nothing (as the list's filters).
    if run_ids is not None:
        run_ids = [i for i in run_ids if has_shape(i, "run")] or ["-"]
    if batch_id is not None and not has_shape(batch_id, "batch"):
        batch_id = "-"
    resume = int(last_event_id_header) if last_event_id_header is not None else last_event_id
    body = await service.open_stream(
        state.events,
        state.reader,
        principal.organization_id,
        EventFilter.of(run_ids, batch_id, status),
        last_event_id=resume,
        heartbeat=heartbeat or state.settings.events_heartbeat_seconds,
        max_seconds=max_seconds,
    )
    # No caching, no buffering by proxies (nginx reads X-Accel-Buffering).
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)
