"""A background task that does one pass every so often, in the server's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from qualgent.db.dialect import database_unavailable


class PeriodicTask:
    """Calls ``run_once`` every ``interval`` seconds until stopped; a failed pass is logged and the
    next one comes at its time."""

    interval: float
    log: logging.Logger
    _task: asyncio.Task[None] | None = None

    async def run_once(self) -> object:
        raise NotImplementedError

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if database_unavailable(exc):
                    # A restart or failover of the database: expected now and then, not a bug to trace.
                    self.log.warning(
                        "%s pass failed, the database is unavailable (%s); retrying",
                        type(self).__name__,
                        exc.__class__.__name__,
                    )
                else:
                    self.log.exception("%s pass failed; retrying at the next interval", type(self).__name__)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
