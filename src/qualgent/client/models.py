"""Typed models of the API's responses. Unknown fields are kept (``extra="allow"``), so a newer server
that adds fields does not break an older client."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

RunStatus = Literal["queued", "running", "passed", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"passed", "failed", "cancelled"})


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")


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


class TestCase(Model):
    __test__ = False  # not a pytest class

    id: str
    name: str
    status: Literal["active", "inactive"]
    category: Ref | None = None
    description: str = ""
    latest_completed_run: dict[str, Any] | None = None
    tags: list[str] = []  # the flow's `tags:` (servers before test case files send none)


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
    ``devices_busy`` or ``scheduling``; ``position`` 1 starts next."""

    reason: str
    position: int


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
    outcome: str | None = None
    message: str | None = None


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


class CancelResult(Model):
    id: str
    status: RunStatus
