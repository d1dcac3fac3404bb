"""The flow language's costs: checking a large flow with its subflows, and a JavaScript step on an agent.

1. Parse and validate a 500-step flow with 20 subflows (what the server does when a test case is
   saved, and an agent before a run): ``flows.bundle.check_bundle``, beside reading the same YAML
   with PyYAML's ``safe_load`` alone (the baseline: a parser that checks nothing). Goal: ≤ 50 ms.
2. What an ``evalScript`` step adds on an agent: a flow of ``evalScript`` steps and a flow of device
   steps that do nothing (``back`` on a session that answers at once), both through the engine;
   per-step times are the gaps between consecutive step reports. Goal: ≤ 5 ms p50 added.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import yaml

from qualgent.drivers.base import StepResult
from qualgent.flows.bundle import Bundle, check_bundle
from qualgent.flows.engine import FlowRunner, RunValues, StepRecord
from qualgent.flows.model import Step

MAIN_STEPS = 500
SUBFLOWS = 20
SUBFLOW_STEPS = 25


def large_bundle() -> tuple[str, dict[str, bytes]]:
    """A 500-step flow calling 20 subflows, with variables, conditions, loops and a script."""
    kinds = [
        lambda i: f'- tapOn: "Button {i}"\n',
        lambda i: f"- inputText: ${{USER}}-{i}\n",
        lambda i: f"- runFlow: subflows/s{(i // 8) % SUBFLOWS}.yaml\n",
        lambda i: f"- assertVisible:\n    id: item_{i}\n    optional: true\n",
        lambda i: f"- evalScript: ${{output.count = (output.count || 0) + {i}}}\n",
        lambda i: "- runFlow:\n    when:\n      platform: Android\n    commands:\n      - back\n",
        lambda i: f'- scrollUntilVisible:\n    element:\n      text: "Row {i}"\n    direction: DOWN\n',
        lambda i: "- repeat:\n    times: 2\n    commands:\n      - swipe:\n          direction: LEFT\n",
    ]
    main = "appId: com.example.shop\nname: Big\ntags: [bench]\nenv:\n  USER: ${USER || 'guest'}\n---\n"
    main += "".join(kinds[i % len(kinds)](i) for i in range(MAIN_STEPS))
    files: dict[str, bytes] = {}
    for n in range(SUBFLOWS):
        body = "".join(
            f'- assertVisible: "Item {k}"\n' if k % 3 else f"- evalScript: ${{output.s{n} = {k}}}\n"
            for k in range(SUBFLOW_STEPS - 1)
        )
        files[f"subflows/s{n}.yaml"] = (
            f"appId: com.example.shop\nenv:\n  N: '{n}'\n---\n{body}- runScript: ../scripts/seed.js\n"
        ).encode()
    files["scripts/seed.js"] = b"var answer = http.get('http://127.0.0.1:1/');\noutput.seeded = answer.ok;\n"
    return main, files


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_parse(rounds: int = 40) -> None:
    main, files = large_bundle()
    bundle = check_bundle(main, files)  # warm: imports, the JavaScript checker's runtime
    ours, baseline = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        check_bundle(main, files)
        ours.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        list(yaml.safe_load_all(main))
        for data in files.values():
            if data.endswith(b".js"):
                continue
            list(yaml.safe_load_all(data.decode()))
        baseline.append((time.perf_counter() - started) * 1000)
    print(f"parse and validate: {MAIN_STEPS}-step flow, {SUBFLOWS} subflows, {bundle.command_count()} commands")
    print(f"  check_bundle      p50 {_p(ours, 0.5):6.2f} ms   p95 {_p(ours, 0.95):6.2f} ms   (goal ≤ 50 ms)")
    print(f"  yaml.safe_load    p50 {_p(baseline, 0.5):6.2f} ms   (baseline: reads the YAML, checks nothing)")
    print(f"  ratio             {_p(ours, 0.5) / _p(baseline, 0.5):6.2f} × the baseline")


class _NoDevice:
    async def run_step(self, step: Step) -> StepResult:
        return StepResult("passed")

    async def close(self) -> None:
        return None


class _Clock:
    def __init__(self) -> None:
        self.times: list[float] = []

    async def step(self, record: StepRecord, progress: int | None) -> None:
        self.times.append(time.perf_counter())


async def _per_step(bundle: Bundle) -> list[float]:
    clock = _Clock()
    runner = FlowRunner(bundle, _NoDevice(), RunValues(platform="Android", variables={"USER": "bench"}), clock)
    outcome = await runner.run()
    assert outcome.status == "passed", outcome
    gaps = [(b - a) * 1000 for a, b in zip(clock.times, clock.times[1:], strict=False)]
    return gaps[5:]  # past the first steps (the worker starts at the first script)


async def bench_eval(steps: int = 400) -> None:
    scripts = check_bundle("appId: a\n---\n" + "- evalScript: ${output.n = (output.n || 0) + 1}\n" * steps)
    devices = check_bundle("appId: a\n---\n" + "- back\n" * steps)
    started = time.perf_counter()
    first = FlowRunner(scripts, _NoDevice(), RunValues(platform="Android"), _Clock())
    await first.scripts.evaluate("1")
    startup = (time.perf_counter() - started) * 1000
    await first.scripts.close()
    evals: list[float] = []
    plain: list[float] = []
    for _ in range(3):  # alternate, take all samples
        evals += await _per_step(scripts)
        plain += await _per_step(devices)
    added = statistics.median(evals) - statistics.median(plain)
    print(f"evalScript on an agent: {steps} steps × 3 rounds, beside {steps} device steps that do nothing")
    print(f"  evalScript step   p50 {_p(evals, 0.5):6.3f} ms   p95 {_p(evals, 0.95):6.3f} ms")
    print(f"  no-op device step p50 {_p(plain, 0.5):6.3f} ms   (baseline)")
    print(f"  added by the script  {added:6.3f} ms p50   (goal ≤ 5 ms)")
    print(f"  first script of a run on a new worker process: {startup:.1f} ms (once per worker; workers are reused)")


def main(*_: Any) -> None:
    bench_parse()
    asyncio.run(bench_eval())


if __name__ == "__main__":
    main()
