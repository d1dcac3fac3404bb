"""Client settings: arguments first, then ``QUALGENT_API_KEY`` / ``QUALGENT_URL`` from the environment or
a ``.env`` file in the working directory (pydantic-settings, as the server's settings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientSettings(BaseSettings):
    # extra="ignore": the same .env file may hold the server's QUALGENT_ settings.
    model_config = SettingsConfigDict(env_prefix="QUALGENT_", env_file=".env", extra="ignore")

    api_key: str | None = Field(default=None, description="API key (qg_…) sent in X-Api-Key.")
    url: str = Field(default=DEFAULT_URL, description="Base URL of the qualgent server.")


def resolve(api_key: str | None, base_url: str | None) -> tuple[str | None, str]:
    """The API key and base URL to use: explicit arguments win over the environment and .env."""
    settings = ClientSettings()
    return api_key or settings.api_key, (base_url or settings.url).rstrip("/")
