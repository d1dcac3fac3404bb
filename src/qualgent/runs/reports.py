"""A run's report (JSON) and JUnit XML: its attempts, the latest attempt's steps, screenshot links, and
the latest attempt's videos and device log."""

from __future__ import annotations

from typing import Any

from qualgent.errors import NotFound
from qualgent.reports import junit
from qualgent.runs import service
from qualgent.runs.repository import RunRepository
from qualgent.runs.schemas import ArtifactReport, AttemptReport, RunReport, StepReport
from qualgent.signing import signed_path_url
from qualgent.state import AppState


def screenshot_path(run_id: str, attempt: int, index: int) -> str:
    return f"/v1/jobs/{run_id}/screenshots/{attempt}/{index}.png"


def artifact_path(run_id: str, attempt: int, name: str) -> str:
    # Names are safe file names (agents/service.ARTIFACT_NAME): nothing to quote.
    return f"/v1/jobs/{run_id}/artifacts/{attempt}/{name}"


async def build(repo: RunRepository, state: AppState, run_id: str) -> tuple[Any, RunReport]:
    run = await repo.view(run_id)
    if run is None:
        raise NotFound(f"No test run {run_id}.")
    attempts = await repo.attempts(run.id)
    steps = await repo.steps(run.id, run.attempt) if run.attempt else []
    artifacts = await repo.artifacts(run.id, run.attempt) if run.attempt else []
    settings = state.settings
    return run, RunReport(
        run=service.to_out(state, run),
        attempts=[
            AttemptReport(
                number=a.number,
                device=a.device_name,
                device_id=a.device_id,
                started_at=a.started_at,
                finished_at=a.finished_at,
                outcome=a.outcome,
                message=a.message,
            )
            for a in attempts
        ],
        steps=[
            StepReport(
                index=s.index,
                parent=s.parent,
                depth=s.depth,
                description=s.description,
                status=s.status,
                message=s.message,
                duration_ms=s.duration_ms,
                logs=list(s.logs or []),
                screenshot=signed_path_url(
                    settings.public_base_url,
                    state.signing_key,
                    repo.organization_id,
                    screenshot_path(run.id, s.attempt, s.index),
                    settings.download_link_ttl,
                )
                if s.screenshot_key
                else None,
            )
            for s in steps
        ],
        artifacts=[
            ArtifactReport(
                name=a.name,
                kind=a.kind,
                content_type=a.content_type,
                size=a.size,
                step=a.step_index,
                link=signed_path_url(
                    settings.public_base_url,
                    state.signing_key,
                    repo.organization_id,
                    artifact_path(run.id, a.attempt, a.name),
                    settings.download_link_ttl,
                ),
            )
            for a in artifacts
        ],
    )


def to_junit(report: RunReport) -> bytes:
    run = report.run
    seconds = 0.0
    if run.started_at and run.finished_at:
        seconds = (run.finished_at - run.started_at).total_seconds()
    case = junit.JUnitCase(
        name=run.test_case.name,
        classname=f"{run.device_details.name} ({run.device_details.platform} {run.device_details.os_version})",
        status=run.status,
        seconds=seconds,
        link=run.link,
        failure_kind=run.failure.kind if run.failure else None,
        failure_message=run.failure.message if run.failure else None,
        steps=[
            junit.JUnitStep(s.description, s.status, s.message, s.logs, s.screenshot, s.index, s.parent)
            for s in report.steps
        ],
    )
    return junit.render({case.classname: [case]})
