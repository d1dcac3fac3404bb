"""The comparison route for bench/uploads.py: a plain FastAPI ``UploadFile`` route that copies the upload
out while hashing it (Starlette spools the body to a temporary file first, then the route copies it)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from fastapi import FastAPI, UploadFile

app = FastAPI()
OUT = Path(os.environ.get("BENCH_PLAIN_DIR", tempfile.gettempdir()))


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/plain")
async def plain(file: UploadFile) -> dict[str, object]:
    digest = hashlib.sha256()
    target = OUT / "plain-upload.bin"
    size = 0
    with target.open("wb") as out:
        while chunk := await file.read(1024 * 1024):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())  # durable, like the `sync` after `cp` and the fsync of our upload
    target.unlink()
    return {"size": size, "sha256": digest.hexdigest()}
