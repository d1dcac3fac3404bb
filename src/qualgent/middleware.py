"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on every request)."""

from __future__ import annotations

import json
import secrets

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestContextMiddleware:
    """Gives each request an ID and adds it, and the rate-limit headers, to the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["request_id"] = "req_" + secrets.token_hex(8)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = state["request_id"]
                for name, value in (state.get("rate_limit_headers") or {}).items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuses request bodies over ``limit`` bytes with 413, except on paths that stream uploads."""

    def __init__(self, app: ASGIApp, limit: int, exempt_prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        has_body = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.limit:
                    await self._refuse(scope, send)
                    return
                has_body = value != b"0"
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:
            # Nothing to count (a GET, most of the traffic): no wrappers around receive and send.
            await self.app(scope, receive, send)
            return

        seen = 0
        started = False
        too_large = False

        async def counted_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
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
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        state = scope.setdefault("state", {})
        body = json.dumps(
            {
                "success": False,
                "error": {
                    "code": "payload_too_large",
                    "message": f"The request body exceeds {self.limit} bytes.",
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
                    (b"x-request-id", str(state.get("request_id", "")).encode()),
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
