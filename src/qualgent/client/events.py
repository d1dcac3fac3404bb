"""Waiting less with the server's live event stream (``GET /v1/jobs/events``).

A thread follows the stream for the runs a loop waits on and wakes the loop when one of them changes;
the loop still asks the server for the runs' states (the stream only says when to ask). Any trouble with
the stream (a server without it, a proxy that buffers or cuts it, a network error three times over) ends
the thread, and the loop polls at its own pace as it did without it. The async client's waker, a task
rather than a thread, is :class:`qualgent.client.aio_events.AsyncRunEventWaker`.
"""

from __future__ import annotations

import contextlib
import threading

import httpx

from qualgent.client import tls

EVENTS_PATH = "/v1/jobs/events"
HEARTBEAT_SECONDS = 15
MAX_IDS = 1000  # the route's filter takes up to 1000 runs; more: every event of the organisation wakes
ATTEMPTS = 3
# While the stream is up, a waiting loop polls only every this many seconds (a change wakes it at once).
EVENT_POLL_SECONDS = 5.0
# No heartbeat for three periods: the stream is not getting through (a buffering proxy).
TIMEOUT = httpx.Timeout(10, read=HEARTBEAT_SECONDS * 3)


def stream_params(run_ids: list[str] | None, batch_id: str | None) -> dict[str, str | int]:
    """The stream's filter: the batch's runs, or these runs (every run of the organisation past the
    route's limit of ids: then any change wakes the loop, which only polls early)."""
    params: dict[str, str | int] = {"heartbeat": HEARTBEAT_SECONDS}
    if batch_id is not None:
        params["batch_id"] = batch_id
    elif run_ids and len(run_ids) <= MAX_IDS:
        params["ids"] = ",".join(run_ids)
    return params


class EventLines:
    """What both wakers read of the stream: the last event's ID, to resume from after a reconnection, and
    how many events came."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.events = 0

    def resume_headers(self) -> dict[str, str]:
        return {"Last-Event-ID": self.last_id} if self.last_id is not None else {}

    def take(self, line: str) -> bool:
        """True when ``line`` carries an event (one of the runs changed)."""
        if line.startswith("id:"):
            self.last_id = line[3:].strip()
        elif line.startswith("data:"):
            self.events += 1
            return True
        return False


class RunEventWaker:
    def __init__(
        self,
        base_url: str,
        headers: httpx.Headers,
        *,
        run_ids: list[str] | None = None,
        batch_id: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.params = stream_params(run_ids, batch_id)
        self._http = httpx.Client(
            base_url=base_url, headers=headers, timeout=TIMEOUT, transport=transport, verify=tls.client_context()
        )
        self._woken = threading.Event()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.available = True
        self.lines = EventLines()
        self._thread = threading.Thread(target=self._follow, name="qualgent-events", daemon=True)

    def start(self) -> RunEventWaker:
        self._thread.start()
        return self

    @property
    def healthy(self) -> bool:
        """Connected and still following: a change of the runs wakes the waiting loop at once."""
        return self.available and self.connected.is_set()

    def wait(self, seconds: float) -> bool:
        """Wait until one of the runs changes, at most ``seconds``; True when woken by a change."""
        woken = self._woken.wait(seconds)
        self._woken.clear()
        return woken

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self._http.close()
        self._thread.join(timeout=1)

    def _follow(self) -> None:
        failures = 0
        while not self._stop.is_set():
            headers = self.lines.resume_headers()
            try:
                with self._http.stream("GET", EVENTS_PATH, params=self.params, headers=headers) as response:
                    if response.status_code != 200:
                        break  # a server without the route (404), or one that refuses it: poll
                    self.connected.set()
                    # One poll now: a change made before the stream was up is not missed.
                    self._woken.set()
                    failures = 0
                    for line in response.iter_lines():
                        if self._stop.is_set():
                            return
                        if self.lines.take(line):
                            self._woken.set()
            except Exception:
                if self._stop.is_set():
                    return
                failures += 1
            self.connected.clear()
            if failures >= ATTEMPTS or self._stop.wait(1.0):
                break
        self.available = False
        self.connected.clear()
        self._woken.set()  # a loop waiting on the stream goes back to its own pace now
