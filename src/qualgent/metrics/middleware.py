"""Request durations by route template: a pure ASGI middleware, outside the others, so what it times
is the whole answer. A stream (Server-Sent Events) is timed to its first byte: it stays open for as
long as its client listens, and that time says nothing of the server's speed."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qualgent.metrics.instruments import REQUEST_SECONDS

UNMATCHED = "<unmatched>"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, fixed: dict[str, str] | None = None) -> None:
        self.app = app
        # Path prefixes served before routing (the hot status route) and their templates.
        self.fixed = fixed or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        answered: float | None = None  # when a stream's head was sent

        async def send_status(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                content_type = dict(message.get("headers") or []).get(b"content-type", b"")
                if content_type.startswith(b"text/event-stream"):
                    answered = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            ended = answered if answered is not None else time.perf_counter()
            REQUEST_SECONDS.labels(scope["method"], self._route(scope), str(status)).observe(ended - started)

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
        for prefix, template in self.fixed.items():
            if scope["path"].startswith(prefix):
                return template
        # Never the raw path: IDs in it would make a series per resource.
        return UNMATCHED
