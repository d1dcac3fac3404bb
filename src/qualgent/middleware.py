"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on every request)."""

from __future__ import annotations

import itertools
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qualgent.errors import QualgentError, error_response
from qualgent.logs import REQUEST_ID

# A hot route's handler: the request and the last path segment (the resource's ID).
HotHandler = Callable[[Request, str], Awaitable[Response]]


class RequestContextMiddleware:
    """Gives each request an ID and adds it, and the rate-limit headers, to the response.

    IDs are a random per-process prefix and a counter: unique, cheap (no system call per request),
    and they need not be secret, only distinct in the logs.

    A read (GET, HEAD) whose database connection was lost midway (its answer would be a 503 marked
    ``retry_read`` by the error handler) is served once more instead, on a fresh connection: it
    changed nothing, so sending it again is safe. Writes keep their 503.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._prefix = "req_" + secrets.token_hex(3)
        self._counter = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        request_id = state["request_id"] = f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFF:010x}"
        REQUEST_ID.set(request_id)  # for the log lines of this request (logs.py)
        may_retry = scope["method"] in ("GET", "HEAD")
        dropped = False

        async def send_with_headers(message: Message) -> None:
            nonlocal dropped
            if dropped:
                return  # the rest of an answer that is not sent
            if message["type"] == "http.response.start":
                if may_retry and message["status"] == 503 and state.pop("retry_read", False):
                    dropped = True
                    return
                # Raw header lists (lower-case names, as Starlette and uvicorn keep them) rather than
                # MutableHeaders: this runs on every response.
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode()))
                limits = state.get("rate_limit_headers")
                if limits:
                    present = {name for name, _ in headers}
                    for name, value in limits.items():
                        raw = name.lower().encode()
                        if raw not in present:
                            headers.append((raw, value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
        if dropped:
            may_retry = dropped = False
            await self.app(scope, _replayed(receive), send_with_headers)


def _replayed(receive: Receive) -> Receive:
    """``receive`` for a read served a second time: its (empty) body again, then the connection's events."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return again


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuses request bodies over ``limit`` bytes with 413, except on paths that stream uploads.

    ``larger`` names a few routes that take more: (method, full-match path pattern, limit).
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        exempt_prefixes: tuple[str, ...],
        larger: tuple[tuple[str, str, int], ...] = (),
    ) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt_prefixes
        self.larger = tuple((method, re.compile(pattern), size) for method, pattern, size in larger)

    def _limit_for(self, scope: Scope) -> int:
        for method, pattern, size in self.larger:
            if scope["method"] == method and pattern.fullmatch(scope["path"]):
                return size
        return self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        has_body = False
        limit = self.limit
        for name, value in scope["headers"]:
            if name == b"content-length":
                has_body = value != b"0"
                if has_body and self.larger:
                    limit = self._limit_for(scope)
                if value.isdigit() and int(value) > limit:
                    await self._refuse(scope, send, limit)
                    return
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:
            # Nothing to count (a GET, most of the traffic): no wrappers around receive and send.
            await self.app(scope, receive, send)
            return
        if self.larger:
            limit = self._limit_for(scope)

        seen = 0
        started = False
        too_large = False

        async def counted_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            # The app may catch the overflow (FastAPI turns any error while reading the body into
            # a 400); whatever it answers then, the answer is our 413.
            if too_large:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracking_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            await self._refuse(scope, send, limit)

    async def _refuse(self, scope: Scope, send: Send, limit: int) -> None:
        state = scope.setdefault("state", {})
        body = json.dumps(
            {
                "success": False,
                "error": {
                    "code": "payload_too_large",
                    "message": f"The request body exceeds {limit} bytes.",
                    "request_id": state.get("request_id", ""),
                },
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class TusHeaderMiddleware:
    """Adds ``Tus-Resumable: 1.0.0`` to every response under ``prefix`` (errors included), as tus requires."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Tus-Resumable"] = "1.0.0"
            await send(message)

        await self.app(scope, receive, send_with_header)


class HotRoutesMiddleware:
    """Serves a few hot, read-only ``GET /prefix/{id}`` routes straight from ASGI.

    FastAPI's route matching, dependency solving and response wrappers cost about twice the work of
    a run's status itself (its lookup, authentication and rate limit), and CI pipelines poll that
    route more than all the others together. Its FastAPI route stays registered, for the OpenAPI
    document, and calls the same function; this only takes the machinery off the hot path. Errors
    take the same JSON body as everywhere else, and the middleware outside this one still adds the
    request ID and rate-limit headers.
    """

    def __init__(self, app: ASGIApp, routes: Mapping[str, HotHandler]) -> None:
        self.app = app
        self.routes = tuple(routes.items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            for prefix, handler in self.routes:
                if path.startswith(prefix):
                    resource_id = path[len(prefix) :]
                    # Anything else under the prefix (an empty or a nested path) is FastAPI's to answer.
                    if resource_id and "/" not in resource_id:
                        request = Request(scope, receive)
                        try:
                            response = await handler(request, resource_id)
                        except QualgentError as exc:
                            response = error_response(
                                request, exc.status_code, exc.code, exc.message, exc.details, exc.headers
                            )
                        await response(scope, receive, send)
                        return
        await self.app(scope, receive, send)
