"""What agents and the server say to each other (the agent imports these too; they import no db)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictFloat, StringConstraints

# Integers the database keeps in 32 bits; larger ones (or booleans, which JSON validation would
# otherwise take as 0 and 1) are refused as invalid rather than reaching a column that cannot hold them.
INT32_MAX = 2**31 - 1
# Steps of one attempt (a run stops after 10,000; nested steps are numbered in one list).
MAX_STEP_INDEX = 100_000
Attempt = Annotated[int, Strict(), Field(ge=0, le=INT32_MAX, description="The attempt the agent holds.")]


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=200, description="The device's id in the agent's devices file.")
    name: str = Field(min_length=1, max_length=200)
    platform: str = Field(pattern="^(Android|iOS|android|ios)$")
    os_version: str = Field(min_length=1, max_length=40)
    device_type: Literal["phone", "tablet"] = "phone"
    driver: str = Field(default="simulator", max_length=40)
    tags: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]] = Field(
        default_factory=list,
        max_length=50,
        description="Tags (and pools, as `pool:NAME`) of the device, which runs' device selectors match.",
    )


class RegisterIn(BaseModel):
    devices: list[DeviceIn] = Field(min_length=1, max_length=500)


class RegisteredDevice(BaseModel):
    id: str  # the server's dev_… id
    config_id: str


class RegisterOut(BaseModel):
    agent_id: str
    devices: list[RegisteredDevice]
    lease_seconds: float
    heartbeat_seconds: float


class ClaimIn(BaseModel):
    device_ids: list[str] = Field(min_length=1, max_length=500, description="Free devices (server dev_… ids).")
    wait_seconds: StrictFloat = Field(default=20, ge=0, le=60, description="Long-poll: wait this long for work.")
    max_runs: Annotated[int, Strict()] = Field(
        default=1, ge=1, le=500, description="Claim up to this many runs at once, at most one per device."
    )


class AppPayload(BaseModel):
    id: str
    sha256: str
    os: str
    file_size: int
    download_url: str
    metadata: dict[str, Any]


class FileRef(BaseModel):
    """One of the test case's files; its bytes at ``GET /v1/agent/runs/{run id}/files/{path}``."""

    path: str
    sha256: str
    size: int


class RunPayload(BaseModel):
    id: str
    attempt: int
    device_id: str
    flow: str
    test_case_name: str
    timeout_seconds: float
    lease_expires_at: str
    app: AppPayload
    # Defaults: an agent reads a payload of a server that sends none of these.
    env: dict[str, str] = Field(default_factory=dict, description="The values passed for this run (`env`).")
    secrets: dict[str, str] = Field(
        default_factory=dict, description="The organisation's secrets, decrypted; never to be logged or reported."
    )
    files: list[FileRef] = Field(default_factory=list, description="The test case's files (subflows, scripts, media).")
    record_video: bool = Field(
        default=False,
        description="Record the device's screen for the whole run and upload the video "
        "(`PUT /v1/agent/runs/{id}/artifacts/{name}`), with the device's log.",
    )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Secrets stay out of reprs (logs, tracebacks); the field itself is unchanged.
        for name, value in super().__repr_args__():
            yield (name, {key: "***" for key in value} if name == "secrets" else value)


class ClaimOut(BaseModel):
    run: RunPayload | None = Field(description="The first claimed run (null when none came).")
    runs: list[RunPayload] = Field(default_factory=list, description="Every claimed run, `run` first.")


class HeartbeatIn(BaseModel):
    attempt: Attempt
    progress: Annotated[int, Strict()] | None = Field(default=None, ge=0, le=100)


class HeartbeatOut(BaseModel):
    cancel: bool
    lease_expires_at: str


class StepItem(BaseModel):
    index: Annotated[int, Strict()] = Field(
        ge=0, le=100_000, description="Position in execution order within the attempt."
    )
    parent: Annotated[int, Strict()] | None = Field(
        default=None,
        ge=0,
        le=100_000,
        description="Index of the enclosing step (a runFlow, a repeat iteration, a retry attempt, a hook group).",
    )
    depth: Annotated[int, Strict()] = Field(
        default=0, ge=0, le=32, description="Nesting level: 0 for the flow's own steps."
    )
    description: str = Field(max_length=1200)
    status: Literal["passed", "failed", "skipped"]
    message: str = Field(default="", max_length=10_000)
    logs: list[str] = Field(default_factory=list, max_length=1000)
    duration_ms: Annotated[int, Strict()] = Field(default=0, ge=0, le=INT32_MAX)


class StepsIn(BaseModel):
    """Step results of one attempt; agents send them in small batches (and with ``finish``)."""

    attempt: Attempt
    steps: list[StepItem] = Field(min_length=1, max_length=500)
    step_count: Annotated[int, Strict()] | None = Field(
        default=None, ge=1, le=100_000, description="Steps in the flow the agent runs, for the run's progress."
    )
    progress: Annotated[int, Strict()] | None = Field(
        default=None,
        ge=0,
        le=100,
        description="The run's progress as the agent counts it (nested flows, repeats); when sent, it is used "
        "instead of a count from the steps' indexes. At most 99 while the run goes on.",
    )


class FailureIn(BaseModel):
    kind: Literal["test", "timeout", "infrastructure"]
    message: str = Field(max_length=10_000)
    step: Annotated[int, Strict()] | None = Field(default=None, ge=0, le=100_000)


class FinishIn(BaseModel):
    attempt: Attempt
    status: Literal["passed", "failed", "cancelled"]
    failure: FailureIn | None = None
    steps: list[StepItem] = Field(default_factory=list, max_length=500, description="Steps not reported yet.")
    claim_next_for: str | None = Field(
        default=None,
        max_length=40,
        description="A device (server dev_… id) that is free once this run is over: claim its next run in "
        "the same request (no waiting) and return it as `next_run`.",
    )


class FinishOut(BaseModel):
    success: bool = True
    next_run: RunPayload | None = None


class FinishReport(FinishIn):
    run_id: str = Field(max_length=40, pattern="^run_[0-9a-z]+$")


class FinishManyIn(BaseModel):
    """The ends of several attempts in one request: an agent whose devices finish at about the same
    time reports them together (one request and one transaction for all)."""

    reports: list[FinishReport] = Field(min_length=1, max_length=200)


class FinishResult(BaseModel):
    run_id: str
    outcome: Literal["done", "repeat", "moved_on"] = Field(
        description="`done`: recorded; `repeat`: this report was recorded before; `moved_on`: the run moved "
        "on (finished, cancelled, requeued or taken by another attempt), drop it."
    )
    next_run: RunPayload | None = None


class FinishManyOut(BaseModel):
    success: bool = True
    results: list[FinishResult] = Field(description="One per report, in the same order.")


class Ack(BaseModel):
    success: bool = True


ArtifactKind = Literal["video", "log"]


class ArtifactStored(BaseModel):
    """An artifact (screen recording, device log) stored for an attempt."""

    success: bool = True
    name: str
    kind: ArtifactKind
    size: int = Field(description="Bytes stored.")
