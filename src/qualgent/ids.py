"""Opaque, prefixed, URL-safe identifiers that sort by creation time.

An ID is ``{prefix}_`` followed by 26 Crockford base32 characters: 48 bits of milliseconds since the
epoch, then 80 random bits (the ULID layout). Sorting IDs sorts rows by creation, so lists page by ID
alone and "newest first" needs no second column.
"""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_SHAPE = re.compile(r"^[a-z]+_[0-9a-hjkmnp-tv-z]{26}$")

PREFIXES = ("org", "user", "key", "file", "tc", "cat", "run", "dev", "agent")


def new_id(prefix: str) -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def has_shape(value: str, prefix: str) -> bool:
    """Whether ``value`` looks like an ID with ``prefix``; the caller answers 404 when it does not."""
    return value.startswith(prefix + "_") and _SHAPE.match(value) is not None
