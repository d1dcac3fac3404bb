from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from qualgent.batches import service
from qualgent.batches.schemas import BatchOut
from qualgent.deps import PrincipalDep, SessionDep, StateDep
from qualgent.lenient_json import LenientJSONRoute

router = APIRouter(prefix="/v1/batches", tags=["Batches"], route_class=LenientJSONRoute)


@router.get("/{batch_id}", response_model=BatchOut, response_model_exclude_none=False)
async def get_batch(
    batch_id: str,
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
    runs: Annotated[bool, Query(description="Also list its runs (the CLI waits on a batch this way).")] = False,
    queue: Annotated[bool, Query(description="With runs: say why each queued run waits (`queue`).")] = False,
) -> BatchOut:
    """A batch (the runs of one run or run-all request): counts by status, wall time and the gate's verdict."""
    return await service.batch_out(session, state, principal, batch_id, with_runs=runs, with_queue=queue)
