"""Small charts drawn on the server as SVG: no script, no inline style (the pages' CSP allows neither);
colours come from classes in static/app.css."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from qualgent.quality.schemas import HistoryRun

WIDTH, HEIGHT = 600, 120
GAP = 2
MIN_BAR = 3  # a run with no duration (cancelled before it started) still shows
MIN_SLOTS = 30


def _result(run: HistoryRun) -> str:
    if run.flaky:
        return "flaky"
    if run.status == "failed" and run.quarantined:
        return "quarantined"
    return run.status


def history_chart(runs: Sequence[HistoryRun]) -> Markup:
    """A bar per run, oldest on the left: its height the run's duration, its colour its result (passed,
    failed, flaky, cancelled, or failed while quarantined); each bar links to its run and says what it
    was on hover and to screen readers."""
    shown = list(reversed(runs))  # the history lists the newest first
    if not shown:
        return Markup("")
    longest = max((r.duration_seconds or 0.0) for r in shown) or 1.0
    slot = WIDTH / max(len(shown), MIN_SLOTS)  # a few runs make narrow bars, not a wall
    bar = max(1.0, slot - GAP)
    parts = [
        f'<svg class="history-chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-labelledby="history-chart-title">',
        '<title id="history-chart-title">Duration and result of the latest runs, oldest first</title>',
        f'<line class="axis" x1="0" y1="{HEIGHT - 0.5}" x2="{WIDTH}" y2="{HEIGHT - 0.5}"></line>',
    ]
    for i, run in enumerate(shown):
        seconds = run.duration_seconds or 0.0
        height = max(MIN_BAR, (HEIGHT - 4) * seconds / longest)
        x, y = i * slot, HEIGHT - height
        result = _result(run)
        label = f"{run.id}: {result}, {seconds:.1f} s, {run.app.name} on {run.device}"
        if run.retries is not None and run.retries.used:
            label += f", {run.retries.used} test retr{'y' if run.retries.used == 1 else 'ies'}"
        parts.append(
            f'<a href="/test-runs/{escape(run.id)}"><rect class="bar {result}" x="{x:.1f}" y="{y:.1f}" '
            f'width="{bar:.1f}" height="{height:.1f}"><title>{escape(label)}</title></rect></a>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
