"""Local-disk storage: uploads go to a temporary file in the data dir, then are renamed into place."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

from qualgent.storage.base import (
    AdoptedFile,
    BatchPipeline,
    StoredObject,
    lock_exclusively,
    remove_dead_staging,
    write_chunks,
)


def _write_all(fd: int, data: bytearray | bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


# Linux's sync_file_range(2), which Python's os module does not offer: it starts writing a range of
# a file back to disk and returns at once. Without it the kernel holds a whole upload in the page cache
# (up to its dirty limit, gigabytes here) and the fsync at the end writes all of it while the client
# waits; started as the upload streams in, the write-back overlaps receiving and the fsync finds
# little left to do.
_sync_file_range = _load_sync_file_range()
SYNC_FILE_RANGE_WRITE = 2
WRITEBACK_EVERY = 16 * 1024 * 1024


class _DiskWriter:
    """Appends batches to a file and starts write-back of every ``WRITEBACK_EVERY`` bytes written."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0
        self.flushed = 0

    def __call__(self, batch: list[bytes]) -> None:
        write_chunks(self.fd, batch)
        self.written += sum(len(chunk) for chunk in batch)
        if _sync_file_range is not None and self.written - self.flushed >= WRITEBACK_EVERY:
            _sync_file_range(self.fd, self.flushed, self.written - self.flushed, SYNC_FILE_RANGE_WRITE)
            self.flushed = self.written


class LocalUpload:
    def __init__(self, root: Path, tmp_dir: Path, key: str) -> None:
        self.key = key
        self._target = _safe_join(root, key)
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=tmp_dir)
        lock_exclusively(fd)
        self._fd = fd
        self._tmp = Path(name)
        self._pipeline = BatchPipeline(_DiskWriter(fd))
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

    async def write(self, chunk: bytes) -> None:
        await self._pipeline.write(chunk)

    async def flush(self) -> None:
        await self._pipeline.flush()

    async def commit(self) -> StoredObject:
        await self._pipeline.flush()
        self._target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(os.fsync, self._fd)
        os.close(self._fd)
        os.replace(self._tmp, self._target)
        self._done = True
        return StoredObject(key=self.key, size=self.size, sha256=self.sha256)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        await self._pipeline.discard()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._tmp.unlink(missing_ok=True)


class AdoptedLocalFile(AdoptedFile):
    """A complete file already on local disk (a finished tus upload); ``commit`` renames it into place."""

    def __init__(self, root: Path, path: str, key: str, size: int, sha256: str) -> None:
        super().__init__(path, key, size, sha256)
        self._root = root

    async def commit(self) -> StoredObject:
        target = _safe_join(self._root, self.key)
        target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_fsync_path, self._path)
        os.replace(self._path, target)
        return self._stored()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _safe_join(root: Path, key: str) -> Path:
    """The path for ``key`` under ``root``; keys are ours, but refuse anything that escapes anyway."""
    path = (root / key).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"storage key escapes the storage root: {key!r}")
    return path


class LocalStorage:
    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self.root = root
        self.tmp_dir = tmp_dir

    def begin(self, key: str) -> LocalUpload:
        return LocalUpload(self.root, self.tmp_dir, key)

    def adopt(self, local_path: str, key: str, size: int, sha256: str) -> AdoptedLocalFile:
        return AdoptedLocalFile(self.root, local_path, key, size, sha256)

    async def delete(self, key: str) -> None:
        _safe_join(self.root, key).unlink(missing_ok=True)

    async def exists(self, key: str) -> bool:
        return _safe_join(self.root, key).is_file()

    def path(self, key: str) -> str | None:
        return str(_safe_join(self.root, key))

    def presigned_url(
        self, key: str, filename: str, content_type: str, ttl: int, *, inline: bool = False
    ) -> str | None:
        return None

    async def open(
        self, key: str, chunk_size: int = 1024 * 1024, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        # Opening a local file does not block measurably; the reads, which can, go to a thread.
        with open(_safe_join(self.root, key), "rb") as fh:  # noqa: ASYNC230
            if offset:
                fh.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                wanted = chunk_size if remaining is None else min(chunk_size, remaining)
                chunk = await asyncio.to_thread(fh.read, wanted)
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def cleanup_stale(self, older_than_seconds: float) -> int:
        return remove_dead_staging(self.tmp_dir)

    async def close(self) -> None:
        return None
