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
    return (
        value.startswith(KEY_PREFIX)
        and not value.startswith(AGENT_TOKEN_PREFIX)
        and 10 <= len(value) <= 200
        and value.isascii()
    )


AGENT_TOKEN_PREFIX = "qga_"


def generate_agent_token() -> str:
    """Agent tokens are a kind of their own: they open only the agent routes, and keys open none."""
    return AGENT_TOKEN_PREFIX + secrets.token_urlsafe(32)


def looks_like_agent_token(value: str) -> bool:
    return value.startswith(AGENT_TOKEN_PREFIX) and 10 <= len(value) <= 200 and value.isascii()
