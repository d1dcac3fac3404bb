"""Resumable uploads: the tus 1.0.0 protocol (core, creation, checksum, expiration, termination).

The bytes of an unfinished upload live in ``<data dir>/tmp/tus/<upload id>.part`` whatever the storage
backend; the database row holds the offset the client may resume from. Each PATCH writes at that offset
under an exclusive ``flock`` on the file (so two PATCHes, in this process or another, never interleave),
then moves the offset in the database. When the last byte arrives the file becomes an app exactly as a
single-request upload does (``apps.service.store_app``).

Written here rather than taken from a library: the Python tus servers on PyPI are framework plugins
(Flask, Django) or keep their state in their own files, and none writes through our storage, tenancy
and error shape.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import fcntl
import hashlib
import os
import re
from collections import OrderedDict
from datetime import datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import ClientDisconnect, Request

from qualgent.apps import service as apps
from qualgent.apps.repository import AppRepository
from qualgent.apps.schemas import UploadOut
from qualgent.auth.principal import Principal
from qualgent.db.base import utcnow
from qualgent.db.models import ResumableUpload
from qualgent.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, QualgentError, Unprocessable
from qualgent.ids import new_id
from qualgent.packages.inspect import kind_from_name
from qualgent.state import AppState
from qualgent.storage.base import BatchPipeline, write_chunks
from qualgent.uploads.repository import UploadRepository
from qualgent.uploads.schemas import UploadStatusOut

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,checksum,expiration,termination"
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
APP_ID_HEADER = "Qualgent-App-Id"
MAX_METADATA_CHARS = 4096
_DIGITS = re.compile(r"^\d{1,19}$")
# Running SHA-256 states of uploads in progress, so the file need not be read again at the end. After a
# restart (or eviction) the state is rebuilt from the file once.
_HASH_CACHE_SIZE = 256
_hashes: OrderedDict[str, tuple[int, Any]] = OrderedDict()


class PreconditionFailed(QualgentError):
    status_code = 412
    code = "unsupported_tus_version"


class UnsupportedMediaType(QualgentError):
    status_code = 415
    code = "unsupported_media_type"


class ChecksumMismatch(QualgentError):
    # tus's checksum extension: 460 Checksum Mismatch.
    status_code = 460
    code = "checksum_mismatch"


def protocol_headers(state: AppState) -> dict[str, str]:
    return {
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": str(state.settings.max_upload_bytes),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
    }


def check_version(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise PreconditionFailed(
            f"Send the header Tus-Resumable: {TUS_VERSION}; this server speaks tus {TUS_VERSION}.",
            headers={"Tus-Version": TUS_VERSION},
        )


def part_path(state: AppState, upload_id: str) -> Path:
    return state.settings.tus_dir / f"{upload_id}.part"


def upload_url(state: AppState, upload_id: str) -> str:
    return f"{state.settings.public_base_url.rstrip('/')}/v1/apps/uploads/{upload_id}"


def http_date(value: datetime) -> str:
    return format_datetime(value, usegmt=True)


def parse_metadata(header: str) -> dict[str, str]:
    """tus Upload-Metadata: comma-separated ``key base64(value)`` pairs (a key alone means an empty value)."""
    if len(header) > MAX_METADATA_CHARS:
        raise BadRequest(f"Upload-Metadata is longer than {MAX_METADATA_CHARS} characters.", code="invalid_metadata")
    values: dict[str, str] = {}
    for pair in header.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, _, encoded = pair.partition(" ")
        if not key or key in values:
            raise BadRequest(
                f"Upload-Metadata has an empty or repeated key near {pair[:40]!r}.", code="invalid_metadata"
            )
        try:
            values[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest(
                f"Upload-Metadata value of {key!r} is not base64-encoded UTF-8 text.", code="invalid_metadata"
            ) from None
    return values


def _int_header(request: Request, name: str) -> int:
    raw = request.headers.get(name)
    if raw is None:
        raise BadRequest(f"Missing header {name}.", code="missing_parameter")
    if not _DIGITS.match(raw.strip()):
        raise BadRequest(f"Header {name} must be a non-negative integer.", code="invalid_header")
    return int(raw.strip())


def _live(upload: ResumableUpload | None, upload_id: str) -> ResumableUpload:
    if upload is None or (upload.app_id is None and upload.expires_at <= utcnow()):
        raise NotFound(f"No upload {upload_id} (unknown, removed or expired).")
    return upload


# ---------------------------------------------------------------------------------------- creation


async def create(request: Request, session: AsyncSession, state: AppState, principal: Principal) -> dict[str, str]:
    check_version(request)
    if request.headers.get("upload-defer-length") is not None:
        raise BadRequest("Upload-Defer-Length is not supported; send Upload-Length.", code="invalid_header")
    length = _int_header(request, "upload-length")
    if length > state.settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"Upload-Length exceeds the size limit of {state.settings.max_upload_bytes} bytes.",
            headers={"Tus-Max-Size": str(state.settings.max_upload_bytes)},
        )
    if length == 0:
        raise Unprocessable("The file is empty (Upload-Length: 0).", code="empty_file")
    metadata = parse_metadata(request.headers.get("upload-metadata", ""))
    raw_name = metadata.get("filename", "")
    if not raw_name.strip():
        raise BadRequest("Missing Upload-Metadata key 'filename' (the build's file name).", code="missing_parameter")
    form = apps.check_fields(metadata)
    filename = apps.safe_original_name(raw_name)
    if kind_from_name(filename) is None and form.os is None:
        raise Unprocessable(
            "Cannot tell the platform from the file name; name it .apk, .aab, .ipa or .zip, or send os.",
            code="unknown_platform",
        )

    upload_id = new_id("upload")
    expires_at = utcnow() + timedelta(seconds=state.settings.upload_expiry_seconds)
    path = part_path(state, upload_id)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=False)
    try:
        await UploadRepository(session, principal.organization_id).add(
            ResumableUpload(
                id=upload_id,
                organization_id=principal.organization_id,
                user_id=principal.user_id,
                length=length,
                offset=0,
                filename=filename,
                app_name=form.app_name,
                version=form.version,
                os=form.os,
                expires_at=expires_at,
            )
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return {"Location": upload_url(state, upload_id), "Upload-Expires": http_date(expires_at), "Upload-Offset": "0"}


# -------------------------------------------------------------------------------------------- core


def status_headers(upload: ResumableUpload) -> dict[str, str]:
    headers = {
        "Upload-Offset": str(upload.offset),
        "Upload-Length": str(upload.length),
        "Cache-Control": "no-store",
    }
    if upload.app_id is not None:
        headers[APP_ID_HEADER] = upload.app_id
    else:
        headers["Upload-Expires"] = http_date(upload.expires_at)
    return headers


async def head(request: Request, session: AsyncSession, principal: Principal, upload_id: str) -> dict[str, str]:
    check_version(request)
    upload = _live(await UploadRepository(session, principal.organization_id).get(upload_id), upload_id)
    return status_headers(upload)


async def describe(session: AsyncSession, state: AppState, principal: Principal, upload_id: str) -> UploadStatusOut:
    upload = _live(await UploadRepository(session, principal.organization_id).get(upload_id), upload_id)
    app = None
    if upload.app_id is not None:
        found = await AppRepository(session, principal.organization_id).get(upload.app_id)
        app = apps.to_out(state, found) if found is not None else None
    return UploadStatusOut(
        upload_id=upload.id, offset=upload.offset, length=upload.length, expires_at=upload.expires_at, app=app
    )


def _checksum(request: Request) -> tuple[str, bytes] | None:
    raw = request.headers.get("upload-checksum")
    if raw is None:
        return None
    algorithm, _, encoded = raw.strip().partition(" ")
    if algorithm not in CHECKSUMS:
        raise BadRequest(
            f"Checksum algorithm {algorithm!r} is not supported; use one of {', '.join(CHECKSUMS)}.",
            code="unsupported_checksum",
        )
    try:
        return algorithm, base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise BadRequest("Upload-Checksum's value is not base64.", code="invalid_header") from None


def _hash_prefix(path: Path, length: int) -> Any:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        left = length
        while left > 0:
            chunk = fh.read(min(left, 1024 * 1024))
            if not chunk:
                raise OSError("the upload's data is shorter than its offset")
            digest.update(chunk)
            left -= len(chunk)
    return digest


async def _running_hash(path: Path, upload_id: str, offset: int) -> Any:
    cached = _hashes.get(upload_id)
    if cached is not None and cached[0] == offset:
        return cached[1].copy()
    return await asyncio.to_thread(_hash_prefix, path, offset)


def _remember(upload_id: str, offset: int, digest: Any) -> None:
    _hashes[upload_id] = (offset, digest)
    _hashes.move_to_end(upload_id)
    while len(_hashes) > _HASH_CACHE_SIZE:
        _hashes.popitem(last=False)


async def patch(request: Request, state: AppState, principal: Principal, upload_id: str) -> dict[str, str]:
    """Append the body at Upload-Offset. Bytes received before a dropped connection are kept (unless a
    checksum was sent, which they cannot match), so the client resumes from the new offset."""
    check_version(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != OFFSET_CONTENT_TYPE:
        raise UnsupportedMediaType(f"PATCH needs Content-Type: {OFFSET_CONTENT_TYPE}.")
    offset = _int_header(request, "upload-offset")
    checksum = _checksum(request)

    async with state.read_sessions() as session:
        found = await UploadRepository(session, principal.organization_id).get(upload_id)
    upload = _live(found, upload_id)
    path = part_path(state, upload_id)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise NotFound(f"No upload {upload_id} (its data was removed).") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(
                "Another PATCH to this upload is in progress; wait for it, then HEAD for the offset.",
                code="upload_busy",
            ) from None
        # Under the lock, the offset in the database is the truth (it may have moved since the read above).
        async with state.read_sessions() as session:
            upload = _live(await UploadRepository(session, principal.organization_id).get(upload_id), upload_id)
        if upload.app_id is not None or offset != upload.offset:
            raise Conflict(
                f"Upload-Offset {offset} does not match the upload's offset {upload.offset}; HEAD it and resume.",
                code="offset_mismatch",
                headers={"Upload-Offset": str(upload.offset)},
            )
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and offset + int(declared) > upload.length:
            raise PayloadTooLarge(f"The body goes past Upload-Length ({upload.length} bytes).", code="exceeds_length")
        # Anything past the offset is a cut-off earlier attempt's: drop it.
        os.ftruncate(fd, offset)
        return await _receive(request, state, principal, upload, fd, path, checksum)
    finally:
        os.close(fd)  # releases the lock


async def _receive(
    request: Request,
    state: AppState,
    principal: Principal,
    upload: ResumableUpload,
    fd: int,
    path: Path,
    checksum: tuple[str, bytes] | None,
) -> dict[str, str]:
    digest = await _running_hash(path, upload.id, upload.offset)
    body_hash = CHECKSUMS[checksum[0]]() if checksum else None
    position = upload.offset

    def sink(batch: list[bytes]) -> None:
        nonlocal position
        if body_hash is not None:
            for chunk in batch:
                body_hash.update(chunk)
        write_chunks(fd, batch, position)
        position += sum(len(chunk) for chunk in batch)

    pipeline = BatchPipeline(sink, digest)
    disconnected = False
    try:
        async for chunk in request.stream():
            if upload.offset + pipeline.size + len(chunk) > upload.length:
                await pipeline.discard()
                os.ftruncate(fd, upload.offset)
                raise PayloadTooLarge(
                    f"The body goes past Upload-Length ({upload.length} bytes); nothing of it was kept.",
                    code="exceeds_length",
                )
            await pipeline.write(chunk)
    except ClientDisconnect:
        disconnected = True
    await pipeline.flush()
    if checksum is not None and (disconnected or body_hash is None or body_hash.digest() != checksum[1]):
        os.ftruncate(fd, upload.offset)
        raise ChecksumMismatch(
            "The body does not match Upload-Checksum; nothing of it was kept. Send it again.",
            headers={"Upload-Offset": str(upload.offset)},
        )
    new_offset = upload.offset + pipeline.size
    await asyncio.to_thread(os.fsync, fd)
    if new_offset == upload.length:
        return await _finish(state, principal, upload, path, digest.hexdigest())
    expires_at = utcnow() + timedelta(seconds=state.settings.upload_expiry_seconds)
    async with state.write_sessions() as session:
        moved = await UploadRepository(session, principal.organization_id).advance(
            upload.id, upload.offset, new_offset, expires_at
        )
        await session.commit()
    if not moved:
        raise Conflict("The upload moved on during this PATCH; HEAD it and resume.", code="offset_mismatch")
    _remember(upload.id, new_offset, digest)
    return {"Upload-Offset": str(new_offset), "Upload-Expires": http_date(expires_at)}


async def _finish(
    state: AppState, principal: Principal, upload: ResumableUpload, path: Path, sha256: str
) -> dict[str, str]:
    """The last byte arrived: store the app as the single-request upload would, in one transaction with
    the upload's final offset. An invalid package is a 422 and nothing is kept, the upload included."""
    _hashes.pop(upload.id, None)
    owner = dataclasses.replace(principal, user_id=upload.user_id)
    file_id = new_id("file")
    ext = apps.KIND_EXTENSION.get(kind_from_name(upload.filename) or "", "")
    staged = state.storage.adopt(str(path), f"{upload.organization_id}/{file_id}{ext}", upload.length, sha256)
    form = apps.app_form(upload.app_name, upload.version, upload.os)
    try:
        async with state.write_sessions() as session:
            result: UploadOut = await apps.store_app(session, state, owner, staged, file_id, upload.filename, form)
            repo = UploadRepository(session, principal.organization_id)
            moved = await repo.advance(upload.id, upload.offset, upload.length, upload.expires_at)
            row = await repo.get(upload.id)
            if not moved or row is None:
                raise Conflict("The upload moved on during this PATCH; HEAD it and resume.", code="offset_mismatch")
            row.app_id = result.file.id
            await session.commit()
    except QualgentError as exc:
        await staged.abort()
        if exc.status_code == 422:
            async with state.write_sessions() as session:
                await UploadRepository(session, principal.organization_id).remove(upload.id)
                await session.commit()
        raise
    except BaseException:
        await staged.abort()
        raise
    return {"Upload-Offset": str(upload.length), APP_ID_HEADER: result.file.id}


# ------------------------------------------------------------------------------------- termination


async def terminate(session: AsyncSession, state: AppState, principal: Principal, upload_id: str) -> None:
    repo = UploadRepository(session, principal.organization_id)
    _live(await repo.get(upload_id), upload_id)
    await repo.remove(upload_id)
    _hashes.pop(upload_id, None)
    path = part_path(state, upload_id)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
