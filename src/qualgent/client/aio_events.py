"""The live event stream for the async client: :class:`qualgent.client.events.RunEventWaker`, with a task
of the running loop in place of a thread. A module of its own so that the sync client (and the CLI)
never import asyncio."""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from qualgent.client import tls
from qualgent.client.events import ATTEMPTS, EVENTS_PATH, TIMEOUT, EventLines, stream_params


class AsyncRunEventWaker:
    """:class:`RunEventWaker` for the async client: the stream is followed by a task of the running loop."""

    def __init__(
        self,
        base_url: str,
        headers: httpx.Headers,
        *,
        run_ids: list[str] | None = None,
        batch_id: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.params = stream_params(run_ids, batch_id)
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=TIMEOUT, transport=transport, verify=tls.client_context()
        )
        self._woken = asyncio.Event()
        self.connected = False
        self.available = True
        self.lines = EventLines()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> AsyncRunEventWaker:
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="qualgent-events")
        return self

    @property
    def healthy(self) -> bool:
        return self.available and self.connected

    async def wait(self, seconds: float) -> bool:
        """Wait until one of the runs changes, at most ``seconds``; True when woken by a change."""
        try:
            await asyncio.wait_for(self._woken.wait(), seconds)
            woken = True
        except TimeoutError:
            woken = False
        self._woken.clear()
        return woken

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._http.aclose()

    async def _follow(self) -> None:
        failures = 0
        while True:
            headers = self.lines.resume_headers()
            try:
                async with self._http.stream("GET", EVENTS_PATH, params=self.params, headers=headers) as response:
                    if response.status_code != 200:
                        break  # a server without the route (404), or one that refuses it: poll
                    self.connected = True
                    self._woken.set()  # one poll now: a change made before the stream was up is not missed
                    failures = 0
                    async for line in response.aiter_lines():
                        if self.lines.take(line):
                            self._woken.set()
            except Exception:
                failures += 1
            self.connected = False
            if failures >= ATTEMPTS:
                break
            await asyncio.sleep(1.0)
        self.available = False
        self.connected = False
        self._woken.set()  # a loop waiting on the stream goes back to its own pace now
