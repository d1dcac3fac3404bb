from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from qualgent.agents.repository import AgentRepository
from qualgent.deps import PrincipalDep, SessionDep, StateDep
from qualgent.lenient_json import LenientJSONRoute

router = APIRouter(prefix="/v1/devices", tags=["Devices"], route_class=LenientJSONRoute)

_EXAMPLE = {
    "phone": [
        {
            "id": "dev_pixel-7-14-0",
            "name": "Pixel 7",
            "os_version": "14.0",
            "platform": "Android",
            "device_type": "phone",
        },
        {
            "id": "dev_iphone-14-pro-16-0",
            "name": "iPhone 14 Pro",
            "os_version": "16.0",
            "platform": "iOS",
            "device_type": "phone",
        },
    ],
    "tablet": [
        {
            "id": "dev_ipad-pro-16-0",
            "name": "iPad Pro",
            "os_version": "16.0",
            "platform": "iOS",
            "device_type": "tablet",
        }
    ],
}


@router.get(
    "/list",
    response_model=dict[str, list[dict[str, Any]]],
    responses={200: {"content": {"application/json": {"example": _EXAMPLE}}}},
)
@router.get("", response_model=dict[str, list[dict[str, Any]]], include_in_schema=False)
async def list_devices(
    session: SessionDep, state: StateDep, principal: PrincipalDep
) -> dict[str, list[dict[str, Any]]]:
    """List all available devices, keyed by device type, with how many are online and free now."""
    availability = await AgentRepository(session).availability()
    return state.devices.by_type(availability)
