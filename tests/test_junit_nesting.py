"""JUnit flattens nested steps (runFlow, repeat iterations, retry attempts, hooks) into readable names."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from qualgent.reports.junit import JUnitCase, JUnitStep, render, step_names

STEPS = [
    JUnitStep("launchApp", "passed", "", [], None, 0, None),
    JUnitStep("runFlow subflows/login.yaml", "failed", "", [], None, 1, None),
    JUnitStep("repeat 2 times", "failed", "", [], None, 2, 1),
    JUnitStep("iteration 1", "passed", "", [], None, 3, 2),
    JUnitStep('tapOn "Next"', "passed", "", [], None, 4, 3),
    JUnitStep("iteration 2", "failed", "", [], None, 5, 2),
    JUnitStep('tapOn "Next"', "failed", "no visible element", ["looked 68 times"], "http://x/shot.png", 6, 5),
]


def test_names_carry_the_steps_that_enclose_them() -> None:
    assert step_names(STEPS) == [
        "launchApp",
        "runFlow subflows/login.yaml",
        "runFlow subflows/login.yaml › repeat 2 times",
        "runFlow subflows/login.yaml › repeat 2 times › iteration 1",
        'runFlow subflows/login.yaml › repeat 2 times › iteration 1 › tapOn "Next"',
        "runFlow subflows/login.yaml › repeat 2 times › iteration 2",
        'runFlow subflows/login.yaml › repeat 2 times › iteration 2 › tapOn "Next"',
    ]


def test_a_parent_loop_or_a_missing_parent_does_not_hang_or_fail() -> None:
    looped = [JUnitStep("a", "passed", "", [], None, 0, 1), JUnitStep("b", "passed", "", [], None, 1, 0)]
    assert step_names(looped) == ["b › a", "a › b"]
    orphan = [JUnitStep("c", "passed", "", [], None, 5, 99)]
    assert step_names(orphan) == ["c"]


def test_the_failure_names_the_nested_step_in_full() -> None:
    case = JUnitCase(
        "Login", "Pixel 7 (Android 14)", "failed", 3.0, "http://x/test-runs/run_1", "test", "failed", STEPS
    )
    root = ET.fromstring(render({case.classname: [case]}))
    failure = root.find("./testsuite/testcase/failure")
    assert failure is not None and failure.text is not None
    assert '[failed] step 7: runFlow subflows/login.yaml › repeat 2 times › iteration 2 › tapOn "Next"' in failure.text
    assert "[passed]" not in failure.text  # the failure lists the failing steps only
    out = root.find("./testsuite/testcase/system-out")
    assert out is not None and out.text is not None and "iteration 1 › tapOn" in out.text
