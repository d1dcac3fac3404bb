from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool
from pydantic.json_schema import SkipJsonSchema

from qualgent.openapi import omittable
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

    # Each setting has a value: it may be left out, not sent as null (422).
    default_retries: Retries | SkipJsonSchema[None] = omittable()
    auto_quarantine: StrictBool | SkipJsonSchema[None] = omittable()
    quarantine_exit_passes: Annotated[int, Strict(), Field(ge=0, le=100)] | SkipJsonSchema[None] = omittable()
