"""What keeps runs moving inside a server process: wake-ups for waiting agents and the reaper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from qualgent.agents.repository import mark_silent_agents_offline
from qualgent.config import Settings
from qualgent.periodic import PeriodicTask
from qualgent.runs import transitions

log = logging.getLogger("qualgent.scheduler")


class Wakeup:
    """Wakes agents long-polling for work when runs are queued or released in this process.

    ``wake(n)`` wakes the n longest-waiting claimers (one per run that became claimable), not all of
    them: with many devices waiting, waking every one for each finished run would cost a claim attempt
    per device per run. Agents of other processes, and waiters not woken, re-check on their own every
    ``poll`` seconds, so the queue never depends on a wake-up being delivered.
    """

    def __init__(self) -> None:
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.stopping = False

    def stop(self) -> None:
        """The process is stopping: wake every waiter, and from now on nobody waits."""
        self.stopping = True
        self.wake_all()

    def wake(self, n: int = 1) -> None:
        while n > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                n -= 1

    def wake_all(self) -> None:
        self.wake(len(self._waiters))

    async def wait(self, seconds: float) -> bool:
        """Wait to be woken, at most ``seconds``; True when woken."""
        if self.stopping:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            try:
                await asyncio.wait_for(asyncio.shield(waiter), seconds)
            except TimeoutError:
                return False
            return True
        finally:
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)


class Reaper(PeriodicTask):
    """Requeues runs whose agent vanished, ends runs past their timeouts, marks silent agents offline."""

    log = log

    def __init__(
        self, settings: Settings, sessions: async_sessionmaker[AsyncSession], on_change: Callable[[int], None]
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.on_change = on_change
        self.interval = settings.reaper_interval

    async def run_once(self) -> int:
        # One transaction each: each takes its organisations' rows in ID order, and two sets taken one
        # after the other in one transaction would not be in ID order together.
        async with self.sessions() as session:
            changed = await transitions.reap_expired_leases(session)
            await session.commit()
        async with self.sessions() as session:
            changed += await transitions.reap_timeouts(
                session,
                queue_timeout=self.settings.queue_timeout,
                default_execution_timeout=self.settings.execution_timeout,
            )
            await session.commit()
        async with self.sessions() as session:
            await mark_silent_agents_offline(session, self.settings.agent_offline_after)
            await session.commit()
        if changed:
            self.on_change(changed)
        return changed
