"""Local-disk storage: uploads go to a temporary file in the data dir, then are renamed into place."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from qualgent.storage.base import StoredObject


class LocalUpload:
    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self._root = root
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = _mkstemp(tmp_dir)
        self._fd = fd
        self._tmp = Path(name)
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    @property
    def local_path(self) -> str | None:
        return str(self._tmp)

    async def write(self, chunk: bytes) -> None:
        # Hashing and writing a chunk of a few hundred KB take well under a millisecond each; doing
        # them inline avoids a thread hop per chunk, which costs more than it saves.
        self._hash.update(chunk)
        view = memoryview(chunk)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(chunk)

    async def commit(self, key: str) -> StoredObject:
        target = _safe_join(self._root, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(os.fsync, self._fd)
        os.close(self._fd)
        os.replace(self._tmp, target)
        self._done = True
        return StoredObject(key=key, size=self.size, sha256=self.sha256)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._tmp.unlink(missing_ok=True)


def _mkstemp(directory: Path) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(prefix="upload-", suffix=".part", dir=directory)


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

    def begin(self) -> LocalUpload:
        return LocalUpload(self.root, self.tmp_dir)

    async def delete(self, key: str) -> None:
        _safe_join(self.root, key).unlink(missing_ok=True)

    async def exists(self, key: str) -> bool:
        return _safe_join(self.root, key).is_file()

    def path(self, key: str) -> str | None:
        return str(_safe_join(self.root, key))

    async def open(self, key: str, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        # Opening a local file does not block measurably; the reads, which can, go to a thread.
        with open(_safe_join(self.root, key), "rb") as fh:  # noqa: ASYNC230
            while chunk := await asyncio.to_thread(fh.read, chunk_size):
                yield chunk

    def cleanup_stale(self, older_than_seconds: float) -> int:
        if not self.tmp_dir.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for entry in self.tmp_dir.glob("upload-*.part"):
            try:
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
