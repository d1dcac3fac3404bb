from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator
from pydantic.json_schema import SkipJsonSchema

from qualgent.categories.schemas import Name, Text
from qualgent.openapi import omittable
from qualgent.quality.schemas import QuarantineOut, TestCaseStats
from qualgent.runs.schemas import LatestRunOut, Ref, Retries, Seconds

TestCaseStatus = Literal["active", "inactive"]

_EXAMPLE: dict[str, Any] = {
    "id": "tc_01jd2f3g4h5j6k7m8n9p0q1r2s",
    "name": "Login Flow Test",
    "status": "active",
    "category": {"id": "cat_01jd2f3g4h5j6k7m8n9p0q1r2s", "name": "Smoke Tests"},
    "latest_completed_run": {
        "id": "run_01jd2f3g4h5j6k7m8n9p0q1r2s",
        "link": "http://127.0.0.1:8000/test-runs/run_01jd2f3g4h5j6k7m8n9p0q1r2s",
        "app": {"id": "file_01jd2f3g4h5j6k7m8n9p0q1r2s", "name": "MyApp v1.0.0"},
        "status": "passed",
        "priority": "medium",
        "progress": 100,
        "executed_by": {
            "id": "user_01jd2f3g4h5j6k7m8n9p0q1r2s",
            "name": "John Doe",
            "email": "john@example.com",
        },
        "device": "iPhone 14 Pro",
    },
    "description": "Signs in with a test account",
    "created_at": "2026-11-28T12:00:00Z",
    "updated_at": "2026-11-28T12:00:00Z",
    "tags": ["smoke"],
}


class TestCaseOut(BaseModel):
    __test__ = False  # not a pytest class

    id: str = Field(description="Test case unique identifier.")
    name: str = Field(description="Test case name.")
    status: TestCaseStatus = Field(description="Test case status: active or inactive.")
    category: Ref | None = Field(description="Category (if assigned) with id and name.")
    latest_completed_run: LatestRunOut | None = Field(description="Most recent completed run, if any.")
    description: str
    created_at: datetime
    updated_at: datetime
    tags: list[str] = Field(default_factory=list, description="The flow's `tags:` (run-all filters on them).")
    retries: int | None = Field(
        default=None, description="Test retries of its runs when a request says none (null: the organisation's)."
    )
    quarantined: bool = Field(
        default=False, description="In quarantine: its runs still run and are reported, but never fail a gate."
    )
    quarantine: QuarantineOut | None = Field(default=None, description="Since when, by whom (manual | flaky), why.")
    flaky: bool = Field(
        default=False,
        description="It passed and failed on one build (on one kind of device) or passed on a retry within 14 days, "
        "or its result flipped in more than 30 % of its last 20 runs (on a kind of device).",
    )
    flaky_reason: str | None = Field(default=None, description="Why it counts as flaky.")
    stats: TestCaseStats | None = Field(
        default=None, description="Pass rate, flaky rate and p50/p90 duration of its latest (up to 50) runs."
    )

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})


class FileOut(BaseModel):
    path: str = Field(description="Path relative to the flow's folder, e.g. `subflows/login.yaml`.")
    size: int = Field(description="Bytes.")
    sha256: str


class TestCaseDetail(TestCaseOut):
    flow: str = Field(description="The YAML text of the test's steps, as stored.")
    timeout_seconds: int | None
    record_video: bool = Field(default=False, description="Every run of this test case records a video.")
    files: list[FileOut] = Field(
        default_factory=list,
        description="The files the flow uses (subflows, scripts, media), sorted by path; their bytes at "
        "`GET /v1/test-cases/{id}/files/{path}`.",
    )


class FileIn(BaseModel):
    """A file of the flow's bundle: text (``content``, UTF-8) or bytes (``content_base64``), not both."""

    model_config = ConfigDict(extra="forbid")

    # Checked (and normalised) by the service, which names the file in its answer.
    path: str = Field(max_length=4096, description="Path relative to the flow's folder, `/` between folders.")
    content: str | None = Field(default=None, description="The file's text (stored as UTF-8).")
    content_base64: str | None = Field(default=None, description="The file's bytes, base64-encoded.")

    @model_validator(mode="after")
    def _one_content(self) -> FileIn:
        if (self.content is None) == (self.content_base64 is None):
            raise ValueError("send exactly one of content and content_base64")
        return self


class TestCaseIn(BaseModel):
    __test__ = False
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Login Flow Test",
                    "description": "Signs in with a test account",
                    "category_id": "cat_01jd2f3g4h5j6k7m8n9p0q1r2s",
                    "flow": "appId: com.example.app\n---\n- launchApp\n- tapOn: Sign in\n",
                }
            ]
        },
    )

    name: Name = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=10_000)
    category_id: str | None = Field(default=None, max_length=64)
    status: TestCaseStatus = "active"
    flow: Text = Field(default="", max_length=256 * 1024)
    timeout_seconds: Seconds | None = None
    files: list[FileIn] | None = Field(
        default=None, description="Files the flow uses (subflows, scripts, media); see docs/api.md for limits."
    )
    record_video: StrictBool = Field(
        default=False, description="Every run of this test case records a video of the device's screen."
    )
    retries: Retries | None = Field(
        default=None, description="Test retries of its runs when a request says none (null: the organisation's)."
    )


class TestCasePatch(BaseModel):
    __test__ = False
    model_config = ConfigDict(extra="forbid")

    # Fields that always have a value may be left out but not sent as null (422); the others take null
    # to clear them.
    name: Annotated[Name, Field(min_length=1, max_length=200)] | SkipJsonSchema[None] = omittable()
    description: Annotated[Text, Field(max_length=10_000)] | SkipJsonSchema[None] = omittable()
    category_id: str | None = Field(default=None, max_length=64, description="null: no category.")
    status: TestCaseStatus | SkipJsonSchema[None] = omittable()
    flow: Annotated[Text, Field(max_length=256 * 1024)] | SkipJsonSchema[None] = omittable()
    timeout_seconds: Seconds | None = Field(default=None, description="null: the server's default.")
    files: list[FileIn] | SkipJsonSchema[None] = omittable(
        "Replaces every file of the test case (the flow and its files are one unit); [] for none."
    )
    record_video: StrictBool | SkipJsonSchema[None] = omittable(
        "Every run of this test case records a video of the device's screen."
    )
    retries: Retries | None = Field(
        default=None, description="Test retries of its runs when a request says none; null: the organisation's."
    )
