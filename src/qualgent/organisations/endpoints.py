from __future__ import annotations

from fastapi import APIRouter

from qualgent.deps import PrincipalDep, SessionDep, StateDep
from qualgent.lenient_json import LenientJSONRoute
from qualgent.organisations import service
from qualgent.organisations.schemas import OrganizationSettings, OrganizationSettingsPatch

router = APIRouter(prefix="/v1/organization", tags=["Organization"], route_class=LenientJSONRoute)


@router.get("/settings", response_model=OrganizationSettings)
async def get_settings(session: SessionDep, state: StateDep, principal: PrincipalDep) -> OrganizationSettings:
    """Your organisation's settings: default test retries and quarantine of flaky tests."""
    return await service.settings_of(session, principal.organization_id, state.settings.default_parallel_runs)


@router.patch("/settings", response_model=OrganizationSettings)
async def change_settings(
    body: OrganizationSettingsPatch, session: SessionDep, state: StateDep, principal: PrincipalDep
) -> OrganizationSettings:
    """Change your organisation's settings (the fields sent)."""
    return await service.change_settings(session, principal.organization_id, body, state.settings.default_parallel_runs)
