"""Routes for device agents: their own credentials (agent tokens), never users' API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from qualgent.agents import service
from qualgent.agents.schemas import (
    INT32_MAX,
    MAX_STEP_INDEX,
    Ack,
    ArtifactKind,
    ArtifactStored,
    ClaimIn,
    ClaimOut,
    FinishIn,
    FinishManyIn,
    FinishManyOut,
    FinishOut,
    FinishResult,
    HeartbeatIn,
    HeartbeatOut,
    RegisterIn,
    RegisterOut,
    StepsIn,
)
from qualgent.deps import SessionDep, StateDep, app_state
from qualgent.errors import BadRequest, PayloadTooLarge
from qualgent.lenient_json import LenientJSONRoute, authenticated_before, authenticates
from qualgent.openapi import errors

router = APIRouter(prefix="/v1/agent", tags=["Agents"], route_class=LenientJSONRoute)

MAX_SCREENSHOT_BYTES = 20 * 1024 * 1024
# A report for a run the agent no longer holds (finished, cancelled, requeued, another attempt).
MOVED_ON = errors((409, "The run moved on (`run_moved_on`): drop it."))


@authenticates
async def get_agent(request: Request) -> service.AgentPrincipal:
    agent: service.AgentPrincipal | None = authenticated_before(request)
    if agent is not None:
        return agent
    return await service.authenticate_agent(request, app_state(request))


AgentDep = Annotated[service.AgentPrincipal, Depends(get_agent)]


@router.post("/register", response_model=RegisterOut)
async def register(body: RegisterIn, session: SessionDep, state: StateDep, agent: AgentDep) -> RegisterOut:
    """Register (or re-register) the devices this agent serves."""
    return await service.register(session, state, agent, body)


@router.post("/claim", response_model=ClaimOut)
async def claim(body: ClaimIn, request: Request, state: StateDep, agent: AgentDep) -> ClaimOut:
    """Long-poll for runs the given free devices can take (up to `max_runs`, one per device); `run` is
    null and `runs` empty when none came."""
    runs = await service.claim(state, agent, body.device_ids, body.wait_seconds, request.is_disconnected, body.max_runs)
    return ClaimOut(run=runs[0] if runs else None, runs=runs)


@router.post("/runs/{run_id}/heartbeat", response_model=HeartbeatOut, responses=MOVED_ON)
async def heartbeat(
    run_id: str, body: HeartbeatIn, session: SessionDep, state: StateDep, agent: AgentDep
) -> HeartbeatOut:
    """Renew the lease on a running run; `cancel` tells the agent to stop it."""
    cancel, lease = await service.heartbeat(session, state, agent, run_id, body.attempt, body.progress)
    return HeartbeatOut(cancel=cancel, lease_expires_at=lease)


@router.post("/runs/{run_id}/steps", response_model=Ack, responses=MOVED_ON)
async def steps(run_id: str, body: StepsIn, session: SessionDep, state: StateDep, agent: AgentDep) -> Ack:
    """Report step results (repeating a report is harmless)."""
    await service.record_steps(session, state, agent, run_id, body.attempt, body.steps, body.step_count, body.progress)
    return Ack()


@router.get(
    "/runs/{run_id}/files/{file_path:path}",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."},
        **MOVED_ON,
    },
)
async def run_file(
    run_id: str,
    file_path: str,
    attempt: Annotated[int, Query(ge=0, le=INT32_MAX, description="The attempt the agent holds.")],
    session: SessionDep,
    agent: AgentDep,
) -> Response:
    """Download one of the test case's files for a run this agent is executing (listed in `files`)."""
    content, media_type = await service.run_file(session, agent, run_id, attempt, file_path)
    return Response(content, media_type=media_type, headers={"X-Content-Type-Options": "nosniff"})


@router.put(
    "/runs/{run_id}/steps/{attempt}/{index}/screenshot",
    response_model=Ack,
    responses=MOVED_ON,
    openapi_extra={
        "requestBody": {"required": True, "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
    },
)
async def screenshot(
    run_id: str,
    attempt: Annotated[int, Path(ge=0, le=INT32_MAX, description="The attempt the agent holds.")],
    index: Annotated[int, Path(ge=0, le=MAX_STEP_INDEX, description="The step's index.")],
    request: Request,
    session: SessionDep,
    state: StateDep,
    agent: AgentDep,
) -> Ack:
    """Upload a step's screenshot (PNG body)."""
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_SCREENSHOT_BYTES:
            raise PayloadTooLarge("A screenshot is at most 20 MiB.")
    if not body.startswith(b"\x89PNG\r\n\x1a\n"):
        raise BadRequest("A screenshot must be a PNG image.")
    await service.store_screenshot(session, state, agent, run_id, attempt, index, bytes(body))
    return Ack()


@router.put(
    "/runs/{run_id}/artifacts/{name}",
    response_model=ArtifactStored,
    responses={
        **MOVED_ON,
        **errors(
            (413, "Over the limit for its kind."),
            (422, "Not a safe file name, the wrong content type, or invalid values."),
        ),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "video/mp4": {"schema": {"type": "string", "format": "binary"}},
                "text/plain": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def artifact(
    run_id: str,
    name: str,
    request: Request,
    session: SessionDep,
    state: StateDep,
    agent: AgentDep,
    attempt: Annotated[int, Query(ge=1, le=INT32_MAX, description="The attempt the agent holds.")],
    kind: Annotated[ArtifactKind, Query(description="A screen recording or the device's log.")],
    step: Annotated[
        int | None, Query(ge=0, le=MAX_STEP_INDEX, description="The step that produced it (a flow's stopRecording).")
    ] = None,
) -> ArtifactStored:
    """Upload an attempt's video or device log (the raw bytes, streamed to storage); replaces one of the same name."""
    length = request.headers.get("content-length")
    return await service.store_artifact(
        session,
        state,
        agent,
        run_id,
        attempt,
        name,
        kind,
        step,
        request.headers.get("content-type"),
        int(length) if length and length.isdigit() else None,
        request.stream(),
    )


@router.post("/runs/{run_id}/finish", response_model=FinishOut, responses=MOVED_ON)
async def finish(
    run_id: str, body: FinishIn, request: Request, session: SessionDep, state: StateDep, agent: AgentDep
) -> FinishOut:
    """Report the end of the agent's attempt. A repeat is 200; a run that moved on is 409 (drop it).
    With `claim_next_for`, the device's next run comes back in the same answer."""
    failure = (body.failure.kind, body.failure.message, body.failure.step) if body.failure else None
    await service.finish(session, state, agent, run_id, body.attempt, body.status, failure, body.steps)
    if body.claim_next_for is None:
        return FinishOut()
    await session.commit()
    runs = await service.claim_next(state, agent, [body.claim_next_for], request.is_disconnected)
    return FinishOut(next_run=runs.get(body.claim_next_for))


@router.post("/finish", response_model=FinishManyOut)
async def finish_many(
    body: FinishManyIn, request: Request, session: SessionDep, state: StateDep, agent: AgentDep
) -> FinishManyOut:
    """Report the end of several attempts at once: each result is `done`, `repeat` or `moved_on`, with
    the next run of its `claim_next_for` device when one was queued."""
    outcomes = await service.finish_many(session, state, agent, body.reports)
    await session.commit()
    # A run that moved on frees no device of this agent's.
    wanted = [r.claim_next_for if o != "moved_on" else None for r, o in zip(body.reports, outcomes, strict=True)]
    runs = await service.claim_next(state, agent, wanted, request.is_disconnected)
    return FinishManyOut(
        results=[
            FinishResult(run_id=report.run_id, outcome=outcome, next_run=runs.pop(device, None) if device else None)
            for report, outcome, device in zip(body.reports, outcomes, wanted, strict=True)
        ]
    )
