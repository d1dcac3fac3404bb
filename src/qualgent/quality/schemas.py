from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from qualgent.runs.schemas import DeviceRequested, Failure, Ref, RetriesOut


class TestCaseStats(BaseModel):
    """What the test case's latest runs that passed or failed as `test` say (at most 50 runs)."""

    __test__ = False  # not a pytest class

    runs: int = Field(description="Runs counted: the latest (at most 50) that passed or failed as `test`.")
    pass_rate: float | None = Field(description="Share of them that passed (on their first attempt or a retry).")
    flaky_rate: float | None = Field(description="Share of them that passed on a test retry only.")
    p50_seconds: float | None = Field(description="Median duration of the passed ones (their last attempt).")
    p90_seconds: float | None = Field(description="90th percentile of that duration.")


class QuarantineOut(BaseModel):
    since: datetime
    source: Literal["manual", "flaky"] = Field(description="`manual`, or `flaky`: by automatic quarantine.")
    reason: str | None


class QuarantineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500, description="Why, for the people who see it.")


class HistoryApp(BaseModel):
    id: str
    name: str
    version: str
    sha256: str


class HistoryRun(BaseModel):
    id: str
    link: str
    status: Literal["passed", "failed", "cancelled"]
    flaky: bool = Field(description="Passed on a test retry.")
    quarantined: bool = Field(description="The test case was in quarantine when the run was queued.")
    app: HistoryApp
    device: str
    device_details: DeviceRequested
    duration_seconds: float | None = Field(description="Its last attempt's, from start to end.")
    attempts: int = Field(description="Attempts it took (test retries and infrastructure retries included).")
    retries: RetriesOut
    failure: Failure | None
    batch_id: str | None
    created_at: datetime
    finished_at: datetime | None


class HistoryOut(BaseModel):
    test_case: Ref
    flaky: bool
    flaky_reason: str | None
    quarantine: QuarantineOut | None
    stats: TestCaseStats
    runs: list[HistoryRun] = Field(description="Finished runs, newest first (a page; see the Link header).")
