from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from qualgent.runs.schemas import RunOut

Verdict = Literal["passed", "failed", "flaky-passed", "infrastructure"]


class BatchCounts(BaseModel):
    queued: int = 0
    running: int = 0
    passed: int = 0
    failed: int = 0
    cancelled: int = 0


class BatchOut(BaseModel):
    id: str
    kind: Literal["run", "run-all"]
    group: str | None = Field(description="Its concurrency group (a branch, a pull request), if any.")
    superseded_by: str | None = Field(
        description="A later batch of the group that cancelled this one's unfinished runs (`cancel_previous`)."
    )
    created_at: datetime
    finished: bool = Field(description="Every run has ended (passed, failed or cancelled).")
    finished_at: datetime | None = Field(description="When its last run ended.")
    wall_seconds: float = Field(description="From its queuing to its last run's end (to now while runs remain).")
    total: int = Field(description="Its runs.")
    counts: BatchCounts = Field(description="Its runs by status.")
    flaky: int = Field(description="Runs that passed on a test retry.")
    test_retries: int = Field(description="Test retries its runs used.")
    quarantined: int = Field(description="Runs of test cases in quarantine (never failing the gate).")
    quarantined_failed: int = Field(description="Of those, the runs that did not pass (reported, not gating).")
    verdict: Verdict | None = Field(
        description="The gate, once every run has ended (null before), over the runs of test cases not in "
        "quarantine: `failed` when one failed as `test`; else `infrastructure` when one failed as infrastructure or "
        "timeout, or was cancelled; else `flaky-passed` when one passed on a test retry; else `passed`."
    )
    runs: list[RunOut] | None = Field(
        default=None, description="Its runs (with `?runs=true`), in the order they were queued."
    )
