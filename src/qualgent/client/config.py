"""Client settings: arguments first, then ``QUALGENT_API_KEY`` / ``QUALGENT_URL`` from the environment,
then from a ``.env`` file in the working directory (names in any case, as the server's settings read
them). Read by hand rather than with pydantic-settings, whose import is a third of a CI command's start."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


def setting(name: str) -> str | None:
    """``QUALGENT_<NAME>`` from the environment, else from ./.env; None when neither has it."""
    wanted = f"qualgent_{name}".lower()
    for key, value in os.environ.items():
        if key.lower() == wanted:
            return value
    env_file = Path(".env")
    if env_file.is_file():
        from dotenv import dotenv_values  # only when there is a file to read

        for key, found in dotenv_values(env_file).items():
            if key.lower() == wanted and found is not None:
                return found
    return None


def resolve(api_key: str | None, base_url: str | None) -> tuple[str | None, str]:
    """The API key and base URL to use: explicit arguments win over the environment and .env."""
    return api_key or setting("api_key"), (base_url or setting("url") or DEFAULT_URL).rstrip("/")
