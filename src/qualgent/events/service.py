"""A live event stream: what a client missed since its Last-Event-ID, then the hub's events as they
come, with heartbeats between."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from qualgent.db.dialect import Reader
from qualgent.events import repository
from qualgent.events.hub import HEARTBEAT as HEARTBEAT_ITEM
from qualgent.events.hub import EventHub, Subscriber
from qualgent.events.schemas import EventFilter

REPLAY_PAGE = 500
# Sent first: the browser's EventSource reconnects after this many milliseconds, sending Last-Event-ID.
OPENING = b"retry: 2000\n: run events\n\n"
HEARTBEAT = b": heartbeat\n\n"


async def open_stream(
    hub: EventHub,
    reader: Reader,
    organization_id: str,
    wanted: EventFilter,
    *,
    last_event_id: int | None,
    heartbeat: float,
    max_seconds: float | None = None,
) -> AsyncIterator[bytes]:
    """Subscribe now (a database that does not answer is a 503 before the stream starts, not a stream
    cut short), and return the stream's SSE bytes."""
    subscriber = await hub.subscribe(organization_id, wanted)
    return _stream(hub, reader, subscriber, wanted, last_event_id, heartbeat, max_seconds)


async def _stream(
    hub: EventHub,
    reader: Reader,
    subscriber: Subscriber,
    wanted: EventFilter,
    last_event_id: int | None,
    heartbeat: float,
    max_seconds: float | None,
) -> AsyncIterator[bytes]:
    """SSE bytes until the client goes (the server cancels the generator), the process stops, the
    client falls too far behind, or ``max_seconds`` pass. (A stream never iterated stays subscribed
    until its queue fills, then the hub drops it.)"""
    organization_id = subscriber.organization_id
    try:
        yield OPENING
        if last_event_id is not None:
            # The hub hands this stream events after subscriber.start; the rest are read from the table
            # (a catch-up that ends at once reads up to the newest, which the hub may not have read yet).
            after = last_event_id
            upto = await repository.head(reader) if max_seconds == 0 else subscriber.start
            while after < upto:
                missed = await repository.replay(
                    reader,
                    organization_id,
                    after,
                    upto,
                    run_ids=wanted.run_ids,
                    batch_id=wanted.batch_id,
                    statuses=wanted.statuses,
                    limit=REPLAY_PAGE,
                )
                if missed:
                    yield b"".join(hub.frame(event) for event in missed)
                if len(missed) < REPLAY_PAGE:
                    break
                after = missed[-1].id
        if max_seconds == 0:
            return
        subscriber.start_timers(heartbeat, max_seconds)
        while True:
            items = await subscriber.next()
            if items is None:
                return
            # What came meanwhile goes out in one write (a batch of runs queued at once, a burst).
            yield b"".join(HEARTBEAT if item is HEARTBEAT_ITEM else hub.frame(item) for item in items)
            subscriber.last_sent = time.monotonic()
    finally:
        subscriber.stop_timers()
        hub.unsubscribe(subscriber)
