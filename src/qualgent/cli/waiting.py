"""Waiting on runs for a pipeline: the live display, cancellation on SIGINT/SIGTERM, and the exit code.

Exit codes a pipeline can trust (runs of quarantined test cases are reported but never counted):
  0  every run passed, on its first attempt or on a test retry (flaky), and at least one ran;
  1  a test failed (a run failed with kind "test", its test retries spent);
  2  no test failed, but a run ended by infrastructure failure or timeout, was cancelled, did not finish
     within --timeout, or the wait was interrupted (SIGINT/SIGTERM), or the server stayed unreachable;
  3  usage, authentication or validation errors, nothing was queued, or no test failed but a run could
     run on no online device for --no-device-grace seconds (no device fits it: a re-run will not help).
Against a server with batches, the CLI waits on its batches (one request per batch per poll) and takes the
code from their gate verdicts: passed and flaky-passed 0, failed 1, infrastructure 2.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from qualgent.cli.text import add_row, clean, plain
from qualgent.client.errors import QualgentClientError, WaitTimeout

if TYPE_CHECKING:
    from rich.live import Live

    from qualgent.client import Client
    from qualgent.client.models import Batch, Run

EXIT_PASSED = 0
EXIT_TEST_FAILED = 1
EXIT_INFRASTRUCTURE = 2
EXIT_USAGE = 3
# A running run that the CLI cancelled stops at its agent's next heartbeat (5 s by default): the CLI
# waits up to this long for the server to say so, rather than report it as still running.
CANCEL_SETTLE_SECONDS = 15.0


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while waiting."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class SignalGuard:
    """SIGINT/SIGTERM handlers for the life of an invocation. While runs are being queued a signal is
    only noted (so the IDs of what was queued are not lost); once ``armed`` it interrupts the wait."""

    armed: bool = False
    received: int | None = None
    _previous: dict[int, Any] = field(default_factory=dict)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signum
        if self.armed:
            raise Interrupted(signum)

    def arm(self) -> None:
        self.armed = True
        if self.received is not None:
            raise Interrupted(self.received)

    @contextlib.contextmanager
    def installed(self) -> Iterator[SignalGuard]:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for number, handler in self._previous.items():
                signal.signal(number, handler)


VERDICT_CODES = {"passed": EXIT_PASSED, "flaky-passed": EXIT_PASSED, "failed": EXIT_TEST_FAILED}


def exit_code_for(runs: list[Run], batches: list[Batch] | None = None) -> int:
    """The exit code of finished runs: from their batches' verdicts when there are batches (the worst
    wins), else from the runs themselves by the same rule. Runs of quarantined test cases never count."""
    if not runs:
        return EXIT_USAGE
    if batches and all(b.verdict is not None for b in batches):
        return max(VERDICT_CODES.get(b.verdict or "", EXIT_INFRASTRUCTURE) for b in batches)
    gating = [r for r in runs if not r.quarantined]
    if any(r.status == "failed" and r.failure is not None and r.failure.kind == "test" for r in gating):
        return EXIT_TEST_FAILED
    if all(r.status == "passed" for r in gating):
        return EXIT_PASSED
    return EXIT_INFRASTRUCTURE


def _duration(run: Run) -> str:
    seconds = run.duration_seconds
    return "" if seconds is None else f"{seconds:.1f}s"


def _eta(seconds: int | None) -> str:
    if seconds is None:
        return ""
    return f", ~{seconds} s" if seconds < 120 else f", ~{round(seconds / 60)} min"


# How the live view says why a queued run waits (the server's queue.reason).
WAITING = {
    "no_device": "no device fits",
    "devices_busy": "devices busy",
    "concurrency_cap": "at the parallel-run cap",
    "scheduling": "starting",
}


def _retried(run: Run) -> str:
    """`retry 1/2` while a run is tried again after a test failure."""
    retries = run.retries
    if retries is None or not retries.used or run.finished:
        return ""
    return f" (retry {retries.used}/{retries.allowed})"


def _outcome(run: Run) -> str:
    quarantined = ", quarantined" if run.quarantined else ""
    if run.failure is not None:
        return f"{run.status} ({run.failure.kind}{quarantined})"
    if run.flaky:
        used = run.retries.used if run.retries is not None else 1
        return f"passed (flaky: {used} test retr{'y' if used == 1 else 'ies'}{quarantined})"
    if run.status == "queued" and run.queue is not None:
        waiting = WAITING.get(run.queue.reason, run.queue.reason)
        return f"queued #{run.queue.position}: {waiting}{_eta(run.queue.eta_seconds)}{_retried(run)}"
    return f"{run.status}{_retried(run)}" + (" (quarantined)" if quarantined else "")


def runs_table(runs: list[Run]) -> Table:
    table = Table(title=f"{sum(r.finished for r in runs)}/{len(runs)} runs finished", title_justify="left")
    for column in ("run", "test case", "device", "status", "progress", "duration"):
        table.add_column(column, no_wrap=column in ("run", "status"))
    colours = {"passed": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}
    for run in runs:
        colour = colours.get(run.status, "white")
        if run.queue is not None and run.queue.reason == "no_device" and run.status == "queued":
            colour = "red"
        if run.flaky or (run.quarantined and run.status == "failed"):
            colour = "yellow"
        add_row(
            table,
            run.id,
            run.test_case.name,
            run.device,
            Text(clean(_outcome(run)), style=colour),
            f"{run.progress}%",
            _duration(run),
        )
    return table


class Display:
    """A live table on a terminal; otherwise one plain line per change of a run's status (CI logs)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self.seen: dict[str, tuple[str, int]] = {}

    def __enter__(self) -> Display:
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def update(self, runs: list[Run]) -> None:
        if self.live is not None:
            self.live.update(runs_table(runs))
            return
        for run in runs:
            state = (_outcome(run), run.progress if run.status == "running" else -1)
            if self.seen.get(run.id, ("", -2))[0] != state[0]:
                line = f"{run.id}  {run.status:<9}  {run.test_case.name}  on {run.device}"
                if run.status == "queued" and run.queue is not None:
                    line += f"  (waiting: {WAITING.get(run.queue.reason, run.queue.reason)})"
                if run.finished:
                    line += f"  {_duration(run)}"
                    if run.failure is not None:
                        line += f"  [{run.failure.kind}] {run.failure.message}"
                self.console.print(plain(line), highlight=False, soft_wrap=True)
            self.seen[run.id] = state


@dataclass
class WaitResult:
    runs: list[Run]
    note: str | None = None  # why some runs did not finish (timeout, interrupted, no device)
    stopped: str | None = None  # what stopped the wait: timeout, interrupted or no_device
    cancelled: list[str] = field(default_factory=list)
    no_device: bool = False  # stopped because runs could run on no online device
    batches: list[Batch] = field(default_factory=list)  # their last states, when the CLI waited on batches


class NoDevice(Exception):
    """Queued runs could run on no online device for the whole grace period."""

    def __init__(self, runs: list[Run], grace: float) -> None:
        names = sorted({run.device for run in runs})
        super().__init__(
            f"{len(runs)} run(s) waited {grace:g} s for a device and no online device fits "
            f"{', '.join(repr(n) for n in names[:5])}; cancelled by the CLI (--no-device-grace)"
        )


class _NoDeviceWatch:
    """Notes since when each queued run has said ``no_device``; raises NoDevice once one has said so for
    ``grace`` seconds without a break."""

    def __init__(self, grace: float | None, clock: Any = time.monotonic) -> None:
        self.grace = grace
        self.clock = clock
        self.since: dict[str, float] = {}

    def check(self, runs: list[Run]) -> None:
        if self.grace is None:
            return
        now = self.clock()
        stuck = {r.id for r in runs if r.status == "queued" and r.queue is not None and r.queue.reason == "no_device"}
        self.since = {run_id: self.since.get(run_id, now) for run_id in stuck}
        over = [r for r in runs if r.id in stuck and now - self.since[r.id] >= self.grace]
        if over:
            raise NoDevice(over, self.grace)


def wait(
    client: Client,
    run_ids: list[str],
    guard: SignalGuard,
    console: Console,
    *,
    timeout: float | None,
    poll_interval: float,
    no_device_grace: float | None = None,
    batch_ids: list[str] | None = None,
) -> WaitResult:
    """Wait for every run (on its batches when ``batch_ids``: one request per batch per poll, its runs
    and verdict together); on --timeout, a signal, or runs that no online device fits for
    ``no_device_grace`` seconds, cancel the unfinished ones (the CLI's own runs)."""
    last: list[Run] = []
    seen: list[Batch] = []
    watch = _NoDeviceWatch(no_device_grace)
    place = {run_id: i for i, run_id in enumerate(run_ids)}

    def remember(runs: list[Run]) -> None:
        last[:] = runs
        display.update(runs)
        watch.check(runs)

    def remember_batches(batches: list[Batch]) -> None:
        seen[:] = batches
        runs = [r for b in batches for r in b.runs or [] if r.id in place]
        remember(sorted(runs, key=lambda r: place[r.id]))

    note = stopped = None
    no_device = False
    with Display(console) as display:
        try:
            guard.arm()
            if batch_ids:
                batches = client.wait_for_batches(
                    batch_ids,
                    timeout=timeout,
                    poll_interval=poll_interval,
                    on_update=remember_batches,
                    queue=True,
                    events=True,
                )
                return WaitResult(list(last), batches=batches)
            runs = client.wait_for_runs(
                run_ids, timeout=timeout, poll_interval=poll_interval, on_update=remember, queue=True, events=True
            )
            return WaitResult(runs)
        except WaitTimeout as exc:
            last[:] = exc.runs
            note, stopped = f"not finished within --timeout {timeout:g} s; cancelled by the CLI", "timeout"
        except Interrupted as exc:
            note, stopped = f"the CLI received {exc} while waiting; cancelled by the CLI", "interrupted"
        except NoDevice as exc:
            note, stopped, no_device = str(exc), "no_device", True
        finally:
            guard.armed = False  # a second signal must not interrupt the cancellation
    console.print(Text(clean(note), style="yellow"), highlight=False)
    cancelled = cancel_unfinished(client, run_ids, last, console)
    last = settle(client, run_ids, cancelled, last, poll_interval)
    return WaitResult(last, note=note, stopped=stopped, cancelled=cancelled, no_device=no_device)


def settle(
    client: Client,
    run_ids: list[str],
    cancelled: list[str],
    known: list[Run],
    poll_interval: float,
    timeout: float = CANCEL_SETTLE_SECONDS,
) -> list[Run]:
    """The runs' states once those the CLI cancelled have ended (a running one ends at its agent's next
    heartbeat), or after ``timeout``: what the server shows, not a run "still running" that is not."""
    deadline = time.monotonic() + timeout
    runs = known
    while True:
        with contextlib.suppress(QualgentClientError):
            runs = client.get_runs(run_ids)
        pending = [r for r in runs if r.id in cancelled and not r.finished]
        if not pending or time.monotonic() >= deadline:
            return runs
        time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))


def cancel_unfinished(client: Client, run_ids: list[str], known: list[Run], console: Console) -> list[str]:
    finished = {r.id for r in known if r.finished}
    cancelled = []
    deadline = time.monotonic() + 30
    for run_id in run_ids:
        if run_id in finished or time.monotonic() > deadline:
            continue
        try:
            client.cancel_run(run_id)
            cancelled.append(run_id)
        except QualgentClientError as exc:  # finished meanwhile, or the server is gone: keep cancelling
            console.print(plain(f"could not cancel {run_id}: {exc}"), highlight=False)
    if cancelled:
        console.print(f"cancelled {len(cancelled)} run(s)", highlight=False)
    return cancelled
