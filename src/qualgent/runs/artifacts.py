"""Serving a run's stored videos and device logs over HTTP, with Range requests so a browser can seek.

On local disk Starlette's FileResponse answers ranges itself. Object storage either redirects to the
store's pre-signed URL (the API's links: the store answers ranges) or, where a redirect cannot go (the
dashboard's pages allow media from this server only), streams the asked range through this server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from starlette.responses import Response

from qualgent.errors import NotFound, RangeNotSatisfiable
from qualgent.state import AppState

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# A dashboard page shows this much of the end of a device log (and reads at most TAIL_BYTES for it).
TAIL_LINES = 200
TAIL_BYTES = 256 * 1024


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of a single-range ``Range`` header; None for the whole object (no header, or
    several ranges, which HTTP lets a server answer with all of it). 416 when nothing of it exists."""
    if not header or "," in header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.groups() == ("", ""):
        return None  # a malformed Range header is ignored (RFC 9110, 14.2)
    first, last = match.groups()
    if first == "":  # the last N bytes
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    if start >= size or start >= end:
        raise RangeNotSatisfiable(
            f"The range asked for is outside the {size} bytes stored.", headers={"Content-Range": f"bytes */{size}"}
        )
    return start, end


def _disposition(name: str) -> str:
    return f"inline; filename*=UTF-8''{quote(name, safe='')}"


def serve(state: AppState, artifact: Any, request_range: str | None, *, redirect: bool) -> Response:
    """The artifact's bytes (a ``run_artifacts`` row) with its stored content type; ranges answered 206."""
    headers = {
        # The type is one the agent route allowed (video/…, text/plain): never sniffed as anything else.
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=300",
    }
    local = state.storage.path(artifact.storage_key)
    if local is not None:
        if not Path(local).is_file():
            raise NotFound("No such artifact.")
        return FileResponse(
            local,
            media_type=artifact.content_type,
            headers={**headers, "Content-Disposition": _disposition(artifact.name)},
        )
    if redirect:
        url = state.storage.presigned_url(
            artifact.storage_key, artifact.name, artifact.content_type, state.settings.download_link_ttl, inline=True
        )
        if url is not None:
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    size = int(artifact.size)
    headers.update({"Accept-Ranges": "bytes", "Content-Disposition": _disposition(artifact.name)})
    wanted = byte_range(request_range, size)
    if wanted is None:
        return StreamingResponse(
            state.storage.open(artifact.storage_key),
            media_type=artifact.content_type,
            headers={**headers, "Content-Length": str(size)},
        )
    start, end = wanted
    return StreamingResponse(
        state.storage.open(artifact.storage_key, offset=start, length=end - start),
        status_code=206,
        media_type=artifact.content_type,
        headers={**headers, "Content-Length": str(end - start), "Content-Range": f"bytes {start}-{end - 1}/{size}"},
    )


async def tail(state: AppState, artifact: Any, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a stored log (read from its last TAIL_BYTES bytes at most)."""
    size = int(artifact.size)
    offset = max(0, size - TAIL_BYTES)
    data = bytearray()
    async for chunk in state.storage.open(artifact.storage_key, offset=offset, length=size - offset):
        data.extend(chunk)
    text = data.decode("utf-8", errors="replace")
    found = text.splitlines()
    if offset and found:
        found = found[1:]  # the first line read starts somewhere in the middle
    return found[-lines:]
