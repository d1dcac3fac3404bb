"""Settings, read from the environment (prefix ``QUALGENT_``) and an optional ``.env`` file."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 1024**3


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUALGENT_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=Path(".data"),
        description="Directory for the SQLite database, uploaded builds and the generated secret key.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL, e.g. postgresql+asyncpg://user@host/db. "
        "Default: a SQLite file qualgent.db in the data directory.",
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Base URL that clients reach this server at; used to build run and download links.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL (redis://host:port/db). When set, rate limits are shared by every "
        "server process through Redis; otherwise they are kept in memory.",
    )
    max_upload_bytes: int = Field(
        default=4 * GIB, description="Largest accepted app upload, in bytes. Larger uploads get 413."
    )
    max_json_bytes: int = Field(
        default=1024 * 1024, description="Largest accepted JSON request body, in bytes. Larger get 413."
    )
    max_test_case_bytes: int = Field(
        default=34 * 1024 * 1024,
        description="Largest accepted body of POST /v1/test-cases and PATCH /v1/test-cases/{id}, in bytes: a "
        "test case carries its files (up to 24 MiB, base64-encoded in the JSON). Larger get 413.",
    )
    default_rate_limit: int = Field(
        default=10, description="Requests per second allowed per API key unless the key sets its own."
    )
    dashboard_rate_limit: int = Field(
        default=20,
        ge=1,
        description="Requests per second allowed per signed-in person on the dashboard's pages and forms.",
    )
    auth_failure_limit: int = Field(
        default=20,
        description="Failed authentications allowed per client address per minute before 429.",
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or networks (CIDR) of the reverse proxies in front of the "
        "server, whose X-Forwarded-For (the client's address, which per-address limits count) and "
        "X-Forwarded-Proto are believed; `*` believes any sender. Default: none, the address is the "
        "connection's, and those headers are ignored.",
    )
    auth_cache_seconds: float = Field(
        default=2.0,
        description="Seconds a process may reuse a resolved API key or agent token before looking it up "
        "again; a revoked one stops working within this time. 0 looks it up on every request.",
    )
    secret_key: str | None = Field(
        default=None,
        description="Key that signs download links and encrypts organisation secrets (changing it makes "
        "stored secrets unreadable). Default: generated once and kept in the data directory, so every "
        "process sharing that directory agrees.",
    )
    devices_file: Path | None = Field(
        default=None,
        description="YAML device catalogue. Default: the built-in set of Android and iOS phones and tablets.",
    )
    default_parallel_runs: int = Field(
        default=10, description="Runs an organisation may execute at once unless set per organisation."
    )
    download_link_ttl: int = Field(default=300, description="Seconds a pre-signed download link is valid.")

    # Execution engine
    embedded_agent: bool = Field(
        default=True,
        description="`qualgent serve` runs a device agent in-process with simulated devices for the catalogue.",
    )
    lease_seconds: float = Field(
        default=30, description="How long a running run stays an agent's without a heartbeat before it is requeued."
    )
    heartbeat_seconds: float = Field(default=5, description="How often agents renew their lease on a running run.")
    max_attempts: int = Field(
        default=3, description="Attempts a run gets when its agent is lost before it fails as infrastructure."
    )
    execution_timeout: float = Field(
        default=900, description="Seconds a run may execute unless its test case or request sets a timeout."
    )
    queue_timeout: float = Field(default=86_400, description="Seconds a run may wait in the queue before it fails.")
    reaper_interval: float = Field(
        default=2, description="Seconds between checks for expired leases, timeouts and agents gone offline."
    )
    simulator_step_seconds: float = Field(
        default=0.2, description="How long each step takes on a simulated device (0 for benchmarks)."
    )
    agent_offline_after: float = Field(
        default=60, description="Seconds after an agent's last request when its devices count as offline."
    )
    retry_device_wait: float = Field(
        default=60,
        description="Seconds a test retry waits for another device than the one it failed on (when another "
        "online device fits it) before any device that fits may take it.",
    )

    # The dashboard (issue 6)
    session_hours: float = Field(
        default=12, description="Hours a dashboard sign-in lasts before the person signs in again."
    )
    # Issue 4: app storage backends, retention and resumable uploads
    storage_url: str | None = Field(
        default=None,
        description="Where app builds are stored: unset for local disk under the data directory, or "
        "s3://bucket/prefix for S3-compatible object storage.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint URL for S3-compatible stores (MinIO, Ceph…); unset for AWS."
    )
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    s3_access_key_id: str | None = Field(
        default=None, description="S3 access key; unset to use the usual AWS credential chain."
    )
    s3_secret_access_key: str | None = Field(default=None, description="S3 secret key.")
    s3_part_size: int = Field(
        default=8 * 1024 * 1024,
        description="Bytes per part of S3 multipart uploads (at least 5 MiB; 10,000 parts at most per object).",
    )
    app_retention_days: float = Field(
        default=30,
        description="Days a deleted app's content is kept before it is purged (when no other app uses it).",
    )
    upload_expiry_seconds: int = Field(
        default=86_400,
        description="Seconds an unfinished resumable (tus) upload is kept after it was created before its "
        "partial data is removed.",
    )
    purge_interval: float = Field(
        default=3600,
        description="Seconds between purges of expired uploads, deleted apps' content and old runs' artifacts.",
    )
    # What a run records besides screenshots: screen recordings and the device's log
    max_video_bytes: int = Field(
        default=200 * 1024 * 1024,
        description="Largest screen recording an agent may upload for a run, in bytes. Larger get 413.",
    )
    max_device_log_bytes: int = Field(
        default=5 * 1024 * 1024,
        description="Largest device log an agent may upload for a run, in bytes. Larger get 413.",
    )
    request_idle_seconds: float = Field(
        default=60,
        gt=0,
        description="Seconds a request body (an upload, a PATCH of a resumable upload) may go without a byte "
        "arriving; then the request is answered 408 and what it sent so far is discarded.",
    )
    run_retention_days: float = Field(
        default=90,
        description="Days after a run finished when the purge deletes its videos, device logs and screenshots "
        "(the run, its steps and their logs stay).",
    )

    # Issue 15: webhooks, Slack and metrics
    webhooks_allow_private: bool = Field(
        default=False,
        description="Deliver webhooks to loopback, private, link-local and other non-public addresses (checked "
        "on the address the host resolves to at each delivery). Off: such endpoints are refused.",
    )
    webhook_timeout: float = Field(
        default=10, gt=0, description="Seconds a webhook delivery may take, connection to last byte read."
    )
    webhook_max_response_bytes: int = Field(
        default=64 * 1024, ge=0, description="Bytes of a receiver's answer read at most; the rest is not read."
    )
    webhook_retry_base: float = Field(
        default=5,
        gt=0,
        description="Seconds before the first retry of a failed webhook delivery; each retry waits twice as "
        "long as the one before (at most 6 hours).",
    )
    webhook_retry_window: float = Field(
        default=86_400, gt=0, description="Seconds after an event during which its delivery is retried."
    )
    webhook_disable_after: float = Field(
        default=86_400,
        gt=0,
        description="Seconds of failed deliveries in a row (no success between) after which an endpoint is "
        "disabled, with the reason on the endpoint.",
    )
    webhook_poll_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between the delivery worker's looks for new events and due retries (events "
        "made by the same process are sent at once).",
    )
    webhook_worker: bool = Field(
        default=True,
        description="This server process delivers webhooks. Any number of processes may; turn it off where "
        "a process should only answer requests.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text`: uvicorn's log lines. `json`: one JSON object per line, each line of a request "
        "with its request_id (the X-Request-Id of its answer).",
    )
    metrics_token: str | None = Field(
        default=None,
        description="Bearer token GET /metrics requires. Unset: /metrics is open to anyone who reaches it.",
    )

    # The live event stream (GET /v1/jobs/events)
    events_poll_seconds: float = Field(
        default=0.05,
        gt=0,
        description="Seconds between a process's reads of new run events while it has streams open (one "
        "query per tick for all of them). On PostgreSQL a change wakes the reader at once (LISTEN/NOTIFY); "
        "this is then the pace only while a gap in event IDs is being waited out.",
    )
    events_heartbeat_seconds: float = Field(
        default=15,
        gt=0,
        description="Seconds a live event stream may stay silent before it sends a heartbeat comment, so "
        "proxies keep it open (a client may ask for another pace with ?heartbeat=).",
    )
    events_queue_size: int = Field(
        default=1000,
        ge=1,
        description="Events a stream may have waiting to be sent; a client that falls further behind is "
        "disconnected and resumes with Last-Event-ID.",
    )
    events_retention_hours: float = Field(
        default=24,
        gt=0,
        description="Hours run events are kept for streams that resume with Last-Event-ID (the purge "
        "deletes older ones).",
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'qualgent.db').resolve()}"

    @property
    def secure_cookies(self) -> bool:
        """Cookies are sent over HTTPS only when people reach the server over HTTPS."""
        return self.public_base_url.startswith("https://")

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def apps_dir(self) -> Path:
        return self.data_dir / "apps"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    @property
    def tus_dir(self) -> Path:
        return self.data_dir / "tmp" / "tus"

    def secure_data_dir(self) -> None:
        """Make the data directory its owner's alone: the folder 0700 (which closes everything below it
        to other users), the database and the key 0600, and every file and folder this process creates
        from now on owner-only (umask 077): builds, staging files, resumable uploads' parts."""
        os.umask(0o077)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        for name in ("apps", "tmp", "tmp/tus", "agent-cache"):
            folder = self.data_dir / name
            if folder.is_dir():
                folder.chmod(0o700)
        files = [self.data_dir / "secret_key"]
        url = self.resolved_database_url
        if url.startswith("sqlite") and ":///" in url:
            database = Path(url.split(":///", 1)[1].split("?", 1)[0])
            files += [database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")]
        for path in files:
            if path.is_file():
                path.chmod(0o600)

    def resolved_secret_key(self) -> str:
        """The signing key: the configured one, else one generated once and kept in the data dir."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            candidate = path.with_suffix(f".{secrets.token_hex(4)}")
            candidate.write_text(secrets.token_urlsafe(48))
            candidate.chmod(0o600)
            # Atomic: the first process to link wins; the others read its key.
            try:
                path.hardlink_to(candidate)
            except FileExistsError:
                pass
            finally:
                candidate.unlink(missing_ok=True)
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
