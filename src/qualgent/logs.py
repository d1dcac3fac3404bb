"""The server's log format: uvicorn's text lines (the default), or one JSON object per line
(``QUALGENT_LOG_FORMAT=json``) for log collectors, each line of a request carrying its ``request_id``
(the ``X-Request-Id`` of its answer)."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# Set by RequestContextMiddleware for the request being answered (each request runs in a task of its
# own, so the value is the request's own).
REQUEST_ID: ContextVar[str | None] = ContextVar("qualgent_request_id", default=None)

# The loggers uvicorn configures with handlers of their own; everything else (qualgent.*) reaches the root.
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access")


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id"?, "exception"?, …}`` on one line. An access
    line also has ``client``, ``method``, ``path`` and ``status``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _version, status = record.args
            line.update(client=client, method=method, path=path, status=status)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(log_format: str) -> None:
    """Switch this process's log lines to JSON (``json``); ``text`` leaves them as they are. Called when
    the app is built, after uvicorn configured its loggers (in each worker)."""
    if log_format != "json":
        return
    formatter = JsonFormatter()
    for name in _UVICORN:
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(formatter)
    root = logging.getLogger()
    if not any(getattr(h, "_qualgent_json", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._qualgent_json = True  # type: ignore[attr-defined]
        root.addHandler(handler)  # the root's level stays: warnings and errors, as in text
    for handler in root.handlers:
        handler.setFormatter(formatter)
