"""API keys: ``qg_`` + 43 random URL-safe characters, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "qg_"
SCOPES = ("read", "write")


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # A fast hash is right here: keys carry 256 random bits, so there is nothing to brute-force,
    # and a slow hash would cost every request.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def display_prefix(key: str) -> str:
    return key[:10]


def looks_like_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX) and 10 <= len(value) <= 200 and value.isascii()
