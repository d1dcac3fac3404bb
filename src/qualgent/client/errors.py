"""Typed errors of the client: each carries the server's error code, message, details and request ID."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from qualgent.client.models import Run


class QualgentClientError(Exception):
    """Base class of every error the client raises."""


class ConfigurationError(QualgentClientError):
    """The client is missing a setting (no API key, no server URL)."""


class TransportError(QualgentClientError):
    """The server could not be reached, or the connection broke, and retries were spent."""


class WaitTimeout(QualgentClientError):
    """Runs were still unfinished when the wait's timeout came; ``runs`` holds their last known state."""

    def __init__(self, runs: list[Run], timeout: float) -> None:
        super().__init__(f"{sum(not r.finished for r in runs)} run(s) unfinished after {timeout:g} s")
        self.runs = runs
        self.timeout = timeout


class APIError(QualgentClientError):
    """The server answered with an error status; ``code`` and ``message`` are the server's."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        details: list[Any] | None = None,
        request_id: str | None = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details or []
        self.request_id = request_id
        if headers is None:
            import httpx  # loaded already by whichever client sent the request; the CLI imports this module first

            headers = httpx.Headers()
        self.headers = headers


class BadRequestError(APIError):
    """400: the request was malformed (a field missing, not JSON, …)."""


class AuthenticationError(APIError):
    """401: no API key, or an invalid or revoked one."""


class PermissionDeniedError(APIError):
    """403: the key lacks the scope, or a signed link is invalid."""


class NotFoundError(APIError):
    """404: no such object in this organisation."""


class ConflictError(APIError):
    """409: the request conflicts with the current state (e.g. a resumable upload's offset)."""


class PayloadTooLargeError(APIError):
    """413: the upload or body is larger than the server accepts."""


class ValidationError(APIError):
    """422: a value was refused (unknown test case, device, idempotency key reused with another body, …)."""


class RateLimitError(APIError):
    """429: the rate limit was exceeded and the client's patience for waiting was spent."""


class ServerError(APIError):
    """5xx: the server failed, and retries (when the call could be retried) were spent."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitError,
}


def error_from_response(response: httpx.Response) -> APIError:
    """The typed error for an error response, from the documented body
    ``{"success": false, "error": {"code", "message", "details"?, "request_id"}}`` when there is one."""
    code, message, details, request_id = f"http_{response.status_code}", response.reason_phrase, None, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        details = error.get("details") if isinstance(error.get("details"), list) else None
        request_id = error.get("request_id")
    elif response.text:
        message = response.text[:500]
    request_id = request_id or response.headers.get("x-request-id")
    cls = _BY_STATUS.get(response.status_code, ServerError if response.status_code >= 500 else APIError)
    return cls(response.status_code, code, message, details=details, request_id=request_id, headers=response.headers)
