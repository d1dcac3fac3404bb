"""Apps: streaming upload, listing with signed links, soft deletion."""

from __future__ import annotations

import asyncio
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import ClientDisconnect, Request

from qualgent.apps.repository import AppRepository, BlobRepository
from qualgent.apps.schemas import AppOut, UploadedFile, UploadOut
from qualgent.auth.principal import Principal
from qualgent.db.models import AppFile
from qualgent.db.session import on_rollback
from qualgent.errors import BadRequest, NotFound, PayloadTooLarge, Unprocessable
from qualgent.ids import new_id
from qualgent.metrics.instruments import UPLOAD_BYTES, UPLOADS
from qualgent.packages.inspect import PackageError, inspect_package, kind_from_name
from qualgent.signing import signed_download_url
from qualgent.state import AppState
from qualgent.storage.base import Upload

MAX_FIELD_BYTES = 16 * 1024
MAX_FIELDS = 20
# python-multipart's own limit; RFC 2046 allows 70 characters.
MAX_BOUNDARY_BYTES = 256
# Room for multipart boundaries and small fields on top of the file itself.
MULTIPART_OVERHEAD = 1024 * 1024
KIND_EXTENSION = {"apk": ".apk", "aab": ".aab", "ipa": ".ipa", "app.zip": ".zip"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Also dropped from file names: C1 controls and the invisible marks that reorder or hide text
# (bidi overrides make "evil\u202ekpa.apk" display as "evilapk.apk").
_NAME_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
MAX_NAME_CHARS = 255


def app_display_name(app: AppFile) -> str:
    return f"{app.app_name} v{app.version}"


def app_link(state: AppState, app: AppFile) -> str:
    direct = state.storage.presigned_url(
        app.storage_key, app.original_name, app.file_type, state.settings.download_link_ttl
    )
    if direct is not None:
        return direct
    return signed_download_url(
        state.settings.public_base_url,
        state.signing_key,
        app.organization_id,
        app.id,
        state.settings.download_link_ttl,
    )


def to_out(state: AppState, app: AppFile) -> AppOut:
    return AppOut(
        id=app.id,
        name=app.original_name,
        version=app.version,
        os=app.os,
        link=app_link(state, app),
        app_name=app.app_name,
        file_size=app.file_size,
        file_type=app.file_type,
        sha256=app.sha256,
        metadata=app.package_metadata,
        created_at=app.created_at,
    )


def safe_original_name(raw: str) -> str:
    # Browsers and curl send a base name, but a hostile client can send a path: keep the last part.
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = _NAME_UNSAFE.sub("", unicodedata.normalize("NFC", name)).strip().strip(".")
    if len(name) > MAX_NAME_CHARS:
        # Shorten the stem, not the extension: the platform is read from it.
        stem, dot, ext = name.rpartition(".")
        ext = dot + ext if stem and len(ext) < 16 else ""
        name = name[: MAX_NAME_CHARS - len(ext)] + ext
    return name or "upload"


def _slug(value: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("._")
    return slug[:80] or "app"


def _text_field(fields: dict[str, str], name: str, max_len: int) -> str:
    if name not in fields:
        raise BadRequest(f"Missing required form field '{name}'.", code="missing_parameter")
    value = fields[name].strip()
    if not value:
        raise Unprocessable(f"Form field '{name}' must not be empty.", details=[{"field": name, "issue": "empty"}])
    if len(value) > max_len or _CONTROL.search(value):
        raise Unprocessable(
            f"Form field '{name}' must be at most {max_len} printable characters.",
            details=[{"field": name, "issue": "too long or contains control characters"}],
        )
    return value


class _MultipartReader:
    """Feeds the request body through python-multipart's streaming parser.

    The parser's callbacks are synchronous; they queue events that the async loop then applies, so the
    file part goes to storage chunk by chunk and is never held whole in memory.
    """

    def __init__(self, boundary: bytes) -> None:
        self.events: list[tuple[str, Any]] = []
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        # Set once the closing boundary is parsed; a body without it was cut short.
        self.complete = False
        add = self.events.append

        def on_header_end() -> None:
            self._headers[bytes(self._field).lower()] = bytes(self._value)
            self._field.clear()
            self._value.clear()

        def on_headers_finished() -> None:
            add(("headers", self._headers))
            self._headers = {}

        callbacks: dict[str, Callable[..., None]] = {
            "on_part_begin": lambda: None,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": lambda d, s, e: add(("data", d[s:e])),
            "on_part_end": lambda: add(("end", None)),
            "on_end": self._on_end,
        }
        self.parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]

    def _on_end(self) -> None:
        self.complete = True


async def receive_upload(
    request: Request,
    session: AsyncSession,
    state: AppState,
    principal: Principal,
    before_file: Callable[[dict[str, str]], None] | None = None,
) -> UploadOut:
    """Stream a multipart upload to storage. ``before_file`` sees the fields sent before the file part
    when it begins, and may refuse the upload (raise) before any byte of the file is stored."""
    settings = state.settings
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise BadRequest(
            "Send the upload as multipart/form-data with a 'file' part and 'app_name' and 'version' fields.",
            code="invalid_content_type",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(_too_large_message(settings.max_upload_bytes))

    if len(boundary) > MAX_BOUNDARY_BYTES:
        raise BadRequest(
            f"The multipart boundary is longer than {MAX_BOUNDARY_BYTES} bytes (RFC 2046 allows 70).",
            code="malformed_multipart",
        )
    reader = _MultipartReader(boundary)
    fields: dict[str, str] = {}
    upload: Upload | None = None
    original_name = ""
    part: dict[str, Any] | None = None
    file_id = ""
    try:
        async for chunk in request.stream():
            try:
                reader.parser.write(chunk)
            except MultipartParseError:
                raise BadRequest("The multipart body is malformed.", code="malformed_multipart") from None
            for kind, value in reader.events:
                if kind == "headers":
                    part = _start_part(value)
                    if part["filename"] is not None:
                        if part["name"] != "file" or upload is not None:
                            raise BadRequest("Send exactly one file, in the form field 'file'.")
                        if before_file is not None:
                            before_file(fields)
                        original_name = safe_original_name(part["filename"])
                        file_id = new_id("file")
                        ext = KIND_EXTENSION.get(kind_from_name(original_name) or "", "")
                        upload = state.storage.begin(f"{principal.organization_id}/{file_id}{ext}")
                        part["upload"] = upload
                    elif len(fields) >= MAX_FIELDS:
                        raise BadRequest("Too many form fields.")
                elif kind == "data" and part is not None:
                    if part.get("upload") is not None:
                        await part["upload"].write(value)
                        if part["upload"].size > settings.max_upload_bytes:
                            raise PayloadTooLarge(_too_large_message(settings.max_upload_bytes))
                    else:
                        part["buffer"].extend(value)
                        if len(part["buffer"]) > MAX_FIELD_BYTES:
                            raise PayloadTooLarge(f"Form field '{part['name']}' is too large.")
                elif kind == "end" and part is not None:
                    if part.get("upload") is None:
                        try:
                            fields[part["name"]] = part["buffer"].decode("utf-8")
                        except UnicodeDecodeError:
                            raise Unprocessable(f"Form field '{part['name']}' is not UTF-8 text.") from None
                    part = None
            reader.events.clear()
            if reader.complete:
                # Whatever follows the closing boundary (an epilogue) is not read: it could go on forever.
                break
        reader.parser.finalize()
        if not reader.complete:
            raise BadRequest("The multipart body ends before its closing boundary.", code="malformed_multipart")
        if upload is None:
            raise BadRequest("Missing required form field 'file' (the app build).", code="missing_parameter")
        if upload.size == 0:
            raise Unprocessable("The uploaded file is empty.", code="empty_file")
        await upload.flush()
        return await store_app(session, state, principal, upload, file_id, original_name, _form(fields))
    except ClientDisconnect:
        raise BadRequest("The upload was interrupted before it finished; nothing was stored.") from None
    finally:
        if upload is not None:
            await upload.abort()  # a no-op once committed


def _too_large_message(limit: int) -> str:
    return f"The upload exceeds the size limit of {limit} bytes; nothing was stored."


def _start_part(headers: dict[bytes, bytes]) -> dict[str, Any]:
    disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
    if disposition != b"form-data" or b"name" not in options:
        raise BadRequest("Each multipart part needs a Content-Disposition: form-data header with a name.")
    filename = options.get(b"filename")
    return {
        "name": options[b"name"].decode("utf-8", "replace"),
        "filename": filename.decode("utf-8", "replace") if filename is not None else None,
        "buffer": bytearray(),
    }


@dataclass(frozen=True)
class AppForm:
    """The app's fields, from the multipart form or a resumable upload's metadata."""

    app_name: str
    version: str
    os: str | None


def _form(fields: dict[str, str]) -> AppForm:
    return app_form(_text_field(fields, "app_name", 200), _text_field(fields, "version", 100), fields.get("os", ""))


def app_form(app_name: str, version: str, os: str | None) -> AppForm:
    requested_os = (os or "").strip().lower() or None
    if requested_os is not None and requested_os not in ("android", "ios"):
        raise Unprocessable("Form field 'os' must be android or ios.", details=[{"field": "os", "issue": "enum"}])
    return AppForm(app_name, version, requested_os)


def check_fields(fields: dict[str, str]) -> AppForm:
    """Validate app fields given as text (a resumable upload's metadata), as the form's are validated."""
    return _form(fields)


async def store_app(
    session: AsyncSession,
    state: AppState,
    principal: Principal,
    staged: Upload,
    file_id: str,
    original_name: str,
    form: AppForm,
) -> UploadOut:
    """Inspect the complete, staged file; keep it once per content; record the app. The same for the
    single-request upload and a finished resumable one. Raises (and keeps nothing) when it is invalid."""
    claimed = kind_from_name(original_name)
    if claimed is None and form.os is None:
        raise Unprocessable(
            "Cannot tell the platform from the file name; name it .apk, .aab, .ipa or .zip, or send os=android|ios.",
            code="unknown_platform",
        )
    local_path = staged.local_path
    assert local_path is not None  # every backend stages uploads locally
    try:
        info = await asyncio.to_thread(inspect_package, local_path, claimed)
    except PackageError as exc:
        raise Unprocessable(str(exc), code="invalid_package") from None
    if form.os is not None and form.os != info.platform:
        raise Unprocessable(
            f"os={form.os} was sent but the file is an {info.platform} package.",
            code="platform_mismatch",
        )

    filename = f"{int(time.time() * 1000)}-{_slug(form.app_name)}-{_slug(form.version)}{KIND_EXTENSION[info.kind]}"
    file_path = f"{principal.user_id}/{filename}"
    # The object goes into place before the database is touched, so no database lock is held while
    # the store finishes the write (an fsync, or the last S3 part).
    stored = await staged.commit()
    try:
        key, created = await BlobRepository(session, principal.organization_id).acquire(
            stored.sha256, stored.key, stored.size
        )
        if not created:
            # The organisation has these bytes already: keep one copy.
            await state.storage.delete(stored.key)
        else:
            # Only the blob row of this transaction refers to the new object: should the transaction
            # roll back after this (a refused Idempotency-Key, a failed commit), the object goes with it:
            # nothing stays behind a refused upload.
            on_rollback(session, lambda: state.storage.delete(stored.key))
        app = AppFile(
            id=file_id,
            organization_id=principal.organization_id,
            user_id=principal.user_id,
            app_name=form.app_name,
            version=form.version,
            os=info.platform,
            original_name=original_name,
            filename=filename,
            storage_key=key,
            file_path=file_path,
            file_size=stored.size,
            file_type=info.mime_type,
            sha256=stored.sha256,
            package_metadata=info.metadata,
        )
        await AppRepository(session, principal.organization_id).add(app)
        UPLOADS.labels(info.platform).inc()
        UPLOAD_BYTES.labels(info.platform).inc(stored.size)
    except BaseException:
        # This request's key is its own (it names the new app's ID): the rolled-back blob row was
        # the only thing that could refer to it.
        await state.storage.delete(stored.key)
        raise
    return UploadOut(
        file=UploadedFile(
            file_path=file_path,
            filename=filename,
            original_name=original_name,
            file_size=stored.size,
            file_type=info.mime_type,
            app_name=form.app_name,
            version=form.version,
            os=info.platform,
            user_id=principal.user_id,
            organization_id=principal.organization_id,
            id=file_id,
            sha256=stored.sha256,
            metadata=info.metadata,
            link=app_link(state, app),
        )
    )


async def delete_apps(session: AsyncSession, principal: Principal, ids: list[str]) -> list[str]:
    repo = AppRepository(session, principal.organization_id)
    unique = list(dict.fromkeys(ids))
    found = await repo.get_many(unique)
    missing = [i for i in unique if i not in found]
    if missing:
        raise NotFound(
            "Some files do not exist (or were already deleted); nothing was deleted.",
            details=[{"field": "files", "id": i, "issue": "not found"} for i in missing],
        )
    await repo.soft_delete_many(unique)
    return unique


async def discard_upload(session: AsyncSession, state: AppState, principal: Principal, app_id: str) -> None:
    """Drop an upload made in this transaction (a repeated Idempotency-Key): its row and its reference
    to the stored content. The content itself is the first upload's too (same bytes, stored once), so it
    is never deleted here; a blob left without references goes with the purge."""
    repo = AppRepository(session, principal.organization_id)
    app = await repo.get(app_id)
    if app is not None:
        await repo.remove(app)
        await BlobRepository(session, principal.organization_id).release(app.sha256)
