"""One poller per process, fanning run events out to every open stream of the process.

However many streams are open, a process reads the events table once per tick: every organisation's
new events in one indexed range query, each handed to the streams of its organisation whose filters
take it. The SSE frame of an event is made once, whoever receives it. The tick is
``QUALGENT_EVENTS_POLL_SECONDS`` on SQLite; on PostgreSQL the poller also LISTENs on the channel the
events' trigger NOTIFYs at commit, so a change made by any process reaches the streams at once, the
tick staying as the fallback when notifications are lost (the listening connection is re-made).

Event IDs come from a sequence. On SQLite one writer at a time means they commit in ID order. On
PostgreSQL a transaction can commit an ID below one already read (it drew its ID first and committed
later), and an ID drawn by a transaction that rolled back never appears: a gap in what a poll read is
held (the events after it wait) until the gap fills, or until every transaction that was running when
the gap was seen has ended (its ID will never come), or ``GAP_WAIT`` seconds passed (an unrelated long
transaction keeps the oldest running one old); an ID that turns up after that is still delivered, late.
So streams see events in ID order and an event's ID is a place to resume from.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qualgent.config import Settings
from qualgent.db.dialect import Reader, database_unavailable
from qualgent.events import repository
from qualgent.events.repository import Event, Snapshot

log = logging.getLogger("qualgent.events")

CHANNEL = "qualgent_run_events"  # the trigger's NOTIFY (migration 0014)
GAP_WAIT = 2.0  # seconds a gap in event IDs may hold the events after it
LATE_WAIT = 60.0  # seconds an event ID given up on is still looked for
MAX_LATE = 32
POLL_LIMIT = 1000
LISTEN_RETRY = 5.0  # seconds between attempts to re-make a lost LISTEN connection


# Put in a stream's queue when it has been silent for its heartbeat period.
HEARTBEAT: Any = object()


@dataclass(eq=False)
class Subscriber:
    """One open stream: its organisation, what it wants, and the events waiting to be sent to it.

    Its heartbeat is a timer re-armed once per heartbeat period (not per event: with 1,000 streams, a
    timer set and cancelled around each wait for each event was a good part of an event's fan-out)."""

    organization_id: str
    wants: Callable[[Event], bool]
    start: int  # events up to this ID are not this stream's from the hub (it replays them, if asked)
    queue: asyncio.Queue[Any]  # events, HEARTBEAT, or None: the end
    closed: bool = False  # the hub stopped feeding it: the process is stopping, or it fell behind
    overflowed: bool = False
    last_sent: float = field(default_factory=time.monotonic)
    _timers: list[asyncio.TimerHandle] = field(default_factory=list)
    _heartbeat: float = 15.0

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)

    def start_timers(self, heartbeat: float, max_seconds: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._heartbeat = heartbeat
        self._timers = [loop.call_later(heartbeat, self._beat)]
        if max_seconds is not None:
            self._timers.append(loop.call_later(max_seconds, self.close))

    def stop_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()

    def _beat(self) -> None:
        idle = time.monotonic() - self.last_sent
        if idle >= self._heartbeat * 0.99:
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(HEARTBEAT)
            idle = 0.0
        self._timers[0] = asyncio.get_running_loop().call_later(self._heartbeat - idle, self._beat)

    async def next(self) -> list[Any] | None:
        """What is waiting (at least one item; events and heartbeats), or None when the stream ends."""
        if self.closed and self.queue.empty():
            return None
        items = [await self.queue.get()]
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        if None in items:
            self.closed = True
            items = items[: items.index(None)]
            if not items:
                return None
        return items


@dataclass
class Gap:
    first: int  # the first missing ID (the cursor's next)
    seen_at: float
    xmax: int | None  # the snapshot's xmax when first seen (PostgreSQL)


@dataclass
class HubStats:
    polls: int = 0
    events: int = 0
    delivered: int = 0
    overflowed: int = 0
    notifications: int = 0
    late: int = 0
    started_at: float = field(default_factory=time.monotonic)


class EventHub:
    def __init__(self, settings: Settings, reader: Reader) -> None:
        self.settings = settings
        self.reader = reader
        self.base_url = settings.public_base_url.rstrip("/")
        self.queue_size = settings.events_queue_size
        self.subscribers: dict[str, set[Subscriber]] = {}
        self.count = 0
        self.cursor = 0
        self._fresh = False  # the cursor is the events' head (not stale from an idle time)
        self._fresh_lock = asyncio.Lock()
        self._gap: Gap | None = None
        self._late: dict[int, float] = {}  # IDs given up on → when
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Any = None
        self._listen_tried = 0.0
        self._stopping = False
        self.stats = HubStats()

    # ----------------------------------------------------------------------------------- streams

    async def subscribe(self, organization_id: str, wants: Callable[[Event], bool]) -> Subscriber:
        """A stream's place in the fan-out, from the events after the newest at this moment."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        if not self._fresh:
            async with self._fresh_lock:
                if not self._fresh:
                    self.cursor = await repository.head(self.reader)
                    self._gap = None
                    self._fresh = True
        queue: asyncio.Queue[Any] = asyncio.Queue(self.queue_size)
        subscriber = Subscriber(organization_id, wants, self.cursor, queue)
        if self._stopping:
            subscriber.close()
            return subscriber
        self.subscribers.setdefault(organization_id, set()).add(subscriber)
        self.count += 1
        self._wake.set()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        streams = self.subscribers.get(subscriber.organization_id)
        if streams is not None and subscriber in streams:
            streams.discard(subscriber)
            self.count -= 1
            if not streams:
                del self.subscribers[subscriber.organization_id]

    def stop(self) -> None:
        """The process is stopping: every stream ends now (uvicorn would wait for them), none starts."""
        self._stopping = True
        for streams in list(self.subscribers.values()):
            for subscriber in list(streams):
                subscriber.close()
        self._wake.set()

    async def close(self) -> None:
        self.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._unlisten()

    def frame(self, event: Event) -> bytes:
        """The event as one SSE message (made once per event)."""
        if not event.frame:
            body = {
                "id": event.id,
                "type": event.type,
                "run_id": event.run_id,
                "batch_id": event.batch_id,
                "status": event.status,
                "attempt": event.attempt,
                "failure_kind": event.failure_kind,
                "at": event.created_at.isoformat(),
                "link": f"{self.base_url}/test-runs/{event.run_id}",
            }
            data = json.dumps(body, separators=(",", ":"))
            event.frame = f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()
        return event.frame

    # ------------------------------------------------------------------------------------ poller

    async def _run(self) -> None:
        while not self._stopping:
            if not self.subscribers:
                # Nobody listens: no queries. The next stream starts from the head at that time.
                self._fresh = False
                self._wake.clear()
                await self._wake.wait()
                continue
            # Cleared before the read: a notification that comes while it runs means one more read.
            self._wake.clear()
            try:
                await self._listen()
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A restart or failover of the database is expected now and then: one line, no trace.
                log.warning("reading run events failed (%s); trying again", exc, exc_info=not database_unavailable(exc))
                await asyncio.sleep(1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval()):
                    await self._wake.wait()

    def _interval(self) -> float:
        poll = self.settings.events_poll_seconds
        if self._gap is not None or self._listener is None:
            return poll
        return max(poll, 1.0)  # notified at each commit: the tick is only the fallback

    async def tick(self) -> None:
        """One poll: read what is new, hand it out."""
        now = time.monotonic()
        self._late = {i: t for i, t in self._late.items() if now - t < LATE_WAIT}
        events, snapshot = await repository.poll(self.reader, self.cursor, self._late, POLL_LIMIT)
        self.stats.polls += 1
        ready, late = self._in_order(events, snapshot, now)
        self.stats.events += len(ready)
        for event in ready:
            streams = self.subscribers.get(event.organization_id)
            if not streams:
                continue
            for subscriber in list(streams):
                if event.id <= subscriber.start and event.id not in late:
                    continue
                if not subscriber.wants(event):
                    continue
                try:
                    subscriber.queue.put_nowait(event)
                    self.stats.delivered += 1
                except asyncio.QueueFull:
                    # Fell behind: it ends after what it has; its client resumes with Last-Event-ID.
                    self.stats.overflowed += 1
                    subscriber.overflowed = True
                    subscriber.closed = True
                    self.unsubscribe(subscriber)
        if len(events) == POLL_LIMIT:
            self._wake.set()  # more to read at once

    def _in_order(self, events: list[Event], snapshot: Snapshot | None, now: float) -> tuple[list[Event], set[int]]:
        """The events to hand out now: those given up on that turned up late, then the new ones in ID
        order up to the first gap that may still fill."""
        late = {e.id for e in events if e.id in self._late}
        for event_id in late:
            del self._late[event_id]
        self.stats.late += len(late)
        ready = [e for e in events if e.id in late]
        for event in events:
            if event.id <= self.cursor:
                continue
            if event.id != self.cursor + 1 and snapshot is not None:
                gap = self._gap
                if gap is None or gap.first != self.cursor + 1:
                    self._gap = Gap(self.cursor + 1, now, snapshot.xmax)
                    break
                ended = gap.xmax is not None and snapshot.xmin >= gap.xmax
                if not ended and now - gap.seen_at < GAP_WAIT:
                    break
                # Its IDs will not come (rolled back), or are very late: look for them a while longer.
                for missing in range(self.cursor + 1, min(event.id, self.cursor + 1 + MAX_LATE)):
                    if len(self._late) < MAX_LATE:
                        self._late[missing] = now
            self._gap = None
            self.cursor = event.id
            ready.append(event)
        return ready, late

    # -------------------------------------------------------------------- PostgreSQL notifications

    async def _listen(self) -> None:
        if self.reader.is_sqlite or self._listener is not None:
            return
        now = time.monotonic()
        if now - self._listen_tried < LISTEN_RETRY:
            return
        self._listen_tried = now
        import asyncpg  # type: ignore[import-untyped]
        from sqlalchemy.engine import make_url

        dsn = make_url(self.settings.resolved_database_url).set(drivername="postgresql")
        try:
            conn = await asyncpg.connect(dsn.render_as_string(hide_password=False), timeout=5)
            await conn.add_listener(CHANNEL, self._notified)
        except Exception as exc:
            log.warning("cannot LISTEN for run events (%s); polling every %s s", exc, self._interval())
            return
        conn.add_termination_listener(self._listener_lost)
        self._listener = conn
        self._wake.set()  # what committed before it listened

    def _notified(self, *_args: object) -> None:
        self.stats.notifications += 1
        self._wake.set()

    def _listener_lost(self, *_args: object) -> None:
        self._listener = None
        self._wake.set()

    async def _unlisten(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
