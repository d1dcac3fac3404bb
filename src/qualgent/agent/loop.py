"""A device agent: registers its devices, long-polls for runs, executes flows through drivers, reports.

It talks to the server over HTTP only (``agent.client``) and never imports the database layer. One
task per device, so a device runs one test at a time and a slow device never holds up another.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from qualgent.agent.client import RETRYABLE_STATUS, AgentClient, Lease, LeaseLost, RunMovedOn
from qualgent.agents.schemas import DeviceIn, RunPayload
from qualgent.drivers.base import AppUnderTest, Artifact, DeviceConfig, DeviceSession, Driver, InfrastructureError
from qualgent.flows.bundle import Bundle, load_bundle
from qualgent.flows.engine import FlowRunner, RunValues, StepRecord
from qualgent.flows.model import FlowError
from qualgent.flows.scripts import close_idle_workers

log = logging.getLogger("qualgent.agent")
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Outcome:
    status: str  # passed | failed | cancelled
    failure: dict[str, Any] | None = None


class Agent:
    def __init__(
        self,
        server_url: str,
        token: str,
        devices: list[DeviceConfig],
        drivers: Mapping[str, Driver],
        cache_dir: Path,
        *,
        claim_wait: float = 20,
    ) -> None:
        unknown = {d.driver for d in devices} - set(drivers)
        if unknown:
            raise ValueError(f"no driver named {', '.join(sorted(unknown))}; known: {', '.join(drivers)}")
        self.client = AgentClient(server_url, token)
        self.devices = devices
        self.drivers = drivers
        self.cache_dir = cache_dir
        self.claim_wait = claim_wait
        self.heartbeat_seconds = 5.0
        self.lease_seconds = 30.0
        self.registered = asyncio.Event()
        self.runs_done = 0
        self.claimer = _Claimer(self.client)
        self.finisher = _Finisher(self.client)
        self._bundles: dict[tuple[str, tuple[tuple[str, bytes], ...]], Bundle] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; runs in progress are abandoned (their leases expire)."""
        tasks: list[asyncio.Task[None]] = []
        try:
            server_ids = await self._register(stop)
            if server_ids is None:
                return
            tasks = [asyncio.create_task(self._device_loop(d, server_ids[d.id])) for d in self.devices]
            tasks.append(asyncio.create_task(self.claimer.serve()))
            tasks.append(asyncio.create_task(self.finisher.serve()))
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await close_idle_workers()
            await self.client.close()

    async def _register(self, stop: asyncio.Event) -> dict[str, str] | None:
        payload = [
            DeviceIn(
                id=d.id,
                name=d.name,
                platform=d.platform,
                os_version=d.os_version,
                device_type=d.device_type,
                driver=d.driver,
                tags=list(d.tags),
            )
            for d in self.devices
        ]
        delay = 0.2
        while not stop.is_set():
            try:
                registered = await self.client.register(payload)
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in (401, 403, 422):
                    raise
                log.warning("cannot reach the server to register (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
                continue
            self.heartbeat_seconds = registered.heartbeat_seconds
            self.lease_seconds = registered.lease_seconds
            self.registered.set()
            log.info("registered %d devices as agent %s", len(registered.devices), registered.agent_id)
            return {d.config_id: d.id for d in registered.devices}
        return None

    async def _device_loop(self, device: DeviceConfig, server_id: str) -> None:
        delay = 0.2
        run: RunPayload | None = None
        while True:
            if run is None:
                try:
                    run = await self.claimer.claim_now(server_id)
                    if run is None:
                        # Nothing queued for this device: wait for work on its own long-poll, so that a
                        # run queued later starts on it at once.
                        runs = await self.client.claim([server_id], self.claim_wait)
                        run = runs[0] if runs else None
                    delay = 0.2
                except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                    log.warning("%s: claim failed (%s); retrying", device.name, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5)
                    continue
                if run is None:
                    continue
            current, run = run, None
            try:
                # The finish report asks for the device's next run, which saves a claim per run.
                run = await self._execute(device, current)
            except RunMovedOn:
                log.info("run %s moved on; dropped", current.id)
            except LeaseLost as exc:
                log.warning("run %s: %s; dropped (the server requeues it)", current.id, exc)
            except Exception:
                log.exception("run %s: the agent failed; the server will requeue it when its lease expires", current.id)
            self.runs_done += 1

    async def _execute(self, device: DeviceConfig, run: RunPayload) -> RunPayload | None:
        """Run it and report the result; returns the device's next run when the server had one.

        The flow never waits for a report: steps, screenshots and artifacts are queued for the
        reporter's sender, which retries each for as long as the lease allows. The run is given up only
        when the server says it moved on (409) or the lease ran out without a heartbeat getting through.
        """
        lease = Lease(self.lease_seconds)
        log.info("run %s attempt %d: started on %s", run.id, run.attempt, device.name)
        reporter = _StepReporter(self.client, run, lease)
        sender = asyncio.create_task(reporter.serve())
        beats = asyncio.create_task(self._heartbeats(run, lease))
        timed_out = asyncio.Event()
        work = asyncio.create_task(self._perform(device, run, reporter, timed_out, lease))
        outcome: _Outcome
        try:
            done, _ = await asyncio.wait(
                {work, beats, sender}, timeout=run.timeout_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            if work in done:
                outcome = work.result()
            else:
                if not done:
                    # Stopped for its timeout, a failure: the flow stops, but its video and the device's
                    # log are still uploaded (they show where it hung) before the end is reported.
                    timed_out.set()
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                if sender in done:
                    sender.result()  # raises RunMovedOn or LeaseLost
                if beats in done:
                    beats.result()  # raises RunMovedOn or LeaseLost
                    outcome = _Outcome("cancelled")
                else:
                    message = f"Execution took longer than {run.timeout_seconds:g} s."
                    outcome = _Outcome("failed", {"kind": "timeout", "message": message, "step": None})
            # Heartbeats go on until the server has the result: a finish that waits (a busy database,
            # retries while the server restarts) must not let the lease lapse, or the run is run again.
            steps = await reporter.drain(sender)
            return await self.finisher.finish(run, lease, outcome.status, outcome.failure, steps)
        finally:
            for task in (beats, sender, work):
                task.cancel()
            for task in (beats, sender):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            # When the agent stops mid-run, let the driver end its session (an Appium quit can take
            # seconds): a session left open keeps the device busy for the next agent.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work

    async def _heartbeats(self, run: RunPayload, lease: Lease) -> None:
        """Renew the lease; return when the server asks to cancel. Raises RunMovedOn on 409, and
        LeaseLost when no heartbeat got through before the lease ran out."""
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                answer = await self.client.heartbeat(run, lease)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code not in RETRYABLE_STATUS:
                    log.warning("heartbeat for %s refused (%s)", run.id, exc.response.status_code)
                    continue
                raise LeaseLost(f"the server answered {exc.response.status_code} until the lease ran out") from exc
            except httpx.TransportError as exc:
                raise LeaseLost(f"the server was unreachable until the lease ran out ({exc!r})") from exc
            if answer.cancel:
                return

    async def _perform(
        self,
        device: DeviceConfig,
        run: RunPayload,
        reporter: _StepReporter,
        timed_out: asyncio.Event,
        lease: Lease,
    ) -> _Outcome:
        try:
            files = await self._files(run, lease)
        except (httpx.HTTPError, OSError, ValueError) as exc:
            return _Outcome(
                "failed",
                {"kind": "infrastructure", "message": f"Cannot download the test case's files: {exc}", "step": None},
            )
        try:
            bundle = await self._bundle(run.flow, files)
        except FlowError as exc:
            return _Outcome("failed", {"kind": "test", "message": f"The flow is invalid: {exc}", "step": None})
        try:
            path = await self.client.fetch_app(run.app, self.cache_dir, lease)
        except (httpx.HTTPError, OSError) as exc:
            return _Outcome(
                "failed", {"kind": "infrastructure", "message": f"Cannot download the app: {exc}", "step": None}
            )
        metadata = run.app.metadata
        app = AppUnderTest(
            path=str(path),
            sha256=run.app.sha256,
            platform=run.app.os,
            package_id=metadata.get("package_id") or metadata.get("package_name") or metadata.get("bundle_id"),
            metadata=metadata,
        )
        driver = self.drivers[device.driver]
        session: DeviceSession | None = None
        values = RunValues(
            platform=device.platform,
            device_id=device.id,
            # Values passed for the run win over a secret of the same name.
            variables={**run.secrets, **run.env},
            secrets=tuple(run.secrets.values()),
            flow_name=run.test_case_name,
        )
        result: _Outcome
        try:
            try:
                session = await driver.open(device, app, bundle.flow)
                if run.record_video:
                    await self._start_recording(run, session)
                outcome = await FlowRunner(bundle, session, values, reporter).run()
                result = _Outcome(outcome.status, outcome.failure)
            except InfrastructureError as exc:
                result = _Outcome("failed", {"kind": "infrastructure", "message": str(exc), "step": None})
            except asyncio.CancelledError:
                # Cancelled for its timeout (not because the run was cancelled or the agent stops).
                if session is not None and timed_out.is_set():
                    await self._collect_artifacts(run, session, reporter)
                raise
            # Passed or failed: the video and the device's log go up before the end is reported, so the
            # run's page has them as soon as it shows the result.
            if session is not None:
                await self._collect_artifacts(run, session, reporter)
            return result
        finally:
            if session is not None:
                with contextlib.suppress(Exception):
                    await session.close()

    async def _start_recording(self, run: RunPayload, session: DeviceSession) -> None:
        """Start the run's screen recording; a device that cannot record still runs the flow."""
        try:
            await session.start_recording()
        except Exception:
            log.warning("run %s: could not start recording the screen", run.id, exc_info=True)

    async def _collect_artifacts(self, run: RunPayload, session: DeviceSession, reporter: _StepReporter) -> None:
        """Stop the screen recording (the run's own, or one a flow left running) and queue it with the
        device's log for upload before the end is reported. Neither can fail the run: an error is logged
        and the run's result stands."""
        for what, produce in (("screen recording", session.stop_recording), ("device log", session.device_log)):
            try:
                artifact = await produce()
            except Exception as exc:
                log.warning("run %s: the %s was not uploaded (%s)", run.id, what, exc)
                continue
            if artifact is not None:
                reporter.artifact(artifact)

    async def _files(self, run: RunPayload, lease: Lease) -> dict[str, bytes]:
        """The test case's files, each downloaded once per agent (kept by SHA-256 next to the apps)."""
        folder = self.cache_dir / "files"
        out: dict[str, bytes] = {}
        for ref in run.files:
            cached = folder / ref.sha256
            if cached.is_file():
                out[ref.path] = await asyncio.to_thread(cached.read_bytes)
                continue
            data = await self.client.fetch_file(run, ref.path, lease)
            folder.mkdir(parents=True, exist_ok=True)
            # Devices of this agent may fetch the same file at once: each writes its own partial file.
            partial = cached.with_suffix(f".{os.getpid()}.{id(asyncio.current_task())}.part")
            await asyncio.to_thread(partial.write_bytes, data)
            os.replace(partial, cached)
            out[ref.path] = data
        return out

    async def _bundle(self, flow: str, files: dict[str, bytes]) -> Bundle:
        """Loaded once per flow and files: a suite runs the same flows again and again, on many devices."""
        key = (flow, tuple(sorted((path, hashlib.sha256(data).digest()) for path, data in files.items())))
        bundle = self._bundles.get(key)
        if bundle is None:
            bundle = await asyncio.to_thread(load_bundle, flow, files)
            self._bundles[key] = bundle
            while len(self._bundles) > 256:
                self._bundles.pop(next(iter(self._bundles)))
        return bundle


class _GroupCommit(Generic[T, R]):
    """Requests of many devices, several per HTTP request, like a database's group commit: the items
    that come in while one request is on its way go together in the next. Under load the server
    handles one request and one transaction for many devices; at rest an item still goes at once,
    alone."""

    max_batch = 200  # the server's limit per request

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self.pending: list[tuple[T, asyncio.Future[R]]] = []
        self.ready = asyncio.Event()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        self.ready.set()
        return await future

    async def send(self, items: list[T]) -> list[R | BaseException]:
        """One request for ``items``: a result (or the exception to raise) for each, in order."""
        raise NotImplementedError

    async def serve(self) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
            if self.pending:
                self.ready.set()
            if not batch:
                continue
            try:
                results = await self.send([item for item, _ in batch])
                if len(results) != len(batch):
                    raise ValueError(f"{len(results)} results for {len(batch)} items")
            except Exception as exc:
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)


class _Claimer(_GroupCommit[str, "RunPayload | None"]):
    """Claims for devices that just came free (no waiting): a run for each device that can have one,
    None for the others, which then long-poll on their own."""

    async def claim_now(self, device_id: str) -> RunPayload | None:
        return await self.submit(device_id)

    async def send(self, items: list[str]) -> list[RunPayload | BaseException | None]:
        runs = await self.client.claim(items, 0, max_runs=len(items))
        by_device = {run.device_id: run for run in runs}
        return [by_device.get(device_id) for device_id in items]


class _Finisher(_GroupCommit[tuple[dict[str, Any], Lease], "RunPayload | None"]):
    """Reports the ends of runs (``POST /v1/agent/finish``), each with a claim for its device's next run."""

    async def finish(
        self, run: RunPayload, lease: Lease, status: str, failure: dict[str, Any] | None, steps: list[dict[str, Any]]
    ) -> RunPayload | None:
        """Report the run's end; returns the device's next run, if one was queued. Raises RunMovedOn
        when the server says the run moved on, LeaseLost when it could not be told before the lease ran out."""
        report = {
            "run_id": run.id,
            "attempt": run.attempt,
            "status": status,
            "failure": failure,
            "steps": steps,
            "claim_next_for": run.device_id,
        }
        return await self.submit((report, lease))

    async def send(self, items: list[tuple[dict[str, Any], Lease]]) -> list[RunPayload | BaseException | None]:
        leases = [lease for _, lease in items]
        try:
            results = await self.client.finish_many(
                [report for report, _ in items], until=lambda: max(lease.deadline() for lease in leases)
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code not in RETRYABLE_STATUS:
                raise
            raise LeaseLost(f"the server answered {exc.response.status_code} until the lease ran out") from exc
        except httpx.TransportError as exc:
            raise LeaseLost(f"the server was unreachable until the lease ran out ({exc!r})") from exc
        return [
            RunMovedOn(f"run {result.run_id} moved on") if result.outcome == "moved_on" else result.next_run
            for result in results
        ]


@dataclass
class _Steps:
    steps: list[dict[str, Any]]


@dataclass
class _Screenshot:
    index: int
    png: bytes


@dataclass
class _Upload:
    artifact: Artifact
    step: int | None


_MAX_STEPS_PER_REPORT = 500  # the server's limit per request


class _StepReporter:
    """Reports a run's steps, screenshots and artifacts without ever holding the run up.

    The flow hands each finished step over and goes on; a sender task sends what is queued, in order
    (a screenshot after its step, which must exist first), each request retried for as long as the
    run's lease allows. A server that is away for a while finds everything buffered when it is back.
    Steps go in small batches: at once when a screenshot or an artifact waits behind them, else once
    ``interval`` seconds have passed since the last report. Before the run's end is reported,
    everything up to the last screenshot or artifact is sent (``drain``); the steps after it go with the
    finish. Steps that take seconds on a real device are still reported one by one; instant simulated
    steps cost one request per batch instead of one each.

    A report the server refuses for good (4xx) is logged and dropped; a 409 (the run moved on), or a
    lease that ran out before a report got through, stops the sender, and the run at its next step.
    """

    def __init__(self, client: AgentClient, run: RunPayload, lease: Lease, interval: float = 0.25) -> None:
        self.client = client
        self.run = run
        self.lease = lease
        self.interval = interval
        self.outbox: deque[_Steps | _Screenshot | _Upload] = deque()
        self.progress: int | None = None
        self.last_sent = time.monotonic()
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()  # nothing queued and nothing on its way
        self.idle.set()
        self.draining = False
        self.failure: RunMovedOn | LeaseLost | None = None

    async def step(self, record: StepRecord, progress: int | None) -> None:
        if self.failure is not None:
            raise self.failure
        if progress is not None:
            self.progress = progress
        tail = self.outbox[-1] if self.outbox else None
        if isinstance(tail, _Steps) and len(tail.steps) < _MAX_STEPS_PER_REPORT:
            tail.steps.append(record.as_dict())
        else:
            self.outbox.append(_Steps([record.as_dict()]))
        if record.screenshot is not None:
            self.outbox.append(_Screenshot(record.index, record.screenshot))
        # A flow's stopRecording gives its video: uploaded with the step that made it.
        for artifact in record.artifacts:
            self.outbox.append(_Upload(artifact, record.index))
        self.idle.clear()
        self.wake.set()

    def artifact(self, artifact: Artifact) -> None:
        """Queue one of the run's own artifacts (its video, the device's log) for upload before the end."""
        self.outbox.append(_Upload(artifact, None))
        self.idle.clear()
        self.wake.set()

    def _urgent(self) -> bool:
        return self.draining or any(not isinstance(item, _Steps) for item in self.outbox)

    async def serve(self) -> None:
        """Send what is queued, in order, until cancelled; ends with RunMovedOn or LeaseLost."""
        try:
            while True:
                if not self.outbox:
                    self.idle.set()
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                if not self._urgent():
                    wait = self.last_sent + self.interval - time.monotonic()
                    if wait > 0:
                        self.wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.wake.wait(), wait)
                        continue
                await self._send(self.outbox.popleft())
                self.last_sent = time.monotonic()
        except (RunMovedOn, LeaseLost) as exc:
            self.failure = exc
            raise

    async def _send(self, item: _Steps | _Screenshot | _Upload) -> None:
        try:
            if isinstance(item, _Steps):
                await self.client.steps(self.run, item.steps, progress=self.progress, lease=self.lease)
            elif isinstance(item, _Screenshot):
                await self.client.screenshot(self.run, item.index, item.png, lease=self.lease)
            else:
                await self.client.upload_artifact(self.run, item.artifact, item.step, lease=self.lease)
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            if status in RETRYABLE_STATUS:
                raise LeaseLost(f"the server answered {status} until the lease ran out") from exc
            what = (
                "steps" if isinstance(item, _Steps) else "screenshot" if isinstance(item, _Screenshot) else "artifact"
            )
            log.warning("run %s: the server refused a report of its %s (%s); not sent", self.run.id, what, status)
        except httpx.TransportError as exc:
            raise LeaseLost(f"the server was unreachable until the lease ran out ({exc!r})") from exc

    async def drain(self, sender: asyncio.Task[None]) -> list[dict[str, Any]]:
        """Send all that the finish cannot carry (up to the last screenshot or artifact) and return the
        steps queued after it, for the finish. Raises what stopped the sender (RunMovedOn, LeaseLost)."""
        trailing: list[dict[str, Any]] = []
        while self.outbox and isinstance(tail := self.outbox[-1], _Steps):
            self.outbox.pop()
            trailing[:0] = tail.steps
        self.draining = True
        self.wake.set()
        if not sender.done() and not self.idle.is_set():
            idle = asyncio.create_task(self.idle.wait())
            try:
                await asyncio.wait({idle, sender}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                idle.cancel()
        if self.failure is not None:
            raise self.failure
        return trailing
