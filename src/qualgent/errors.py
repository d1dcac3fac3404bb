"""Domain errors and the one place that turns any error into the documented JSON body.

Body of every 4xx/5xx: ``{"success": false, "error": {"code", "message", "details"?, "request_id"}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger("qualgent")


class QualgentError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details
        self.headers = headers


class BadRequest(QualgentError):
    status_code = 400
    code = "bad_request"


class Unauthorized(QualgentError):
    status_code = 401
    code = "unauthorized"


class Forbidden(QualgentError):
    status_code = 403
    code = "forbidden"


class NotFound(QualgentError):
    status_code = 404
    code = "not_found"


class Conflict(QualgentError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(QualgentError):
    status_code = 413
    code = "payload_too_large"


class Unprocessable(QualgentError):
    status_code = 422
    code = "invalid_request"


class RangeNotSatisfiable(QualgentError):
    status_code = 416
    code = "range_not_satisfiable"


class RateLimited(QualgentError):
    status_code = 429
    code = "rate_limited"


class DatabaseUnavailable(QualgentError):
    """The database could not be reached, or the connection was lost midway (a restart, a failover, a
    terminated backend): nothing was committed, and the same request may succeed in a moment."""

    status_code = 503
    code = "database_unavailable"

    def __init__(self, message: str = "The database is unavailable for a moment; retry after Retry-After.") -> None:
        super().__init__(message, headers={"Retry-After": "1"})


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid_request",
    429: "rate_limited",
}


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """The methods of the resource at this path. Starlette's 405 names only the methods of the first
    route whose path matched, and several routes share a path here (GET, PATCH and DELETE of a test case).
    Where a literal path and a template both match (``/v1/test-cases/run`` and ``/v1/test-cases/{id}``),
    the literal one is the resource: a GET there would look for a test case called "run" and find none."""
    by_specificity: dict[int, set[str]] = {}
    # Without the parameters of the route that refused the method: a match adds its own to those.
    scope = {**request.scope, "path_params": {}}
    for route in _flatten(request.app.router.routes):
        methods = getattr(route, "methods", None)
        if not methods:
            continue
        match, child = route.matches(scope)
        if match is not Match.NONE:  # PARTIAL: the path matched, the method did not
            by_specificity.setdefault(len(child.get("path_params", {})), set()).update(methods)
    allowed = by_specificity[min(by_specificity)] if by_specificity else set()
    return [method for method in _METHODS if method in allowed]


def _flatten(routes: Iterable[Any]) -> Iterator[Any]:
    for route in routes:
        # Recent FastAPI keeps an included router as one entry; its effective routes are inside.
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):
            yield from contexts()
        else:
            yield route


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error)
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def error_body(request: Request, code: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    error["request_id"] = request_id(request)
    return {"success": False, "error": error}


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(request, code, message, details), status_code=status, headers=headers)


def _validation_details(exc: RequestValidationError) -> tuple[int, list[dict[str, Any]]]:
    """400 when the body is malformed or a required parameter is missing; 422 when a value is invalid."""
    status = 422
    details = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        kind = err.get("type", "")
        if kind in ("missing", "json_invalid", "model_attributes_type", "dict_type") or (
            kind.endswith("_type") and loc == ["body"]
        ):
            status = 400
        if kind == "json_invalid":
            details.append({"field": "body", "issue": f"invalid JSON near character {loc[-1]}"})
            continue
        details.append({"field": ".".join(loc[1:] if len(loc) > 1 else loc), "issue": err.get("msg", "")})
    return status, details


# Renders an error as a page for a person's browser, or returns None to answer with the JSON body.
# The dashboard (web/errors.py) provides it, so its pages fail as pages and the API as JSON.
HtmlErrorRenderer = Callable[[Request, int, str, str, list[Any] | None, dict[str, str] | None], Response | None]


def install_error_handlers(app: FastAPI, html: HtmlErrorRenderer | None = None) -> None:
    def respond(
        request: Request,
        status: int,
        code: str,
        message: str,
        details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        page = html(request, status, code, message, details, headers) if html is not None else None
        return page if page is not None else error_response(request, status, code, message, details, headers)

    @app.exception_handler(QualgentError)
    async def _domain(request: Request, exc: QualgentError) -> Response:
        return respond(request, exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        status, details = _validation_details(exc)
        if status == 400:
            message = "The request is missing a required parameter or is not valid JSON; see details."
            code = "bad_request"
        else:
            message = "The request has invalid values; see details."
            code = "invalid_request"
        return respond(request, status, code, message, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = str(exc.detail) if exc.detail else code.replace("_", " ")
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 404 and message == "Not Found":
            message = f"No route {request.method} {request.url.path}; see /docs for the API."
        if exc.status_code == 405:
            allowed = allowed_methods(request)
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
            message = f"{request.method} is not a method of {request.url.path}; it takes {', '.join(allowed)}."
        return respond(request, exc.status_code, code, message, headers=headers)

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> Response:
        from qualgent.db.dialect import database_unavailable

        if not database_unavailable(exc):
            return _unexpected_response(request)
        # A read whose connection was lost is sent once more (middleware.RequestContextMiddleware);
        # a write is not: whether it committed cannot be known here, so the client decides.
        request.scope.setdefault("state", {})["retry_read"] = True
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, _first_line(exc))
        error = DatabaseUnavailable()
        return respond(request, error.status_code, error.code, error.message, headers=error.headers)

    def _unexpected_response(request: Request) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            request,
            500,
            "internal_error",
            "Something went wrong on our side; retry, and report the request_id if it persists.",
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            request,
            500,
            "internal_error",
            "Something went wrong on our side; retry, and report the request_id if it persists.",
        )
