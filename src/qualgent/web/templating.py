"""Jinja templates of the dashboard, their filters, and the headers every page carries."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import YamlLexer
from starlette.responses import Response

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))

# Pages load scripts, styles and images from this server only: the service runs on closed networks, and
# a page that cannot reach another host cannot leak to one either.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

TERMINAL = frozenset({"passed", "failed", "cancelled"})


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _duration_ms(ms: int | None) -> str:
    if ms is None:
        return "—"
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _between(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "—"
    return _duration_ms(int((end - start).total_seconds() * 1000))


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def highlight_flow(flow: str) -> Markup:
    """A flow's YAML as highlighted HTML (Pygments escapes the text itself)."""
    return Markup(highlight(flow, YamlLexer(), HtmlFormatter(cssclass="highlight", wrapcode=True)))


templates.env.filters["when"] = _when
templates.env.filters["duration_ms"] = _duration_ms
templates.env.filters["size"] = _size
templates.env.globals["between"] = _between
templates.env.globals["TERMINAL"] = TERMINAL


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response
