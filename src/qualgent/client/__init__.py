"""The qualgent Python SDK: ``Client`` (sync) and ``AsyncClient`` over httpx, typed models and errors.

from qualgent.client import Client
with Client() as qg:                      # QUALGENT_API_KEY / QUALGENT_URL, or arguments
    app = qg.upload_app("app.apk", "MyApp", "1.0.0")
    jobs = qg.run_all(app_file_id=app.id, platform="android")
    runs = qg.wait_for_runs([j.id for j in jobs], timeout=1800)
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qualgent.client._core import RetryPolicy
    from qualgent.client.aio import AsyncClient
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
        WaitTimeout,
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

# Each name loads its module on first use (PEP 562), so that `import qualgent.client.errors` costs no
# more than that module: the CLI's commands are listed, parsed and refused without loading httpx (a
# tenth of a second), pydantic and the models (two tenths), nor asyncio for AsyncClient.
_MODULE_OF = {
    "RetryPolicy": "_core",
    "AsyncClient": "aio",
    "Client": "sync",
    **dict.fromkeys(
        [
            "APIError",
            "AuthenticationError",
            "BadRequestError",
            "ConfigurationError",
            "ConflictError",
            "NotFoundError",
            "PayloadTooLargeError",
            "PermissionDeniedError",
            "QualgentClientError",
            "RateLimitError",
            "ServerError",
            "TransportError",
            "ValidationError",
            "WaitTimeout",
        ],
        "errors",
    ),
    **dict.fromkeys(
        [
            "App",
            "Batch",
            "Category",
            "Device",
            "OrganizationSettings",
            "QueuedJob",
            "QueueInfo",
            "Run",
            "RunArtifact",
            "RunReport",
            "TestCase",
            "TestCaseDetail",
            "TestCaseFile",
            "TestCaseHistory",
            "UploadedFile",
            "Webhook",
            "WebhookDelivery",
        ],
        "models",
    ),
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
