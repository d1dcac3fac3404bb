"""Pre-signed links: an HMAC over what the link grants and when it expires.

App downloads sign (organisation, app, expiry); other artifacts (screenshots) sign (organisation, the
path, expiry). A link carries ``org``, ``expires`` and ``signature`` as query parameters.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

# The latest expiry a link can carry (Unix seconds, the year 2100): a larger one was never signed here.
MAX_EXPIRES = 4_102_444_800


def _hmac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def _mac(key: bytes, organization_id: str, app_id: str, expires: int) -> str:
    return _hmac(key, f"download:{organization_id}:{app_id}:{expires}")


def _link(base_url: str, path: str, organization_id: str, expires: int, signature: str) -> str:
    query = urlencode({"org": organization_id, "expires": expires, "signature": signature})
    return f"{base_url.rstrip('/')}{path}?{query}"


def signed_download_url(base_url: str, key: bytes, organization_id: str, app_id: str, ttl: int) -> str:
    expires = int(time.time()) + ttl
    return _link(
        base_url, f"/v1/apps/{app_id}/download", organization_id, expires, _mac(key, organization_id, app_id, expires)
    )


def verify(key: bytes, organization_id: str, app_id: str, expires: int, signature: str) -> bool:
    if expires < time.time():
        return False
    return _same(_mac(key, organization_id, app_id, expires), signature)


def signed_path_url(base_url: str, key: bytes, organization_id: str, path: str, ttl: int) -> str:
    expires = int(time.time()) + ttl
    return _link(base_url, path, organization_id, expires, _hmac(key, f"path:{organization_id}:{path}:{expires}"))


def verify_path(key: bytes, organization_id: str, path: str, expires: int, signature: str) -> bool:
    if expires < time.time():
        return False
    return _same(_hmac(key, f"path:{organization_id}:{path}:{expires}"), signature)


def _same(expected: str, signature: str) -> bool:
    # compare_digest refuses str with non-ASCII characters (TypeError); bytes compare whatever was sent.
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
