"""Keyset pagination that leaves response bodies as the reference shows them.

``limit`` (default 100, at most 1000) and ``cursor`` are query parameters; the next page is announced
in a ``Link: <…>; rel="next"`` header. The cursor is the last ID of the page: IDs sort by creation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request, Response

from qualgent.errors import BadRequest

MAX_LIMIT = 1000
# A cursor is an ID: ASCII letters, digits and underscores.
CURSOR_PATTERN = r"^[A-Za-z0-9_]{1,64}$"


@dataclass(frozen=True)
class PageParams:
    limit: int
    cursor: str | None


CursorQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        description="Opaque cursor from the previous page's Link header; another is 400 `invalid_cursor`.",
        # Documented, not enforced by FastAPI: a bad cursor is our own 400, not a validation 422.
        json_schema_extra={"pattern": CURSOR_PATTERN},
    ),
]


async def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1–1000).")] = 100,
    cursor: CursorQuery = None,
) -> PageParams:
    if cursor is not None and not (cursor.isascii() and cursor.replace("_", "").isalnum()):
        raise BadRequest("Invalid cursor: use the one given in the previous page's Link header.", code="invalid_cursor")
    return PageParams(limit, cursor)


PageDep = Annotated[PageParams, Depends(page_params)]


def set_next_link(request: Request, response: Response, next_cursor: str | None, public_base_url: str) -> None:
    if next_cursor is None:
        return
    params = dict(request.query_params)
    params["cursor"] = next_cursor
    url = request.url.replace(query=None).include_query_params(**params)
    base = public_base_url.rstrip("/")
    response.headers["Link"] = f'<{base}{url.path}?{url.query}>; rel="next"'
