"""The OpenAPI document: how each route authenticates and every answer it gives, errors included.

FastAPI documents the success of each route and a 422 in its own ``{"detail": …}`` shape, which this
server never sends. Here the document is completed from what the routes are: the credential a route
resolves (API key, agent token, a pre-signed link, none) gives its security requirement and its
401/403/429; a path parameter, a 404; a body, 408/413/422; every route, 400 (NUL in a URL, a malformed
body) and 503 (the database away for a moment). Errors a route raises for its own reasons (409, 412,
416, …) are declared on the route with ``responses=errors(...)``. Every error has the real body.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

API_KEY = "ApiKey"
AGENT_TOKEN = "AgentToken"

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    API_KEY: {
        "type": "apiKey",
        "in": "header",
        "name": "X-Api-Key",
        "description": "An API key, `qg_…` (`qualgent admin create-key` or the dashboard's Developer page). A "
        "read-only key is refused (403) by every route that changes something.",
    },
    AGENT_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "An agent token, `qga_…` (`qualgent admin create-agent`). It opens the `/v1/agent/` "
        "routes only, and no API key opens them.",
    },
}

# For ``openapi_extra``: a route that authenticates inside itself rather than through a dependency
# (the hot status route), and routes that take no credential (pre-signed links carry a signature).
API_KEY_SECURITY: dict[str, Any] = {"security": [{API_KEY: []}]}
NO_SECURITY: dict[str, Any] = {"security": []}


class ErrorDetail(BaseModel):
    code: str = Field(description="What went wrong, in snake_case (e.g. `not_found`, `insufficient_scope`).")
    message: str = Field(description="A sentence a person can act on.")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="Which fields or entries were wrong (`field`, `issue`, `index`, …), when known."
    )
    request_id: str = Field(description="The `X-Request-Id` of the answer, to quote in a report.")


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx answer."""

    success: Literal[False]
    error: ErrorDetail


ERROR_SCHEMA_REF = {"$ref": "#/components/schemas/ErrorBody"}


def _without_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def omittable(description: str | None = None) -> Any:
    """The default of a PATCH field that may be left out but not sent as null (the service refuses null
    with 422): typed ``X | SkipJsonSchema[None]``, so the document does not offer null, nor a null default."""
    return Field(default=None, description=description, json_schema_extra=_without_default)


# What each status means wherever it is documented without a description of the route's own.
DESCRIPTIONS = {
    400: "Malformed: not valid JSON, a required parameter missing or of the wrong type, a malformed header, "
    "or NUL in the URL.",
    401: "No valid credential: the key (or token) is missing, unknown or revoked.",
    403: "The API key is read-only (`insufficient_scope`).",
    404: "Unknown, deleted, or another organisation's.",
    408: "The request body stalled (`request_timeout`).",
    409: "Conflict with the resource's current state.",
    413: "The body is over the size limit.",
    415: "The body's Content-Type is not one this route takes.",
    416: "The Range cannot be satisfied.",
    422: "Well-formed but invalid: a value out of range, of the wrong enum, an unknown referenced ID; "
    "`details` names each field.",
    429: "Rate limited (per key), or too many failed authentications from this address; wait `Retry-After` seconds.",
    503: "The database is unavailable for a moment (`database_unavailable`); retry after `Retry-After` seconds.",
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds to wait (at least 1).",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": {
        "description": "Requests allowed per second for this key.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    "X-RateLimit-Remaining": {
        "description": "Requests left in the current window.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-RateLimit-Reset": {
        "description": "Seconds until the window resets.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    },
}
_SAFE_METHODS = frozenset({"get", "head", "options"})


def errors(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route's own errors: ``errors(413, (409, "The run moved on."))``."""
    out: dict[int | str, dict[str, Any]] = {}
    for entry in statuses:
        status, description = entry if isinstance(entry, tuple) else (entry, DESCRIPTIONS[entry])
        out[status] = {"description": description}
    return out


def install(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["ErrorBody"] = _error_body_schema(components["schemas"])
    components["securitySchemes"] = SECURITY_SCHEMES
    credentials = dict(_credentials(app.routes))
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            _complete(path, method, operation, credentials.get((method.upper(), path)))
    # FastAPI's own validation error shapes are never sent.
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    return schema


def _error_body_schema(schemas: dict[str, Any]) -> dict[str, Any]:
    generated = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in generated.pop("$defs", {}).items():
        schemas[name] = definition
    return generated


def _complete(path: str, method: str, operation: dict[str, Any], credential: str | None) -> None:
    security = operation.get("security")
    if security is None:
        security = [{credential: []}] if credential else []
        operation["security"] = security
    schemes = {name for requirement in security for name in requirement}
    responses: dict[str, Any] = operation.setdefault("responses", {})
    parameters = operation.get("parameters", [])
    statuses = {400, 503}
    if schemes:
        statuses |= {401, 429}
    if API_KEY in schemes and method not in _SAFE_METHODS:
        statuses.add(403)
    if any(p["in"] == "path" for p in parameters):
        statuses.add(404)
    if "requestBody" in operation:
        statuses |= {408, 413}
    if parameters or "requestBody" in operation:
        statuses.add(422)
    for code in statuses:
        responses.setdefault(str(code), {"description": DESCRIPTIONS[code]})
    for key, response in responses.items():
        code = int(key)
        if code < 400:
            if API_KEY in schemes:
                response.setdefault("headers", {}).update(_RATE_LIMIT_HEADERS)
            continue
        if code == 422 and "Validation Error" in response.get("description", ""):
            response["description"] = DESCRIPTIONS[422]
        if method != "head":
            response["content"] = {"application/json": {"schema": ERROR_SCHEMA_REF}}
        else:
            response.pop("content", None)
        if code in (429, 503):
            response.setdefault("headers", {}).update(_RETRY_AFTER)


def _credentials(routes: Iterable[Any]) -> Iterator[tuple[tuple[str, str], str]]:
    """(method, path) → the security scheme of each route that resolves a credential in a dependency."""
    from qualgent.agents.endpoints import get_agent
    from qualgent.deps import get_principal

    by_call = {get_principal: API_KEY, get_agent: AGENT_TOKEN}
    for route in _flatten(routes):
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            continue
        scheme = _scheme(dependant, by_call)
        if scheme is None:
            continue
        for method in getattr(route, "methods", None) or ():
            yield (method, str(route.path_format)), scheme


def _scheme(dependant: Dependant, by_call: dict[Any, str]) -> str | None:
    for dependency in dependant.dependencies:
        if dependency.call in by_call:
            return by_call[dependency.call]
        found = _scheme(dependency, by_call)
        if found is not None:
            return found
    return None


def _flatten(routes: Iterable[Any]) -> Iterator[Any]:
    for route in routes:
        # Recent FastAPI keeps an included router as one entry; its effective routes are inside.
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):
            yield from contexts()
        else:
            yield route
