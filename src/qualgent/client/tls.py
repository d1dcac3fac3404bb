"""The client's TLS context: httpx's default (certificates checked against certifi's CA bundle, or
``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set), with the CA bundle read on the first TLS handshake rather
than when a client is made.

Reading the bundle takes about 20 ms, which httpx spends for every client it makes, TLS or not; a CLI
command makes one or two, and answers in a quarter of a second. Deferring it costs a server on https://
nothing and a server on http:// nothing at all. A handshake that somehow bypassed the two methods below
would find no CA loaded and fail verification: it could not pass unverified.
"""

from __future__ import annotations

import os
import ssl
import sys
import threading
from typing import Any


class CertsOnFirstHandshake(ssl.SSLContext):
    """An ``ssl.SSLContext`` for clients (``PROTOCOL_TLS_CLIENT``: certificate and host name checked) that
    loads its CA certificates just before its first handshake, on a socket (sync) or a BIO (asyncio)."""

    _lock = threading.Lock()
    _loaded = False

    def _load_certificates(self) -> None:
        with self._lock:
            if self._loaded:
                return
            # As httpx.create_ssl_context(verify=True, trust_env=True) does.
            if os.environ.get("SSL_CERT_FILE"):
                self.load_verify_locations(cafile=os.environ["SSL_CERT_FILE"])
            elif os.environ.get("SSL_CERT_DIR"):
                self.load_verify_locations(capath=os.environ["SSL_CERT_DIR"])
            else:
                import certifi

                self.load_verify_locations(cafile=certifi.where())
            self._loaded = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._load_certificates()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._load_certificates()
        return super().wrap_bio(*args, **kwargs)


def client_context() -> ssl.SSLContext:
    """A new context for one client (``verify=`` of an httpx client), set as
    ``ssl.create_default_context()`` sets one for checking servers, less the CA certificates."""
    context = CertsOnFirstHandshake(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, host names checked
    if sys.version_info >= (3, 13):
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog and not sys.flags.ignore_environment:
        context.keylog_filename = keylog
    return context
