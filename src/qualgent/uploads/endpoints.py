"""Resumable uploads over tus 1.0.0 under /v1/apps/uploads/ (see docs/uploads.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from qualgent.deps import PrincipalDep, SessionDep, StateDep
from qualgent.lenient_json import LenientJSONRoute
from qualgent.openapi import NO_SECURITY, errors
from qualgent.uploads import service
from qualgent.uploads.schemas import UploadStatusOut

router = APIRouter(prefix="/v1/apps/uploads", tags=["Resumable uploads"], route_class=LenientJSONRoute)


# ------------------------------------------------------------------- the tus headers, for the document


def _header(name: str, description: str, schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description, "schema": schema}


_BASE64 = "(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
_OFFSET_SCHEMA = {"type": "integer", "minimum": 0, "maximum": 10**19 - 1}
_LENGTH_SCHEMA = {"type": "integer", "minimum": 1, "maximum": 10**19 - 1}
_VERSION = _header(
    "Tus-Resumable",
    "The tus version the client speaks; another (or none) is 412.",
    {"type": "string", "const": "1.0.0"},
)
_EXPIRES = {"description": "When an unfinished upload expires (an HTTP date).", "schema": {"type": "string"}}
_APP_ID = {"description": "The app the upload became, once finished.", "schema": {"type": "string"}}
_OFFSET_OUT = {"description": "Bytes received so far.", "required": True, "schema": _OFFSET_SCHEMA}
_TUS_RESUMABLE_OUT = {
    "description": "Every answer here.",
    "required": True,
    "schema": {"type": "string", "const": "1.0.0"},
}


def _tus(
    parameters: list[dict[str, Any]] | None = None, headers: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """``openapi_extra`` of a tus route: its request headers, and the headers of its success."""
    success = "201" if extra.pop("created", False) else "204" if extra.pop("empty", False) else "200"
    out: dict[str, Any] = {
        "parameters": parameters or [],
        "responses": {success: {"headers": {"Tus-Resumable": _TUS_RESUMABLE_OUT, **(headers or {})}}},
        **extra,
    }
    return out


_PRECONDITION = errors((412, "Tus-Resumable is not 1.0.0 (`unsupported_tus_version`); Tus-Version says what is."))


@router.options(
    "/",
    status_code=204,
    response_class=Response,
    openapi_extra={
        **NO_SECURITY,
        **_tus(
            empty=True,
            headers={
                "Tus-Version": {"description": "1.0.0", "required": True, "schema": {"type": "string"}},
                "Tus-Extension": {
                    "description": service.TUS_EXTENSIONS,
                    "required": True,
                    "schema": {"type": "string"},
                },
                "Tus-Max-Size": {
                    "description": "The largest upload, in bytes.",
                    "required": True,
                    "schema": _LENGTH_SCHEMA,
                },
                "Tus-Checksum-Algorithm": {
                    "description": ",".join(service.CHECKSUMS),
                    "required": True,
                    "schema": {"type": "string"},
                },
            },
        ),
    },
)
async def upload_options(state: StateDep) -> Response:
    """The tus protocol's capabilities: version, extensions, size limit and checksum algorithms (no key needed)."""
    return Response(status_code=204, headers=service.protocol_headers(state))


@router.post(
    "/",
    status_code=201,
    response_class=Response,
    responses={
        **_PRECONDITION,
        **errors(
            (413, "Upload-Length is over the size limit (Tus-Max-Size)."),
            (422, "An empty file, or a platform that cannot be told from the file name."),
        ),
    },
    openapi_extra=_tus(
        [
            _VERSION,
            _header("Upload-Length", "The build's size in bytes.", _LENGTH_SCHEMA),
            _header(
                "Upload-Metadata",
                "Comma-separated `key base64(value)` pairs: `filename` (required), `app_name`, `version`, `os`.",
                {"type": "string", "minLength": 1, "maxLength": service.MAX_METADATA_CHARS},
            ),
        ],
        {
            "Location": {"description": "The upload's URL.", "required": True, "schema": {"type": "string"}},
            "Upload-Offset": _OFFSET_OUT,
            "Upload-Expires": {**_EXPIRES, "required": True},
        },
        created=True,
    ),
)
async def create_upload(request: Request, session: SessionDep, state: StateDep, principal: PrincipalDep) -> Response:
    """Start a resumable upload: Upload-Length and Upload-Metadata (filename, app_name, version, os)."""
    return Response(status_code=201, headers=await service.create(request, session, state, principal))


@router.head(
    "/{upload_id}",
    response_class=Response,
    responses=_PRECONDITION,
    openapi_extra=_tus(
        [_VERSION],
        {
            "Upload-Offset": _OFFSET_OUT,
            "Upload-Length": {"description": "The build's size.", "required": True, "schema": _LENGTH_SCHEMA},
            "Upload-Expires": _EXPIRES,
            service.APP_ID_HEADER: _APP_ID,
        },
    ),
)
async def upload_offset(request: Request, upload_id: str, session: SessionDep, principal: PrincipalDep) -> Response:
    """The offset to resume from (Upload-Offset), and Qualgent-App-Id once the app exists."""
    return Response(status_code=200, headers=await service.head(request, session, principal, upload_id))


@router.patch(
    "/{upload_id}",
    status_code=204,
    response_class=Response,
    responses={
        **_PRECONDITION,
        **errors(
            (409, "Upload-Offset is not the upload's offset, or another PATCH is writing (`upload_busy`)."),
            (413, "The body goes past Upload-Length (`exceeds_length`); none of it is kept."),
            415,
            (422, "The finished file is not the package it claims to be."),
            (460, "The body does not match Upload-Checksum (`checksum_mismatch`); none of it is kept."),
        ),
    },
    openapi_extra=_tus(
        [
            _VERSION,
            _header("Upload-Offset", "Where these bytes go: the upload's current offset.", _OFFSET_SCHEMA),
            _header(
                "Upload-Checksum",
                f"`algorithm base64(digest)` of this body ({', '.join(service.CHECKSUMS)}); another is 400.",
                {"type": "string", "pattern": f"^(?:{'|'.join(service.CHECKSUMS)}) {_BASE64}$"},
                required=False,
            ),
        ],
        {"Upload-Offset": _OFFSET_OUT, "Upload-Expires": _EXPIRES, service.APP_ID_HEADER: _APP_ID},
        empty=True,
        requestBody={
            "required": True,
            "content": {service.OFFSET_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        },
    ),
)
async def upload_bytes(request: Request, upload_id: str, state: StateDep, principal: PrincipalDep) -> Response:
    """Send bytes at Upload-Offset (Content-Type: application/offset+octet-stream); the last creates the app."""
    return Response(status_code=204, headers=await service.patch(request, state, principal, upload_id))


@router.delete(
    "/{upload_id}",
    status_code=204,
    response_class=Response,
    responses=_PRECONDITION,
    openapi_extra=_tus([_VERSION], empty=True),
)
async def delete_upload(
    request: Request, upload_id: str, session: SessionDep, state: StateDep, principal: PrincipalDep
) -> Response:
    """Abandon an upload and remove its bytes (an app it already became stays)."""
    service.check_version(request)
    await service.terminate(session, state, principal, upload_id)
    return Response(status_code=204)


@router.get("/{upload_id}", response_model=UploadStatusOut, openapi_extra=_tus())
async def get_upload(upload_id: str, session: SessionDep, state: StateDep, principal: PrincipalDep) -> UploadStatusOut:
    """An upload's progress as JSON, with the app it became once finished."""
    return await service.describe(session, state, principal, upload_id)
