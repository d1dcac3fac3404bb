from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, StrictBool, StringConstraints

RunStatus = Literal["queued", "running", "passed", "failed", "cancelled"]
Priority = Literal["low", "medium", "high"]
PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2}

# Names of values a run receives (env and organisation secrets), as a flow's `${NAME}` and shells know them.
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_ENV_NAME = 100
MAX_ENV_VALUE = 10_000
MAX_ENV_ENTRIES = 100


def _no_nul(value: str) -> str:
    # A value becomes a process's environment or a flow's text: neither carries NUL.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN, max_length=MAX_ENV_NAME)]
EnvValue = Annotated[str, StringConstraints(strict=True, max_length=MAX_ENV_VALUE), AfterValidator(_no_nul)]
Env = Annotated[
    dict[EnvName, EnvValue],
    Field(
        max_length=MAX_ENV_ENTRIES,
        description="Values for the flow's `${NAME}` references (strings only), beside the organisation's "
        "secrets; a name of both takes this value.",
    ),
]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=200)]
MAX_TEST_RETRIES = 5
# Strict: a JSON integer, never `true` (which lax validation reads as 1).
Retries = Annotated[int, Strict(), Field(ge=0, le=MAX_TEST_RETRIES)]
Seconds = Annotated[int, Strict(), Field(ge=10, le=24 * 3600)]


class Ref(BaseModel):
    id: str
    name: str


class ExecutedBy(BaseModel):
    id: str
    name: str
    email: str


class Failure(BaseModel):
    kind: Literal["test", "timeout", "infrastructure"]
    message: str
    step: int | None


class QueueInfo(BaseModel):
    """Why a queued run waits, and how many of the organisation's runs start before it (1 = next)."""

    reason: Literal["concurrency_cap", "no_device", "devices_busy", "scheduling"] = Field(
        description="`concurrency_cap`: the organisation runs as many as it may; `no_device`: no online device "
        "fits the run (it cannot start until one comes online); `devices_busy`: every online device that fits "
        "is running something; `scheduling`: a device that fits is free, the run starts at the next claim."
    )
    position: int
    eta_seconds: int | None = Field(
        default=None,
        description="About how long until it starts, from the organisation's recent run durations, its place in "
        "the queue and the devices (or parallel runs) it may use; null when no online device fits it or there is "
        "no history yet.",
    )


class RetriesOut(BaseModel):
    """Test retries: how many the run may have (a run that fails as `test` is tried again) and has had.
    Attempts after a lost device agent (infrastructure retries) are counted apart, in `attempt`."""

    allowed: int
    used: int


class DeviceRequested(BaseModel):
    name: str
    platform: str
    os_version: str
    orientation: str


_RUN_EXAMPLE: dict[str, Any] = {
    "id": "run_01jd2f3g4h5j6k7m8n9p0q1r2s",
    "link": "http://127.0.0.1:8000/test-runs/run_01jd2f3g4h5j6k7m8n9p0q1r2s",
    "test_case": {"id": "tc_01jd2f3g4h5j6k7m8n9p0q1r2s", "name": "Login Flow Test"},
    "app": {"id": "file_01jd2f3g4h5j6k7m8n9p0q1r2s", "name": "MyApp v1.0.0"},
    "status": "passed",
    "priority": "medium",
    "progress": 100,
    "executed_by": {"id": "user_01jd2f3g4h5j6k7m8n9p0q1r2s", "name": "John Doe", "email": "john@example.com"},
    "device": "iPhone 14 Pro",
    "device_details": {
        "name": "iPhone 14 Pro",
        "platform": "iOS",
        "os_version": "16.0",
        "orientation": "portrait",
    },
    "attempt": 1,
    "failure": None,
    "created_at": "2026-11-28T12:00:00Z",
    "started_at": "2026-11-28T12:00:02Z",
    "finished_at": "2026-11-28T12:01:10Z",
}


class RunOut(BaseModel):
    id: str = Field(description="Test run unique identifier.")
    link: str = Field(description="URL to view test run details.")
    test_case: Ref
    app: Ref
    status: RunStatus
    priority: Priority
    progress: int = Field(ge=0, le=100)
    executed_by: ExecutedBy
    device: str = Field(description="Device name.")
    device_details: DeviceRequested
    attempt: int
    failure: Failure | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue: QueueInfo | None = Field(
        default=None, description="For a queued run (status route, and lists with `queue=true`): why it waits."
    )
    device_selector: dict[str, Any] | None = Field(
        default=None,
        description="What a run that named no single device asked for (platform, selector, or any of several "
        "devices); null when it named one device. Matched when a device claims the run; until then `device` "
        "describes it, afterwards `device` is the device that took it.",
    )
    retries: RetriesOut | None = Field(default=None, description="Test retries allowed and used.")
    flaky: bool = Field(default=False, description="Passed on a test retry (after failing as `test`).")
    quarantined: bool = Field(
        default=False,
        description="Its test case was in quarantine when it was queued: it is reported, but never fails a gate "
        "(a batch's verdict, the CLI's exit code).",
    )
    batch_id: str | None = Field(default=None, description="The batch (run or run-all request) that queued it.")

    model_config = ConfigDict(json_schema_extra={"examples": [_RUN_EXAMPLE]})


class RunListOut(BaseModel):
    test_runs: list[RunOut]

    model_config = ConfigDict(json_schema_extra={"examples": [{"test_runs": [_RUN_EXAMPLE]}]})


class LatestRunOut(BaseModel):
    """A test case's latest completed run, as the reference shows it in the test-case list."""

    id: str
    link: str
    app: Ref
    status: RunStatus
    priority: Priority
    progress: int
    executed_by: ExecutedBy
    device: str


class DeviceIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, description='Device name (e.g. "Pixel 7").')
    platform: str = Field(min_length=1, max_length=20, description='"android" or "ios" (any case).')
    os_version: str = Field(min_length=1, max_length=40, description='OS version (e.g. "14").')
    orientation: Literal["portrait", "landscape"] = "portrait"


SelectorText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class DeviceSelector(BaseModel):
    """Which devices may take a run, matched when a device claims it (not when it is queued). Every
    criterion given must hold; none (or `any`) means any device of the platform."""

    model_config = ConfigDict(extra="forbid")

    platform: str | None = Field(
        default=None, max_length=20, description="android or ios; default: the request's `platform`, else the app's."
    )
    name: SelectorText | list[SelectorText] | None = Field(
        default=None,
        description='Device name(s), any OS version, case-insensitive: "Pixel 7" or ["Pixel 7", "Pixel 8"].',
    )
    os_version: str | None = Field(
        default=None,
        max_length=100,
        description='OS version, with an optional comparison: "14", "==14", ">=13", ">13", "<=15", "<15", "!=14", '
        'or several joined by commas (">=13,<15"). Compared numerically part by part; 14 = 14.0.',
    )
    model: SelectorText | None = Field(
        default=None, description='A pattern over the device name, case-insensitive: "Pixel *", "iPhone 1?", "*Tab*".'
    )
    tags: list[SelectorText] | None = Field(
        default=None, max_length=20, description="Tags the device's agent declares for it; the device needs all."
    )
    pool: SelectorText | None = Field(
        default=None, description="A pool the device's agent puts it in (the device tag `pool:NAME`)."
    )
    device_type: Literal["phone", "tablet"] | None = None
    any: StrictBool = Field(default=False, description="Any device of the platform (no other criterion with it).")


class JobIn(BaseModel):
    test_case_id: str = Field(max_length=64)
    device: DeviceIn | None = None
    app_file_id: str | None = Field(default=None, max_length=64)
    platform: str | None = Field(
        default=None,
        max_length=20,
        description="Any device of this platform, matched when a device claims the run (with no `device`); the "
        "newest app of it (with no `app_file_id`).",
    )
    device_selector: DeviceSelector | None = Field(
        default=None, description="Instead of `device`: any free device that fits, matched when it claims the run."
    )
    priority: Priority = "medium"
    timeout_seconds: Seconds | None = None
    env: Env | None = None
    record_video: StrictBool = Field(
        default=False,
        description="Record a video of the device's screen for the run (a test case may always record one).",
    )
    retries: Retries | None = Field(
        default=None, description="Test retries: a run that fails as `test` is tried again, up to this many times."
    )


Group = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
_GROUP = (
    "A concurrency group (a branch, a pull request): with `cancel_previous`, this batch cancels the queued and "
    "running runs of the group's earlier batches."
)
_CANCEL_PREVIOUS = "Cancel the unfinished runs of the group's earlier batches (needs `group`)."
_BATCH_RETRIES = (
    "Test retries of every run (0–5; a job's own `retries` wins): a run that fails as `test` is tried again, "
    "ahead of the queue and on another device where one fits. Default: the test case's, else the organisation's."
)


class RunIn(BaseModel):
    jobs: list[JobIn] = Field(min_length=1, max_length=500)
    retries: Retries | None = Field(default=None, description=_BATCH_RETRIES)
    group: Group | None = Field(default=None, description=_GROUP)
    cancel_previous: StrictBool = Field(default=False, description=_CANCEL_PREVIOUS)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "jobs": [
                        {
                            "device": {
                                "name": "Pixel 7",
                                "platform": "Android",
                                "os_version": "14",
                                "orientation": "portrait",
                            },
                            "test_case_id": "tc_01jd2f3g4h5j6k7m8n9p0q1r2s",
                            "app_file_id": "file_01jd2f3g4h5j6k7m8n9p0q1r2s",
                        }
                    ]
                }
            ]
        }
    )


class RunAllIn(BaseModel):
    app_file_id: str | None = Field(default=None, max_length=64)
    device: DeviceIn | None = None
    platform: str | None = Field(default=None, max_length=20)
    device_selector: DeviceSelector | None = Field(
        default=None, description="Instead of `device`: which devices may take the runs (see `mode`)."
    )
    devices: list[DeviceIn] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="Instead of `device`: several named devices (`mode: matrix` runs every test case on each; "
        "`spread` runs each once, on any of them).",
    )
    mode: Literal["spread", "matrix"] = Field(
        default="spread",
        description="`spread`: each test case once, on any free device that fits; `matrix`: each test case on each "
        "named device (`devices`, or every kind of online device that fits `device_selector`/`platform`).",
    )
    category_id: str | None = Field(default=None, max_length=64)
    priority: Priority = "medium"
    timeout_seconds: Seconds | None = None
    env: Env | None = None
    include_tags: list[Tag] | None = Field(
        default=None, max_length=100, description="Run only test cases with at least one of these tags."
    )
    exclude_tags: list[Tag] | None = Field(
        default=None, max_length=100, description="Skip test cases with any of these tags."
    )
    record_video: StrictBool = Field(
        default=False,
        description="Record a video of the device's screen for every run (a test case may always record one).",
    )
    retries: Retries | None = Field(default=None, description=_BATCH_RETRIES)
    group: Group | None = Field(default=None, description=_GROUP)
    cancel_previous: StrictBool = Field(default=False, description=_CANCEL_PREVIOUS)


class QueuedJob(BaseModel):
    id: str
    link: str
    status: RunStatus


class QueuedOut(BaseModel):
    success: bool = True
    jobs: list[QueuedJob]
    batch_id: str | None = Field(
        default=None, description="The batch of these runs: its counts and gate verdict at GET /v1/batches/{id}."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "jobs": [
                        {
                            "link": "http://127.0.0.1:8000/test-runs/run_01jd2f3g4h5j6k7m8n9p0q1r2s",
                            "id": "run_01jd2f3g4h5j6k7m8n9p0q1r2s",
                            "status": "queued",
                        }
                    ],
                }
            ]
        }
    )


class CancelOut(BaseModel):
    success: bool = True
    id: str
    status: RunStatus


class StepReport(BaseModel):
    index: int
    parent: int | None = Field(
        default=None,
        description="Index of the enclosing step (a runFlow, a repeat iteration, a retry attempt, a hook "
        "group); null at the top level.",
    )
    depth: int = Field(default=0, description="Nesting level: 0 at the top level.")
    description: str
    status: Literal["passed", "failed", "skipped"]
    message: str
    duration_ms: int
    logs: list[str]
    screenshot: str | None = Field(description="Pre-signed link to the step's screenshot (valid 5 minutes).")


class AttemptReport(BaseModel):
    number: int
    device: str
    device_id: str | None
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None = Field(description="passed | failed | cancelled | lost | timeout; null while running.")
    message: str | None
    retry: Literal["test", "infrastructure"] | None = Field(
        default=None,
        description="Why this attempt was made: `test`, a test retry after the attempt before failed as `test`; "
        "`infrastructure`, the attempt before lost its device agent; null for the first.",
    )
    failure: Failure | None = Field(default=None, description="A failed attempt's failure.")
    failing_step: StepReport | None = Field(
        default=None, description="A failed attempt's failing step, with its log lines and screenshot link."
    )


class ArtifactReport(BaseModel):
    """A file the attempt produced besides screenshots: a screen recording or the device's log."""

    name: str = Field(description='File name, e.g. "run.mp4", "device.log".')
    kind: Literal["video", "log"]
    content_type: str = Field(description='e.g. "video/mp4", "text/plain; charset=utf-8".')
    size: int = Field(description="Bytes.")
    step: int | None = Field(
        description="Index of the step that produced it (a flow's stopRecording); null for the run's own "
        "video and the device's log."
    )
    link: str = Field(description="Pre-signed download link (valid 5 minutes); it answers Range requests.")


class RunReport(BaseModel):
    run: RunOut
    attempts: list[AttemptReport]
    steps: list[StepReport] = Field(description="The steps of the latest attempt (or of the one asked for).")
    artifacts: list[ArtifactReport] = Field(
        default_factory=list,
        description="Videos and the device's log of the latest attempt (or of the one asked for), videos first.",
    )
    attempt: int | None = Field(default=None, description="The attempt whose steps and artifacts are listed.")
