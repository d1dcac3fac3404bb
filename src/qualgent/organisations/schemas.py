from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict

from qualgent.runs.schemas import Retries


class OrganizationSettings(BaseModel):
    default_retries: int = Field(
        description="Test retries of a run whose request and test case say none (0–5): a run that fails as "
        "`test` is tried again, ahead of the queue and on another device where one fits."
    )
    auto_quarantine: bool = Field(description="Put test cases in quarantine as soon as they are found flaky.")
    quarantine_exit_passes: int = Field(
        description="Passes in a row (on their first attempt) that take a test case out of quarantine; 0: only by hand."
    )
    max_parallel_runs: int = Field(description="Runs the organisation may execute at once (set by the server's admin).")


class OrganizationSettingsPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_retries: Retries | None = None
    auto_quarantine: bool | None = None
    quarantine_exit_passes: Annotated[int, Strict()] | None = Field(default=None, ge=0, le=100)
