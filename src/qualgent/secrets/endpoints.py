from __future__ import annotations

from fastapi import APIRouter

from qualgent.categories.schemas import DeletedOut
from qualgent.deps import PrincipalDep, SessionDep, StateDep
from qualgent.lenient_json import LenientJSONRoute
from qualgent.secrets import service
from qualgent.secrets.schemas import SecretIn, SecretOut

router = APIRouter(prefix="/v1/secrets", tags=["Secrets"], route_class=LenientJSONRoute)


@router.get("", response_model=list[SecretOut])
async def list_secrets(session: SessionDep, principal: PrincipalDep) -> list[SecretOut]:
    """List your organization's secrets: names and dates, never values."""
    return await service.list_secrets(session, principal.organization_id)


@router.put("/{name}", response_model=SecretOut)
async def put_secret(
    name: str, body: SecretIn, session: SessionDep, state: StateDep, principal: PrincipalDep
) -> SecretOut:
    """Create or replace a secret; every run of the organization receives it."""
    return await service.put(session, state.secrets_key, principal.organization_id, name, body.value)


@router.delete("/{name}", response_model=DeletedOut)
async def delete_secret(name: str, session: SessionDep, principal: PrincipalDep) -> DeletedOut:
    """Delete a secret; runs claimed from now on no longer receive it."""
    await service.delete(session, principal.organization_id, name)
    return DeletedOut(deleted=[name])
