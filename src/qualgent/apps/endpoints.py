from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse

from qualgent.apps import service
from qualgent.apps.repository import AppRepository
from qualgent.apps.schemas import AppOut, DeleteIn, DeleteOut, UploadOut
from qualgent.auth.service import refuse_failed
from qualgent.deps import PrincipalDep, SessionDep, StateDep
from qualgent.errors import Forbidden, NotFound
from qualgent.idempotency import service as idempotency
from qualgent.idempotency.service import IdempotencyKeyDep
from qualgent.lenient_json import LenientJSONRoute
from qualgent.metrics.instruments import UPLOAD_SECONDS
from qualgent.openapi import errors
from qualgent.packages.inspect import MIME_TYPES
from qualgent.pagination import PageDep, set_next_link
from qualgent.signing import MAX_EXPIRES, verify

router = APIRouter(prefix="/v1/apps", tags=["Apps"], route_class=LenientJSONRoute)
# Pre-signed downloads carry their own authorisation and take no API key.
download_router = APIRouter(prefix="/v1/apps", tags=["Apps"], route_class=LenientJSONRoute)

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "app_name", "version"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The app build."},
                        "app_name": {"type": "string", "description": "Name of the application."},
                        "version": {"type": "string", "description": "Application version number."},
                        "os": {
                            "type": "string",
                            "enum": ["android", "ios"],
                            "description": "Optional: detected from the file when absent.",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "/upload",
    response_model=UploadOut,
    openapi_extra=_UPLOAD_BODY,
    responses=idempotency.RESPONSES,
)
async def upload_app(
    request: Request, session: SessionDep, state: StateDep, principal: PrincipalDep, key: IdempotencyKeyDep
) -> UploadOut | Response:
    """Upload an application file (streamed; any size up to the server's limit)."""
    started = time.monotonic()
    out = await service.receive_upload(request, session, state, principal)
    UPLOAD_SECONDS.observe(time.monotonic() - started)
    if key is None:
        return out
    # The fingerprint needs the file's SHA-256, known once the body has streamed in; a repeat therefore
    # stores its copy first, then drops it (row and file) and answers the first upload's response.
    f = out.file
    fingerprint = idempotency.fingerprint(
        "POST", "/v1/apps/upload", idempotency.digest(f"{f.app_name}\n{f.version}\n{f.os}\n{f.sha256}")
    )
    replay = await idempotency.claim(session, principal, key, fingerprint)
    if replay is not None:
        await service.discard_upload(session, state, principal, f.id)
        return replay.response()
    await idempotency.record(session, principal, key, 200, out.model_dump_json())
    return out


@router.get("", response_model=list[AppOut])
async def list_apps(
    request: Request,
    response: Response,
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
    page: PageDep,
) -> list[AppOut]:
    """List all non-deleted files in your organization, newest first."""
    rows = await AppRepository(session, principal.organization_id).page(page.limit + 1, page.cursor)
    items = rows[: page.limit]
    set_next_link(request, response, items[-1].id if len(rows) > page.limit else None, state.settings.public_base_url)
    return [service.to_out(state, app) for app in items]


@router.get("/latest", response_model=AppOut, responses=errors((404, "No app (of this OS) uploaded yet.")))
async def latest_app(
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
    os: Annotated[str | None, Query(pattern="^(android|ios)$", description="Only apps of this OS.")] = None,
) -> AppOut:
    """Get your organization's most recently uploaded app."""
    app = await AppRepository(session, principal.organization_id).latest(os)
    if app is None:
        raise NotFound("No apps uploaded yet; upload one with POST /v1/apps/upload.")
    return service.to_out(state, app)


@router.get("/{app_id}", response_model=AppOut)
async def get_app(app_id: str, session: SessionDep, state: StateDep, principal: PrincipalDep) -> AppOut:
    """Get a specific app by ID."""
    app = await AppRepository(session, principal.organization_id).get(app_id)
    if app is None:
        raise NotFound(f"No app {app_id}.")
    return service.to_out(state, app)


_UNKNOWN_FILES = errors((404, "Some of the files do not exist or were deleted already; nothing was deleted."))


@router.delete("", response_model=DeleteOut, responses=_UNKNOWN_FILES)
async def delete_apps(body: DeleteIn, session: SessionDep, principal: PrincipalDep) -> DeleteOut:
    """Delete files by ID (soft: runs that used them keep their reference)."""
    return DeleteOut(deleted=await service.delete_apps(session, principal, body.files))


@router.post("/delete", response_model=DeleteOut, responses=_UNKNOWN_FILES)
async def delete_apps_post(body: DeleteIn, session: SessionDep, principal: PrincipalDep) -> DeleteOut:
    """Delete files by ID, for clients that cannot send a body with DELETE."""
    return DeleteOut(deleted=await service.delete_apps(session, principal, body.files))


@download_router.get(
    "/{app_id}/download",
    response_class=Response,
    responses={
        200: {
            "content": {media_type: {} for media_type in dict.fromkeys(MIME_TYPES.values())},
            "description": "The app's file, with its original name in Content-Disposition.",
        },
        307: {"description": "On object storage: the store's own pre-signed URL."},
        **errors(
            (403, "The link's signature is wrong or it has expired (`invalid_signature`)."),
            (429, "Too many failed signatures from this address; wait `Retry-After` seconds."),
        ),
    },
)
async def download_app(
    app_id: str,
    request: Request,
    session: SessionDep,
    state: StateDep,
    org: Annotated[str, Query(max_length=40, description="The organisation the link was signed for.")],
    expires: Annotated[int, Query(ge=0, le=MAX_EXPIRES, description="When the link expires (Unix seconds).")],
    signature: Annotated[str, Query(max_length=128, description="The link's signature.")],
) -> Response:
    """Download an app's file through a pre-signed link (valid 5 minutes)."""
    if not verify(state.signing_key, org, app_id, expires, signature):
        await refuse_failed(
            request,
            state,
            Forbidden(
                "This download link is invalid or has expired; get a fresh one from GET /v1/apps/{id}.",
                code="invalid_signature",
            ),
        )
    app = await AppRepository(session, org).get(app_id)
    if app is None:
        raise NotFound(f"No app {app_id}.")
    path = state.storage.path(app.storage_key)
    if path is not None:
        return FileResponse(path, media_type=app.file_type, filename=app.original_name)
    # Object storage: the store serves the bytes itself, through its own short-lived link.
    direct = state.storage.presigned_url(
        app.storage_key, app.original_name, app.file_type, state.settings.download_link_ttl
    )
    if direct is not None:
        return RedirectResponse(direct, status_code=307)
    return StreamingResponse(state.storage.open(app.storage_key), media_type=app.file_type)
