"""The asynchronous client: the same calls as :class:`qualgent.client.Client`, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from qualgent.client import _core, tls
from qualgent.client._core import Pacer, RetryPolicy
from qualgent.client.aio_events import AsyncRunEventWaker
from qualgent.client.errors import NotFoundError, TransportError, WaitTimeout
from qualgent.client.events import EVENT_POLL_SECONDS
from qualgent.client.models import (
    App,
    Batch,
    CancelResult,
    Category,
    Device,
    OrganizationSettings,
    QueuedJob,
    Run,
    RunReport,
    TestCase,
    TestCaseDetail,
    TestCaseHistory,
    UploadedFile,
    Webhook,
    WebhookDelivery,
)


class AsyncClient:
    """``AsyncClient(api_key=None, base_url=None)``; ``async with`` it, or ``await aclose()``."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        key, url = _core.settings(api_key, base_url)
        self.base_url = url
        self.retry = retry or RetryPolicy()
        self.pacer = Pacer()
        self._sleep = sleep
        self._transport = transport
        self._http = httpx.AsyncClient(
            base_url=url,
            headers=_core.make_headers(key),
            timeout=timeout,
            transport=transport,
            verify=tls.client_context(),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        retryable: bool | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request; retry what is safe to retry; raise a typed error for an error status."""
        headers = dict(headers or {})
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        if retryable is None:
            retryable = method.upper() in _core.IDEMPOTENT_METHODS or bool(idempotency_key)
        attempt = 0
        rate_limit_waited = 0.0
        while True:
            if self.retry.pace and (delay := self.pacer.delay()) > 0:
                await self._sleep(delay)
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = await self._http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                error = exc
            if response is not None:
                self.pacer.observe(response)
            wait, rate_limited = _core.should_retry(self.retry, response, error, retryable, attempt, rate_limit_waited)
            if wait is None:
                if error is not None:
                    raise TransportError(f"{method} {path}: {error!r}") from error
                assert response is not None
                return _core.check(response)
            if rate_limited:
                self.pacer.rate_limited += 1
                rate_limit_waited += wait
            else:
                attempt += 1
            await self._sleep(wait)

    async def _pages(self, path: str, params: dict[str, Any], key: str | None = None) -> AsyncIterator[Any]:
        params = {k: v for k, v in params.items() if v is not None}
        while True:
            response = await self.request("GET", path, params=params)
            body = response.json()
            for item in body[key] if key else body:
                yield item
            cursor = _core.next_cursor(response)
            if cursor is None:
                return
            params = {**params, "cursor": cursor}

    # ----------------------------------------------------------------------------------------- apps

    async def upload_app(
        self,
        path: str | Path,
        app_name: str,
        version: str,
        os: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> UploadedFile:
        """``POST /v1/apps/upload``, streamed from the file without reading it into memory."""
        path = Path(path)
        key = idempotency_key or _core.new_idempotency_key()
        with _core.open_upload(path) as file:
            response = await self.request(
                "POST",
                "/v1/apps/upload",
                data=_core.upload_fields(app_name, version, os),
                files={"file": (path.name, file, "application/octet-stream")},
                idempotency_key=key,
            )
        return UploadedFile.model_validate(response.json()["file"])

    async def list_apps(self) -> list[App]:
        return _core.parse_list(App, [a async for a in self._pages("/v1/apps", {})])

    async def get_app(self, app_id: str) -> App:
        return _core.parse(App, await self.request("GET", f"/v1/apps/{app_id}"))

    async def latest_app(self, os: str | None = None) -> App:
        return _core.parse(App, await self.request("GET", "/v1/apps/latest", params={"os": os} if os else None))

    async def delete_apps(self, app_ids: list[str]) -> list[str]:
        response = await self.request("DELETE", "/v1/apps", json={"files": app_ids})
        return list(response.json()["deleted"])

    # ------------------------------------------------------------------------ test cases, categories

    async def list_test_cases(self, category: str | None = None) -> list[TestCase]:
        items = [t async for t in self._pages("/v1/test-cases/list", {"category": category})]
        return _core.parse_list(TestCase, items)

    async def get_test_case(self, test_case_id: str) -> TestCaseDetail:
        return _core.parse(TestCaseDetail, await self.request("GET", f"/v1/test-cases/{test_case_id}"))

    async def create_test_case(self, name: str, **fields: Any) -> TestCaseDetail:
        response = await self.request("POST", "/v1/test-cases", json={"name": name, **fields})
        return _core.parse(TestCaseDetail, response)

    async def update_test_case(self, test_case_id: str, **fields: Any) -> TestCaseDetail:
        response = await self.request("PATCH", f"/v1/test-cases/{test_case_id}", json=fields, retryable=True)
        return _core.parse(TestCaseDetail, response)

    async def delete_test_case(self, test_case_id: str) -> None:
        await self.request("DELETE", f"/v1/test-cases/{test_case_id}")

    async def list_categories(self) -> list[Category]:
        return _core.parse_list(Category, [c async for c in self._pages("/v1/categories/list", {})])

    async def create_category(self, name: str, description: str = "") -> Category:
        response = await self.request("POST", "/v1/categories", json={"name": name, "description": description})
        return _core.parse(Category, response)

    async def delete_category(self, category_id: str) -> None:
        await self.request("DELETE", f"/v1/categories/{category_id}")

    async def list_devices(self) -> list[Device]:
        body = (await self.request("GET", "/v1/devices/list")).json()
        return [Device.model_validate(d) for group in body.values() if isinstance(group, list) for d in group]

    # ------------------------------------------------------------------------------------------ runs

    async def run(
        self,
        jobs: list[dict[str, Any]],
        *,
        env: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        retries: int | None = None,
        group: str | None = None,
        cancel_previous: bool = False,
    ) -> list[QueuedJob]:
        response = await self.request(
            "POST",
            "/v1/test-cases/run",
            json=_core.run_body(jobs, env, retries, group, cancel_previous),
            idempotency_key=idempotency_key or _core.new_idempotency_key(),
        )
        return _core.queued(response)

    async def run_all(
        self,
        *,
        env: Mapping[str, str] | None = None,
        include_tags: list[str] | None = None,
        exclude_tags: list[str] | None = None,
        idempotency_key: str | None = None,
        **body: Any,
    ) -> list[QueuedJob]:
        body = {**body, "env": dict(env) if env else None, "include_tags": include_tags or None}
        body["exclude_tags"] = exclude_tags or None
        response = await self.request(
            "POST",
            "/v1/test-cases/run-all",
            json={k: v for k, v in body.items() if v is not None and v is not False},
            idempotency_key=idempotency_key or _core.new_idempotency_key(),
        )
        return _core.queued(response)

    async def list_runs(
        self,
        *,
        status: str | None = None,
        test_case_id: str | None = None,
        app_id: str | None = None,
        batch_id: str | None = None,
    ) -> list[Run]:
        params = {"status": status, "test_case_id": test_case_id, "app_id": app_id, "batch_id": batch_id}
        return _core.parse_list(Run, [r async for r in self._pages("/v1/jobs/list", params, key="test_runs")])

    async def get_runs(self, run_ids: list[str], *, queue: bool = False) -> list[Run]:
        found: dict[str, Run] = {}
        for chunk in _core.chunks(run_ids):
            params: dict[str, Any] = {"ids": ",".join(chunk), "limit": len(chunk)}
            if queue:
                params["queue"] = "true"
            response = await self.request("GET", "/v1/jobs/list", params=params)
            for run in _core.parse_list(Run, response.json()["test_runs"]):
                found[run.id] = run
        return [found[i] for i in run_ids if i in found]

    async def get_run(self, run_id: str) -> Run:
        return _core.parse(Run, await self.request("GET", f"/v1/jobs/status/{run_id}"))

    async def cancel_run(self, run_id: str) -> CancelResult:
        response = await self.request("POST", f"/v1/jobs/{run_id}/cancel", retryable=True)
        return _core.parse(CancelResult, response)

    async def run_report(self, run_id: str, attempt: int | None = None) -> RunReport:
        params = {"attempt": attempt} if attempt is not None else None
        return _core.parse(RunReport, await self.request("GET", f"/v1/jobs/{run_id}/report", params=params))

    async def get_batch(self, batch_id: str, *, runs: bool = False, queue: bool = False) -> Batch:
        params = {"runs": "true" if runs else None, "queue": "true" if queue else None}
        response = await self.request("GET", f"/v1/batches/{batch_id}", params={k: v for k, v in params.items() if v})
        return _core.parse(Batch, response)

    async def wait_for_batches(
        self,
        batch_ids: list[str],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - WaitTimeout carries the runs' last states
        poll_interval: float = 1.0,
        on_update: Callable[[list[Batch]], None] | None = None,
        queue: bool = False,
        events: bool = False,
    ) -> list[Batch]:
        """Poll the batches (with their runs) until every one has finished (see :meth:`Client.wait_for_batches`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waker = self._waker(batch_id=batch_ids[0]) if events and len(batch_ids) == 1 else None
        try:
            return await self._wait_for_batches(batch_ids, deadline, timeout, poll_interval, on_update, queue, waker)
        finally:
            if waker is not None:
                await waker.aclose()

    async def _wait_for_batches(
        self,
        batch_ids: list[str],
        deadline: float | None,
        timeout: float | None,  # noqa: ASYNC109 - WaitTimeout carries the runs' last states
        poll_interval: float,
        on_update: Callable[[list[Batch]], None] | None,
        queue: bool,
        waker: AsyncRunEventWaker | None,
    ) -> list[Batch]:
        while True:
            batches = [await self.get_batch(b, runs=True, queue=queue) for b in batch_ids]
            if on_update is not None:
                on_update(batches)
            if all(b.finished for b in batches):
                return batches
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout([r for b in batches for r in b.runs or []], timeout or 0)
            await self._pause(waker, poll_interval, deadline)

    def _waker(self, *, run_ids: list[str] | None = None, batch_id: str | None = None) -> AsyncRunEventWaker:
        return AsyncRunEventWaker(
            self.base_url, self._http.headers, run_ids=run_ids, batch_id=batch_id, transport=self._transport
        ).start()

    async def _pause(self, waker: AsyncRunEventWaker | None, poll_interval: float, deadline: float | None) -> None:
        """As :meth:`Client._pause`: the stream, while up, ends the pause at a change and slows the polls."""
        healthy = waker is not None and waker.healthy
        pause = max(poll_interval, EVENT_POLL_SECONDS) if healthy else poll_interval
        if deadline is not None:
            pause = min(pause, max(0.0, deadline - time.monotonic()))
        if waker is not None and waker.available:
            await waker.wait(pause)
        else:
            await self._sleep(pause)

    async def test_case_history(self, test_case_id: str, limit: int = 50) -> TestCaseHistory:
        response = await self.request("GET", f"/v1/test-cases/{test_case_id}/history", params={"limit": limit})
        return _core.parse(TestCaseHistory, response)

    async def quarantine_test_case(self, test_case_id: str, reason: str | None = None) -> TestCaseDetail:
        body = {"reason": reason} if reason is not None else {}
        response = await self.request("PUT", f"/v1/test-cases/{test_case_id}/quarantine", json=body)
        return _core.parse(TestCaseDetail, response)

    async def release_test_case(self, test_case_id: str) -> TestCaseDetail:
        response = await self.request("DELETE", f"/v1/test-cases/{test_case_id}/quarantine")
        return _core.parse(TestCaseDetail, response)

    async def organization_settings(self) -> OrganizationSettings:
        return _core.parse(OrganizationSettings, await self.request("GET", "/v1/organization/settings"))

    async def update_organization_settings(self, **fields: Any) -> OrganizationSettings:
        response = await self.request("PATCH", "/v1/organization/settings", json=fields, retryable=True)
        return _core.parse(OrganizationSettings, response)

    # ------------------------------------------------------------------------------------- webhooks

    async def create_webhook(
        self, url: str, events: list[str], *, kind: str = "webhook", description: str = ""
    ) -> Webhook:
        """Add an endpoint; its ``secret`` (for ``standardwebhooks.Webhook``) is in this answer only."""
        body = {"url": url, "events": events, "kind": kind, "description": description}
        return _core.parse(Webhook, await self.request("POST", "/v1/webhooks", json=body))

    async def list_webhooks(self) -> list[Webhook]:
        return _core.parse_list(Webhook, (await self.request("GET", "/v1/webhooks")).json())

    async def get_webhook(self, webhook_id: str) -> Webhook:
        return _core.parse(Webhook, await self.request("GET", f"/v1/webhooks/{webhook_id}"))

    async def update_webhook(self, webhook_id: str, **fields: Any) -> Webhook:
        """``url``, ``events``, ``description``, ``enabled``."""
        response = await self.request("PATCH", f"/v1/webhooks/{webhook_id}", json=fields, retryable=True)
        return _core.parse(Webhook, response)

    async def delete_webhook(self, webhook_id: str) -> None:
        await self.request("DELETE", f"/v1/webhooks/{webhook_id}")

    async def webhook_deliveries(self, webhook_id: str, limit: int = 100) -> list[WebhookDelivery]:
        """The endpoint's latest deliveries, newest first."""
        response = await self.request("GET", f"/v1/webhooks/{webhook_id}/deliveries", params={"limit": limit})
        return _core.parse_list(WebhookDelivery, response.json()["deliveries"])

    async def redeliver_webhook(self, webhook_id: str, delivery_id: str) -> WebhookDelivery:
        path = f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"
        return _core.parse(WebhookDelivery, await self.request("POST", path, retryable=True))

    async def run_junit(self, run_id: str) -> bytes:
        return (await self.request("GET", f"/v1/jobs/{run_id}/junit")).content

    async def wait_for_runs(
        self,
        run_ids: list[str],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - WaitTimeout carries the runs' last states
        poll_interval: float = 1.0,
        on_update: Callable[[list[Run]], None] | None = None,
        queue: bool = False,
        events: bool = False,
    ) -> list[Run]:
        """Poll until every run has finished (see :meth:`Client.wait_for_runs`). With ``events``, a task
        follows the live event stream for these runs, as the sync client's thread does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waker = self._waker(run_ids=run_ids) if events else None
        try:
            return await self._wait_for_runs(run_ids, deadline, timeout, poll_interval, on_update, queue, waker)
        finally:
            if waker is not None:
                await waker.aclose()

    async def _wait_for_runs(
        self,
        run_ids: list[str],
        deadline: float | None,
        timeout: float | None,  # noqa: ASYNC109 - WaitTimeout carries the runs' last states
        poll_interval: float,
        on_update: Callable[[list[Run]], None] | None,
        queue: bool,
        waker: AsyncRunEventWaker | None,
    ) -> list[Run]:
        states: dict[str, Run] = {}
        while True:
            pending = [i for i in run_ids if i not in states or not states[i].finished]
            for run in await self.get_runs(pending, queue=queue):
                states[run.id] = run
            if missing := [i for i in pending if i not in states]:
                # Waiting on a run that does not exist (or is another organisation's) would never end.
                raise NotFoundError(404, "not_found", f"No test run {', '.join(missing)}.")
            current = [states[i] for i in run_ids if i in states]
            if on_update is not None:
                on_update(current)
            if len(current) == len(run_ids) and all(r.finished for r in current):
                return current
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(current, timeout or 0)
            await self._pause(waker, poll_interval, deadline)
