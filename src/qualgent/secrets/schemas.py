from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from qualgent.runs.schemas import MAX_ENV_VALUE

MAX_SECRETS = 200


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class SecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"value": "s3cret-passw0rd"}]})

    value: Annotated[str, StringConstraints(strict=True, max_length=MAX_ENV_VALUE), AfterValidator(_no_nul)] = Field(
        description="The value; stored encrypted, never shown again."
    )


class SecretOut(BaseModel):
    """A secret's name and dates; its value is never sent back."""

    name: str
    created_at: datetime
    updated_at: datetime

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {"name": "TEST_PASSWORD", "created_at": "2026-12-03T12:00:00Z", "updated_at": "2026-12-03T12:00:00Z"}
            ]
        },
    )
