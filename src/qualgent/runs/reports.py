"""A run's report (JSON) and JUnit XML: its attempts, the latest attempt's steps, screenshot links, and
the latest attempt's videos and device log."""

from __future__ import annotations

from typing import Any

from qualgent.errors import NotFound
from qualgent.reports import junit
from qualgent.runs import service
from qualgent.runs.repository import RunRepository
from qualgent.runs.schemas import ArtifactReport, AttemptReport, Failure, RunReport, StepReport
from qualgent.signing import signed_path_url
from qualgent.state import AppState


def screenshot_path(run_id: str, attempt: int, index: int) -> str:
    return f"/v1/jobs/{run_id}/screenshots/{attempt}/{index}.png"


def artifact_path(run_id: str, attempt: int, name: str) -> str:
    # Names are safe file names (agents/service.ARTIFACT_NAME): nothing to quote.
    return f"/v1/jobs/{run_id}/artifacts/{attempt}/{name}"


def _step_report(state: AppState, organization_id: str, run_id: str, s: Any) -> StepReport:
    settings = state.settings
    return StepReport(
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
            organization_id,
            screenshot_path(run_id, s.attempt, s.index),
            settings.download_link_ttl,
        )
        if s.screenshot_key
        else None,
    )


def retry_reason(before: Any | None) -> str | None:
    """Why an attempt was made, from how the one before it ended: "test" (a test retry), "infrastructure"
    (its agent was lost), None for the first."""
    if before is None:
        return None
    if before.outcome == "failed":
        return "test"
    return "infrastructure" if before.outcome == "lost" else None


async def build(
    repo: RunRepository, state: AppState, run_id: str, *, attempt: int | None = None
) -> tuple[Any, RunReport]:
    """A run's report: every attempt (why it was made, how it ended, a failed one's failing step) and the
    steps and artifacts of the latest attempt, or of ``attempt``."""
    run = await repo.view(run_id)
    if run is None:
        raise NotFound(f"No test run {run_id}.")
    attempts = await repo.attempts(run.id)
    shown = attempt or run.attempt
    if attempt is not None and attempt not in {a.number for a in attempts}:
        raise NotFound(f"Test run {run_id} has no attempt {attempt}.")
    steps = await repo.steps(run.id, shown) if shown else []
    artifacts = await repo.artifacts(run.id, shown) if shown else []
    settings = state.settings
    org = repo.organization_id
    reported: list[AttemptReport] = []
    for i, a in enumerate(attempts):
        failure = failing = None
        if a.outcome == "failed" and a.failure_kind:
            failure = Failure(kind=a.failure_kind, message=a.message or "", step=a.failure_step)
            if a.failure_step is not None:
                of_attempt = steps if a.number == shown else await repo.steps(run.id, a.number)
                found = next((s for s in of_attempt if s.index == a.failure_step), None)
                failing = _step_report(state, org, run.id, found) if found is not None else None
        reported.append(
            AttemptReport(
                number=a.number,
                device=a.device_name,
                device_id=a.device_id,
                started_at=a.started_at,
                finished_at=a.finished_at,
                outcome=a.outcome,
                message=a.message,
                retry=retry_reason(attempts[i - 1] if i else None),
                failure=failure,
                failing_step=failing,
            )
        )
    return run, RunReport(
        run=service.to_out(state, run),
        attempts=reported,
        steps=[_step_report(state, org, run.id, s) for s in steps],
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
                    org,
                    artifact_path(run.id, a.attempt, a.name),
                    settings.download_link_ttl,
                ),
            )
            for a in artifacts
        ],
        attempt=shown or None,
    )


def junit_step(s: StepReport, attempt: int | None) -> junit.JUnitStep:
    return junit.JUnitStep(s.description, s.status, s.message, s.logs, s.screenshot, s.index, s.parent, attempt)


def reruns(report: RunReport) -> list[junit.JUnitRerun]:
    """The attempts before the last that failed as `test`: Surefire's reruns of the test."""
    return [
        junit.JUnitRerun(
            attempt=a.number,
            device=a.device,
            kind=a.failure.kind,
            message=a.failure.message,
            step=junit_step(a.failing_step, a.number) if a.failing_step is not None else None,
        )
        for a in report.attempts[:-1]
        if a.outcome == "failed" and a.failure is not None and a.failure.kind == "test"
    ]


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
        steps=[junit_step(s, report.attempt) for s in report.steps],
        reruns=reruns(report),
        quarantined=run.quarantined,
    )
    return junit.render({case.classname: [case]})
