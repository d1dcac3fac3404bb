"""What the sync and async clients share: the retry policy, rate-limit pacing, request building and
response parsing. The clients only differ in how they send a request and sleep."""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
from pydantic import BaseModel, TypeAdapter

from qualgent import __version__
from qualgent.client.config import resolve
from qualgent.client.errors import ConfigurationError, error_from_response
from qualgent.client.models import QueuedJob

M = TypeVar("M", bound=BaseModel)

# Methods a server may receive twice without harm; a POST joins them when it carries an Idempotency-Key.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Run IDs per `GET /v1/jobs/list?ids=` request: ~31 characters each keeps the URL near 6 KB, well under
# the request-line limits of common servers and proxies (8 KB).
IDS_PER_POLL = 200


@dataclass
class RetryPolicy:
    """How hard the client tries before it raises."""

    retries: int = 4
    """Retries of an idempotent call after a network error or a 5xx (a refused connection is always
    retried: the server never saw the request)."""
    backoff: float = 0.5
    """First back-off in seconds; doubles per retry, with jitter, up to ``max_backoff``."""
    max_backoff: float = 8.0
    rate_limit_patience: float = 600.0
    """Seconds one call may spend waiting out 429s (by their Retry-After) before RateLimitError."""
    pace: bool = True
    """When a response says ``X-RateLimit-Remaining: 0``, wait for ``X-RateLimit-Reset`` before the next
    request instead of spending one on a 429."""

    def backoff_for(self, attempt: int) -> float:
        base: float = min(self.max_backoff, self.backoff * (2**attempt))
        return base * (0.5 + random.random() / 2)  # jitter, not security


@dataclass
class Pacer:
    """Remembers when the key's rate-limit window allows the next request."""

    not_before: float = 0.0
    rate_limited: int = field(default=0)  # 429s seen, for reporting

    def observe(self, response: httpx.Response) -> None:
        remaining = response.headers.get("x-ratelimit-remaining")
        if remaining is not None and remaining.strip() == "0":
            reset = _float(response.headers.get("x-ratelimit-reset"), 1.0)
            # The server's window moves each second; a reset of 0 still means "not this instant".
            self.not_before = max(self.not_before, time.monotonic() + max(reset, 0.25))

    def delay(self) -> float:
        return max(0.0, self.not_before - time.monotonic())


def retry_after(response: httpx.Response) -> float:
    return max(0.05, _float(response.headers.get("retry-after"), 1.0))


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


def new_idempotency_key() -> str:
    return f"qgc-{uuid.uuid4().hex}"


def make_headers(api_key: str | None) -> dict[str, str]:
    if not api_key:
        raise ConfigurationError(
            "No API key: pass api_key=, set QUALGENT_API_KEY, or put it in a .env file "
            "(create one with `qualgent admin create-key`)."
        )
    return {"X-Api-Key": api_key, "User-Agent": f"qualgent-client/{__version__}"}


def settings(api_key: str | None, base_url: str | None) -> tuple[str, str]:
    key, url = resolve(api_key, base_url)
    make_headers(key)
    assert key is not None
    return key, url


def parse(model: type[M], response: httpx.Response) -> M:
    return model.model_validate_json(response.content)


def parse_list(model: type[M], data: Any) -> list[M]:
    return TypeAdapter(list[model]).validate_python(data)  # type: ignore[valid-type]


def next_cursor(response: httpx.Response) -> str | None:
    """The cursor of the ``Link: <…>; rel="next"`` header. Only the cursor is taken, so a server whose
    public URL differs from the one the client uses still pages correctly."""
    link = response.links.get("next")
    if not link or "url" not in link:
        return None
    values = parse_qs(urlsplit(link["url"]).query).get("cursor")
    return values[0] if values else None


def with_env(jobs: list[dict[str, Any]], env: Mapping[str, str] | None) -> list[dict[str, Any]]:
    """The jobs of a run request, ``env`` given to each job that has none of its own."""
    if not env:
        return jobs
    return [job if job.get("env") is not None else {**job, "env": dict(env)} for job in jobs]


def queued(response: httpx.Response) -> list[QueuedJob]:
    """The jobs of a run / run-all answer, each with the answer's ``batch_id`` (None from servers
    before batches)."""
    body = response.json()
    jobs = parse_list(QueuedJob, body["jobs"])
    for job in jobs:
        job.batch_id = body.get("batch_id")
    return jobs


def run_body(
    jobs: list[dict[str, Any]],
    env: Mapping[str, str] | None,
    retries: int | None,
    group: str | None,
    cancel_previous: bool,
) -> dict[str, Any]:
    """A run request's body; options left unset are not sent, so an older server takes it as before."""
    body: dict[str, Any] = {"jobs": with_env(jobs, env)}
    if retries is not None:
        body["retries"] = retries
    if group is not None:
        body["group"] = group
    if cancel_previous:
        body["cancel_previous"] = True
    return body


def chunks(ids: list[str], size: int = IDS_PER_POLL) -> Iterable[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def should_retry(
    policy: RetryPolicy,
    response: httpx.Response | None,
    exc: Exception | None,
    retryable: bool,
    attempt: int,
    rate_limit_waited: float,
) -> tuple[float | None, bool]:
    """(seconds to wait before retrying, or None to stop; whether the wait was a rate-limit wait)."""
    if exc is not None:
        # A refused or timed-out connection never reached the server: safe for any method.
        never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        if (retryable or never_sent) and attempt < policy.retries:
            return policy.backoff_for(attempt), False
        return None, False
    assert response is not None
    if response.status_code == 429:
        # A rate-limited request was refused before it did anything: retrying is safe for any method.
        wait = retry_after(response)
        if rate_limit_waited + wait <= policy.rate_limit_patience:
            return wait, True
        return None, False
    if response.status_code >= 500 and retryable and attempt < policy.retries:
        return policy.backoff_for(attempt), False
    return None, False


def check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise error_from_response(response)
    return response


class ProgressReader:
    """A binary file that reports how far it has been read, for upload progress bars. httpx reads the
    multipart file part through ``read``; ``seek``/``tell``/``fileno`` keep its length detection and its
    rewind-on-retry working."""

    def __init__(self, file: IO[bytes], on_progress: Callable[[int], None] | None) -> None:
        self._file = file
        self._on_progress = on_progress

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if self._on_progress is not None:
            self._on_progress(self._file.tell())
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._file.seek(offset, whence)
        if self._on_progress is not None:
            self._on_progress(position)
        return position

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()


def upload_fields(app_name: str, version: str, os_name: str | None) -> dict[str, str]:
    data = {"app_name": app_name, "version": version}
    if os_name:
        data["os"] = os_name
    return data


def open_upload(path: Path) -> IO[bytes]:
    if not path.is_file():
        raise ConfigurationError(f"{path}: no such file")
    return path.open("rb")
