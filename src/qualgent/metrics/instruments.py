"""The server's Prometheus instruments, all named ``qualgent_…``.

Counted where things happen, in whichever process they happen. Under ``qualgent serve --workers N``
every process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` (set by the serve command
before the workers start) and ``GET /metrics``, whichever process answers it, adds them up. Values
read from the database at each scrape (queues, devices, running runs) are not here: see service.py.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Seconds: from 5 ms (a status read) to two minutes (a large upload).
_DURATIONS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUEST_SECONDS = Histogram(
    "qualgent_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status.",
    ["method", "route", "status"],
    buckets=_DURATIONS,
)
RUNS_FINISHED = Counter(
    "qualgent_runs_finished_total",
    "Runs that ended, by status (passed, failed, cancelled) and failure kind (test, timeout, "
    "infrastructure; empty when none).",
    ["status", "failure_kind"],
)
RUNS_QUEUED = Counter("qualgent_runs_queued_total", "Runs queued, by platform.", ["platform"])
CLAIM_SECONDS = Histogram(
    "qualgent_agent_claim_duration_seconds",
    "Time of an agent's claim that took runs: the transaction that picked and started them.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
QUEUE_WAIT_SECONDS = Histogram(
    "qualgent_queue_wait_seconds",
    "Time runs waited in the queue before an agent took them, by platform.",
    ["platform"],
    buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
)
UPLOAD_BYTES = Counter("qualgent_upload_bytes_total", "Bytes of app builds stored, by platform.", ["platform"])
UPLOADS = Counter("qualgent_uploads_total", "App builds stored, by platform.", ["platform"])
UPLOAD_SECONDS = Histogram(
    "qualgent_upload_duration_seconds",
    "Time from an upload request's start to its app being stored (single-request uploads).",
    buckets=_DURATIONS,
)
WEBHOOK_DELIVERIES = Counter(
    "qualgent_webhook_deliveries_total",
    "Webhook and Slack delivery attempts, by kind and result (delivered, failed).",
    ["kind", "result"],
)
WEBHOOK_SECONDS = Histogram(
    "qualgent_webhook_delivery_duration_seconds",
    "Time of a webhook delivery attempt, by kind.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
