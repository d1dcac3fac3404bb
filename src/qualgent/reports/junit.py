"""JUnit XML for runs, in the schema common CI systems read (testsuites > testsuite > testcase)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class JUnitStep:
    description: str
    status: str
    message: str
    logs: list[str]
    screenshot: str | None
    index: int | None = None  # the step's number in the run's report (0-based)
    parent: int | None = None  # the enclosing step's index: a runFlow, a repeat iteration, a hook, …


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


def render(suites: dict[str, Sequence[JUnitCase]], name: str = "qualgent") -> bytes:
    """One <testsuite> per key of ``suites`` (a device), one <testcase> per run."""
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
            if case.status == "failed":
                tag = "failure" if case.failure_kind == "test" else "error"
                if tag == "failure":
                    s_failures += 1
                else:
                    s_errors += 1
                problem = ET.SubElement(
                    element, tag, message=case.failure_message or "failed", type=case.failure_kind or "test"
                )
                problem.text = _step_log(case, failing_only=True)
            elif case.status != "passed":
                s_skipped += 1
                ET.SubElement(element, "skipped", message=f"run {case.status}")
            out = ET.SubElement(element, "system-out")
            out.text = f"Run: {case.link}\n{_step_log(case)}"
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


def _step_log(case: JUnitCase, failing_only: bool = False) -> str:
    lines = []
    for position, (step, name) in enumerate(zip(case.steps, step_names(case.steps), strict=True), 1):
        if failing_only and step.status != "failed":
            continue
        number = step.index + 1 if step.index is not None else position
        lines.append(f"[{step.status}] step {number}: {name}" + (f" — {step.message}" if step.message else ""))
        lines.extend(f"    {line}" for line in step.logs)
        if step.screenshot:
            lines.append(f"    screenshot: {step.screenshot}")
    return "\n".join(lines)
