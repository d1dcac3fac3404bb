from __future__ import annotations

from fastapi import APIRouter, Request, Response

from qualgent.categories import service
from qualgent.categories.repository import CategoryRepository
from qualgent.categories.schemas import CategoryIn, CategoryOut, CategoryPatch, DeletedOut
from qualgent.deps import PrincipalDep, SessionDep, StateDep
from qualgent.lenient_json import LenientJSONRoute
from qualgent.pagination import PageDep, set_next_link

router = APIRouter(prefix="/v1/categories", tags=["Categories"], route_class=LenientJSONRoute)


@router.get("/list", response_model=list[CategoryOut])
@router.get("", response_model=list[CategoryOut], include_in_schema=False)
async def list_categories(
    request: Request,
    response: Response,
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
    page: PageDep,
) -> list[CategoryOut]:
    """List all categories belonging to your organization."""
    rows = await CategoryRepository(session, principal.organization_id).page(page.limit + 1, page.cursor)
    items = rows[: page.limit]
    set_next_link(request, response, items[-1].id if len(rows) > page.limit else None, state.settings.public_base_url)
    return [CategoryOut.model_validate(c) for c in items]


@router.post("", response_model=CategoryOut, status_code=201)
async def create_category(body: CategoryIn, session: SessionDep, principal: PrincipalDep) -> CategoryOut:
    """Create a category."""
    return CategoryOut.model_validate(await service.create(session, principal.organization_id, body))


@router.patch("/{category_id}", response_model=CategoryOut)
async def update_category(
    category_id: str, body: CategoryPatch, session: SessionDep, principal: PrincipalDep
) -> CategoryOut:
    """Rename a category or change its description."""
    return CategoryOut.model_validate(await service.update(session, principal.organization_id, category_id, body))


@router.delete("/{category_id}", response_model=DeletedOut)
async def delete_category(category_id: str, session: SessionDep, principal: PrincipalDep) -> DeletedOut:
    """Delete a category; its test cases remain, without a category."""
    await service.delete(session, principal.organization_id, category_id)
    return DeletedOut(deleted=[category_id])
