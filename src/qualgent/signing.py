"""Pre-signed download links: an HMAC over what the link grants and when it expires."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode


def _mac(key: bytes, organization_id: str, app_id: str, expires: int) -> str:
    message = f"download:{organization_id}:{app_id}:{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_download_url(base_url: str, key: bytes, organization_id: str, app_id: str, ttl: int) -> str:
    expires = int(time.time()) + ttl
    query = urlencode(
        {"org": organization_id, "expires": expires, "signature": _mac(key, organization_id, app_id, expires)}
    )
    return f"{base_url.rstrip('/')}/v1/apps/{app_id}/download?{query}"


def verify(key: bytes, organization_id: str, app_id: str, expires: int, signature: str) -> bool:
    if expires < time.time():
        return False
    return hmac.compare_digest(_mac(key, organization_id, app_id, expires), signature)
