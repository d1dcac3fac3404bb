from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import mimetypes
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.categories.repository import CategoryRepository
from qualgent.db.base import utcnow
from qualgent.db.models import Category, TestCase
from qualgent.errors import NotFound, PayloadTooLarge, Unprocessable
from qualgent.flows.bundle import check_bundle
from qualgent.flows.model import FlowError
from qualgent.flows.paths import MAX_BUNDLE_BYTES, MAX_FILE_BYTES, MAX_FILES, normalize_path
from qualgent.ids import new_id
from qualgent.quality import service as quality
from qualgent.quality.repository import QualityRepository
from qualgent.quality.schemas import HistoryApp, HistoryOut, HistoryRun
from qualgent.quality.service import Assessment
from qualgent.runs.repository import RunRepository
from qualgent.runs.schemas import DeviceRequested, Failure, Ref, RetriesOut
from qualgent.runs.service import run_link, to_latest
from qualgent.state import AppState
from qualgent.test_cases.repository import TestCaseRepository
from qualgent.test_cases.schemas import FileIn, FileOut, TestCaseDetail, TestCaseIn, TestCaseOut, TestCasePatch

# Types of a bundle's usual files, whatever the system's MIME tables say.
_TYPES = {
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".js": "text/javascript",
    ".json": "application/json",
}


def _fields(case: TestCase, latest: Any | None, state: AppState, found: Assessment | None) -> dict[str, object]:
    return {
        "id": case.id,
        "name": case.name,
        "status": case.status,
        "category": Ref(id=case.category.id, name=case.category.name) if case.category else None,
        "latest_completed_run": to_latest(state, latest) if latest else None,
        "description": case.description,
        "created_at": case.created_at,
        "updated_at": case.updated_at,
        "tags": list(case.tags or []),
        "retries": case.retries,
        "quarantined": case.quarantined_at is not None,
        "quarantine": quality.quarantine_out(case),
        "flaky": found.flakiness.flaky if found else False,
        "flaky_reason": found.flakiness.reason if found else None,
        "stats": found.stats if found else None,
    }


async def _assess(state: AppState, organization_id: str, ids: list[str]) -> dict[str, Assessment]:
    return await quality.assess(QualityRepository.for_reads(state.reader, organization_id), ids)


async def list_out(
    session: AsyncSession, state: AppState, organization_id: str, cases: Sequence[TestCase]
) -> list[TestCaseOut]:
    ids = [c.id for c in cases]
    latest = await RunRepository(session, organization_id, state.reader).latest_completed(ids)
    found = await _assess(state, organization_id, ids)
    return [TestCaseOut.model_validate(_fields(c, latest.get(c.id), state, found.get(c.id))) for c in cases]


async def detail(session: AsyncSession, state: AppState, organization_id: str, test_case_id: str) -> TestCaseDetail:
    case = await TestCaseRepository(session, organization_id).get_with_category(test_case_id)
    if case is None:
        raise NotFound(f"No test case {test_case_id}.")
    files = await TestCaseRepository(session, organization_id).files(case.id)
    latest = await RunRepository(session, organization_id, state.reader).latest_completed([case.id])
    found = await _assess(state, organization_id, [case.id])
    return TestCaseDetail.model_validate(
        {
            **_fields(case, latest.get(case.id), state, found.get(case.id)),
            "flow": case.flow,
            "timeout_seconds": case.timeout_seconds,
            "record_video": case.record_video,
            "files": [FileOut(path=f.path, size=f.size, sha256=f.sha256) for f in files],
        }
    )


async def history(
    session: AsyncSession, state: AppState, organization_id: str, test_case_id: str, limit: int, before: str | None
) -> tuple[HistoryOut, bool]:
    """A page of the test case's finished runs, newest first, with its flakiness and figures; and
    whether more runs follow."""
    case = await TestCaseRepository(session, organization_id).get(test_case_id)
    if case is None:
        raise NotFound(f"No test case {test_case_id}.")
    repo = QualityRepository.for_reads(state.reader, organization_id)
    rows = await repo.history(case.id, limit + 1, before)
    found = (await quality.assess(repo, [case.id]))[case.id]
    runs = []
    for row in rows[:limit]:
        seconds = None
        if row.started_at is not None and row.finished_at is not None:
            seconds = round(max(0.0, (row.finished_at - row.started_at).total_seconds()), 3)
        failure = None
        if row.failure_kind:
            failure = Failure(kind=row.failure_kind, message=row.failure_message or "", step=row.failure_step)
        runs.append(
            HistoryRun(
                id=row.id,
                link=run_link(state, row.id),
                status=row.status,
                flaky=row.status == "passed" and row.test_retries_used > 0,
                quarantined=bool(row.quarantined),
                app=HistoryApp(
                    id=row.app_id,
                    name=f"{row.app_name} v{row.app_version}",
                    version=row.app_version,
                    sha256=row.app_sha256,
                ),
                device=row.device_name,
                device_details=DeviceRequested(
                    name=row.device_name,
                    platform=row.device_platform,
                    os_version=row.device_os_version,
                    orientation=row.device_orientation,
                ),
                duration_seconds=seconds,
                attempts=row.attempt,
                retries=RetriesOut(allowed=row.test_retries, used=row.test_retries_used),
                failure=failure,
                batch_id=row.batch_id,
                created_at=row.created_at,
                finished_at=row.finished_at,
            )
        )
    out = HistoryOut(
        test_case=Ref(id=case.id, name=case.name),
        flaky=found.flakiness.flaky,
        flaky_reason=found.flakiness.reason,
        quarantine=quality.quarantine_out(case),
        stats=found.stats,
        runs=runs,
    )
    return out, len(rows) > limit


async def file(session: AsyncSession, organization_id: str, test_case_id: str, path: str) -> tuple[bytes, str]:
    """A file of a test case: its bytes and content type."""
    missing = NotFound(f"No file {path!r} in test case {test_case_id}.")
    try:
        normalized = normalize_path(path)
    except ValueError:
        raise missing from None  # no file can have that path
    content = await TestCaseRepository(session, organization_id).file(test_case_id, normalized)
    if content is None:
        raise missing
    return content, content_type(normalized)


def content_type(path: str) -> str:
    extension = posixpath.splitext(path)[1].lower()
    return _TYPES.get(extension) or mimetypes.guess_type(path, strict=True)[0] or "application/octet-stream"


async def _category(session: AsyncSession, organization_id: str, category_id: str) -> Category:
    category = await CategoryRepository(session, organization_id).get(category_id)
    if category is None:
        raise Unprocessable(
            f"No category {category_id}.",
            code="unknown_reference",
            details=[{"field": "category_id", "issue": "not found"}],
        )
    return category


def invalid_flow(exc: FlowError) -> Unprocessable:
    """The API's answer to a flow (or one of its files) that cannot run: where, and why."""
    return Unprocessable(
        f"The flow is invalid: {exc.where()}{exc.message}",
        code="invalid_flow",
        details=[
            {
                "field": "flow" if exc.path is None else "files",
                "path": exc.path,
                "line": exc.line,
                "issue": exc.message,
            }
        ],
    )


def _check(flow: str, files: Mapping[str, bytes]) -> tuple[str, ...]:
    if not flow.strip():
        return ()
    try:
        return check_bundle(flow, files).tags
    except FlowError as exc:
        raise invalid_flow(exc) from None


async def validate_flow(flow: str, files: Mapping[str, bytes]) -> list[str]:
    """A flow is checked with its files when it is stored, so a run never starts with steps no device can
    run or a file it lacks; the flow's tags. An empty flow (a test case without steps yet) passes."""
    if not files:
        return list(_check(flow, files))
    # Scripts are compiled and every subflow parsed: off the event loop.
    return list(await asyncio.to_thread(_check, flow, files))


def _file_problem(index: int, path: str, issue: str) -> dict[str, Any]:
    return {"field": "files", "index": index, "path": path, "issue": issue}


def decode_files(files: list[FileIn]) -> dict[str, bytes]:
    """The files of a request as path → bytes: paths normalised and unique, contents decoded, limits kept
    (413 for sizes, 422 for the rest, each problem naming the file's index)."""
    if len(files) > MAX_FILES:
        raise Unprocessable(
            f"A test case carries at most {MAX_FILES} files; this one has {len(files)}.",
            code="too_many_files",
            details=[{"field": "files", "issue": f"at most {MAX_FILES} files"}],
        )
    out: dict[str, bytes] = {}
    first: dict[str, int] = {}
    problems: list[dict[str, Any]] = []
    too_large: list[dict[str, Any]] = []
    total = 0
    for index, item in enumerate(files):
        try:
            path = normalize_path(item.path)
        except ValueError as exc:
            problems.append(_file_problem(index, item.path, str(exc)))
            continue
        if path in first:
            problems.append(_file_problem(index, item.path, f"the same path as file {first[path]} ({path})"))
            continue
        first[path] = index
        if item.content is not None:
            try:
                data = item.content.encode("utf-8")
            except UnicodeEncodeError:
                problems.append(_file_problem(index, item.path, "content is not UTF-8 text; send content_base64"))
                continue
        else:
            try:
                data = base64.b64decode("".join((item.content_base64 or "").split()), validate=True)
            except (binascii.Error, ValueError):
                problems.append(_file_problem(index, item.path, "content_base64 is not valid base64"))
                continue
        if len(data) > MAX_FILE_BYTES:
            too_large.append(_file_problem(index, path, f"{len(data)} bytes; at most {MAX_FILE_BYTES}"))
        total += len(data)
        out[path] = data
    if too_large:
        raise PayloadTooLarge(f"A file is at most {MAX_FILE_BYTES} bytes; see details.", details=too_large)
    if total > MAX_BUNDLE_BYTES:
        raise PayloadTooLarge(
            f"A test case's files are at most {MAX_BUNDLE_BYTES} bytes in all; these are {total}.",
            details=[{"field": "files", "issue": f"{total} bytes in all; at most {MAX_BUNDLE_BYTES}"}],
        )
    if problems:
        raise Unprocessable(
            "Some files are invalid; nothing was stored. See details.", code="invalid_files", details=problems
        )
    return out


def _with_hashes(files: Mapping[str, bytes]) -> list[tuple[str, bytes, str]]:
    return [(path, data, hashlib.sha256(data).hexdigest()) for path, data in files.items()]


async def create(session: AsyncSession, organization_id: str, body: TestCaseIn) -> str:
    files = decode_files(body.files) if body.files is not None else {}
    tags = await validate_flow(body.flow, files)
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
        tags=tags,
        record_video=body.record_video,
        retries=body.retries,
    )
    repo = TestCaseRepository(session, organization_id)
    await repo.add(case)
    if files:
        await repo.replace_files(case, _with_hashes(files))
    return case.id


async def update(session: AsyncSession, organization_id: str, test_case_id: str, body: TestCasePatch) -> None:
    changes = body.model_dump(exclude_unset=True)
    # Decoded before anything is read: a bad file costs no database work.
    new_files = decode_files(body.files) if body.files is not None else None
    changes.pop("files", None)
    if "files" in body.model_fields_set and body.files is None:
        raise Unprocessable("files cannot be null; send [] for none.", details=[{"field": "files", "issue": "null"}])
    repo = TestCaseRepository(session, organization_id)
    # The flow is checked against the files (and the other way round): neither may change meanwhile.
    bundle_changes = new_files is not None or "flow" in changes
    case = await (repo.get_for_update(test_case_id) if bundle_changes else repo.get(test_case_id))
    if case is None:
        raise NotFound(f"No test case {test_case_id}.")
    for field in ("name", "status", "description", "flow", "record_video"):
        if field in changes and changes[field] is None:
            raise Unprocessable(f"{field} cannot be null.", details=[{"field": field, "issue": "null"}])
    # The flow and its files are one unit: a new flow is checked against the stored files, new files
    # against the stored flow.
    if bundle_changes:
        flow = changes.get("flow", case.flow)
        files = new_files if new_files is not None else await repo.file_contents(case.id)
        changes["tags"] = await validate_flow(flow, files)
    if changes.get("category_id") is not None:
        await _category(session, organization_id, changes["category_id"])
    if "name" in changes:
        changes["name"] = changes["name"].strip()
    for field, value in changes.items():
        setattr(case, field, value)
    if new_files is not None:
        await repo.replace_files(case, _with_hashes(new_files))
        case.updated_at = utcnow()
    await session.flush()


async def delete(session: AsyncSession, organization_id: str, test_case_id: str) -> None:
    """Soft delete: the test case leaves lists and cannot be run; its past runs keep their reference."""
    case = await TestCaseRepository(session, organization_id).get(test_case_id)
    if case is None:
        raise NotFound(f"No test case {test_case_id}.")
    case.deleted_at = utcnow()
    await session.flush()
