from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response
from prometheus_client import CONTENT_TYPE_LATEST

from qualgent.deps import SessionDep, StateDep
from qualgent.metrics import service

router = APIRouter(tags=["Health"])


# Not in the OpenAPI document: an operator's route, like /healthz, read by Prometheus.
@router.get("/metrics", include_in_schema=False)
async def metrics(
    session: SessionDep, state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> Response:
    """Prometheus metrics (text format); with QUALGENT_METRICS_TOKEN set, a bearer token is required."""
    service.check_token(state.settings, authorization)
    return Response(await service.render(session, state.settings), media_type=CONTENT_TYPE_LATEST)
