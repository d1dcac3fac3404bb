"""JSON bodies that tolerate trailing commas.

The API reference's own curl example for ``POST /v1/test-cases/run`` has a trailing comma after the
last field, which strict JSON refuses. Clients copy that example, so a body that fails strict parsing
is retried once with trailing commas (outside strings) removed. Anything else stays an error (400).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from qualgent.errors import Unprocessable

# Bodies larger than this get strict parsing only: the relaxed retry is a character loop in Python on
# the event loop, about 0.35 s for a malformed 1 MB body (and 1.3 s for 32 MiB). The reference's own
# examples, which it exists for, are a few hundred bytes; 64 KiB costs at most ~20 ms.
RELAXED_MAX_BYTES = 64 * 1024
# Where a route needs an authenticated caller, the principal it resolved before the body was read.
AUTHENTICATED = "qualgent.authenticated"


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
            if b"\\u0000" in body and (where := _nul_at(self._json, ())) is not None:
                # PostgreSQL cannot store NUL in text: refuse it here, for every route, rather than fail
                # in a query (a 500 there, a stored value on SQLite).
                raise NulInBody(where)
        return self._json


class NulInBody(Unprocessable, HTTPException):  # type: ignore[misc]
    """A string of the JSON body holds NUL: 422 naming the field. An HTTPException too, so that FastAPI,
    which reads the body, passes it on as it is instead of answering 400."""

    def __init__(self, where: tuple[str, ...]) -> None:
        # Not the parents' __init__s: each would call the other's with its own arguments.
        Exception.__init__(self, "The request has invalid values; see details.")
        self.message = self.detail = "The request has invalid values; see details."
        self.details = [{"field": ".".join(where) or "body", "issue": "must not contain NUL characters"}]
        self.headers = None


def _nul_at(value: Any, path: tuple[str, ...]) -> tuple[str, ...] | None:
    """Where the first string holding NUL is, if any."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return (*path, key.replace("\x00", ""))
            if (found := _nul_at(item, (*path, key))) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _nul_at(item, (*path, str(index)))) is not None:
                return found
    return None


Authenticator = Callable[[Request], Awaitable[Any]]


def authenticates(fn: Authenticator) -> Authenticator:
    """Mark a dependency that authenticates the caller (API key, agent token) from the request alone.

    FastAPI reads and parses a route's body before it resolves any dependency, so an unauthenticated
    caller could make the server read and parse a body (and retry it leniently) for nothing. A
    ``LenientJSONRoute`` whose dependencies include a marked one runs it first, before the body is
    read, and the dependency then answers with that result (``authenticated_before``).
    """
    fn.__qualgent_authenticates__ = True  # type: ignore[attr-defined]
    return fn


def authenticated_before(request: Request) -> Any | None:
    """The principal the route resolved before reading the body, if it did."""
    return request.scope.get("state", {}).get(AUTHENTICATED)


def _authenticator(dependant: Dependant) -> Authenticator | None:
    for dep in dependant.dependencies:
        if getattr(dep.call, "__qualgent_authenticates__", False):
            return cast(Authenticator, dep.call)
        found = _authenticator(dep)
        if found is not None:
            return found
    return None


class LenientJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        authenticate = _authenticator(self.dependant)

        async def lenient_handler(request: Request) -> Response:
            lenient = LenientJSONRequest(request.scope, request.receive)
            if authenticate is not None:
                lenient.scope.setdefault("state", {})[AUTHENTICATED] = await authenticate(lenient)
            return await handler(lenient)

        return lenient_handler
