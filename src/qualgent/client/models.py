"""Typed models of the API's responses. Unknown fields are kept (``extra="allow"``), so a newer server
that adds fields does not break an older client."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

RunStatus = Literal["queued", "running", "passed", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"passed", "failed", "cancelled"})


class Model(BaseModel):
    # defer_build: a model's validator is built when first used, not when the CLI starts.
    model_config = ConfigDict(extra="allow", defer_build=True)


class Ref(Model):
    id: str
    name: str


class App(Model):
    id: str
    name: str
    version: str
    os: str
    link: str
    app_name: str
    file_size: int
    sha256: str
    created_at: datetime | None = None


class UploadedFile(Model):
    id: str
    original_name: str
    file_size: int
    app_name: str
    version: str
    os: str
    sha256: str
    link: str


class Category(Model):
    id: str
    name: str
    description: str = ""


class TestCaseStats(Model):
    """Figures of a test case's latest (up to 50) runs that passed or failed as `test`."""

    __test__ = False  # not a pytest class

    runs: int = 0
    pass_rate: float | None = None
    flaky_rate: float | None = None
    p50_seconds: float | None = None
    p90_seconds: float | None = None


class Quarantine(Model):
    since: datetime
    source: str  # manual | flaky
    reason: str | None = None


class TestCase(Model):
    __test__ = False  # not a pytest class

    id: str
    name: str
    status: Literal["active", "inactive"]
    category: Ref | None = None
    description: str = ""
    latest_completed_run: dict[str, Any] | None = None
    tags: list[str] = []  # the flow's `tags:` (servers before test case files send none)
    # Servers before flaky tests and quarantine send none of these.
    retries: int | None = None
    quarantined: bool = False
    quarantine: Quarantine | None = None
    flaky: bool = False
    flaky_reason: str | None = None
    stats: TestCaseStats | None = None


class TestCaseFile(Model):
    """A file of a test case (subflow, script, media): its path relative to the flow's folder."""

    path: str
    size: int
    sha256: str


class TestCaseDetail(TestCase):
    flow: str = ""
    timeout_seconds: int | None = None
    files: list[TestCaseFile] = []
    record_video: bool = False  # every run records a video (servers before run artifacts send none)


class Failure(Model):
    kind: Literal["test", "timeout", "infrastructure"]
    message: str
    step: int | None = None


class DeviceDetails(Model):
    name: str
    platform: str
    os_version: str
    orientation: str = "portrait"


class QueueInfo(Model):
    """Why a queued run waits: ``concurrency_cap``, ``no_device`` (no online device fits it),
    ``devices_busy`` or ``scheduling``; ``position`` 1 starts next; ``eta_seconds`` about when."""

    reason: str
    position: int
    eta_seconds: int | None = None


class Retries(Model):
    """Test retries a run may have and has had (infrastructure retries are apart)."""

    allowed: int = 0
    used: int = 0


class Run(Model):
    id: str
    link: str
    test_case: Ref
    app: Ref
    status: RunStatus
    priority: str = "medium"
    progress: int = 0
    device: str
    device_details: DeviceDetails | None = None
    attempt: int = 0
    failure: Failure | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    queue: QueueInfo | None = None  # queued runs, from the status route or a list asked with queue=True
    device_selector: dict[str, Any] | None = None  # what a run that named no single device asked for
    retries: Retries | None = None  # test retries (servers before them send none)
    flaky: bool = False  # passed on a test retry
    quarantined: bool = False  # its test case was in quarantine: it never fails the gate
    batch_id: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(self.started_at.tzinfo)
        return max(0.0, (end - self.started_at).total_seconds())


class QueuedJob(Model):
    id: str
    link: str
    status: RunStatus
    batch_id: str | None = None  # the response's batch (servers before batches send none)


class Device(Model):
    id: str
    name: str
    os_version: str
    platform: str
    device_type: str = "phone"


class Step(Model):
    index: int
    parent: int | None = None  # the enclosing step (runFlow, repeat iteration, retry attempt, hook)
    depth: int = 0
    description: str
    status: str
    message: str = ""
    duration_ms: int = 0
    logs: list[str] = []
    screenshot: str | None = None


class Attempt(Model):
    number: int
    device: str
    device_id: str | None = None
    outcome: str | None = None
    message: str | None = None
    retry: str | None = None  # why it was made: test (a test retry) | infrastructure | None (the first)
    failure: Failure | None = None
    failing_step: Step | None = None


class RunArtifact(Model):
    """A video or the device's log of the run's latest attempt; ``link`` is pre-signed (5 minutes)."""

    name: str
    kind: Literal["video", "log"]
    content_type: str
    size: int
    step: int | None = None  # the step that made it (a flow's stopRecording)
    link: str


class RunReport(Model):
    run: Run
    attempts: list[Attempt] = []
    steps: list[Step] = []
    artifacts: list[RunArtifact] = []  # servers before run artifacts send none
    attempt: int | None = None  # the attempt whose steps are listed


class BatchCounts(Model):
    queued: int = 0
    running: int = 0
    passed: int = 0
    failed: int = 0
    cancelled: int = 0


class Batch(Model):
    """The runs of one run / run-all request, and the gate's verdict once they all ended."""

    id: str
    kind: str
    group: str | None = None
    superseded_by: str | None = None
    created_at: datetime | None = None
    finished: bool
    finished_at: datetime | None = None
    wall_seconds: float = 0.0
    total: int = 0
    counts: BatchCounts = BatchCounts()
    flaky: int = 0
    test_retries: int = 0
    quarantined: int = 0
    quarantined_failed: int = 0
    verdict: str | None = None  # passed | failed | flaky-passed | infrastructure; None until finished
    runs: list[Run] | None = None


class HistoryApp(Model):
    id: str
    name: str
    version: str
    sha256: str


class HistoryRun(Model):
    id: str
    link: str
    status: RunStatus
    flaky: bool = False
    quarantined: bool = False
    app: HistoryApp
    device: str
    duration_seconds: float | None = None
    attempts: int = 0
    retries: Retries | None = None
    failure: Failure | None = None
    batch_id: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None


class TestCaseHistory(Model):
    __test__ = False  # not a pytest class

    test_case: Ref
    flaky: bool = False
    flaky_reason: str | None = None
    quarantine: Quarantine | None = None
    stats: TestCaseStats
    runs: list[HistoryRun] = []


class OrganizationSettings(Model):
    default_retries: int = 0
    auto_quarantine: bool = False
    quarantine_exit_passes: int = 5
    max_parallel_runs: int | None = None


class Webhook(Model):
    """A webhook endpoint of the organisation; ``secret`` only in the answer that created it."""

    id: str
    kind: str = "webhook"
    url: str
    events: list[str]
    description: str = ""
    enabled: bool = True
    disabled_reason: str | None = None
    failing_since: datetime | None = None
    secret: str | None = None


class WebhookDelivery(Model):
    id: str
    event_type: str
    subject_id: str | None = None
    status: Literal["pending", "delivered", "failed"]
    attempts: int = 0
    response_status: int | None = None
    duration_ms: int | None = None
    error: str | None = None
    created_at: datetime | None = None
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None


class CancelResult(Model):
    id: str
    status: RunStatus
