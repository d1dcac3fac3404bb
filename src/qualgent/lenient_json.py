"""JSON bodies that tolerate trailing commas.

The API reference's own curl example for ``POST /v1/test-cases/run`` has a trailing comma after the
last field, which strict JSON refuses. Clients copy that example, so a body that fails strict parsing
is retried once with trailing commas (outside strings) removed. Anything else stays an error (400).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

# Bodies larger than this (a test case with its files) get strict parsing only: the relaxed retry is a
# character loop in Python, about 1.3 s of CPU for a malformed 32 MiB body.
RELAXED_MAX_BYTES = 1024 * 1024


def strip_trailing_commas(text: str) -> str:
    out: list[str] = []
    in_string = False
    escaped = False
    pending_comma: int | None = None
    # The last significant character outside strings: a comma is trailing only after a value, so
    # ``[,]`` and ``{,}`` stay malformed.
    previous = ""
    for ch in text:
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch in " \t\r\n":
            out.append(ch)
            continue
        if ch in "}]" and pending_comma is not None:
            out[pending_comma] = ""
        pending_comma = None
        if ch == "," and previous not in ("", "[", "{", ",", ":"):
            pending_comma = len(out)
        elif ch == '"':
            in_string = True
        previous = ch
        out.append(ch)
    return "".join(out)


class LenientJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body)
            except json.JSONDecodeError:
                if len(body) > RELAXED_MAX_BYTES:
                    raise
                try:
                    relaxed = strip_trailing_commas(body.decode("utf-8"))
                except UnicodeDecodeError:
                    raise json.JSONDecodeError("body is not UTF-8", "", 0) from None
                self._json = json.loads(relaxed)
        return self._json


class LenientJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def lenient_handler(request: Request) -> Response:
            return await handler(LenientJSONRequest(request.scope, request.receive))

        return lenient_handler
