from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store NUL in text (a 500 there, stored on SQLite): refuse it on every backend.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]

_EXAMPLE: dict[str, Any] = {
    "id": "cat_01jd2f3g4h5j6k7m8n9p0q1r2s",
    "name": "Smoke Tests",
    "description": "Fast checks run on every build",
}


class CategoryOut(BaseModel):
    id: str = Field(description="Category unique identifier.")
    name: str = Field(description="Category name.")
    description: str = Field(description="Category description.")

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [_EXAMPLE]})


class CategoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=10_000)


class CategoryPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(default=None, min_length=1, max_length=200)
    description: Text | None = Field(default=None, max_length=10_000)


class DeletedOut(BaseModel):
    success: bool = True
    deleted: list[str]
