"""Errors on dashboard pages: a page for a browser, a redirect to sign-in, JSON for everyone else."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from qualgent.errors import QualgentError, request_id
from qualgent.web.templating import render

# Paths the dashboard serves; errors elsewhere (the API) are always JSON.
PAGE_PREFIXES = ("/sign-in", "/sign-out", "/test-runs", "/apps", "/test-cases", "/devices", "/settings")


class SignInRequired(QualgentError):
    status_code = 401
    code = "sign_in_required"


def is_page(request: Request) -> bool:
    path = request.url.path
    return path == "/" or any(path == p or path.startswith(p + "/") for p in PAGE_PREFIXES)


def wants_html(request: Request) -> bool:
    return is_page(request) and "text/html" in request.headers.get("accept", "")


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a path on this server only (never //host or a scheme)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path or len(path) > 2000:
        return "/test-runs"
    return path


def render_error_page(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: list[Any] | None,
    headers: dict[str, str] | None,
) -> Response | None:
    if not wants_html(request):
        return None
    if code == SignInRequired.code and request.method in ("GET", "HEAD"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/sign-in?" + urlencode({"next": safe_next(target)}), status_code=303)
    response = render(
        request,
        "error.html",
        {
            "status": status,
            "code": code,
            "message": message,
            "details": details or [],
            "request_id": request_id(request),
            "user": None,
        },
        status_code=status,
    )
    if headers:
        response.headers.update(headers)
    return response
