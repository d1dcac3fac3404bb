"""Resumable uploads over tus 1.0.0 under /v1/apps/uploads/ (see docs/uploads.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from qualgent.deps import PrincipalDep, SessionDep, StateDep
from qualgent.lenient_json import LenientJSONRoute
from qualgent.uploads import service
from qualgent.uploads.schemas import UploadStatusOut

router = APIRouter(prefix="/v1/apps/uploads", tags=["Resumable uploads"], route_class=LenientJSONRoute)

_TUS_HEADERS = {
    "parameters": [
        {"name": "Tus-Resumable", "in": "header", "required": True, "schema": {"type": "string", "const": "1.0.0"}}
    ]
}


@router.options("/", status_code=204, response_class=Response)
async def upload_options(state: StateDep) -> Response:
    """The tus protocol's capabilities: version, extensions, size limit and checksum algorithms (no key needed)."""
    return Response(status_code=204, headers=service.protocol_headers(state))


@router.post("/", status_code=201, response_class=Response, openapi_extra=_TUS_HEADERS)
async def create_upload(request: Request, session: SessionDep, state: StateDep, principal: PrincipalDep) -> Response:
    """Start a resumable upload: Upload-Length and Upload-Metadata (filename, app_name, version, os)."""
    return Response(status_code=201, headers=await service.create(request, session, state, principal))


@router.head("/{upload_id}", response_class=Response, openapi_extra=_TUS_HEADERS)
async def upload_offset(request: Request, upload_id: str, session: SessionDep, principal: PrincipalDep) -> Response:
    """The offset to resume from (Upload-Offset), and Qualgent-App-Id once the app exists."""
    return Response(status_code=200, headers=await service.head(request, session, principal, upload_id))


@router.patch("/{upload_id}", status_code=204, response_class=Response, openapi_extra=_TUS_HEADERS)
async def upload_bytes(request: Request, upload_id: str, state: StateDep, principal: PrincipalDep) -> Response:
    """Send bytes at Upload-Offset (Content-Type: application/offset+octet-stream); the last creates the app."""
    return Response(status_code=204, headers=await service.patch(request, state, principal, upload_id))


@router.delete("/{upload_id}", status_code=204, response_class=Response, openapi_extra=_TUS_HEADERS)
async def delete_upload(
    request: Request, upload_id: str, session: SessionDep, state: StateDep, principal: PrincipalDep
) -> Response:
    """Abandon an upload and remove its bytes (an app it already became stays)."""
    service.check_version(request)
    await service.terminate(session, state, principal, upload_id)
    return Response(status_code=204)


@router.get("/{upload_id}", response_model=UploadStatusOut)
async def get_upload(upload_id: str, session: SessionDep, state: StateDep, principal: PrincipalDep) -> UploadStatusOut:
    """An upload's progress as JSON, with the app it became once finished."""
    return await service.describe(session, state, principal, upload_id)
