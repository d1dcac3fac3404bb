"""The application: one factory that wires settings, state, middleware, errors and routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from qualgent import __version__, access_log, logs, openapi
from qualgent.agents.endpoints import MAX_SCREENSHOT_BYTES
from qualgent.agents.endpoints import router as agents_router
from qualgent.apps.endpoints import download_router
from qualgent.apps.endpoints import router as apps_router
from qualgent.batches.endpoints import router as batches_router
from qualgent.categories.endpoints import router as categories_router
from qualgent.config import Settings, get_settings
from qualgent.deps import StateDep
from qualgent.devices.endpoints import router as devices_router
from qualgent.errors import QualgentError, install_error_handlers, log
from qualgent.events.endpoints import router as events_router
from qualgent.guards import RequestGuardMiddleware
from qualgent.metrics.endpoints import router as metrics_router
from qualgent.metrics.middleware import MetricsMiddleware
from qualgent.middleware import (
    BodyLimitMiddleware,
    HotRoutesMiddleware,
    RequestContextMiddleware,
    TusHeaderMiddleware,
)
from qualgent.organisations.endpoints import router as organization_router
from qualgent.runs.endpoints import STATUS_PREFIX, artifacts_router, status_response
from qualgent.runs.endpoints import router as jobs_router
from qualgent.secrets.endpoints import router as secrets_router
from qualgent.shutdown import on_shutdown, signals_begin_shutdown
from qualgent.state import AppState
from qualgent.test_cases.endpoints import router as test_cases_router
from qualgent.uploads.endpoints import router as uploads_router
from qualgent.web.errors import render_error_page
from qualgent.web.routes import router as web_router
from qualgent.web.templating import STATIC_DIR
from qualgent.web.webhook_pages import router as webhook_pages_router
from qualgent.webhooks.endpoints import router as webhooks_router

# Store-side leftovers of uploads that never finished (S3 multipart uploads) are removed at start once
# this old; local staging files are removed as soon as no live process holds them.
STALE_UPLOAD_SECONDS = 3600

DESCRIPTION = """
Upload Android and iOS builds, queue test cases on chosen devices, and follow the runs.

Authenticate with an `X-Api-Key: qg_…` header. Errors have the body
`{"success": false, "error": {"code", "message", "details", "request_id"}}`.
Lists page with `limit` and `cursor`; the next page is in the `Link` header.
"""


class ServiceUnavailable(QualgentError):
    status_code = 503
    code = "not_ready"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    access_log.install()  # no access-log line per agent long poll
    logs.configure(settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = AppState.build(settings)
        # Staging files of uploads cut short by a crash: no live process holds them any more. A store
        # that does not answer yet must not stop the server: the periodic purge tries again.
        try:
            await asyncio.to_thread(state.storage.cleanup_stale, STALE_UPLOAD_SECONDS)
        except Exception:
            log.warning("clean-up of unfinished uploads at start failed; the purge will retry", exc_info=True)
        app.state.qg = state
        state.reaper.start()
        state.purger.start()
        if settings.webhook_worker and state.webhooks is not None:
            state.webhooks.start()
        # Asked to stop, long polls end at once with an empty answer: uvicorn would wait for them,
        # then cancel them.
        loop = asyncio.get_running_loop()
        forget = on_shutdown(lambda: _call_soon(loop, state.wakeup.stop))
        # And event streams end at once: uvicorn waits for open responses before it stops.
        forget_streams = on_shutdown(lambda: _call_soon(loop, state.events.stop))
        try:
            with signals_begin_shutdown():
                yield
        finally:
            forget()
            forget_streams()
            await state.close()

    app = FastAPI(
        title="QualGent API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # The docs list sections in this order, whatever order the routers are matched in below.
        openapi_tags=[
            {"name": name}
            for name in (
                "Apps",
                "Test Cases",
                "Categories",
                "Jobs",
                "Batches",
                "Organization",
                "Secrets",
                "Webhooks",
                "Devices",
                "Agents",
            )
        ],
    )
    install_error_handlers(app, html=render_error_page)
    openapi.install(app)

    # Requests are matched against routes in order: the hottest (run status and lists, agents' claims
    # and reports) come first.
    for router in (
        events_router,
        jobs_router,
        agents_router,
        # Before the apps router: /v1/apps/uploads/… must not be read as /v1/apps/{app_id}.
        uploads_router,
        apps_router,
        download_router,
        test_cases_router,
        categories_router,
        secrets_router,
        artifacts_router,
        devices_router,
        batches_router,
        organization_router,
        webhooks_router,
    ):
        app.include_router(router)
    app.include_router(web_router)
    app.include_router(webhook_pages_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(_health_router())
    app.include_router(metrics_router)

    # Innermost: the middleware below still wraps the hot routes (request ID, rate-limit headers).
    app.add_middleware(HotRoutesMiddleware, routes={STATUS_PREFIX: status_response})
    app.add_middleware(RequestGuardMiddleware, idle_seconds=settings.request_idle_seconds)
    # /v1/apps/upload, /v1/apps/uploads/… and the dashboard's /apps/upload stream bodies of any size up to
    # the upload limit. A test case's body carries its files. An agent's artifact upload streams a video
    # or a device log; its route holds each kind to its own limit.
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_json_bytes,
        exempt_prefixes=("/v1/apps/upload", "/apps/upload"),
        larger=(
            ("POST", "/v1/test-cases", settings.max_test_case_bytes),
            ("PATCH", "/v1/test-cases/[^/]+", settings.max_test_case_bytes),
            (
                "PUT",
                "/v1/agent/runs/[^/]+/artifacts/[^/]+",
                max(settings.max_video_bytes, settings.max_device_log_bytes),
            ),
            # Full-screen device screenshots are often over 1 MiB; the route holds them to its own limit.
            ("PUT", "/v1/agent/runs/[^/]+/steps/[^/]+/[^/]+/screenshot", MAX_SCREENSHOT_BYTES),
        ),
    )
    app.add_middleware(TusHeaderMiddleware, prefix="/v1/apps/uploads")
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(MetricsMiddleware, fixed={STATUS_PREFIX: STATUS_PREFIX + "{test_run_id}"})
    if settings.trusted_proxies:
        # Outermost: the client's address is settled before anything reads it. Only the configured
        # proxies are believed; `qualgent serve` turns uvicorn's own handling (which believes
        # 127.0.0.1 by default) off.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    return app


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    loop.call_soon_threadsafe(callback)


def _health_router() -> APIRouter:
    router = APIRouter(tags=["Health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(state: StateDep) -> dict[str, str]:
        """Readiness: the database answers (else 503). With Redis configured, `redis` is `ok`, or
        `unreachable` with `status` `degraded` (still 200: rate limits are kept per process meanwhile)."""
        try:
            async with state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            raise ServiceUnavailable("The database does not answer.") from None
        body = {"status": "ok", "database": state.engine.dialect.name}
        redis = await state.limiter.check()
        if redis is not None:
            body["redis"] = redis
            if redis != "ok":
                body["status"] = "degraded"
        return body

    return router
