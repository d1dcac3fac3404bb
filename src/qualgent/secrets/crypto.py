"""Organisation secrets at rest: AES-256-GCM under a key derived from the server's secret key.

A stored value is ``version (1 byte) | nonce (12 bytes) | ciphertext and tag``. The associated data
binds it to its organisation and name, so a ciphertext copied to another row (another organisation, or
another name) does not decrypt. The key is HKDF-SHA256 of the server's secret key with a label of its
own, so it is unrelated to the key that signs download links; changing the secret key makes every
stored secret unreadable (they must be set again).
"""

from __future__ import annotations

import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION: Final = b"\x01"
NONCE_BYTES: Final = 12
_INFO: Final = b"qualgent organisation secrets v1"


class SecretUnreadable(Exception):
    """A stored secret that does not decrypt: another key, another row's ciphertext, or tampered bytes."""


def derive_key(server_secret: str) -> bytes:
    """The 256-bit secrets key for a server secret key (``settings.resolved_secret_key()``)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(server_secret.encode())


def _associated_data(organization_id: str, name: str) -> bytes:
    # Neither part can hold NUL (IDs and names are ASCII words), so the join is unambiguous.
    return b"qualgent-secret\x00" + organization_id.encode() + b"\x00" + name.encode()


def encrypt(key: bytes, organization_id: str, name: str, value: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, value.encode(), _associated_data(organization_id, name))
    return VERSION + nonce + sealed


def decrypt(key: bytes, organization_id: str, name: str, stored: bytes) -> str:
    if len(stored) < 1 + NONCE_BYTES + 16 or stored[:1] != VERSION:
        raise SecretUnreadable(f"secret {name!r} is not in a format this server reads")
    nonce, sealed = stored[1 : 1 + NONCE_BYTES], stored[1 + NONCE_BYTES :]
    try:
        plain = AESGCM(key).decrypt(nonce, sealed, _associated_data(organization_id, name))
    except InvalidTag:
        raise SecretUnreadable(f"secret {name!r} does not decrypt with this server's key") from None
    return plain.decode()
