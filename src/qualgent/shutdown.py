"""The moment a server process is asked to stop, before the ASGI server's own shutdown.

uvicorn's shutdown waits for open requests to end, then cancels what is left (with a traceback each).
Agents' claims are long polls that would hold it up for their whole wait, then be cancelled. So SIGINT
and SIGTERM first tell whoever registered here (the application ends its long polls with an empty
answer, the embedded agent stops), then go on to the server's own handler as before.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

log = logging.getLogger("qualgent")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_callbacks: list[Callable[[], None]] = []


def on_shutdown(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` when this process is asked to stop; returns what undoes it.

    It runs in a signal handler: it must only hand work over (``loop.call_soon_threadsafe``, an
    ``Event.set`` of a thread), never wait.
    """
    _callbacks.append(callback)

    def forget() -> None:
        with contextlib.suppress(ValueError):
            _callbacks.remove(callback)

    return forget


def begin() -> None:
    """Tell everyone registered that the process is stopping (each once: they unregister)."""
    for callback in list(_callbacks):
        try:
            callback()
        except Exception:  # one failing must not keep the others from hearing it
            log.exception("shutdown callback failed")


@contextlib.contextmanager
def signals_begin_shutdown() -> Iterator[None]:
    """While inside, SIGINT and SIGTERM call ``begin()`` first, then the handler installed before (the
    server's). Only the main thread may install handlers; elsewhere (a server run in a thread, in
    tests) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        begin()
        before = previous.get(signum)
        if callable(before):
            before(signum, frame)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt

    for sig in _SIGNALS:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for number, installed in previous.items():
            if signal.getsignal(number) is handler:
                signal.signal(number, installed)
