"""The synchronous client: every public endpoint of the API, with retries and rate-limit pacing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from qualgent.client import _core, tls
from qualgent.client._core import Pacer, RetryPolicy
from qualgent.client.errors import NotFoundError, TransportError, WaitTimeout
from qualgent.client.events import EVENT_POLL_SECONDS, RunEventWaker
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


class Client:
    """``Client(api_key=None, base_url=None)``: arguments win over ``QUALGENT_API_KEY`` / ``QUALGENT_URL``
    (environment or ``.env``). Use it as a context manager, or call ``close()``."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        key, url = _core.settings(api_key, base_url)
        self.base_url = url
        self.retry = retry or RetryPolicy()
        self.pacer = Pacer()
        self._sleep = sleep
        self._transport = transport
        self._http = httpx.Client(
            base_url=url,
            headers=_core.make_headers(key),
            timeout=timeout,
            transport=transport,
            verify=tls.client_context(),
        )

    # ------------------------------------------------------------------------------------- plumbing

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
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
                self._sleep(delay)
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = self._http.request(method, path, headers=headers, **kwargs)
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
            self._sleep(wait)

    def _pages(self, path: str, params: dict[str, Any], key: str | None = None) -> Iterator[Any]:
        params = {k: v for k, v in params.items() if v is not None}
        while True:
            response = self.request("GET", path, params=params)
            body = response.json()
            yield from body[key] if key else body
            cursor = _core.next_cursor(response)
            if cursor is None:
                return
            params = {**params, "cursor": cursor}

    # ----------------------------------------------------------------------------------------- apps

    def upload_app(
        self,
        path: str | Path,
        app_name: str,
        version: str,
        os: str | None = None,
        *,
        on_progress: Callable[[int], None] | None = None,
        idempotency_key: str | None = None,
    ) -> UploadedFile:
        """``POST /v1/apps/upload`` in one streamed request. ``on_progress(bytes_sent)`` follows it."""
        path = Path(path)
        key = idempotency_key or _core.new_idempotency_key()
        with _core.open_upload(path) as file:
            reader = _core.ProgressReader(file, on_progress)
            response = self.request(
                "POST",
                "/v1/apps/upload",
                data=_core.upload_fields(app_name, version, os),
                files={"file": (path.name, reader, "application/octet-stream")},
                idempotency_key=key,
            )
        return UploadedFile.model_validate(response.json()["file"])

    def upload_app_resumable(
        self,
        path: str | Path,
        app_name: str,
        version: str,
        os: str | None = None,
        *,
        on_progress: Callable[[int], None] | None = None,
        chunk_size: int = 8 * 1024 * 1024,
    ) -> App:
        """Upload through the server's tus endpoint, resuming from the server's offset after a dropped
        connection. See :mod:`qualgent.client.resumable`."""
        from qualgent.client.resumable import ResumableUpload

        upload = ResumableUpload(self, Path(path), app_name, version, os, chunk_size=chunk_size)
        return upload.run(on_progress)

    def supports_resumable_uploads(self) -> bool:
        from qualgent.client.resumable import server_supports_tus

        return server_supports_tus(self)

    def list_apps(self, limit: int | None = None) -> list[App]:
        return _core.parse_list(App, list(self._pages("/v1/apps", {"limit": limit})))

    def get_app(self, app_id: str) -> App:
        return _core.parse(App, self.request("GET", f"/v1/apps/{app_id}"))

    def latest_app(self, os: str | None = None) -> App:
        return _core.parse(App, self.request("GET", "/v1/apps/latest", params={"os": os} if os else None))

    def delete_apps(self, app_ids: list[str]) -> list[str]:
        response = self.request("DELETE", "/v1/apps", json={"files": app_ids})
        return list(response.json()["deleted"])

    # ------------------------------------------------------------------------ test cases, categories

    def list_test_cases(self, category: str | None = None) -> list[TestCase]:
        return _core.parse_list(TestCase, list(self._pages("/v1/test-cases/list", {"category": category})))

    def get_test_case(self, test_case_id: str) -> TestCaseDetail:
        return _core.parse(TestCaseDetail, self.request("GET", f"/v1/test-cases/{test_case_id}"))

    def create_test_case(self, name: str, **fields: Any) -> TestCaseDetail:
        response = self.request("POST", "/v1/test-cases", json={"name": name, **fields})
        return _core.parse(TestCaseDetail, response)

    def update_test_case(self, test_case_id: str, **fields: Any) -> TestCaseDetail:
        response = self.request("PATCH", f"/v1/test-cases/{test_case_id}", json=fields, retryable=True)
        return _core.parse(TestCaseDetail, response)

    def delete_test_case(self, test_case_id: str) -> None:
        self.request("DELETE", f"/v1/test-cases/{test_case_id}")

    def list_categories(self) -> list[Category]:
        return _core.parse_list(Category, list(self._pages("/v1/categories/list", {})))

    def create_category(self, name: str, description: str = "") -> Category:
        response = self.request("POST", "/v1/categories", json={"name": name, "description": description})
        return _core.parse(Category, response)

    def delete_category(self, category_id: str) -> None:
        self.request("DELETE", f"/v1/categories/{category_id}")

    def list_devices(self) -> list[Device]:
        body = self.request("GET", "/v1/devices/list").json()
        return [Device.model_validate(d) for group in body.values() if isinstance(group, list) for d in group]

    # ------------------------------------------------------------------------------------------ runs

    def run(
        self,
        jobs: list[dict[str, Any]],
        *,
        env: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        retries: int | None = None,
        group: str | None = None,
        cancel_previous: bool = False,
    ) -> list[QueuedJob]:
        """``POST /v1/test-cases/run``: queue a batch atomically. ``env`` (values for the flows' ``${NAME}``)
        goes to every job that has no ``env`` of its own; ``retries``, test retries of every run; ``group``
        (with ``cancel_previous``) cancels the group's earlier batches. An Idempotency-Key (generated when
        not given) makes a retried request return the first answer instead of queueing twice. Each job
        carries the answer's ``batch_id``."""
        response = self.request(
            "POST",
            "/v1/test-cases/run",
            json=_core.run_body(jobs, env, retries, group, cancel_previous),
            idempotency_key=idempotency_key or _core.new_idempotency_key(),
        )
        return _core.queued(response)

    def run_all(
        self,
        *,
        env: Mapping[str, str] | None = None,
        include_tags: list[str] | None = None,
        exclude_tags: list[str] | None = None,
        idempotency_key: str | None = None,
        **body: Any,
    ) -> list[QueuedJob]:
        """``POST /v1/test-cases/run-all`` with ``app_file_id``, ``category_id``, ``device`` or ``platform``,
        ``priority``, ``timeout_seconds``, ``retries``, ``group`` and ``cancel_previous``; ``env`` for every
        run; only test cases with one of ``include_tags`` (when given) and none of ``exclude_tags``. Unset
        options are not sent, so an older server takes the request as before."""
        body = {**body, "env": dict(env) if env else None, "include_tags": include_tags or None}
        body["exclude_tags"] = exclude_tags or None
        response = self.request(
            "POST",
            "/v1/test-cases/run-all",
            json={k: v for k, v in body.items() if v is not None and v is not False},
            idempotency_key=idempotency_key or _core.new_idempotency_key(),
        )
        return _core.queued(response)

    def list_runs(
        self,
        *,
        status: str | None = None,
        test_case_id: str | None = None,
        app_id: str | None = None,
        limit: int | None = None,
        batch_id: str | None = None,
    ) -> list[Run]:
        params = {
            "status": status,
            "test_case_id": test_case_id,
            "app_id": app_id,
            "limit": limit,
            "batch_id": batch_id,
        }
        if limit is not None:  # one page of the newest
            response = self.request("GET", "/v1/jobs/list", params={k: v for k, v in params.items() if v})
            return _core.parse_list(Run, response.json()["test_runs"])
        return _core.parse_list(Run, list(self._pages("/v1/jobs/list", params, key="test_runs")))

    def get_runs(self, run_ids: list[str], *, queue: bool = False) -> list[Run]:
        """The state of many runs, a few requests in all (``GET /v1/jobs/list?ids=``), in the given order;
        with ``queue``, queued runs also say why they wait (``Run.queue``)."""
        found: dict[str, Run] = {}
        for chunk in _core.chunks(run_ids):
            params: dict[str, Any] = {"ids": ",".join(chunk), "limit": len(chunk)}
            if queue:
                params["queue"] = "true"
            response = self.request("GET", "/v1/jobs/list", params=params)
            for run in _core.parse_list(Run, response.json()["test_runs"]):
                found[run.id] = run
        return [found[i] for i in run_ids if i in found]

    def get_run(self, run_id: str) -> Run:
        return _core.parse(Run, self.request("GET", f"/v1/jobs/status/{run_id}"))

    def cancel_run(self, run_id: str) -> CancelResult:
        # Cancelling twice is harmless (the second says the run finished), so it may be retried.
        return _core.parse(CancelResult, self.request("POST", f"/v1/jobs/{run_id}/cancel", retryable=True))

    def run_report(self, run_id: str, attempt: int | None = None) -> RunReport:
        """A run's report: the latest attempt's steps, or ``attempt``'s."""
        params = {"attempt": attempt} if attempt is not None else None
        return _core.parse(RunReport, self.request("GET", f"/v1/jobs/{run_id}/report", params=params))

    # ------------------------------------------------------------------------------------- batches

    def get_batch(self, batch_id: str, *, runs: bool = False, queue: bool = False) -> Batch:
        """``GET /v1/batches/{id}``: counts, wall time and the gate's verdict; with ``runs``, its runs too
        (``queue``: why the queued ones wait)."""
        params = {"runs": "true" if runs else None, "queue": "true" if queue else None}
        response = self.request("GET", f"/v1/batches/{batch_id}", params={k: v for k, v in params.items() if v})
        return _core.parse(Batch, response)

    def wait_for_batches(
        self,
        batch_ids: list[str],
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        on_update: Callable[[list[Batch]], None] | None = None,
        queue: bool = False,
        events: bool = False,
    ) -> list[Batch]:
        """Poll the batches (with their runs) until every one has finished: one request per batch per poll.
        Raises :class:`WaitTimeout` (with the runs' last states) when ``timeout`` seconds pass first. With
        ``events``, the live event stream says when to poll (see :meth:`wait_for_runs`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waker = self._waker(batch_id=batch_ids[0]) if events and len(batch_ids) == 1 else None
        try:
            return self._wait_for_batches(batch_ids, deadline, timeout, poll_interval, on_update, queue, waker)
        finally:
            if waker is not None:
                waker.close()

    def _wait_for_batches(
        self,
        batch_ids: list[str],
        deadline: float | None,
        timeout: float | None,
        poll_interval: float,
        on_update: Callable[[list[Batch]], None] | None,
        queue: bool,
        waker: RunEventWaker | None,
    ) -> list[Batch]:
        while True:
            batches = [self.get_batch(b, runs=True, queue=queue) for b in batch_ids]
            if on_update is not None:
                on_update(batches)
            if all(b.finished for b in batches):
                return batches
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout([r for b in batches for r in b.runs or []], timeout or 0)
            self._pause(waker, poll_interval, deadline)

    # --------------------------------------------------------------------- flaky tests, quarantine

    def test_case_history(self, test_case_id: str, limit: int = 50) -> TestCaseHistory:
        """A test case's latest finished runs (newest first), flakiness and figures."""
        response = self.request("GET", f"/v1/test-cases/{test_case_id}/history", params={"limit": limit})
        return _core.parse(TestCaseHistory, response)

    def quarantine_test_case(self, test_case_id: str, reason: str | None = None) -> TestCaseDetail:
        body = {"reason": reason} if reason is not None else {}
        response = self.request("PUT", f"/v1/test-cases/{test_case_id}/quarantine", json=body)
        return _core.parse(TestCaseDetail, response)

    def release_test_case(self, test_case_id: str) -> TestCaseDetail:
        """Take a test case out of quarantine."""
        return _core.parse(TestCaseDetail, self.request("DELETE", f"/v1/test-cases/{test_case_id}/quarantine"))

    def organization_settings(self) -> OrganizationSettings:
        return _core.parse(OrganizationSettings, self.request("GET", "/v1/organization/settings"))

    def update_organization_settings(self, **fields: Any) -> OrganizationSettings:
        """``default_retries``, ``auto_quarantine``, ``quarantine_exit_passes``."""
        response = self.request("PATCH", "/v1/organization/settings", json=fields, retryable=True)
        return _core.parse(OrganizationSettings, response)

    # ------------------------------------------------------------------------------------- webhooks

    def create_webhook(self, url: str, events: list[str], *, kind: str = "webhook", description: str = "") -> Webhook:
        """Add an endpoint; its ``secret`` (for ``standardwebhooks.Webhook``) is in this answer only."""
        body = {"url": url, "events": events, "kind": kind, "description": description}
        return _core.parse(Webhook, self.request("POST", "/v1/webhooks", json=body))

    def list_webhooks(self) -> list[Webhook]:
        return _core.parse_list(Webhook, self.request("GET", "/v1/webhooks").json())

    def get_webhook(self, webhook_id: str) -> Webhook:
        return _core.parse(Webhook, self.request("GET", f"/v1/webhooks/{webhook_id}"))

    def update_webhook(self, webhook_id: str, **fields: Any) -> Webhook:
        """``url``, ``events``, ``description``, ``enabled``."""
        response = self.request("PATCH", f"/v1/webhooks/{webhook_id}", json=fields, retryable=True)
        return _core.parse(Webhook, response)

    def delete_webhook(self, webhook_id: str) -> None:
        self.request("DELETE", f"/v1/webhooks/{webhook_id}")

    def webhook_deliveries(self, webhook_id: str, limit: int = 100) -> list[WebhookDelivery]:
        """The endpoint's latest deliveries, newest first."""
        response = self.request("GET", f"/v1/webhooks/{webhook_id}/deliveries", params={"limit": limit})
        return _core.parse_list(WebhookDelivery, response.json()["deliveries"])

    def redeliver_webhook(self, webhook_id: str, delivery_id: str) -> WebhookDelivery:
        path = f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"
        return _core.parse(WebhookDelivery, self.request("POST", path, retryable=True))

    def run_junit(self, run_id: str) -> bytes:
        return self.request("GET", f"/v1/jobs/{run_id}/junit").content

    def wait_for_runs(
        self,
        run_ids: list[str],
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        on_update: Callable[[list[Run]], None] | None = None,
        queue: bool = False,
        events: bool = False,
    ) -> list[Run]:
        """Poll until every run has finished; one request per poll per 200 runs, never one per run.
        Raises :class:`WaitTimeout` (with the last states) when ``timeout`` seconds pass first. With
        ``queue``, queued runs say why they wait (``Run.queue``); ``on_update`` may raise to stop.

        With ``events``, a thread follows the server's live event stream for these runs: a change of
        one of them ends the pause at once, and while the stream is up the polls come every
        ``max(poll_interval, 5 s)`` only; without the stream (an older server, a buffering proxy) the
        polls go on every ``poll_interval``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waker = self._waker(run_ids=run_ids) if events else None
        try:
            return self._wait_for_runs(run_ids, deadline, timeout, poll_interval, on_update, queue, waker)
        finally:
            if waker is not None:
                waker.close()

    def _waker(self, *, run_ids: list[str] | None = None, batch_id: str | None = None) -> RunEventWaker:
        return RunEventWaker(
            self.base_url, self._http.headers, run_ids=run_ids, batch_id=batch_id, transport=self._transport
        ).start()

    def _pause(self, waker: RunEventWaker | None, poll_interval: float, deadline: float | None) -> None:
        healthy = waker is not None and waker.healthy
        pause = max(poll_interval, EVENT_POLL_SECONDS) if healthy else poll_interval
        if deadline is not None:
            pause = min(pause, max(0.0, deadline - time.monotonic()))
        if waker is not None and waker.available:  # connecting or connected: it ends the pause early
            waker.wait(pause)
        else:
            self._sleep(pause)

    def _wait_for_runs(
        self,
        run_ids: list[str],
        deadline: float | None,
        timeout: float | None,
        poll_interval: float,
        on_update: Callable[[list[Run]], None] | None,
        queue: bool,
        waker: RunEventWaker | None,
    ) -> list[Run]:
        states: dict[str, Run] = {}
        while True:
            pending = [i for i in run_ids if i not in states or not states[i].finished]
            for run in self.get_runs(pending, queue=queue):
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
            self._pause(waker, poll_interval, deadline)
