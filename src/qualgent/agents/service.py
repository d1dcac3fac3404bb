"""The server's side of the agent protocol: registration, claims (long-polled), reports."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import ClientDisconnect

from qualgent.agents.repository import AgentRepository
from qualgent.agents.schemas import (
    AppPayload,
    ArtifactKind,
    ArtifactStored,
    FileRef,
    FinishReport,
    RegisteredDevice,
    RegisterIn,
    RegisterOut,
    RunPayload,
    StepItem,
)
from qualgent.apps.service import app_link
from qualgent.auth.keys import (
    AGENT_TOKEN_PREFIX,
    display_prefix,
    generate_agent_token,
    hash_key,
    looks_like_agent_token,
)
from qualgent.auth.service import refuse_failed
from qualgent.db.base import utcnow
from qualgent.db.models import Agent, Device, RunStep, TestRun
from qualgent.db.session import on_commit, transaction
from qualgent.devices.catalogue import PLATFORMS
from qualgent.devices.repository import TargetRepository
from qualgent.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unprocessable,
)
from qualgent.flows.paths import normalize_path
from qualgent.ids import new_id
from qualgent.metrics.instruments import CLAIM_SECONDS, QUEUE_WAIT_SECONDS
from qualgent.quality import service as quality
from qualgent.runs import transitions
from qualgent.secrets import crypto
from qualgent.state import AppState
from qualgent.test_cases.service import content_type

log = logging.getLogger("qualgent.agents")

# How often a waiting claim re-checks the queue when no wake-up arrives (runs queued by other processes).
POLL_INTERVAL = 0.5


@dataclass(frozen=True)
class AgentPrincipal:
    agent_id: str
    name: str
    # The organisation whose runs the agent claims; None for a shared agent (every organisation's).
    organization_id: str | None = None


async def authenticate_agent(request: Request, state: AppState) -> AgentPrincipal:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    agent = await _resolve_agent(state, hash_key(token)) if looks_like_agent_token(token) else None
    if agent is None:
        await refuse_failed(
            request,
            state,
            Unauthorized(
                f"Agent routes need 'Authorization: Bearer {AGENT_TOKEN_PREFIX}…' with a token from "
                "`qualgent admin create-agent`.",
                code="invalid_agent_token",
            ),
        )
    return agent


# token hash → (principal, expiry): like API keys, valid agent tokens are cached for
# ``auth_cache_seconds`` per process, which takes a query off every claim and report.
_agents: dict[str, tuple[AgentPrincipal, float]] = {}
_AGENT_CACHE_SIZE = 10_000


async def _resolve_agent(state: AppState, token_hash: str) -> AgentPrincipal | None:
    now = time.monotonic()
    cached = _agents.get(token_hash)
    if cached is not None and cached[1] > now:
        return cached[0]
    async with state.read_sessions() as session:
        agent = await AgentRepository(session).by_token_hash(token_hash)
    if agent is None:
        _agents.pop(token_hash, None)
        return None
    principal = AgentPrincipal(agent.id, agent.name, agent.organization_id)
    if state.settings.auth_cache_seconds > 0:
        if len(_agents) >= _AGENT_CACHE_SIZE:
            _agents.clear()
        _agents[token_hash] = (principal, now + state.settings.auth_cache_seconds)
    return principal


async def create_agent(
    session: AsyncSession, name: str, *, organization_id: str | None, embedded: bool = False
) -> tuple[Agent, str]:
    """A new agent and its token (shown once): one organisation's (it claims only that organisation's
    runs), or shared with ``organization_id=None`` (every organisation's: the operator's choice, and
    the embedded agent's). The embedded agent's token is replaced at every start."""
    repo = AgentRepository(session)
    token = generate_agent_token()
    if embedded and (existing := await repo.embedded()) is not None:
        existing.token_hash = hash_key(token)
        existing.token_prefix = display_prefix(token)
        existing.revoked_at = None
        await session.flush()
        return existing, token
    agent = Agent(
        id=new_id("agent"),
        name=name,
        token_prefix=display_prefix(token),
        token_hash=hash_key(token),
        embedded=embedded,
        organization_id=organization_id,
    )
    return await repo.add(agent), token


async def register(session: AsyncSession, state: AppState, agent: AgentPrincipal, body: RegisterIn) -> RegisterOut:
    repo = AgentRepository(session)
    known = {d.config_id: d for d in await repo.devices_of(agent.agent_id)}
    out = []
    changed: list[Device] = []
    for entry in body.devices:
        fields = {
            "name": entry.name,
            "platform": PLATFORMS[entry.platform.lower()],
            "os_version": entry.os_version,
            "device_type": entry.device_type,
            "driver": entry.driver,
            "online": True,
            "tags": sorted(set(entry.tags)),
        }
        device = known.get(entry.id)
        if device is None:
            device = Device(
                id=new_id("dev"),
                agent_id=agent.agent_id,
                organization_id=agent.organization_id,
                config_id=entry.id,
                **fields,
            )
            await repo.add_device(device)
            changed.append(device)
        else:
            if _matching_facts(device) != _matching_facts(fields):
                changed.append(device)
            for name, value in fields.items():
                setattr(device, name, value)
        out.append(RegisteredDevice(id=device.id, config_id=entry.id))
    await session.flush()
    # Which targets each new or changed device fits (devices/selectors.py); the claim reads only that.
    await TargetRepository(session).rematch(changed)
    await repo.seen(agent.agent_id)
    on_commit(session, state.wakeup.wake_all)
    return RegisterOut(
        agent_id=agent.agent_id,
        devices=out,
        lease_seconds=state.settings.lease_seconds,
        heartbeat_seconds=state.settings.heartbeat_seconds,
    )


def _matching_facts(device: Device | dict[str, Any]) -> tuple[Any, ...]:
    """What target matching reads of a device: a device whose facts did not change keeps its matches."""
    get = device.get if isinstance(device, dict) else lambda name: getattr(device, name)
    return (get("name"), get("platform"), get("os_version"), get("device_type"), tuple(get("tags") or ()))


def _offered(rows: list[Any]) -> list[transitions.DeviceSpec]:
    """Free-device rows (one per device and target it fits) as the devices a claim offers."""
    targets: dict[str, list[str]] = {}
    first: dict[str, Any] = {}
    for row in rows:
        targets.setdefault(row.id, []).append(row.target_id)
        first.setdefault(row.id, row)
    return [
        transitions.DeviceSpec(d.id, d.name, d.platform, d.os_version, tuple(targets[d.id])) for d in first.values()
    ]


async def claim(
    state: AppState,
    agent: AgentPrincipal,
    device_ids: list[str],
    wait_seconds: float,
    disconnected: Callable[[], Awaitable[bool]],
    max_runs: int = 1,
) -> list[RunPayload]:
    """Long-poll for runs for the agent's free devices (at most one per device, ``max_runs`` in all).

    Stops as soon as the agent hangs up: a run claimed for an agent that is gone would sit `running`
    until its lease expired; and, with an empty answer, as soon as the server process is stopping.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        if state.wakeup.stopping or await disconnected():
            return []
        payloads = await _claim_once(state, agent, device_ids, disconnected, max_runs)
        if payloads:
            return payloads
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return []
        # A wake-up this claim could not use is not passed on to the next waiter: for a run that no
        # waiting device can take (another device model, an organisation at its cap) it went round
        # the waiters without end, one claim attempt per hop. Waiters not woken re-check every
        # POLL_INTERVAL anyway.
        await state.wakeup.wait(min(remaining, POLL_INTERVAL))


class _HungUp(Exception):
    """The agent went away while its claim was being made: roll the claim back."""


# last_seen_at is written at most this often per agent and process.
_SEEN_EVERY = 5.0
_seen: dict[str, float] = {}


def _seen_due(agent_id: str) -> bool:
    """Whether to record now that the agent (and its devices) is alive; at most every _SEEN_EVERY
    seconds per agent and process: the write touches every device of the agent."""
    now = time.monotonic()
    if now - _seen.get(agent_id, 0.0) <= _SEEN_EVERY:
        return False
    _seen[agent_id] = now
    return True


async def _claim_once(
    state: AppState,
    agent: AgentPrincipal,
    device_ids: list[str],
    disconnected: Callable[[], Awaitable[bool]],
    max_runs: int,
) -> list[RunPayload]:
    settings = state.settings
    if _seen_due(agent.agent_id):
        async with transaction(state.write_sessions) as session:
            await AgentRepository(session).seen(agent.agent_id)
    # Read-only first: most polls find nothing, and a claim attempt is a write transaction.
    free = await AgentRepository.free_devices_fast(state.reader, agent.agent_id, device_ids)
    specs = _offered(free)
    if not specs:
        return []
    # An organisation's agent looks at its organisation's runs only: the statement of a claim that
    # continues one organisation's, no other.
    found = transitions.candidate(specs, settings.default_parallel_runs, agent.organization_id)
    if await state.reader.one(*found) is None:
        return []
    try:
        # One claim at a time per process: claims of one organisation serialise on its row anyway
        # (that is what keeps the cap exact), and queuing here costs nothing while contending in the
        # database costs lock waits for every claimer.
        async with state.claim_lock, transaction(state.write_sessions) as session:
            started = time.monotonic()
            repo = AgentRepository(session)
            free_now = await repo.free_devices(agent.agent_id, device_ids)
            claimed = await transitions.claim(
                session,
                agent_id=agent.agent_id,
                devices=_offered(free_now),
                default_cap=settings.default_parallel_runs,
                lease_seconds=settings.lease_seconds,
                max_runs=max_runs,
                organization_id=agent.organization_id,
            )
            if not claimed:
                return []
            # A claim can wait for the write lock; if the agent hung up meanwhile, nobody would run it.
            if await disconnected():
                raise _HungUp
            payloads = await _payloads(session, state, claimed)
        CLAIM_SECONDS.observe(time.monotonic() - started)
        return payloads
    except (transitions.DeviceBusy, _HungUp):
        return []


async def _payloads(session: AsyncSession, state: AppState, claimed: list[transitions.Claimed]) -> list[RunPayload]:
    """What the agent needs to run each claimed run: one query, and one more each for files and secrets
    when a run has any."""
    repo = AgentRepository(session)
    rows = await repo.run_details([c.run_id for c in claimed])
    files: dict[str, list[FileRef]] = {}
    with_files = list(dict.fromkeys(row.test_case_id for row in rows.values() if row.has_files))
    if with_files:
        for f in await repo.files_of(with_files):
            files.setdefault(f.test_case_id, []).append(FileRef(path=f.path, sha256=f.sha256, size=f.size))
    secrets: dict[str, dict[str, str]] = {}
    with_secrets = list(dict.fromkeys(row.organization_id for row in rows.values() if row.has_secrets))
    if with_secrets:
        secrets = _decrypted(state, await repo.secrets_of(with_secrets))
    out = []
    now = utcnow()
    for c in claimed:
        run = app = rows[c.run_id]
        if run.queued_at is not None:
            QUEUE_WAIT_SECONDS.labels(app.os).observe(max(0.0, (now - run.queued_at).total_seconds()))
        out.append(
            RunPayload(
                id=run.run_id,
                attempt=c.attempt,
                device_id=c.device_id,
                flow=run.flow,
                test_case_name=run.test_case_name,
                timeout_seconds=float(run.timeout_seconds or state.settings.execution_timeout),
                lease_expires_at=c.lease_expires_at.isoformat(),
                app=AppPayload(
                    id=app.id,
                    sha256=app.sha256,
                    os=app.os,
                    file_size=app.file_size,
                    download_url=app_link(state, app),
                    metadata=app.package_metadata,
                ),
                env=run.env or {},
                secrets=secrets.get(run.organization_id, {}),
                files=files.get(run.test_case_id, []),
                record_video=bool(run.record_video),
            )
        )
    return out


def _decrypted(state: AppState, rows: list[Any]) -> dict[str, dict[str, str]]:
    """Organisation → name → value. A secret that does not decrypt (the server's secret key changed) is
    left out and logged by name; the run goes on without it rather than never starting."""
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        try:
            value = crypto.decrypt(state.secrets_key, row.organization_id, row.name, row.ciphertext)
        except crypto.SecretUnreadable as exc:
            log.warning("organisation %s: %s; set it again", row.organization_id, exc)
            continue
        out.setdefault(row.organization_id, {})[row.name] = value
    return out


async def run_file(
    session: AsyncSession, agent: AgentPrincipal, run_id: str, attempt: int, path: str
) -> tuple[bytes, str]:
    """A file of the test case of a run the agent holds (that attempt, running): bytes and content type."""
    await _own_running(session, agent, run_id, attempt)
    missing = NotFound(f"No file {path!r} in the test case of run {run_id}.")
    try:
        normalized = normalize_path(path)
    except ValueError:
        raise missing from None
    content = await AgentRepository(session).run_file(run_id, normalized)
    if content is None:
        raise missing
    return content, content_type(normalized)


def _moved_on(run_id: str) -> Conflict:
    return Conflict(
        f"Run {run_id} has moved on (finished, cancelled, requeued or taken by another attempt); drop it.",
        code="run_moved_on",
    )


async def heartbeat(
    session: AsyncSession, state: AppState, agent: AgentPrincipal, run_id: str, attempt: int, progress: int | None
) -> tuple[bool, str]:
    result = await transitions.heartbeat(
        session, run_id, attempt, agent.agent_id, state.settings.lease_seconds, progress
    )
    if result is None:
        raise _moved_on(run_id)
    if _seen_due(agent.agent_id):
        await AgentRepository(session).seen(agent.agent_id)
    cancel, lease = result
    return cancel, lease.isoformat()


async def record_steps(
    session: AsyncSession,
    state: AppState,
    agent: AgentPrincipal,
    run_id: str,
    attempt: int,
    steps: list[StepItem],
    step_count: int | None = None,
    progress: int | None = None,
) -> None:
    """Record step results (a repeated step is ignored) and move progress along: the agent's own
    ``progress`` when it sends one (it knows the nesting), else the share of the flow's steps done."""
    if not steps:
        return
    run = await _own_running(session, agent, run_id, attempt)
    if step_count and run.step_count != step_count:
        run.step_count = step_count
    await AgentRepository(session).add_steps([(run_id, attempt, [step.model_dump() for step in steps])])
    if progress is None and run.step_count:
        progress = (max(x.index for x in steps) + 1) * 100 // run.step_count
    if progress is not None:
        progress = min(99, progress)
        await transitions.heartbeat(session, run_id, attempt, agent.agent_id, state.settings.lease_seconds, progress)


async def store_screenshot(
    session: AsyncSession, state: AppState, agent: AgentPrincipal, run_id: str, attempt: int, index: int, png: bytes
) -> None:
    run = await _own_running(session, agent, run_id, attempt)
    step = await session.get(RunStep, (run_id, attempt, index))
    if step is None:
        raise NotFound(f"Report step {index} of attempt {attempt} before its screenshot.")
    upload = state.storage.begin(f"{run.organization_id}/screenshots/{run_id}/{attempt}-{index}.png")
    try:
        await upload.write(png)
        stored = await upload.commit()
    finally:
        await upload.abort()
    step.screenshot_key = stored.key
    await session.flush()


# An artifact's name is a safe file name: it becomes part of a storage key and of download URLs.
ARTIFACT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
# What a stored artifact may say it is: it is served back with this type, so never as a page or script.
_CONTENT_TYPES = {
    "video": re.compile(r"video/[a-z0-9][a-z0-9.+-]{0,60}"),
    "log": re.compile(r"text/plain(; ?charset=[a-z0-9_-]{1,40})?"),
}
DEFAULT_CONTENT_TYPES = {"video": "video/mp4", "log": "text/plain; charset=utf-8"}


def artifact_key(organization_id: str, run_id: str, attempt: int, name: str) -> str:
    return f"{organization_id}/artifacts/{run_id}/{attempt}-{name}"


def artifact_limit(state: AppState, kind: str) -> int:
    settings = state.settings
    return settings.max_video_bytes if kind == "video" else settings.max_device_log_bytes


async def store_artifact(
    session: AsyncSession,
    state: AppState,
    agent: AgentPrincipal,
    run_id: str,
    attempt: int,
    name: str,
    kind: ArtifactKind,
    step: int | None,
    content_type: str | None,
    content_length: int | None,
    chunks: AsyncIterator[bytes],
) -> ArtifactStored:
    """Stream an attempt's video or device log to storage (never whole in memory) and record it,
    replacing an artifact of the same name.

    Who holds the run is checked before the body is read and again before the object is committed,
    each time outside the request's transaction: a write transaction held open while hundreds of
    megabytes arrive would hold up every other writer (on SQLite, all of them).
    """
    if not ARTIFACT_NAME.fullmatch(name) or ".." in name:
        raise Unprocessable(
            "An artifact's name is a file name of letters, digits, '.', '_' and '-' (at most 200), "
            "not starting with '.'.",
            code="invalid_artifact_name",
            details=[{"field": "name", "issue": "not a safe file name"}],
        )
    media_type = (content_type or DEFAULT_CONTENT_TYPES[kind]).strip().lower()
    if not _CONTENT_TYPES[kind].fullmatch(media_type):
        expected = "video/…" if kind == "video" else "text/plain"
        raise Unprocessable(
            f"A {kind} is sent as {expected}, not {content_type!r}.",
            code="invalid_content_type",
            details=[{"field": "Content-Type", "issue": f"expected {expected}"}],
        )
    limit = artifact_limit(state, kind)
    too_large = PayloadTooLarge(f"A {kind} is at most {limit} bytes.")
    if content_length is not None and content_length > limit:
        raise too_large
    organization_id = await _holder(state, agent, run_id, attempt)
    upload = state.storage.begin(artifact_key(organization_id, run_id, attempt, name))
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            if upload.size + len(chunk) > limit:
                raise too_large
            await upload.write(chunk)
        # The attempt may have moved on while the body arrived: then nothing is stored.
        await _holder(state, agent, run_id, attempt)
        stored = await upload.commit()
    except ClientDisconnect:
        # An agent killed (or cut off) mid-upload: nobody reads the answer; nothing is kept.
        raise BadRequest(f"The {kind} was cut off before it finished; nothing was stored.") from None
    finally:
        await upload.abort()
    try:
        await _own_running(session, agent, run_id, attempt)
    except Conflict:
        # Moved on in the moment since the last check: the object belongs to no attempt that runs.
        await state.storage.delete(stored.key)
        raise
    await AgentRepository(session).put_artifact(
        {
            "run_id": run_id,
            "attempt": attempt,
            "name": name,
            "kind": kind,
            "content_type": media_type,
            "size": stored.size,
            "storage_key": stored.key,
            "step_index": step,
            "created_at": utcnow(),
        }
    )
    return ArtifactStored(name=name, kind=kind, size=stored.size)


async def _holder(state: AppState, agent: AgentPrincipal, run_id: str, attempt: int) -> str:
    """The run's organisation when this agent holds this attempt of it, running; else 409."""
    async with state.read_sessions() as session:
        row = await AgentRepository(session).holder(run_id)
    if row is None or row.status != "running" or row.attempt != attempt or row.agent_id != agent.agent_id:
        raise _moved_on(run_id)
    organization_id: str = row.organization_id
    return organization_id


async def _own_running(session: AsyncSession, agent: AgentPrincipal, run_id: str, attempt: int) -> TestRun:
    run = await session.get(TestRun, run_id)
    if run is None or run.status != "running" or run.attempt != attempt or run.agent_id != agent.agent_id:
        raise _moved_on(run_id)
    return run


async def finish(
    session: AsyncSession,
    state: AppState,
    agent: AgentPrincipal,
    run_id: str,
    attempt: int,
    status: transitions.FinalStatus,
    failure: tuple[transitions.FailureKind, str, int | None] | None,
    steps: list[StepItem],
) -> None:
    [outcome] = await _finish(session, state, agent, [(transitions.Report(run_id, attempt, status, failure), steps)])
    if outcome == "moved_on":
        raise _moved_on(run_id)


async def finish_many(
    session: AsyncSession, state: AppState, agent: AgentPrincipal, reports: list[FinishReport]
) -> list[transitions.Outcome]:
    """Several reports in one transaction; a report for a run that moved on changes nothing and does not
    stop the others."""
    return await _finish(
        session,
        state,
        agent,
        [
            (
                transitions.Report(
                    r.run_id,
                    r.attempt,
                    r.status,
                    (r.failure.kind, r.failure.message, r.failure.step) if r.failure else None,
                ),
                r.steps,
            )
            for r in reports
        ],
    )


async def claim_next(
    state: AppState,
    agent: AgentPrincipal,
    device_ids: list[str | None],
    disconnected: Callable[[], Awaitable[bool]],
) -> dict[str, RunPayload]:
    """The next run of each device named (None names none) that reports just freed, claimed at once (no
    waiting) in one transaction: device id → run, for those that got one. Called after the reports
    are committed, on their own: the claim must not hold up, or be held up by, the reports."""
    devices = list(dict.fromkeys(d for d in device_ids if d))
    if not devices:
        return {}
    runs = await claim(state, agent, devices, 0, disconnected, max_runs=len(devices))
    return {run.device_id: run for run in runs}


async def _finish(
    session: AsyncSession,
    state: AppState,
    agent: AgentPrincipal,
    reports: list[tuple[transitions.Report, list[StepItem]]],
) -> list[transitions.Outcome]:
    finished = await transitions.finish(
        session,
        agent.agent_id,
        [report for report, _ in reports],
        retry_device_wait=state.settings.retry_device_wait,
    )
    outcomes = finished.outcomes
    # After the state change, which checked that the attempt is still this agent's: a report that is
    # refused leaves nothing behind. No progress update: a finished run is at 100.
    await AgentRepository(session).add_steps(
        [
            (report.run_id, report.attempt, [step.model_dump() for step in steps])
            for (report, steps), outcome in zip(reports, outcomes, strict=True)
            if steps and outcome == "done"
        ]
    )
    # Quarantine and flakiness follow the runs of test cases that are quarantined, or of organisations
    # that quarantine flaky test cases; every other run's end costs nothing more here.
    watched = [e for e in finished.ended if e.quarantined or e.auto_quarantine]
    if watched:
        await quality.after_runs_ended(session, watched)
    # A device came free and an organisation may be under its cap again, and a test retry is claimable:
    # wake a waiting agent for each.
    retried = sum(e.retried for e in finished.ended)
    on_commit(session, (lambda: state.wakeup.wake(1 + retried)) if retried else state.wakeup.wake)
    return outcomes
