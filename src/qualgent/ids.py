"""Opaque, prefixed, URL-safe identifiers that sort by creation time.

An ID is ``{prefix}_`` followed by 26 Crockford base32 characters: 48 bits of milliseconds since the
epoch, then 80 random bits (the ULID layout). Sorting IDs sorts rows by creation, so lists page by ID
alone and "newest first" needs no second column.
"""

from __future__ import annotations

import os
import re
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_SHAPE = re.compile(r"^[a-z]+_[0-9a-hjkmnp-tv-z]{26}$")

PREFIXES = ("org", "user", "key", "file", "tc", "cat", "run", "dev", "agent", "sess", "upload", "batch", "whk", "msg")


_last = [0, 0]  # (milliseconds, random part) of the last ID made by this process
_lock = threading.Lock()


def new_id(prefix: str) -> str:
    """A new ID. Within one process IDs are strictly increasing, also within one millisecond (the
    random part is incremented, as monotonic ULIDs do), so "oldest first" holds inside a batch."""
    millis = int(time.time() * 1000)
    with _lock:
        if millis <= _last[0]:
            millis, rand = _last[0], _last[1] + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1  # headroom for increments
        _last[0], _last[1] = millis, rand
    value = (millis << 80) | rand
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def has_shape(value: str, prefix: str) -> bool:
    """Whether ``value`` looks like an ID with ``prefix``; the caller answers 404 when it does not."""
    return value.startswith(prefix + "_") and _SHAPE.match(value) is not None
