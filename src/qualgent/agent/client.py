"""The agent's HTTP client for the server's agent routes. Retries what is safe to retry."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
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

# Seconds an artifact upload (a video of up to hundreds of megabytes) may take.
UPLOAD_TIMEOUT = 600.0


class RunMovedOn(Exception):
    """The server says the run moved on (409): drop it without reporting further."""


def artifact_name(name: str) -> str:
    """A name the server takes for an artifact (a safe file name): the last segment of ``name`` (a
    flow's ``startRecording: videos/login`` gives ``login.mp4``), other characters replaced by ``_``."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    safe = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]", "_", base)).lstrip(".")
    if len(safe) > 200:
        root, ext = os.path.splitext(safe)
        safe = root[: 200 - len(ext)] + ext if len(ext) < 20 else safe[:200]
    return safe or "artifact"


class AgentClient:
    def __init__(self, server_url: str, token: str, *, timeout: float = 30) -> None:
        self.http = httpx.AsyncClient(
            base_url=server_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=5),
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def _post(self, path: str, body: dict[str, Any], *, retries: int = 5, wait: float | None = None) -> Any:
        delay = 0.2
        for attempt in range(retries + 1):
            try:
                response = await self.http.post(path, json=body, timeout=wait or self.http.timeout)
            except httpx.TransportError:
                if attempt == retries:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
                continue
            if response.status_code == 409:
                raise RunMovedOn(response.json().get("error", {}).get("message", "run moved on"))
            if response.status_code >= 500 and attempt < retries:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
                continue
            response.raise_for_status()
            return response.json()
        raise AssertionError("unreachable")

    async def register(self, devices: list[DeviceIn]) -> RegisterOut:
        body = {"devices": [d.model_dump() for d in devices]}
        return RegisterOut.model_validate(await self._post("/v1/agent/register", body))

    async def claim(self, device_ids: list[str], wait_seconds: float, max_runs: int = 1) -> list[RunPayload]:
        """Runs for these free devices (at most one each, ``max_runs`` in all); long-polls up to
        ``wait_seconds`` when none is ready."""
        data = await self._post(
            "/v1/agent/claim",
            {"device_ids": device_ids, "wait_seconds": wait_seconds, "max_runs": max_runs},
            retries=0,
            wait=wait_seconds + 15,
        )
        return ClaimOut.model_validate(data).runs

    async def heartbeat(self, run: RunPayload, progress: int | None = None) -> HeartbeatOut:
        data = await self._post(
            f"/v1/agent/runs/{run.id}/heartbeat", {"attempt": run.attempt, "progress": progress}, retries=1
        )
        return HeartbeatOut.model_validate(data)

    async def steps(
        self,
        run: RunPayload,
        steps: list[dict[str, Any]],
        step_count: int | None = None,
        progress: int | None = None,
    ) -> None:
        """Report step results; ``progress`` (0–99), when given, is the run's progress as the agent counts it."""
        body: dict[str, Any] = {"attempt": run.attempt, "steps": steps, "step_count": step_count}
        if progress is not None:
            body["progress"] = progress
        await self._post(f"/v1/agent/runs/{run.id}/steps", body)

    async def fetch_file(self, run: RunPayload, path: str) -> bytes:
        """One of the run's test case files (a path of ``run.files``), checked against its SHA-256."""
        # `..` segments travel percent-encoded: HTTP clients fold literal ones away.
        quoted = "/".join("%2E%2E" if part == ".." else quote(part, safe="") for part in path.split("/"))
        url = f"/v1/agent/runs/{run.id}/files/{quoted}"
        delay = 0.2
        retries = 5
        for attempt in range(retries + 1):
            try:
                response = await self.http.get(url, params={"attempt": run.attempt})
            except httpx.TransportError:
                if attempt == retries:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
                continue
            if response.status_code == 409:
                raise RunMovedOn(response.json().get("error", {}).get("message", "run moved on"))
            if response.status_code >= 500 and attempt < retries:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
                continue
            response.raise_for_status()
            expected = next((f.sha256 for f in run.files if f.path == path), None)
            if expected is not None and hashlib.sha256(response.content).hexdigest() != expected:
                raise OSError(f"file {path} of run {run.id} does not match its SHA-256")
            return response.content
        raise AssertionError("unreachable")

    async def screenshot(self, run: RunPayload, index: int, png: bytes) -> None:
        response = await self.http.put(
            f"/v1/agent/runs/{run.id}/steps/{run.attempt}/{index}/screenshot",
            content=png,
            headers={"Content-Type": "image/png"},
        )
        if response.status_code == 409:
            raise RunMovedOn("run moved on")
        response.raise_for_status()

    async def upload_artifact(self, run: RunPayload, artifact: Artifact, step_index: int | None = None) -> None:
        """Upload a video or the device's log of the run's attempt (``step_index``: the step that made it),
        replacing one of the same name. Raises RunMovedOn on 409, httpx errors otherwise (413: too large)."""
        name = artifact_name(artifact.name)
        params: dict[str, Any] = {"attempt": run.attempt, "kind": artifact.kind}
        if step_index is not None:
            params["step"] = step_index
        delay = 0.2
        retries = 3
        for attempt in range(retries + 1):
            try:
                response = await self.http.put(
                    f"/v1/agent/runs/{run.id}/artifacts/{quote(name, safe='')}",
                    params=params,
                    content=artifact.data,
                    headers={"Content-Type": artifact.content_type},
                    timeout=httpx.Timeout(UPLOAD_TIMEOUT, connect=5),
                )
            except httpx.TransportError:
                if attempt == retries:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
                continue
            if response.status_code == 409:
                raise RunMovedOn(response.json().get("error", {}).get("message", "run moved on"))
            if response.status_code >= 500 and attempt < retries:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
                continue
            response.raise_for_status()
            return

    async def finish(
        self,
        run: RunPayload,
        status: str,
        failure: dict[str, Any] | None,
        steps: list[dict[str, Any]],
        claim_next: bool = False,
    ) -> RunPayload | None:
        """Report the end of the run; with ``claim_next``, the device's next run (if one is queued)."""
        body = {
            "attempt": run.attempt,
            "status": status,
            "failure": failure,
            "steps": steps,
            "claim_next_for": run.device_id if claim_next else None,
        }
        data = await self._post(f"/v1/agent/runs/{run.id}/finish", body, retries=8)
        return FinishOut.model_validate(data).next_run

    async def finish_many(self, reports: list[dict[str, Any]]) -> list[FinishResult]:
        """Report the ends of several runs in one request (each report as for ``finish``, plus
        ``run_id``); one result per report, in order."""
        data = await self._post("/v1/agent/finish", {"reports": reports}, retries=8)
        return FinishManyOut.model_validate(data).results

    async def fetch_app(self, app: AppPayload, cache_dir: Path) -> Path:
        """The app's file, downloaded once per content (cached by SHA-256) and checked against its hash."""
        target = cache_dir / app.sha256
        if await asyncio.to_thread(target.exists):
            return target
        await asyncio.to_thread(cache_dir.mkdir, parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix="download-", suffix=".part")
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                async with (
                    httpx.AsyncClient(timeout=httpx.Timeout(60, connect=5)) as plain,
                    plain.stream("GET", app.download_url) as response,
                ):
                    response.raise_for_status()
                    async for chunk in response.aiter_bytes(1024 * 1024):
                        digest.update(chunk)
                        out.write(chunk)
            if digest.hexdigest() != app.sha256:
                raise OSError(f"downloaded app {app.id} does not match its SHA-256")
            os.replace(tmp_name, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        return target
