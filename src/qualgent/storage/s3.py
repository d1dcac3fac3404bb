"""S3-compatible object storage (``QUALGENT_STORAGE_URL=s3://bucket/prefix``), through boto3 on worker threads.

Uploads go up as S3 multipart uploads while the request streams in: every ``s3_part_size`` bytes become
one part, sent from the same worker thread that hashes the stream. A local copy is kept beside them
until the upload ends, because reading a package's manifest needs random access to its zip directory
(and doing that with ranged GETs would cost a round trip per member). Downloads are S3 pre-signed URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from qualgent.storage.base import (
    AdoptedFile,
    BatchPipeline,
    StoredObject,
    lock_exclusively,
    remove_dead_staging,
    write_chunks,
)

# Parts of one upload sent at once (each ``s3_part_size`` bytes held in memory until sent).
PARTS_IN_FLIGHT = 3


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → (``bucket``, ``some/prefix``)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"QUALGENT_STORAGE_URL must look like s3://bucket/prefix, not {url!r}")
    return parts.netloc, parts.path.strip("/")


class S3Upload:
    def __init__(self, storage: S3Storage, key: str) -> None:
        self.key = key
        self._storage = storage
        self._object_key = storage.object_key(key)
        storage.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=storage.tmp_dir)
        lock_exclusively(fd)
        self._fd = fd
        self._tmp = Path(name)
        # Chunks not yet sent; parts go up exactly ``part_size`` long (the last one shorter).
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._parts: list[Future[dict[str, Any]]] = []
        self._upload_id: str | None = None
        self._pipeline = BatchPipeline(self._sink)
        self._done = False

    @property
    def size(self) -> int:
        return self._pipeline.size

    @property
    def sha256(self) -> str:
        return self._pipeline.sha256

    @property
    def local_path(self) -> str | None:
        return str(self._tmp)

    # Runs on the pipeline's worker thread, one batch at a time.
    def _sink(self, batch: list[bytes]) -> None:
        write_chunks(self._fd, batch)
        self._pending.extend(batch)
        self._pending_bytes += sum(len(chunk) for chunk in batch)
        while self._pending_bytes >= self._storage.part_size:
            self._send_part()

    def _send_part(self) -> None:
        """Send the next part on the store's thread pool; at most ``PARTS_IN_FLIGHT`` at once, so memory
        stays bounded (parts × part size) while a slow store still gets several requests in parallel."""
        client = self._storage.client
        if self._upload_id is None:
            created = client.create_multipart_upload(Bucket=self._storage.bucket, Key=self._object_key)
            self._upload_id = created["UploadId"]
        in_flight = [f for f in self._parts if not f.done()]
        if len(in_flight) >= PARTS_IN_FLIGHT:
            wait(in_flight, return_when=FIRST_COMPLETED)
        for done in self._parts:
            if done.done():
                done.result()  # a failed part fails the upload now, not at the end
        number = len(self._parts) + 1
        self._parts.append(self._storage.pool.submit(self._upload_part, number, self._take_part()))

    def _upload_part(self, number: int, body: bytes) -> dict[str, Any]:
        sent = self._storage.client.upload_part(
            Bucket=self._storage.bucket,
            Key=self._object_key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
        )
        return {"PartNumber": number, "ETag": sent["ETag"]}

    def _take_part(self) -> bytes:
        """The next part's bytes (one copy, the join), taken from the pending chunks."""
        need = min(self._storage.part_size, self._pending_bytes)
        self._pending_bytes -= need
        pieces = []
        while need:
            chunk = self._pending.popleft()
            if len(chunk) > need:
                self._pending.appendleft(chunk[need:])
                chunk = chunk[:need]
            pieces.append(chunk)
            need -= len(chunk)
        return b"".join(pieces)

    async def write(self, chunk: bytes) -> None:
        await self._pipeline.write(chunk)

    async def flush(self) -> None:
        await self._pipeline.flush()

    def _complete(self) -> None:
        client = self._storage.client
        if self._upload_id is None:
            # Smaller than one part: a plain PUT.
            client.put_object(Bucket=self._storage.bucket, Key=self._object_key, Body=self._take_part())
            return
        if self._pending_bytes:
            self._send_part()
        parts = [future.result() for future in self._parts]
        client.complete_multipart_upload(
            Bucket=self._storage.bucket,
            Key=self._object_key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": parts},
        )

    async def commit(self) -> StoredObject:
        await self._pipeline.flush()
        await asyncio.to_thread(self._complete)
        self._done = True
        self._cleanup_local()
        return StoredObject(key=self.key, size=self.size, sha256=self.sha256)

    def _cleanup_local(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._tmp.unlink(missing_ok=True)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        await self._pipeline.discard()
        self._cleanup_local()
        if self._parts:
            # Parts still going up would land after the abort: let them finish (or fail) first.
            await asyncio.to_thread(wait, self._parts)
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    self._storage.client.abort_multipart_upload,
                    Bucket=self._storage.bucket,
                    Key=self._object_key,
                    UploadId=upload_id,
                )


class AdoptedS3File(AdoptedFile):
    """A complete local file (a finished tus upload): ``commit`` sends it up in parts, then deletes it."""

    def __init__(self, storage: S3Storage, path: str, key: str, size: int, sha256: str) -> None:
        super().__init__(path, key, size, sha256)
        self._storage = storage

    async def commit(self) -> StoredObject:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=self._storage.part_size, multipart_chunksize=self._storage.part_size
        )
        await asyncio.to_thread(
            self._storage.client.upload_file,
            str(self._path),
            self._storage.bucket,
            self._storage.object_key(self.key),
            Config=config,
        )
        stored = self._stored()
        self._path.unlink(missing_ok=True)
        return stored


class S3Storage:
    def __init__(
        self,
        url: str,
        tmp_dir: Path,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = 8 * 1024 * 1024,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = parse_s3_url(url)
        # Few threads: each keeps its own malloc arena, and parts are megabytes each.
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="s3-parts")
        self.tmp_dir = tmp_dir
        # S3 refuses parts under 5 MiB (the last one aside).
        self.part_size = max(part_size, 5 * 1024 * 1024)
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                signature_version="s3v4",
                # Path-style addressing: S3-compatible servers on a plain host name do not do virtual hosts.
                s3={"addressing_style": "path" if endpoint_url else "auto"},
                max_pool_connections=20,
                # Only where S3 demands one: the default wraps each part in a streaming checksum
                # encoder that copies it, and every upload is SHA-256-hashed here already.
                request_checksum_calculation="when_required",
                retries={"max_attempts": 5, "mode": "standard"},
            ),
        )

    def object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def begin(self, key: str) -> S3Upload:
        return S3Upload(self, key)

    def adopt(self, local_path: str, key: str, size: int, sha256: str) -> AdoptedS3File:
        return AdoptedS3File(self, local_path, key, size, sha256)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=self.object_key(key))

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            await asyncio.to_thread(self.client.head_object, Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def path(self, key: str) -> str | None:
        return None

    def presigned_url(
        self, key: str, filename: str, content_type: str, ttl: int, *, inline: bool = False
    ) -> str | None:
        # Signing is local computation: no request to the store.
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self.object_key(key),
                "ResponseContentType": content_type,
                "ResponseContentDisposition": f"{'inline' if inline else 'attachment'}; filename*=UTF-8''{quote(filename)}",
            },
            ExpiresIn=ttl,
        )
        return url

    async def open(
        self, key: str, chunk_size: int = 1024 * 1024, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if length is not None:
            if length <= 0:
                return
            params["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            params["Range"] = f"bytes={offset}-"
        response = await asyncio.to_thread(self.client.get_object, **params)
        body = response["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, chunk_size):
                yield chunk
        finally:
            body.close()

    def cleanup_stale(self, older_than_seconds: float) -> int:
        """Local staging files and S3 multipart uploads under our prefix older than the cutoff."""
        removed = remove_dead_staging(self.tmp_dir)
        since = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < since:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    removed += 1
        return removed

    async def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
