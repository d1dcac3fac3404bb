"""``GET /metrics``: the process's (or, under ``--workers``, every worker's) instruments, then the values
read from the database now, in Prometheus' text format."""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.config import Settings
from qualgent.db.base import utcnow
from qualgent.errors import Unauthorized
from qualgent.metrics import repository

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def check_token(settings: Settings, authorization: str | None) -> None:
    """With QUALGENT_METRICS_TOKEN set, the scrape must send it as a bearer token."""
    if not settings.metrics_token:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.metrics_token.encode()):
        raise Unauthorized(
            "GET /metrics needs the metrics token: send Authorization: Bearer <QUALGENT_METRICS_TOKEN>.",
            code="invalid_metrics_token",
        )


class _Snapshot:
    """A collector of families computed before the scrape (collectors are synchronous)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


async def _database_families(session: AsyncSession, settings: Settings) -> list[Metric]:
    now = utcnow()
    depth = GaugeMetricFamily(
        "qualgent_queue_depth",
        "Runs waiting in the queue, by organisation and platform.",
        labels=["organization", "platform"],
    )
    oldest = GaugeMetricFamily(
        "qualgent_queue_oldest_seconds",
        "How long the oldest queued run has waited, by organisation and platform.",
        labels=["organization", "platform"],
    )
    for org, platform, count, first in await repository.queue(session):
        labels = [org, str(platform).lower()]
        depth.add_metric(labels, count)
        if first is not None:
            waited = (now - (first if first.tzinfo else first.replace(tzinfo=now.tzinfo))).total_seconds()
            oldest.add_metric(labels, max(0.0, waited))
    running = GaugeMetricFamily(
        "qualgent_runs_running", "Runs executing now, by organisation.", labels=["organization"]
    )
    cap = GaugeMetricFamily(
        "qualgent_runs_parallel_cap", "Runs an organisation may execute at once (its cap).", labels=["organization"]
    )
    for org, count, own_cap in await repository.running(session):
        running.add_metric([org], count)
        cap.add_metric([org], own_cap if own_cap is not None else settings.default_parallel_runs)
    online = GaugeMetricFamily("qualgent_devices_online", "Devices online, by agent.", labels=["agent", "agent_id"])
    busy = GaugeMetricFamily(
        "qualgent_devices_busy", "Devices running a test now, by agent.", labels=["agent", "agent_id"]
    )
    for name, agent_id, on, taken in await repository.devices(session):
        online.add_metric([name, agent_id], on)
        busy.add_metric([name, agent_id], taken)
    pending = GaugeMetricFamily(
        "qualgent_webhook_deliveries_pending", "Webhook and Slack messages waiting for a successful delivery."
    )
    pending.add_metric([], await repository.pending_deliveries(session))
    return [depth, oldest, running, cap, online, busy, pending]


def _process_registry() -> Any:
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


async def render(session: AsyncSession, settings: Settings) -> bytes:
    database = CollectorRegistry(auto_describe=False)
    database.register(_Snapshot(await _database_families(session, settings)))
    return bytes(generate_latest(_process_registry())) + bytes(generate_latest(database))
