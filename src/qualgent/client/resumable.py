"""Resumable uploads over the tus 1.0.0 protocol (``/v1/apps/uploads/``), written on httpx.

Own code rather than a tus library: the protocol's core is four small requests, the client needs the
server's ``Qualgent-App-Id`` extension header and the SDK's own retries and typed errors, and the
Python tus clients (tuspy) pull in ``requests`` and ``aiohttp`` besides httpx.

Flow: ``POST`` creates the upload (``Upload-Length``, ``Upload-Metadata``) and answers its
``Location``; ``PATCH`` sends bytes from ``Upload-Offset``; after a dropped connection, a 5xx or a 409
(offset mismatch) the client asks ``HEAD`` for the server's offset and continues from there. The final
``PATCH`` (or a later ``HEAD``) carries ``Qualgent-App-Id``; ``GET /v1/apps/{id}`` then gives the app.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import httpx

from qualgent.client.errors import (
    APIError,
    NotFoundError,
    QualgentClientError,
    ServerError,
    TransportError,
)
from qualgent.client.models import App

if TYPE_CHECKING:
    from qualgent.client.sync import Client

TUS_VERSION = "1.0.0"
UPLOADS_PATH = "/v1/apps/uploads/"


def _tus_options(client: Client) -> httpx.Headers | None:
    """The server's tus headers from ``OPTIONS /v1/apps/uploads/``, or None when it has no tus endpoint."""
    try:
        response = client.request("OPTIONS", UPLOADS_PATH)
    except APIError as exc:
        if exc.status_code in (404, 405):
            return None
        raise
    if TUS_VERSION not in response.headers.get("tus-version", response.headers.get("tus-resumable", "")):
        return None
    return response.headers


def server_supports_tus(client: Client) -> bool:
    return _tus_options(client) is not None


def _metadata(pairs: dict[str, str | None]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items() if v)


class ResumableUpload:
    """One upload of one file; ``run()`` drives it to the end, resuming as often as ``max_resumes``."""

    def __init__(
        self,
        client: Client,
        path: Path,
        app_name: str,
        version: str,
        os: str | None = None,
        *,
        chunk_size: int = 8 * 1024 * 1024,
        max_resumes: int = 20,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.path = path
        self.app_name = app_name
        self.version = version
        self.os = os
        self.chunk_size = chunk_size
        self.max_resumes = max_resumes
        self.length = path.stat().st_size
        self.location: str | None = None
        self.resumes = 0  # how many times the upload continued from the server's offset
        self._sleep = sleep
        self._checksum = False

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"Tus-Resumable": TUS_VERSION, **extra}

    def create(self) -> str:
        options = _tus_options(self.client)
        if options is None:
            raise QualgentClientError("The server does not offer resumable uploads (no tus endpoint).")
        self._checksum = "checksum" in options.get("tus-extension", "")
        metadata = _metadata(
            {"filename": self.path.name, "app_name": self.app_name, "version": self.version, "os": self.os}
        )
        response = self.client.request(
            "POST",
            UPLOADS_PATH,
            headers=self._headers(**{"Upload-Length": str(self.length), "Upload-Metadata": metadata}),
            content=b"",
            retryable=True,  # a repeated creation leaves an unused upload that expires; nothing else
        )
        location = response.headers.get("location")
        if not location:
            raise QualgentClientError("The server created the upload but sent no Location.")
        self.location = urljoin(self.client.base_url + UPLOADS_PATH, location)
        return self.location

    def server_state(self) -> tuple[int, str | None]:
        """(``Upload-Offset``, ``Qualgent-App-Id`` or None) from ``HEAD``."""
        assert self.location is not None
        response = self.client.request("HEAD", self.location, headers=self._headers())
        return int(response.headers["upload-offset"]), response.headers.get("qualgent-app-id")

    def run(self, on_progress: Callable[[int], None] | None = None) -> App:
        if self.location is None:
            self.create()
        assert self.location is not None
        offset, app_id = 0, None
        with self.path.open("rb") as file:
            while app_id is None:
                if offset >= self.length:
                    offset, app_id = self.server_state()
                    if app_id is None and offset >= self.length:
                        raise QualgentClientError("The upload is complete but the server named no app.")
                    continue
                file.seek(offset)
                chunk = file.read(self.chunk_size)
                headers = self._headers(
                    **{"Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)}
                )
                if self._checksum:
                    digest = base64.b64encode(hashlib.sha1(chunk).digest()).decode()  # tus checksum (not for security)
                    headers["Upload-Checksum"] = f"sha1 {digest}"
                try:
                    response = self.client.request(
                        "PATCH", self.location, headers=headers, content=chunk, retryable=False
                    )
                except (TransportError, ServerError):
                    # The connection dropped, or the server failed, mid-chunk: it kept what it got.
                    self._sleep(self.client.retry.backoff_for(min(self.resumes, 4)))
                    offset, app_id = self._resume()
                except APIError as exc:
                    # 409: the offset is not the server's, or (upload_busy) the request that broke is still
                    # being wound up on the server; 423: the upload is still locked by it; 460: the
                    # chunk's checksum did not match. Ask for the offset, go on.
                    if exc.status_code not in (409, 423, 460):
                        raise
                    if exc.status_code == 423 or exc.code == "upload_busy":
                        self._sleep(self.client.retry.backoff_for(min(self.resumes, 4)))
                    offset, app_id = self._resume()
                else:
                    offset = int(response.headers["upload-offset"])
                    app_id = response.headers.get("qualgent-app-id")
                if on_progress is not None:
                    on_progress(offset)
        try:
            return self.client.get_app(app_id)
        except NotFoundError as exc:
            raise QualgentClientError(f"The upload finished but app {app_id} is not readable: {exc}") from exc

    def _resume(self) -> tuple[int, str | None]:
        self.resumes += 1
        if self.resumes > self.max_resumes:
            raise TransportError(f"Upload of {self.path.name} interrupted {self.resumes - 1} times; giving up.")
        return self.server_state()
