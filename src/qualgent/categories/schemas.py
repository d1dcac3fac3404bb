from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store NUL in text (a 500 there, stored on SQLite): refuse it on every backend.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _name(value: str) -> str:
    # Names end up in JUnit XML (where control characters are not well-formed), terminals and logs.
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (tabs, line breaks, escapes)")
    return value


# What _name accepts, for the document: at least one character that is not white space, none that is a
# control character. (Checked by _name, which says which rule a name broke.)
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"

# A name: stripped, not blank, without control characters.
Name = Annotated[str, AfterValidator(_name), Field(json_schema_extra={"pattern": NAME_PATTERN})]

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

    name: Name = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=10_000)


class CategoryPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = Field(default=None, min_length=1, max_length=200)
    description: Text | None = Field(default=None, max_length=10_000)


class DeletedOut(BaseModel):
    success: bool = True
    deleted: list[str]
