"""Where app builds live. Backends implement ``Storage``; each lives in its own module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


class Upload(Protocol):
    """An object being written: bytes go in as they arrive; nothing is visible until ``commit``."""

    size: int

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self, key: str) -> StoredObject: ...

    async def abort(self) -> None: ...

    @property
    def sha256(self) -> str: ...

    @property
    def local_path(self) -> str | None:
        """A local file holding the bytes so far, for backends that have one (used to inspect packages)."""
        ...


class Storage(Protocol):
    def begin(self) -> Upload: ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...

    def open(self, key: str, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]: ...

    def path(self, key: str) -> str | None:
        """A local file path for the object, when the backend keeps one."""
        ...

    def cleanup_stale(self, older_than_seconds: float) -> int:
        """Remove leftovers of uploads that never finished; returns how many were removed."""
        ...
