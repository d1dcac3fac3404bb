"""The SDK against a server on https://: its certificate is checked (CA and host name) with the CA
certificates read on the first handshake, not when the client is made (a CLI command's start-up).

The server is a real TLS server on 127.0.0.1 with a certificate from a test CA (trustme)."""

from __future__ import annotations

import asyncio
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from qualgent.client import AsyncClient, Client, RetryPolicy, TransportError

NO_RETRY = RetryPolicy(retries=0)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"success": True, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _serve(ca: trustme.CA, *names: str) -> Iterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(context)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def https_port(ca: trustme.CA) -> Iterator[int]:
    """A server whose certificate names 127.0.0.1."""
    yield from _serve(ca, "127.0.0.1", "localhost")


@pytest.fixture(scope="module")
def https_port_for_another_name(ca: trustme.CA) -> Iterator[int]:
    """A server whose certificate names only example.test."""
    yield from _serve(ca, "example.test")


@pytest.fixture
def trust_ca(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


def _loaded_cas(client: Client) -> int:
    context: ssl.SSLContext = client._http._transport._pool._ssl_context  # type: ignore[attr-defined]
    stats: dict[str, int] = context.cert_store_stats()
    return stats["x509_ca"]


def test_a_server_with_a_trusted_certificate_is_reached_and_the_cas_load_at_the_first_handshake(
    https_port: int, trust_ca: None
) -> None:
    with Client(api_key="qg_test", base_url=f"https://127.0.0.1:{https_port}", retry=NO_RETRY) as client:
        assert _loaded_cas(client) == 0  # nothing read when the client was made
        response = client.request("GET", "/v1/ping")
        assert response.status_code == 200
        assert response.json()["path"] == "/v1/ping"
        assert _loaded_cas(client) == 1  # SSL_CERT_FILE's one CA, read for the handshake


def test_a_certificate_from_an_unknown_ca_is_refused(https_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # No SSL_CERT_FILE: certifi's public CAs, of which the test CA is not one.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with (
        Client(api_key="qg_test", base_url=f"https://127.0.0.1:{https_port}", retry=NO_RETRY) as client,
        pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.request("GET", "/v1/ping")
    with Client(api_key="qg_test", base_url=f"https://127.0.0.1:{https_port}", retry=NO_RETRY) as client:
        with pytest.raises(TransportError):
            client.request("GET", "/v1/ping")
        assert _loaded_cas(client) > 100  # certifi's bundle was read, and the test CA is not in it


def test_a_certificate_for_another_host_name_is_refused(https_port_for_another_name: int, trust_ca: None) -> None:
    url = f"https://127.0.0.1:{https_port_for_another_name}"
    with Client(api_key="qg_test", base_url=url, retry=NO_RETRY) as client, pytest.raises(TransportError):
        client.request("GET", "/v1/ping")


def test_the_async_client_checks_certificates_too(
    https_port: int, https_port_for_another_name: int, trust_ca: None
) -> None:
    async def fetch(port: int) -> int:
        async with AsyncClient(api_key="qg_test", base_url=f"https://127.0.0.1:{port}", retry=NO_RETRY) as client:
            return (await client.request("GET", "/v1/ping")).status_code

    assert asyncio.run(fetch(https_port)) == 200
    with pytest.raises(TransportError):
        asyncio.run(fetch(https_port_for_another_name))
