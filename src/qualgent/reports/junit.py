"""JUnit XML for runs, in the schema common CI systems read (testsuites > testsuite > testcase)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field

# Characters XML 1.0 does not allow in a document (C0 controls but tab and line breaks, lone surrogates,
# U+FFFE and U+FFFF): ElementTree writes them as they are, and the file is then not well-formed.
# Compiled on first use (re caches it), not when the CLI starts: this class costs 10 ms to compile.
_NOT_XML = "[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"


def xml_safe(text: str) -> str:
    """``text`` with each character XML 1.0 forbids replaced by U+FFFD."""
    return re.sub(_NOT_XML, "\ufffd", text)


@dataclass
class JUnitStep:
    description: str
    status: str
    message: str
    logs: list[str]
    screenshot: str | None
    index: int | None = None  # the step's number in the run's report (0-based)
    parent: int | None = None  # the enclosing step's index: a runFlow, a repeat iteration, a hook, …
    attempt: int | None = None  # the run's attempt the step belongs to


def step_link(run_link: str, attempt: int | None, index: int | None) -> str:
    """Where a person finds a step (its screenshot, its log and the device's): its place on the run page.
    The screenshot's own link is signed for minutes and dead by the time anyone reads a CI log."""
    if attempt is None or index is None:
        return run_link
    return f"{run_link}#step-{attempt}-{index}"


@dataclass
class JUnitRerun:
    """An earlier attempt of the run that failed as `test` (the run was tried again)."""

    attempt: int
    device: str
    kind: str
    message: str
    step: JUnitStep | None = None  # its failing step


@dataclass
class JUnitCase:
    name: str  # the test case's name
    classname: str  # the device, e.g. "Pixel 7 (Android 14.0)"
    status: str  # passed | failed | cancelled | queued | running
    seconds: float
    link: str
    failure_kind: str | None = None
    failure_message: str | None = None
    steps: list[JUnitStep] = field(default_factory=list)
    reruns: list[JUnitRerun] = field(default_factory=list)
    quarantined: bool = False  # its test case was in quarantine: a failure is reported as skipped


def render(suites: dict[str, Sequence[JUnitCase]], name: str = "qualgent") -> bytes:
    """One <testsuite> per key of ``suites`` (a device), one <testcase> per run.

    Test retries are written as Maven Surefire writes reruns (surefire-test-report-3.0.xsd), in its
    order of elements, without changing the number of tests: a run that passed on a retry has a
    <flakyFailure> per failed attempt; one that failed after retries its <failure> (or <error>) and a
    <rerunFailure> per earlier failed attempt. A failed run of a quarantined test case is <skipped>
    with the failure in its message: it is reported, and fails no CI system's gate.
    """
    root = ET.Element("testsuites", name=name)
    total = failures = errors = 0
    total_time = 0.0
    for suite_name, cases in suites.items():
        suite = ET.SubElement(root, "testsuite", name=suite_name)
        s_failures = s_errors = s_skipped = 0
        s_time = 0.0
        for case in cases:
            element = ET.SubElement(
                suite, "testcase", name=case.name, classname=case.classname, time=f"{case.seconds:.3f}"
            )
            s_time += case.seconds
            message = case.failure_message or "failed"
            if case.status == "failed" and case.quarantined:
                s_skipped += 1
                skipped = f"quarantined test case failed ({case.failure_kind or 'test'}): {message}"
                ET.SubElement(element, "skipped", message=skipped)
            elif case.status == "failed":
                tag = "failure" if case.failure_kind == "test" else "error"
                if tag == "failure":
                    s_failures += 1
                    problem = ET.SubElement(element, tag, message=message, type=case.failure_kind or "test")
                    problem.text = _step_log(case, failing_only=True)
                _reruns(element, "rerunFailure", case)
                if tag == "error":
                    s_errors += 1
                    problem = ET.SubElement(element, tag, message=message, type=case.failure_kind or "test")
                    problem.text = _step_log(case, failing_only=True)
            elif case.status == "passed":
                _reruns(element, "flakyFailure", case)
            else:
                s_skipped += 1
                ET.SubElement(element, "skipped", message=f"run {case.status}")
            out = ET.SubElement(element, "system-out")
            out.text = f"Run: {case.link}\n" + _attempts_note(case) + _step_log(case)
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(s_failures))
        suite.set("errors", str(s_errors))
        suite.set("skipped", str(s_skipped))
        suite.set("time", f"{s_time:.3f}")
        total += len(cases)
        failures += s_failures
        errors += s_errors
        total_time += s_time
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("errors", str(errors))
    # No "skipped" on <testsuites>: the Jenkins junit-10.xsd that CI systems validate against allows
    # it on <testsuite> only.
    root.set("time", f"{total_time:.3f}")
    # Names, messages and logs come from test cases, flows and devices: any character may be in them.
    for element in root.iter():
        if element.text:
            element.text = xml_safe(element.text)
        for key, value in element.attrib.items():
            element.set(key, xml_safe(value))
    ET.indent(root)
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml


def step_names(steps: Sequence[JUnitStep]) -> list[str]:
    """Each step's name with the steps that enclose it, flattened for JUnit readers:
    ``runFlow login.yaml › iteration 2 › tapOn "Sign in"``."""
    by_index = {step.index: step for step in steps if step.index is not None}
    names = []
    for step in steps:
        chain = [step.description]
        parent, seen = step.parent, {step.index}
        while parent is not None and parent in by_index and parent not in seen:
            seen.add(parent)
            chain.append(by_index[parent].description)
            parent = by_index[parent].parent
        names.append(" › ".join(reversed(chain)))
    return names


def _reruns(element: ET.Element, tag: str, case: JUnitCase) -> None:
    for rerun in case.reruns:
        problem = ET.SubElement(element, tag, message=rerun.message or "failed", type=rerun.kind)
        trace = ET.SubElement(problem, "stackTrace")
        trace.text = _rerun_log(rerun, case.link)
        out = ET.SubElement(problem, "system-out")
        out.text = f"Attempt {rerun.attempt} on {rerun.device}: {rerun.message}"


def _attempts_note(case: JUnitCase) -> str:
    if not case.reruns:
        return ""
    tried = ", ".join(f"attempt {r.attempt} on {r.device}" for r in case.reruns)
    outcome = "passed on a retry (flaky)" if case.status == "passed" else f"{case.status} after test retries"
    return f"Test retries: {outcome}; failed first: {tried}\n"


def _rerun_log(rerun: JUnitRerun, run_link: str) -> str:
    step = rerun.step
    if step is None:
        return rerun.message
    number = step.index + 1 if step.index is not None else "?"
    lines = [f"[{step.status}] step {number}: {step.description}" + (f" — {step.message}" if step.message else "")]
    lines.extend(f"    {line}" for line in step.logs)
    if step.screenshot:
        lines.append(f"    screenshot: {step_link(run_link, step.attempt, step.index)}")
    return "\n".join(lines)


def _step_log(case: JUnitCase, failing_only: bool = False) -> str:
    lines = []
    for position, (step, name) in enumerate(zip(case.steps, step_names(case.steps), strict=True), 1):
        if failing_only and step.status != "failed":
            continue
        number = step.index + 1 if step.index is not None else position
        lines.append(f"[{step.status}] step {number}: {name}" + (f" — {step.message}" if step.message else ""))
        lines.extend(f"    {line}" for line in step.logs)
        if step.screenshot:
            lines.append(f"    screenshot: {step_link(case.link, step.attempt, step.index)}")
    return "\n".join(lines)
