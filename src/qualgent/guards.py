"""Refusals every request gets before any route sees it (pure ASGI).

- A NUL character in the path, the query string or a urlencoded form is 400: PostgreSQL cannot store
  one in text, so it would otherwise surface as a 500 wherever such a value reaches a query (JSON
  bodies are checked where they are parsed, ``lenient_json``).
- A request body that stalls (no byte for ``idle_seconds``) is answered 408 and ends: a client that
  stops sending mid-upload must not hold a connection and a staging file forever. The route sees
  the client as gone (``http.disconnect``) and discards what it received, as for a cut connection.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_FORM = b"application/x-www-form-urlencoded"


class _Refused(Exception):
    pass


class RequestGuardMiddleware:
    def __init__(self, app: ASGIApp, idle_seconds: float) -> None:
        self.app = app
        self.idle_seconds = idle_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            await _answer(scope, send, 400, "bad_request", "NUL characters (%00) are not accepted in URLs.")
            return
        has_body = False
        form = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                has_body = has_body or value != b"0"
            elif name == b"transfer-encoding":
                has_body = True
            elif name == b"content-type":
                form = value.split(b";", 1)[0].strip().lower() == _FORM
        if not has_body:
            await self.app(scope, receive, send)
            return

        idle = self.idle_seconds
        complete = False
        refusal: tuple[int, str, str] | None = None
        started = False
        tail = b""

        async def guarded_receive() -> Message:
            nonlocal complete, refusal, tail
            if complete:
                return await receive()
            try:
                async with asyncio.timeout(idle):
                    message = await receive()
            except TimeoutError:
                refusal = (408, "request_timeout", f"No part of the request body arrived for {idle:g} seconds.")
                complete = True
                # The route sees a client that went away: it discards what it received.
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                complete = not message.get("more_body", False)
                if form:
                    body = tail + message.get("body", b"")
                    if b"%00" in body:
                        refusal = (400, "bad_request", "NUL characters (%00) are not accepted in form fields.")
                        raise _Refused
                    tail = body[-2:]
            else:
                complete = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refusal is not None:
                return  # whatever the route answers to the refusal, the answer is ours
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if refusal is None:
                raise
        if refusal is not None and not started:
            await _answer(scope, send, *refusal)


async def _answer(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    state = scope.setdefault("state", {})
    body = json.dumps(
        {"success": False, "error": {"code": code, "message": message, "request_id": state.get("request_id", "")}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
