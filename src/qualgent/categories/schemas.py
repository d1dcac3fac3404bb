from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

_EXAMPLE = {
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

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)


class CategoryPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)


class DeletedOut(BaseModel):
    success: bool = True
    deleted: list[str]
