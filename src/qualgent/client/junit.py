"""One JUnit XML document for a set of runs (a CLI invocation): a test suite per device, a test case
per run, the failing step and its log in the failure, links to the run page and screenshots.

Rendering is the server's own (:mod:`qualgent.reports.junit`), so a per-run report from the server and
the CLI's report for a whole pipeline step read the same."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from qualgent.reports import junit

if TYPE_CHECKING:
    from qualgent.client.models import Run, RunReport, Step


def device_label(run: Run) -> str:
    details = run.device_details
    if details is None:
        return run.device
    return f"{details.name} ({details.platform} {details.os_version})"


def case_for(
    run: Run, report: RunReport | None, *, note: str | None = None, stopped: str = "timeout"
) -> junit.JUnitCase:
    """The JUnit test case of one run. ``note`` marks a run the client gave up on: it is reported as an
    error whose type says why the client stopped (``stopped``: timeout, interrupted, no_device), never
    as a pass or a skip."""
    steps = report.steps if report is not None else []
    attempt = report.attempt if report is not None else None
    status, message = run.status, None
    kind: str | None = None
    if run.failure is not None:
        # The server's message names the failing step ("Step 3 (tapOn: …, line 5) failed: …"); the
        # failing step's log lines and screenshot link become the failure element's text.
        kind, message = run.failure.kind, run.failure.message
    if note is not None and run.status != "passed" and run.status != "failed":
        status, kind, message = "failed", stopped, note
    return junit.JUnitCase(
        name=run.test_case.name,
        classname=device_label(run),
        status=status,
        seconds=run.duration_seconds or 0.0,
        link=run.link,
        failure_kind=kind,
        failure_message=message,
        steps=[_step(s, attempt) for s in steps],
        reruns=reruns(report) if report is not None else [],
        quarantined=run.quarantined,
    )


def _step(s: Step, attempt: int | None) -> junit.JUnitStep:
    return junit.JUnitStep(s.description, s.status, s.message, s.logs, s.screenshot, s.index, s.parent, attempt)


def reruns(report: RunReport) -> list[junit.JUnitRerun]:
    """The attempts before the last that failed as `test`: Surefire's reruns (flakyFailure, rerunFailure)."""
    return [
        junit.JUnitRerun(
            attempt=a.number,
            device=a.device,
            kind=a.failure.kind,
            message=a.failure.message,
            step=_step(a.failing_step, a.number) if a.failing_step is not None else None,
        )
        for a in report.attempts[:-1]
        if a.outcome == "failed" and a.failure is not None and a.failure.kind == "test"
    ]


def render_runs(
    runs: Sequence[Run],
    reports: dict[str, RunReport],
    *,
    name: str = "qualgent",
    note: str | None = None,
    stopped: str = "timeout",
) -> bytes:
    suites: dict[str, list[junit.JUnitCase]] = {}
    for run in runs:
        case = case_for(run, reports.get(run.id), note=note, stopped=stopped)
        suites.setdefault(device_label(run), []).append(case)
    by_device: dict[str, Sequence[junit.JUnitCase]] = dict(suites)
    return junit.render(by_device, name=name)
