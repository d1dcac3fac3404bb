"""What the CLI adds when it runs inside a CI system, detected from the environment.

GitHub Actions (``GITHUB_ACTIONS=true``): a Markdown summary appended to ``$GITHUB_STEP_SUMMARY`` (the
verdict, a results table, the failing steps, links to the run pages) and one ``::error`` workflow
command per failed run (``::warning`` for a flaky pass or a quarantined failure), so the failures show
on the workflow run and the pull request.

GitLab CI (``GITLAB_CI=true``): the results and each failed run's steps in collapsible log sections, and
a JUnit report for ``artifacts:reports:junit`` (``--junit``, else ``qualgent-junit.xml`` in the job's
folder), which GitLab shows in the merge request.

Links are to the run page (and a step's place on it), never to a screenshot's own link: that one is
signed for minutes and dead by the time anyone reads the summary.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

from qualgent.cli.text import clean
from qualgent.client.errors import APIError
from qualgent.client.junit import device_label, render_runs
from qualgent.reports.junit import step_link

if TYPE_CHECKING:
    from qualgent.client import Client
    from qualgent.client.models import Run, RunReport, Step

# GitLab's default JUnit file when the command was given no --junit.
GITLAB_JUNIT = "qualgent-junit.xml"
LOG_LINES = 20  # the last lines of a failing step's log shown in a summary or a section
VERDICTS = {0: "passed", 1: "failed"}


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() == "true"


def detect(environ: Mapping[str, str] | None = None) -> str | None:
    """``github``, ``gitlab`` or None."""
    env = os.environ if environ is None else environ
    if _flag(env, "GITHUB_ACTIONS"):
        return "github"
    if _flag(env, "GITLAB_CI"):
        return "gitlab"
    return None


def publish(
    client: Client,
    runs: list[Run],
    reports: dict[str, RunReport],
    code: int,
    *,
    note: str | None,
    stopped: str | None,
    junit: Path | None,
    stream: IO[str],
    environ: Mapping[str, str] | None = None,
) -> None:
    """The CI system's own output for a finished wait (nothing outside CI). ``stream`` is where the
    CLI writes its human output (stderr under --json, so stdout stays JSON)."""
    env = os.environ if environ is None else environ
    system = detect(env)
    if system == "github":
        for line in github_annotations(runs, reports):
            stream.write(line + "\n")
        path = env.get("GITHUB_STEP_SUMMARY")
        if path:
            with open(path, "a", encoding="utf-8") as summary:
                summary.write(github_summary(runs, reports, code, note=note))
    elif system == "gitlab":
        if junit is None:
            junit = Path(env.get("CI_PROJECT_DIR") or ".") / GITLAB_JUNIT
            _write_junit(client, runs, reports, junit, note=note, stopped=stopped)
            stream.write(f"JUnit report (for artifacts:reports:junit): {junit}\n")
        stream.write(gitlab_sections(runs, reports, code, note=note))
    stream.flush()


def _write_junit(
    client: Client,
    runs: list[Run],
    reports: dict[str, RunReport],
    path: Path,
    *,
    note: str | None,
    stopped: str | None,
) -> None:
    every = dict(reports)
    for run in runs:
        if run.id not in every:
            with contextlib.suppress(APIError):  # else the run is reported from its status alone
                every[run.id] = client.run_report(run.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render_runs(runs, every, note=note, stopped=stopped or "timeout"))


# -------------------------------------------------------------------------------------------- shared


def _result(run: Run) -> str:
    if run.status == "failed" and run.failure is not None:
        text = f"failed ({run.failure.kind})"
    elif run.flaky:
        text = "passed (flaky)"
    else:
        text = run.status
    return text + (", quarantined" if run.quarantined else "")


def _seconds(run: Run) -> str:
    return "" if run.duration_seconds is None else f"{run.duration_seconds:.1f} s"


def _counts(runs: list[Run]) -> str:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def _failing_steps(report: RunReport | None) -> list[Step]:
    return [s for s in report.steps if s.status == "failed"] if report is not None else []


# ------------------------------------------------------------------------------------ GitHub Actions


def escape_data(value: str) -> str:
    """A workflow command's message, as the runner unescapes it (actions/toolkit's escapeData)."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """A workflow command's property value (title, file…): also ``:`` and ``,``, which end it."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **properties: str) -> str:
    props = ",".join(f"{key}={escape_property(clean(value))}" for key, value in properties.items())
    return f"::{name}{' ' + props if props else ''}::{escape_data(clean(message))}"


def github_annotations(runs: list[Run], reports: dict[str, RunReport]) -> list[str]:
    """``::error`` for each failed run that gates (failed test, infrastructure, timeout, the CLI's
    cancellation), ``::warning`` for a quarantined failure and a flaky pass."""
    lines = []
    for run in runs:
        report = reports.get(run.id)
        where = f"{run.test_case.name} on {run.device}"
        if run.status == "failed":
            kind = run.failure.kind if run.failure is not None else "failed"
            message = run.failure.message if run.failure is not None else "failed"
            steps = _failing_steps(report)
            link = step_link(run.link, report.attempt, steps[0].index) if steps and report is not None else run.link
            text = f"{message}\nRun: {link}"
            if run.quarantined:
                lines.append(command("warning", text, title=f"QualGent: {where} failed ({kind}, quarantined)"))
            else:
                lines.append(command("error", text, title=f"QualGent: {where} failed ({kind})"))
        elif run.flaky:
            lines.append(
                command("warning", f"passed on a test retry\nRun: {run.link}", title=f"QualGent: {where} is flaky")
            )
        elif run.status in ("cancelled", "queued", "running"):
            lines.append(command("error", f"{run.status}\nRun: {run.link}", title=f"QualGent: {where} did not finish"))
    return lines


# Inline Markdown (emphasis, code, links, tables, strikethrough); HTML is turned into entities first.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md(value: object) -> str:
    """The server's text inside Markdown: one line, no markup read into it, no HTML."""
    text = clean(value).replace("\t", " ")
    text = " ".join(text.splitlines())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _url(link: str) -> str:
    """A link target: no characters that would end it."""
    return link.replace(" ", "%20").replace("(", "%28").replace(")", "%29").replace("<", "%3C").replace(">", "%3E")


def _fenced(lines: list[str]) -> str:
    """A code block whose fence is longer than any run of backticks inside it."""
    body = "\n".join(clean(line) for line in lines)
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{body}\n{fence}\n"


ICONS = {"passed": "✅", "failed": "❌", "cancelled": "⚪", "queued": "⏳", "running": "⏳"}


def github_summary(runs: list[Run], reports: dict[str, RunReport], code: int, *, note: str | None = None) -> str:
    """The step summary (GitHub-flavoured Markdown)."""
    verdict = VERDICTS.get(code, "incomplete")
    icon = {"passed": "✅", "failed": "❌"}.get(verdict, "⚠️")
    flaky = sum(r.flaky for r in runs)
    extra = f", {flaky} flaky" if flaky else ""
    parts = [f"## {icon} QualGent: {verdict}\n\n", f"{len(runs)} run(s): {md(_counts(runs))}{extra} (exit {code})\n\n"]
    if note:
        parts.append(f"> {md(note)}\n\n")
    parts.append("| | Test case | Device | Result | Duration | Run |\n|---|---|---|---|---|---|\n")
    for run in runs:
        mark = "⚠️" if run.flaky or (run.quarantined and run.status == "failed") else ICONS.get(run.status, "")
        parts.append(
            f"| {mark} | {md(run.test_case.name)} | {md(device_label(run))} | {md(_result(run))} | "
            f"{_seconds(run)} | [{md(run.id)}]({_url(run.link)}) |\n"
        )
    failed = [r for r in runs if r.status == "failed"]
    if failed:
        parts.append("\n### Failing steps\n")
        for run in failed:
            parts.append(_github_failure(run, reports.get(run.id)))
    return "".join(parts) + "\n"


def _github_failure(run: Run, report: RunReport | None) -> str:
    label = " (quarantined, not gating)" if run.quarantined else ""
    kind = run.failure.kind if run.failure is not None else "failed"
    text = [f"\n#### ❌ {md(run.test_case.name)} on {md(run.device)}: {md(kind)}{label}\n\n"]
    if run.failure is not None:
        text.append(f"{md(run.failure.message)}\n\n")
    text.append(f"[Run page]({_url(run.link)})\n")
    for step in _failing_steps(report):
        assert report is not None
        link = step_link(run.link, report.attempt, step.index)
        message = f": {md(step.message)}" if step.message else ""
        text.append(f"\n- [Step {step.index + 1}: {md(step.description)}]({_url(link)}){message}\n")
        if step.logs:
            text.append("\n<details><summary>Log</summary>\n\n" + _fenced(step.logs[-LOG_LINES:]) + "\n</details>\n")
    return "".join(text)


# ----------------------------------------------------------------------------------------- GitLab CI


ESC = "\x1b"
_SECTION_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def section(name: str, header: str, lines: list[str], *, collapsed: bool = True) -> str:
    """A collapsible section of a GitLab job log (the section's name: letters, digits, ``_ . -``)."""
    slug = _SECTION_NAME.sub("_", name)
    options = "[collapsed=true]" if collapsed else ""
    start = f"{ESC}[0Ksection_start:{int(time.time())}:{slug}{options}\r{ESC}[0K{clean(header)}\n"
    body = "".join(f"{clean(line)}\n" for line in lines)
    return start + body + f"{ESC}[0Ksection_end:{int(time.time())}:{slug}\r{ESC}[0K\n"


def gitlab_sections(runs: list[Run], reports: dict[str, RunReport], code: int, *, note: str | None = None) -> str:
    """A section with every run's result (collapsed), then one per failed run with its steps (open when
    it gates)."""
    verdict = VERDICTS.get(code, "incomplete")
    rows = [
        f"{r.id}  {_result(r):<24}  {r.test_case.name}  on {device_label(r)}  {_seconds(r)}  {r.link}" for r in runs
    ]
    if note:
        rows.append(note)
    text = section("qualgent_results", f"QualGent: {verdict}, {len(runs)} run(s): {_counts(runs)} (exit {code})", rows)
    for run in runs:
        if run.status != "failed":
            continue
        report = reports.get(run.id)
        lines = [run.failure.message if run.failure is not None else "failed", f"Run: {run.link}"]
        for step in report.steps if report is not None else []:
            lines.append(f"[{step.status}] step {step.index + 1}: {step.description} {step.message}".rstrip())
            if step.status == "failed":
                assert report is not None
                lines.extend(f"    {line}" for line in step.logs[-LOG_LINES:])
                lines.append(f"    step: {step_link(run.link, report.attempt, step.index)}")
        kind = run.failure.kind if run.failure is not None else "failed"
        label = ", quarantined" if run.quarantined else ""
        header = f"FAILED {run.test_case.name} on {run.device} ({kind}{label})"
        text += section(f"qualgent_{run.id}", header, lines, collapsed=run.quarantined)
    return text
