"""The qualgent Python SDK: ``Client`` (sync) and ``AsyncClient`` over httpx, typed models and errors.

from qualgent.client import Client
with Client() as qg:                      # QUALGENT_API_KEY / QUALGENT_URL, or arguments
    app = qg.upload_app("app.apk", "MyApp", "1.0.0")
    jobs = qg.run_all(app_file_id=app.id, platform="android")
    runs = qg.wait_for_runs([j.id for j in jobs], timeout=1800)
"""

from typing import TYPE_CHECKING, Any

from qualgent.client._core import RetryPolicy, WaitTimeout
from qualgent.client.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QualgentClientError,
    RateLimitError,
    ServerError,
    TransportError,
    ValidationError,
)
from qualgent.client.models import (
    App,
    Batch,
    Category,
    Device,
    OrganizationSettings,
    QueuedJob,
    QueueInfo,
    Run,
    RunArtifact,
    RunReport,
    TestCase,
    TestCaseDetail,
    TestCaseFile,
    TestCaseHistory,
    UploadedFile,
    Webhook,
    WebhookDelivery,
)
from qualgent.client.sync import Client

if TYPE_CHECKING:
    from qualgent.client.aio import AsyncClient


def __getattr__(name: str) -> Any:
    # AsyncClient imports asyncio, a tenth of a CLI command's start-up, which the CLI never uses.
    if name == "AsyncClient":
        from qualgent.client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "APIError",
    "App",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "Category",
    "Client",
    "ConfigurationError",
    "ConflictError",
    "Device",
    "NotFoundError",
    "OrganizationSettings",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QualgentClientError",
    "QueueInfo",
    "QueuedJob",
    "RateLimitError",
    "RetryPolicy",
    "Run",
    "RunArtifact",
    "RunReport",
    "ServerError",
    "TestCase",
    "TestCaseDetail",
    "TestCaseFile",
    "TestCaseHistory",
    "TransportError",
    "UploadedFile",
    "ValidationError",
    "WaitTimeout",
    "Webhook",
    "WebhookDelivery",
]
