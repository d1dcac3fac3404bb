"""The agent's HTTP client for the server's agent routes: every request goes through one retrying helper.

What a request may be retried for depends on what it is: a report about a run (steps, screenshots,
artifacts, heartbeats, files, the finish) is retried for as long as the run's lease allows, since an
answer the agent gives up on costs the run; registration and claims are retried by their callers'
own loops. A 409 is never retried: the run moved on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from qualgent.agents.schemas import (
    AppPayload,
    ClaimOut,
    DeviceIn,
    FinishManyOut,
    FinishOut,
    FinishResult,
    HeartbeatOut,
    RegisterOut,
    RunPayload,
)
from qualgent.drivers.base import Artifact

log = logging.getLogger("qualgent.agent")

# Seconds an artifact upload (a video of up to hundreds of megabytes) may take.
UPLOAD_TIMEOUT = 600.0
# Answers worth another try: the server was busy, restarting, or could not reach its database.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class RunMovedOn(Exception):
    """The server says the run moved on (409): drop it without reporting further."""


class LeaseLost(Exception):
    """The run's lease ran out before the server could be told anything: the server requeues the run."""


class Lease:
    """The agent's own, cautious view of a run's lease: until when its reports are worth retrying.

    The server moves the lease on at every heartbeat (and step report with progress) to its own time
    plus ``seconds``; the agent counts from when it sent the request that renewed it, which is earlier,
    so its view never outlasts the server's. Monotonic time: the two clocks need not agree.
    """

    def __init__(self, seconds: float, *, margin: float = 1.0) -> None:
        self.seconds = seconds
        # The claim set the lease a moment before its answer arrived; count from a little earlier.
        self.expires = time.monotonic() + max(0.0, seconds - min(margin, seconds / 10))

    def renew(self, sent_at: float) -> None:
        self.expires = max(self.expires, sent_at + self.seconds)

    def deadline(self) -> float:
        return self.expires

    def left(self) -> float:
        return self.expires - time.monotonic()


@dataclass(frozen=True)
class Retry:
    """How long one request is retried: until ``until()`` (a monotonic time, read again before each
    wait, since a lease moves on) or for ``attempts`` tries, whichever comes first."""

    until: Callable[[], float] | None = None
    attempts: int | None = None
    first_delay: float = 0.2
    max_delay: float = 2.0

    def delays(self) -> _Delays:
        return _Delays(self)


ONCE = Retry(attempts=1)
# What a call without a lease gets (a test calling one route, the registration): ~6 s of retries.
SHORT = Retry(attempts=6)


class _Delays:
    """Exponential back-off with jitter, within a Retry's bounds."""

    def __init__(self, retry: Retry) -> None:
        self.retry = retry
        self.tries = 0
        self.delay = retry.first_delay

    def remaining(self) -> float | None:
        return None if self.retry.until is None else self.retry.until() - time.monotonic()

    async def wait(self, at_least: float = 0.0) -> bool:
        """Sleep before the next try; False (no sleep) when no try is left."""
        self.tries += 1
        if self.retry.attempts is not None and self.tries >= self.retry.attempts:
            return False
        pause = max(at_least, self.delay * random.uniform(0.75, 1.25))
        remaining = self.remaining()
        if remaining is not None:
            if remaining <= 0:
                return False
            pause = min(pause, remaining)
        self.delay = min(self.delay * 2, self.retry.max_delay)
        await asyncio.sleep(pause)
        return True


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    return min(float(value), 30.0) if value.isdigit() else 0.0


def _moved_on(response: httpx.Response) -> RunMovedOn:
    try:
        message = response.json().get("error", {}).get("message", "run moved on")
    except ValueError:
        message = "run moved on"
    return RunMovedOn(message)


def artifact_name(name: str) -> str:
    """A name the server takes for an artifact (a safe file name): the last segment of ``name`` (a
    flow's ``startRecording: videos/login`` gives ``login.mp4``), other characters replaced by ``_``."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    safe = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]", "_", base)).lstrip(".")
    if len(safe) > 200:
        root, ext = os.path.splitext(safe)
        safe = root[: 200 - len(ext)] + ext if len(ext) < 20 else safe[:200]
    return safe or "artifact"


def _for_lease(lease: Lease | None) -> Retry:
    return SHORT if lease is None else Retry(until=lease.deadline)


class AgentClient:
    def __init__(self, server_url: str, token: str, *, timeout: float = 30) -> None:
        self.timeout = timeout
        self.http = httpx.AsyncClient(
            base_url=server_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=5),
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def request(
        self,
        method: str,
        url: str,
        retry: Retry,
        *,
        client: httpx.AsyncClient | None = None,
        wait: float | None = None,
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request, retrying network errors and answers in RETRYABLE_STATUS (after at least the
        answer's ``Retry-After``) as ``retry`` allows; ``wait``: seconds to wait for an answer. A 409 raises RunMovedOn at once; any other error
        answer raises httpx.HTTPStatusError; when no retry is left, the last error is raised.

        With ``stream``, the response's body is not read yet: the caller closes it.
        """
        http = client or self.http
        delays = retry.delays()
        while True:
            # A report never waits for its answer past the time it may be retried for: a server that
            # hangs must not hold it past the lease. (An explicit wait, an upload's, is kept.)
            seconds = wait if wait is not None else self.timeout
            remaining = delays.remaining()
            if wait is None and remaining is not None:
                seconds = min(seconds, max(remaining, 2.0))
            try:
                request = http.build_request(method, url, timeout=httpx.Timeout(seconds, connect=5), **kwargs)
                response = await http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if delays.tries == 0 and retry.attempts != 1:
                    log.warning("%s %s: %r; retrying", method, request.url.path, exc)
                if not await delays.wait():
                    raise
                continue
            if response.status_code < 400:
                return response
            if stream:
                await response.aread()
                await response.aclose()
            if response.status_code == 409:
                raise _moved_on(response)
            if response.status_code in RETRYABLE_STATUS:
                if delays.tries == 0 and retry.attempts != 1:
                    log.warning("%s %s: %s; retrying", method, request.url.path, response.status_code)
                if await delays.wait(_retry_after(response)):
                    continue
            response.raise_for_status()

    async def _post(self, path: str, body: dict[str, Any], retry: Retry, *, wait: float | None = None) -> Any:
        response = await self.request("POST", path, retry, json=body, wait=wait)
        return response.json()

    async def register(self, devices: list[DeviceIn]) -> RegisterOut:
        body = {"devices": [d.model_dump() for d in devices]}
        return RegisterOut.model_validate(await self._post("/v1/agent/register", body, SHORT))

    async def claim(self, device_ids: list[str], wait_seconds: float, max_runs: int = 1) -> list[RunPayload]:
        """Runs for these free devices (at most one each, ``max_runs`` in all); long-polls up to
        ``wait_seconds`` when none is ready. Tried once: the device loops retry."""
        data = await self._post(
            "/v1/agent/claim",
            {"device_ids": device_ids, "wait_seconds": wait_seconds, "max_runs": max_runs},
            ONCE,
            wait=wait_seconds + 15,
        )
        return ClaimOut.model_validate(data).runs

    async def heartbeat(self, run: RunPayload, lease: Lease | None = None, progress: int | None = None) -> HeartbeatOut:
        """Renew the run's lease (and ``lease``, the agent's view of it), retried while it lasts."""
        sent = time.monotonic()
        response = await self.request(
            "POST",
            f"/v1/agent/runs/{run.id}/heartbeat",
            _for_lease(lease),
            json={"attempt": run.attempt, "progress": progress},
        )
        if lease is not None:
            # The successful request was sent at most its own duration ago.
            lease.renew(max(sent, time.monotonic() - response.elapsed.total_seconds()))
        return HeartbeatOut.model_validate(response.json())

    async def steps(
        self,
        run: RunPayload,
        steps: list[dict[str, Any]],
        step_count: int | None = None,
        progress: int | None = None,
        lease: Lease | None = None,
    ) -> None:
        """Report step results; ``progress`` (0–99), when given, is the run's progress as the agent counts
        it (and the server renews the lease)."""
        body: dict[str, Any] = {"attempt": run.attempt, "steps": steps, "step_count": step_count}
        if progress is not None:
            body["progress"] = progress
        sent = time.monotonic()
        response = await self.request("POST", f"/v1/agent/runs/{run.id}/steps", _for_lease(lease), json=body)
        if lease is not None and progress is not None:
            lease.renew(max(sent, time.monotonic() - response.elapsed.total_seconds()))

    async def fetch_file(self, run: RunPayload, path: str, lease: Lease | None = None) -> bytes:
        """One of the run's test case files (a path of ``run.files``), checked against its SHA-256."""
        # `..` segments travel percent-encoded: HTTP clients fold literal ones away.
        quoted = "/".join("%2E%2E" if part == ".." else quote(part, safe="") for part in path.split("/"))
        response = await self.request(
            "GET", f"/v1/agent/runs/{run.id}/files/{quoted}", _for_lease(lease), params={"attempt": run.attempt}
        )
        expected = next((f.sha256 for f in run.files if f.path == path), None)
        if expected is not None and hashlib.sha256(response.content).hexdigest() != expected:
            raise OSError(f"file {path} of run {run.id} does not match its SHA-256")
        return response.content

    async def screenshot(self, run: RunPayload, index: int, png: bytes, lease: Lease | None = None) -> None:
        await self.request(
            "PUT",
            f"/v1/agent/runs/{run.id}/steps/{run.attempt}/{index}/screenshot",
            _for_lease(lease),
            content=png,
            headers={"Content-Type": "image/png"},
        )

    async def upload_artifact(
        self, run: RunPayload, artifact: Artifact, step_index: int | None = None, lease: Lease | None = None
    ) -> None:
        """Upload a video or the device's log of the run's attempt (``step_index``: the step that made it),
        replacing one of the same name. Raises RunMovedOn on 409, httpx errors otherwise (413: too large)."""
        name = artifact_name(artifact.name)
        params: dict[str, Any] = {"attempt": run.attempt, "kind": artifact.kind}
        if step_index is not None:
            params["step"] = step_index
        await self.request(
            "PUT",
            f"/v1/agent/runs/{run.id}/artifacts/{quote(name, safe='')}",
            _for_lease(lease),
            wait=UPLOAD_TIMEOUT,
            params=params,
            content=artifact.data,
            headers={"Content-Type": artifact.content_type},
        )

    async def finish(
        self,
        run: RunPayload,
        status: str,
        failure: dict[str, Any] | None,
        steps: list[dict[str, Any]],
        claim_next: bool = False,
        lease: Lease | None = None,
    ) -> RunPayload | None:
        """Report the end of the run; with ``claim_next``, the device's next run (if one is queued)."""
        body = {
            "attempt": run.attempt,
            "status": status,
            "failure": failure,
            "steps": steps,
            "claim_next_for": run.device_id if claim_next else None,
        }
        data = await self._post(f"/v1/agent/runs/{run.id}/finish", body, _for_lease(lease))
        return FinishOut.model_validate(data).next_run

    async def finish_many(
        self, reports: list[dict[str, Any]], until: Callable[[], float] | None = None
    ) -> list[FinishResult]:
        """Report the ends of several runs in one request (each report as for ``finish``, plus
        ``run_id``); one result per report, in order. Retried until ``until`` (the latest of the runs'
        leases)."""
        retry = SHORT if until is None else Retry(until=until)
        data = await self._post("/v1/agent/finish", {"reports": reports}, retry)
        return FinishManyOut.model_validate(data).results

    async def fetch_app(self, app: AppPayload, cache_dir: Path, lease: Lease | None = None) -> Path:
        """The app's file, downloaded once per content (cached by SHA-256) and checked against its hash.

        The link is pre-signed and may point at another host (S3): it goes without the agent's token.
        A download cut off midway starts again, as long as the lease allows.
        """
        target = cache_dir / app.sha256
        if await asyncio.to_thread(target.exists):
            return target
        await asyncio.to_thread(cache_dir.mkdir, parents=True, exist_ok=True)
        retry = _for_lease(lease)
        delays = retry.delays()
        async with httpx.AsyncClient(timeout=httpx.Timeout(60, connect=5)) as plain:
            while True:
                try:
                    return await self._download(plain, app, retry, target)
                except httpx.TransportError:
                    if not await delays.wait():
                        raise

    async def _download(self, plain: httpx.AsyncClient, app: AppPayload, retry: Retry, target: Path) -> Path:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix="download-", suffix=".part")
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                response = await self.request("GET", app.download_url, retry, client=plain, wait=60, stream=True)
                try:
                    async for chunk in response.aiter_bytes(1024 * 1024):
                        digest.update(chunk)
                        out.write(chunk)
                finally:
                    await response.aclose()
            if digest.hexdigest() != app.sha256:
                raise OSError(f"downloaded app {app.id} does not match its SHA-256")
            os.replace(tmp_name, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        return target
