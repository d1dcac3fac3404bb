"""The delivery worker, in each server process: outbox events become deliveries, due deliveries are
sent, each result is logged and failures are retried with exponential backoff.

At least once: an event leaves the outbox in the transaction that creates its deliveries, and a
delivery is taken for a lease (its next attempt moved past the send's timeout) before it is sent, so a
process that dies mid-send leaves it to be sent again. Requests never wait for any of this: they write
one outbox row and wake the worker of their process after they commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy.exc import SQLAlchemyError
from standardwebhooks.webhooks import Webhook

from qualgent import __version__
from qualgent.auth.principal import Principal
from qualgent.db.base import utcnow
from qualgent.db.dialect import database_unavailable
from qualgent.db.session import transaction
from qualgent.ids import new_id
from qualgent.metrics.instruments import WEBHOOK_DELIVERIES, WEBHOOK_SECONDS
from qualgent.periodic import PeriodicTask
from qualgent.secrets import crypto
from qualgent.webhooks import repository as outbox
from qualgent.webhooks import slack
from qualgent.webhooks.service import address_allowed, sealed_name

if TYPE_CHECKING:
    from qualgent.state import AppState

log = logging.getLogger("qualgent.webhooks")

EVENTS_PER_PASS = 200
DELIVERIES_PER_PASS = 50
CONCURRENT_SENDS = 10
MAX_DELAY = 6 * 3600.0
ERROR_CHARS = 500


class Refused(Exception):
    """The endpoint's host resolves to an address webhooks may not reach."""


@dataclass(frozen=True)
class Result:
    status: int | None
    duration_ms: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def backoff(base: float, attempts: int) -> float:
    """Seconds before the retry that follows ``attempts`` failed attempts: base, 2×base, 4×base, …"""
    return float(min(base * (2 ** min(attempts - 1, 40)), MAX_DELAY))


class WebhookWorker(PeriodicTask):
    log = log

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.settings = state.settings
        self.interval = self.settings.webhook_poll_interval
        self._woken = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        self._sends = asyncio.Semaphore(CONCURRENT_SENDS)
        self._loop_ref: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Look at the outbox now (a transaction of this process just committed an event). Safe from
        any thread."""
        if self._loop_ref is not None and not self._loop_ref.is_closed():
            self._loop_ref.call_soon_threadsafe(self._woken.set)

    def start(self) -> None:
        self._loop_ref = asyncio.get_running_loop()
        outbox.wakers.add(self.wake)
        super().start()

    async def _loop(self) -> None:
        # PeriodicTask's loop, but a wake-up cuts the wait short.
        while True:
            self._woken.clear()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if database_unavailable(exc):
                    self.log.warning(
                        "webhook delivery pass failed, the database is unavailable (%s); retrying",
                        exc.__class__.__name__,
                    )
                else:
                    self.log.exception("webhook delivery pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self.interval)

    async def stop(self) -> None:
        outbox.wakers.discard(self.wake)
        await super().stop()
        if self._client is not None:
            await self._client.aclose()

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # No proxies from the environment (they would bypass the address checks) and no redirects
            # (a redirect could lead anywhere; a 3xx counts as a failure).
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                timeout=self.settings.webhook_timeout,
                headers={"User-Agent": f"qualgent-webhooks/{__version__}"},
            )
        return self._client

    async def run_once(self) -> int:
        while await self.fan_out() >= EVENTS_PER_PASS:
            pass
        sent = 0
        while True:
            n = await self.deliver_due()
            sent += n
            if n < DELIVERIES_PER_PASS:
                return sent

    # ----------------------------------------------------------------------------- events → deliveries

    async def fan_out(self) -> int:
        """Turn the oldest outbox events into deliveries to the endpoints that want them; returns how
        many events were taken."""
        # Read-only first: most looks find nothing, and a write transaction on SQLite locks the database.
        async with self.state.read_sessions() as session:
            if not await outbox.has_events(session):
                return 0
        async with transaction(self.state.write_sessions) as session:
            events = await outbox.take_events(session, EVENTS_PER_PASS)
            if not events:
                return 0
            endpoints = await outbox.enabled_endpoints(session, sorted({e.organization_id for e in events}))
            by_org: dict[str, list[Any]] = {}
            for endpoint in endpoints:
                by_org.setdefault(endpoint.organization_id, []).append(endpoint)
            rows: list[dict[str, Any]] = []
            for event in events:
                targets = by_org.get(event.organization_id, [])
                if not targets:
                    continue
                try:
                    rows += await self._deliveries_for(session, event, targets)
                except SQLAlchemyError:
                    raise  # the pass is tried again
                except Exception:
                    # A bug in building one payload must not hold up every event behind it.
                    log.exception("webhook event %s (%s of %s) dropped", event.id, event.type, event.run_id)
            await outbox.add_deliveries(session, rows)
            await outbox.delete_events(session, [e.id for e in events])
        return len(events)

    async def _deliveries_for(self, session: Any, event: Any, endpoints: list[Any]) -> list[dict[str, Any]]:
        from qualgent.runs.repository import RunRepository  # runs import this package's repository
        from qualgent.runs.service import to_out

        run = await RunRepository(session, event.organization_id).view(event.run_id)
        if run is None:
            return []
        data = json.loads(to_out(self.state, run).model_dump_json())
        messages: list[tuple[str, str, str | None, dict[str, Any]]] = [(event.type, event.run_id, None, data)]
        if event.type == "run.finished" and run.batch_id and any("batch.finished" in e.events for e in endpoints):
            batch = await self._finished_batch(session, event.organization_id, run.batch_id)
            if batch is not None:
                messages.append(("batch.finished", run.batch_id, f"batch.finished:{run.batch_id}", batch))
        now = utcnow()
        rows = []
        for event_type, subject, dedupe, body in messages:
            payload = json.dumps(
                {"type": event_type, "timestamp": event.created_at.isoformat(), "data": body}, separators=(",", ":")
            )
            for endpoint in endpoints:
                if event_type not in endpoint.events.split():
                    continue
                if endpoint.kind == "slack" and not slack.wanted(event_type, body):
                    continue
                rows.append(
                    {
                        "id": new_id("msg"),
                        "organization_id": event.organization_id,
                        "endpoint_id": endpoint.id,
                        "event_type": event_type,
                        "subject_id": subject,
                        "dedupe_key": dedupe,
                        "payload": payload,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "retry_until": now + timedelta(seconds=self.settings.webhook_retry_window),
                        "created_at": now,
                        "updated_at": now,
                    }
                )
        return rows

    async def _finished_batch(self, session: Any, organization_id: str, batch_id: str) -> dict[str, Any] | None:
        from qualgent.batches.service import batch_out

        # batch_out reads only the principal's organisation.
        principal = Principal(organization_id, "", "", "", "", frozenset(), 0)
        out = await batch_out(session, self.state, principal, batch_id, with_runs=True)
        if not out.finished:
            return None
        body: dict[str, Any] = json.loads(out.model_dump_json())
        body["link"] = f"{self.settings.public_base_url.rstrip('/')}/batches/{batch_id}"
        return body

    # ------------------------------------------------------------------------------------- delivering

    async def deliver_due(self) -> int:
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.webhook_timeout + 30)
        async with self.state.read_sessions() as session:
            if not await outbox.has_due(session, now):
                return 0
        async with transaction(self.state.write_sessions) as session:
            due = await outbox.claim_due(session, now, lease, DELIVERIES_PER_PASS)
        if due:
            await asyncio.gather(*(self._deliver(row) for row in due))
        return len(due)

    async def _deliver(self, row: Any) -> None:
        async with self._sends:
            try:
                sealed = crypto.decrypt(
                    self.state.secrets_key, row.organization_id, sealed_name(row.endpoint_id), row.secret_ciphertext
                )
            except crypto.SecretUnreadable:
                result = Result(None, 0, "The endpoint's secret does not decrypt with this server's key.")
            else:
                result = await self._send(row, sealed)
        WEBHOOK_DELIVERIES.labels(row.kind, "delivered" if result.ok else "failed").inc()
        WEBHOOK_SECONDS.labels(row.kind).observe(result.duration_ms / 1000)
        await self._record(row, result)

    async def _send(self, row: Any, sealed: str) -> Result:
        if row.kind == "slack":
            url = sealed
            body = json.dumps(slack.message(row.event_type, json.loads(row.payload)["data"])).encode()
            headers = {"Content-Type": "application/json"}
        else:
            url = row.url
            body = row.payload.encode()
            stamp = utcnow()
            headers = {
                "Content-Type": "application/json",
                "webhook-id": row.id,
                "webhook-timestamp": str(int(stamp.timestamp())),
                "webhook-signature": Webhook(sealed).sign(row.id, stamp, body),
            }
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            async with asyncio.timeout(self.settings.webhook_timeout):
                request = await self._request(url, body, headers)
                response = await self.client.send(request, stream=True)
                try:
                    await self._read_capped(response)
                finally:
                    await response.aclose()
        except Refused as exc:
            return Result(None, took(), str(exc))
        except TimeoutError:
            return Result(None, took(), f"No answer within {self.settings.webhook_timeout:g} s.")
        except httpx.HTTPError as exc:
            return Result(None, took(), f"{type(exc).__name__}: {exc}"[:ERROR_CHARS] or type(exc).__name__)
        except OSError as exc:
            return Result(None, took(), f"{type(exc).__name__}: {exc}"[:ERROR_CHARS])
        status = response.status_code
        error = None if 200 <= status < 300 else f"The receiver answered {status}."
        return Result(status, took(), error)

    async def _read_capped(self, response: httpx.Response) -> None:
        """Read the answer up to the cap, then stop: a receiver cannot make us read without end."""
        left = self.settings.webhook_max_response_bytes
        async for chunk in response.aiter_raw():
            left -= len(chunk)
            if left <= 0:
                break

    async def _request(self, url: str, body: bytes, headers: dict[str, str]) -> httpx.Request:
        """The request, sent to an address checked now: the host is resolved here and, unless private
        addresses are allowed, the connection goes to that very address (a second lookup by the HTTP
        client could answer differently), with the name kept for Host and TLS."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if self.settings.webhooks_allow_private:
            return self.client.build_request("POST", url, content=body, headers=headers)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise Refused(f"The host {host} does not resolve ({exc}).") from None
        addresses = [str(info[4][0]) for info in infos]
        if not addresses or not all(address_allowed(a.split("%", 1)[0]) for a in addresses):
            raise Refused(
                f"The host {host} resolves to a non-public address; webhooks go to public addresses only "
                "(QUALGENT_WEBHOOKS_ALLOW_PRIVATE allows others)."
            )
        address = addresses[0]
        netloc = f"[{address}]" if ":" in address else address
        if parts.port:
            netloc += f":{parts.port}"
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        headers = {**headers, "Host": parts.netloc.rsplit("@", 1)[-1]}
        return self.client.build_request(
            "POST", pinned, content=body, headers=headers, extensions={"sni_hostname": host}
        )

    async def _record(self, row: Any, result: Result) -> None:
        now = utcnow()
        async with transaction(self.state.write_sessions) as session:
            if result.ok:
                await outbox.record_attempt(
                    session,
                    row.id,
                    status="delivered",
                    next_attempt_at=None,
                    at=now,
                    response_status=result.status,
                    duration_ms=result.duration_ms,
                    error=None,
                )
                await outbox.endpoint_succeeded(session, row.endpoint_id)
                return
            retry_at = now + timedelta(seconds=backoff(self.settings.webhook_retry_base, row.attempts + 1))
            gives_up = retry_at > row.retry_until
            await outbox.record_attempt(
                session,
                row.id,
                status="failed" if gives_up else "pending",
                next_attempt_at=None if gives_up else retry_at,
                at=now,
                response_status=result.status,
                duration_ms=result.duration_ms,
                error=result.error,
            )
            since = await outbox.endpoint_failed(session, row.endpoint_id, now)
            if since is not None and (now - since).total_seconds() >= self.settings.webhook_disable_after:
                hours = self.settings.webhook_disable_after / 3600
                reason = (
                    f"Disabled on {now:%Y-%m-%d %H:%M} UTC: every delivery failed for {hours:g} h "
                    f"(last: {result.error}). Fix the receiver, then enable it again."
                )
                if await outbox.disable_endpoint(session, row.endpoint_id, reason[: ERROR_CHARS * 2], now):
                    log.warning("webhook endpoint %s disabled: %s", row.endpoint_id, reason)
