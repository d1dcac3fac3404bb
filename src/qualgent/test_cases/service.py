from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.categories.repository import CategoryRepository
from qualgent.db.base import utcnow
from qualgent.db.models import Category, TestCase
from qualgent.errors import NotFound, Unprocessable
from qualgent.flows.model import FlowError
from qualgent.flows.parse import parse_flow
from qualgent.ids import new_id
from qualgent.runs.repository import RunRepository
from qualgent.runs.schemas import Ref
from qualgent.runs.service import to_latest
from qualgent.state import AppState
from qualgent.test_cases.repository import TestCaseRepository
from qualgent.test_cases.schemas import TestCaseDetail, TestCaseIn, TestCaseOut, TestCasePatch


def _fields(case: TestCase, latest: Any | None, state: AppState) -> dict[str, object]:
    return {
        "id": case.id,
        "name": case.name,
        "status": case.status,
        "category": Ref(id=case.category.id, name=case.category.name) if case.category else None,
        "latest_completed_run": to_latest(state, latest) if latest else None,
        "description": case.description,
        "created_at": case.created_at,
        "updated_at": case.updated_at,
    }


async def list_out(
    session: AsyncSession, state: AppState, organization_id: str, cases: Sequence[TestCase]
) -> list[TestCaseOut]:
    latest = await RunRepository(session, organization_id, state.reader).latest_completed([c.id for c in cases])
    return [TestCaseOut.model_validate(_fields(c, latest.get(c.id), state)) for c in cases]


async def detail(session: AsyncSession, state: AppState, organization_id: str, test_case_id: str) -> TestCaseDetail:
    case = await TestCaseRepository(session, organization_id).get_with_category(test_case_id)
    if case is None:
        raise NotFound(f"No test case {test_case_id}.")
    latest = await RunRepository(session, organization_id, state.reader).latest_completed([case.id])
    return TestCaseDetail.model_validate(
        {
            **_fields(case, latest.get(case.id), state),
            "flow": case.flow,
            "timeout_seconds": case.timeout_seconds,
        }
    )


async def _category(session: AsyncSession, organization_id: str, category_id: str) -> Category:
    category = await CategoryRepository(session, organization_id).get(category_id)
    if category is None:
        raise Unprocessable(
            f"No category {category_id}.",
            code="unknown_reference",
            details=[{"field": "category_id", "issue": "not found"}],
        )
    return category


def validate_flow(flow: str) -> None:
    """A flow is checked when it is stored, so a run never starts with steps no device can run."""
    if not flow.strip():
        return
    try:
        parse_flow(flow)
    except FlowError as exc:
        where = f"line {exc.line}: " if exc.line else ""
        raise Unprocessable(
            f"The flow is invalid: {where}{exc.message}",
            code="invalid_flow",
            details=[{"field": "flow", "line": exc.line, "issue": exc.message}],
        ) from None


async def create(session: AsyncSession, organization_id: str, body: TestCaseIn) -> str:
    validate_flow(body.flow)
    if body.category_id is not None:
        await _category(session, organization_id, body.category_id)
    case = TestCase(
        id=new_id("tc"),
        organization_id=organization_id,
        category_id=body.category_id,
        name=body.name.strip(),
        description=body.description,
        status=body.status,
        flow=body.flow,
        timeout_seconds=body.timeout_seconds,
    )
    await TestCaseRepository(session, organization_id).add(case)
    return case.id


async def update(session: AsyncSession, organization_id: str, test_case_id: str, body: TestCasePatch) -> None:
    case = await TestCaseRepository(session, organization_id).get(test_case_id)
    if case is None:
        raise NotFound(f"No test case {test_case_id}.")
    changes = body.model_dump(exclude_unset=True)
    if changes.get("flow") is not None:
        validate_flow(changes["flow"])
    if changes.get("category_id") is not None:
        await _category(session, organization_id, changes["category_id"])
    if "name" in changes and changes["name"] is not None:
        changes["name"] = changes["name"].strip()
    for field, value in changes.items():
        if value is None and field in ("name", "status", "description", "flow"):
            raise Unprocessable(f"{field} cannot be null.", details=[{"field": field, "issue": "null"}])
        setattr(case, field, value)
    await session.flush()


async def delete(session: AsyncSession, organization_id: str, test_case_id: str) -> None:
    """Soft delete: the test case leaves lists and cannot be run; its past runs keep their reference."""
    case = await TestCaseRepository(session, organization_id).get(test_case_id)
    if case is None:
        raise NotFound(f"No test case {test_case_id}.")
    case.deleted_at = utcnow()
    await session.flush()
