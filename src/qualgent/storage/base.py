"""Where app builds live. Backends implement ``Storage``; each lives in its own module."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# A staging file this fresh may belong to an upload that has created it but not locked it yet.
STAGING_GRACE_SECONDS = 2.0
# Bytes handed to the worker thread at a time. Large enough that the thread hop (tens of microseconds)
# is noise; small enough that two batches (one in flight, one filling) stay far below the memory budget.
BATCH_BYTES = 1024 * 1024
# Chunks smaller than this are copied together before they join a batch.
SMALL_CHUNK = 16 * 1024


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


class Upload(Protocol):
    """An object being written to ``key``: bytes go in as they arrive; nothing is visible until ``commit``."""

    key: str

    @property
    def size(self) -> int: ...

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self) -> StoredObject: ...

    async def abort(self) -> None: ...

    @property
    def sha256(self) -> str: ...

    @property
    def local_path(self) -> str | None:
        """A local file holding the bytes so far, for backends that have one (used to inspect packages).

        Only complete once ``write`` calls have been followed by ``flush``.
        """
        ...

    async def flush(self) -> None:
        """Wait until every byte written so far is hashed and in the local file."""
        ...


class Storage(Protocol):
    def begin(self, key: str) -> Upload: ...

    def adopt(self, local_path: str, key: str, size: int, sha256: str) -> Upload:
        """An upload of a complete local file (a finished resumable upload): ``commit`` moves it to ``key``,
        ``abort`` deletes it."""
        ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...

    def open(
        self, key: str, chunk_size: int = 1024 * 1024, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """The object's bytes, from ``offset`` on (``length`` of them, or to the end), in chunks."""
        ...

    def path(self, key: str) -> str | None:
        """A local file path for the object, when the backend keeps one."""
        ...

    def presigned_url(
        self, key: str, filename: str, content_type: str, ttl: int, *, inline: bool = False
    ) -> str | None:
        """A direct, time-limited download URL from the store itself, when it has one (S3); else None.
        ``inline``: a browser shows it (a video plays, a log reads) rather than saving it as a file."""
        ...

    def cleanup_stale(self, older_than_seconds: float) -> int:
        """Remove leftovers of uploads that never finished: staging files no live process holds, and
        store-side leftovers older than ``older_than_seconds``. Returns how many were removed."""
        ...

    async def close(self) -> None: ...


class BatchPipeline:
    """Hashes and writes a stream in ~1 MiB batches on a worker thread, one batch in flight while the
    event loop receives the next.

    Hashing (SHA-256, ~0.6 s/GiB) and writing both release the GIL, so this overlaps them with
    receiving and parsing the request body; doing them inline on the event loop serialises everything.
    A batch is the list of the chunks received (no copy into one buffer); ``sink`` gets each batch
    after it is hashed, on the worker thread.
    """

    def __init__(self, sink: Callable[[list[bytes]], None], hasher: Any = None) -> None:
        self._sink = sink
        # A running hash to continue (a resumed upload's), else a fresh SHA-256.
        self._hash = hasher if hasher is not None else hashlib.sha256()
        self._batch: list[bytes] = []
        self._small = bytearray()
        self._batch_bytes = 0
        self._inflight: asyncio.Future[None] | None = None
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def _work(self, batch: list[bytes]) -> None:
        for chunk in batch:
            self._hash.update(chunk)
        self._sink(batch)

    async def write(self, chunk: bytes) -> None:
        if len(chunk) < SMALL_CHUNK:
            # Small chunks (a client trickling bytes) are coalesced, so a batch stays a few dozen
            # objects (bounded memory, fewer than IOV_MAX buffers for writev).
            self._small += chunk
            if len(self._small) >= SMALL_CHUNK:
                self._take_small()
        else:
            self._take_small()
            # bytes are immutable: the chunk is kept as it is until the worker is done with it.
            self._batch.append(chunk if type(chunk) is bytes else bytes(chunk))
        self._batch_bytes += len(chunk)
        self.size += len(chunk)
        if self._batch_bytes >= BATCH_BYTES:
            await self._hand_over()

    def _take_small(self) -> None:
        if self._small:
            self._batch.append(bytes(self._small))
            self._small.clear()

    async def _hand_over(self) -> None:
        await self._wait()
        self._take_small()
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._inflight = asyncio.get_running_loop().run_in_executor(None, self._work, batch)

    async def _wait(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            await inflight

    async def flush(self) -> None:
        if self._batch or self._small:
            await self._hand_over()
        await self._wait()

    async def discard(self) -> None:
        """Let the batch in flight finish (its thread cannot be stopped) and drop the rest."""
        self._batch, self._batch_bytes = [], 0
        self._small.clear()
        # The upload is being thrown away: its write error, if any, does not matter.
        with contextlib.suppress(Exception):
            await self._wait()


def write_chunks(fd: int, chunks: list[bytes], position: int | None = None) -> None:
    """Write ``chunks`` with one system call (``writev``/``pwritev``), finishing a short write by hand."""
    total = sum(len(c) for c in chunks)
    written = os.writev(fd, chunks) if position is None else os.pwritev(fd, chunks, position)
    if written == total:
        return
    rest = memoryview(b"".join(chunks))[written:]
    while rest:
        done = os.write(fd, rest) if position is None else os.pwrite(fd, rest, position + written)
        written += done
        rest = rest[done:]


def lock_exclusively(fd: int) -> None:
    """Mark a staging file as in use for as long as this process lives (see ``remove_if_unlocked``)."""
    fcntl.flock(fd, fcntl.LOCK_EX)


def remove_if_unlocked(path: Path, grace: float = STAGING_GRACE_SECONDS) -> bool:
    """Delete ``path`` unless a live process holds its lock or it changed within ``grace`` seconds.

    ``flock`` locks end with their process, so a file of a SIGKILLed upload is removable at once, while a
    slow upload in progress, however old, is never touched.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if time.time() - os.fstat(fd).st_mtime < grace:
            return False
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return True
    finally:
        os.close(fd)


def remove_dead_staging(tmp_dir: Path) -> int:
    removed = 0
    if tmp_dir.is_dir():
        for path in tmp_dir.glob("upload-*.part"):
            if remove_if_unlocked(path):
                removed += 1
    return removed


class AdoptedFile:
    """A complete file already on local disk (a finished tus upload), to be put into a store as it is.

    Backends subclass it with their own ``commit``; until then the file stays where it is, and
    ``abort`` removes it.
    """

    def __init__(self, path: str, key: str, size: int, sha256: str) -> None:
        self.key = key
        self.size = size
        self._path = Path(path)
        self._sha256 = sha256
        self._done = False

    @property
    def sha256(self) -> str:
        return self._sha256

    @property
    def local_path(self) -> str | None:
        return str(self._path)

    async def write(self, chunk: bytes) -> None:
        raise RuntimeError("an adopted file is complete")

    async def flush(self) -> None:
        return None

    def _stored(self) -> StoredObject:
        self._done = True
        return StoredObject(key=self.key, size=self.size, sha256=self._sha256)

    async def abort(self) -> None:
        if not self._done:
            self._done = True
            self._path.unlink(missing_ok=True)
