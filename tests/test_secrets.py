"""Organisation secrets: set, listed by name, deleted; never readable back; encrypted at rest so that a
stored value is useless without the server's key, and bound to its organisation and name."""

from __future__ import annotations

import secrets as random
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from qualgent.secrets import crypto
from qualgent.secrets.schemas import MAX_SECRETS
from tests.fixtures.contract import assert_error
from tests.fixtures.factories import Database, Tenant, add_key
from tests.fixtures.servers import LiveServer
from tests.fixtures.web import csrf_of, signed_in_tenant


def put(tenant: Tenant, name: str, value: Any) -> Any:
    return tenant.client.put(f"/v1/secrets/{name}", json={"value": value})


def names(tenant: Tenant) -> list[str]:
    response = tenant.client.get("/v1/secrets")
    assert response.status_code == 200, response.text
    return [s["name"] for s in response.json()]


def stored(db: Database, organization_id: str, name: str) -> bytes | None:
    async def read(session: AsyncSession) -> bytes | None:
        row = await session.execute(
            text("SELECT ciphertext FROM secrets WHERE organization_id = :org AND name = :name"),
            {"org": organization_id, "name": name},
        )
        value = row.scalar()
        return bytes(value) if value is not None else None

    return db.run(read)


def key_of(server: LiveServer) -> bytes:
    return crypto.derive_key(server.settings.resolved_secret_key())


# --------------------------------------------------------------------------------------- the API


def test_put_creates_then_replaces_and_never_answers_the_value(tenant: Tenant) -> None:
    value = "hunter2-" + random.token_hex(8)
    created = put(tenant, "TEST_PASSWORD", value)
    assert created.status_code == 200, created.text
    body = created.json()
    assert set(body) == {"name", "created_at", "updated_at"} and body["name"] == "TEST_PASSWORD"
    assert value not in created.text

    time.sleep(0.01)
    replaced = put(tenant, "TEST_PASSWORD", value + "-new")
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["created_at"] == body["created_at"]
    assert replaced.json()["updated_at"] > body["updated_at"]

    put(tenant, "API_TOKEN", "t")
    listing = tenant.client.get("/v1/secrets")
    assert listing.status_code == 200
    assert [s["name"] for s in listing.json()] == ["API_TOKEN", "TEST_PASSWORD"]
    assert all(set(s) == {"name", "created_at", "updated_at"} for s in listing.json())
    assert value not in listing.text
    # There is no route that reads one back.
    assert tenant.client.get("/v1/secrets/TEST_PASSWORD").status_code in (404, 405)


def test_delete(tenant: Tenant) -> None:
    put(tenant, "GONE", "x")
    put(tenant, "KEPT", "y")
    response = tenant.client.delete("/v1/secrets/GONE")
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "deleted": ["GONE"]}
    assert names(tenant) == ["KEPT"]
    assert_error(tenant.client.delete("/v1/secrets/GONE"), 404, "not_found")
    assert_error(tenant.client.delete("/v1/secrets/NEVER_SET"), 404, "not_found")
    assert_error(tenant.client.delete("/v1/secrets/not-a-name"), 404, "not_found")


@pytest.mark.parametrize("name", ["1STARTS_WITH_DIGIT", "has-dash", "dotted.name", "X" * 101, "sp%20ace", "caf%C3%A9"])
def test_bad_names_are_422(tenant: Tenant, name: str) -> None:
    assert_error(put(tenant, name, "v"), 422)
    assert names(tenant) == []


def test_names_and_values_at_their_limits(tenant: Tenant) -> None:
    assert put(tenant, "N" * 100, "v" * 10_000).status_code == 200
    assert put(tenant, "_lower_ok_9", "").status_code == 200
    assert_error(put(tenant, "TOO_LONG", "v" * 10_001), 422)
    # Strings only: numbers and booleans are refused, not turned into text.
    for value in (123, True, None, ["a"], {"a": "b"}):
        assert_error(put(tenant, "TYPED", value), 422)
    assert_error(put(tenant, "NUL", "a\u0000b"), 422)
    assert_error(tenant.client.put("/v1/secrets/EXTRA", json={"value": "v", "name": "other"}), 422)
    assert_error(tenant.client.put("/v1/secrets/MISSING", json={}), 400)
    assert sorted(names(tenant)) == sorted(["N" * 100, "_lower_ok_9"])


def test_at_most_max_secrets_per_organisation(tenant: Tenant, other_tenant: Tenant) -> None:
    for i in range(MAX_SECRETS):
        assert put(tenant, f"S{i:03d}", "v").status_code == 200
    error = assert_error(put(tenant, "ONE_MORE", "v"), 422, "too_many_secrets")
    assert str(MAX_SECRETS) in error["message"]
    # Replacing one is still fine, and another organisation has its own count.
    assert put(tenant, "S000", "new").status_code == 200
    assert put(other_tenant, "ONE_MORE", "v").status_code == 200
    assert tenant.client.delete("/v1/secrets/S001").status_code == 200
    assert put(tenant, "ONE_MORE", "v").status_code == 200
    assert len(names(tenant)) == MAX_SECRETS


def test_a_read_only_key_lists_but_cannot_change(db: Database, server: LiveServer, tenant: Tenant) -> None:
    put(tenant, "KEEP", "v")
    _, secret = add_key(db, tenant, scopes="read")
    with httpx.Client(base_url=server.url, headers={"X-Api-Key": secret}, timeout=30) as reader:
        assert [s["name"] for s in reader.get("/v1/secrets").json()] == ["KEEP"]
        assert_error(reader.put("/v1/secrets/KEEP", json={"value": "x"}), 403, "insufficient_scope")
        assert_error(reader.delete("/v1/secrets/KEEP"), 403, "insufficient_scope")
    assert names(tenant) == ["KEEP"]


def test_organisations_see_only_their_own(tenant: Tenant, other_tenant: Tenant, db: Database) -> None:
    put(other_tenant, "SHARED_NAME", "theirs")
    put(other_tenant, "ONLY_THEIRS", "theirs")
    before = stored(db, other_tenant.organization_id, "SHARED_NAME")
    assert names(tenant) == []
    assert_error(tenant.client.delete("/v1/secrets/ONLY_THEIRS"), 404, "not_found")
    # The same name is free in another organisation, and setting it there changes nothing of theirs.
    assert put(tenant, "SHARED_NAME", "mine").status_code == 200
    assert names(tenant) == ["SHARED_NAME"]
    assert names(other_tenant) == ["ONLY_THEIRS", "SHARED_NAME"]
    assert stored(db, other_tenant.organization_id, "SHARED_NAME") == before


# ------------------------------------------------------------------------------------ at rest


def test_the_stored_value_is_encrypted_and_bound_to_its_row(tenant: Tenant, db: Database, server: LiveServer) -> None:
    value = "correct horse " + random.token_hex(8)
    put(tenant, "PASSWORD", value)
    put(tenant, "SAME_VALUE", value)
    org = tenant.organization_id
    ciphertext = stored(db, org, "PASSWORD")
    assert ciphertext is not None
    assert value.encode() not in ciphertext and value[:8].encode() not in ciphertext
    # A random nonce: the same value never gives the same bytes.
    assert stored(db, org, "SAME_VALUE") != ciphertext
    key = key_of(server)
    assert crypto.decrypt(key, org, "PASSWORD", ciphertext) == value

    # Tampered bytes, another organisation, another name, another key: none of them decrypts.
    tampered = bytearray(ciphertext)
    tampered[-1] ^= 1
    with pytest.raises(crypto.SecretUnreadable):
        crypto.decrypt(key, org, "PASSWORD", bytes(tampered))
    with pytest.raises(crypto.SecretUnreadable):
        crypto.decrypt(key, "org_someoneelse", "PASSWORD", ciphertext)
    with pytest.raises(crypto.SecretUnreadable):
        crypto.decrypt(key, org, "SAME_VALUE", ciphertext)
    with pytest.raises(crypto.SecretUnreadable):
        crypto.decrypt(crypto.derive_key("another server's key"), org, "PASSWORD", ciphertext)
    with pytest.raises(crypto.SecretUnreadable):
        crypto.decrypt(key, org, "PASSWORD", ciphertext[:10])
    # The secrets key is derived: not the key that signs download links.
    assert key != server.settings.resolved_secret_key().encode()[:32]


def test_encryption_round_trip_and_format() -> None:
    key = crypto.derive_key("server secret")
    assert len(key) == 32 and key == crypto.derive_key("server secret") != crypto.derive_key("server secreT")
    sealed = crypto.encrypt(key, "org_a", "NAME", "välue")
    assert sealed[:1] == crypto.VERSION and len(sealed) == 1 + 12 + len("välue".encode()) + 16
    assert crypto.decrypt(key, "org_a", "NAME", sealed) == "välue"
    # The associated data is unambiguous: moving a character between organisation and name breaks it.
    with pytest.raises(crypto.SecretUnreadable):
        crypto.decrypt(key, "org_aN", "AME", sealed)


# ------------------------------------------------------------------------------------ dashboard


def test_dashboard_sets_lists_and_deletes_without_showing_values(tenant: Tenant, db: Database) -> None:
    csrf = signed_in_tenant(db, tenant)
    value = "dashboard-" + random.token_hex(8)
    page = tenant.client.get("/settings/secrets")
    assert page.status_code == 200 and 'id="no-secrets"' in page.text
    assert 'href="/settings/secrets" aria-current="page"' in page.text
    saved = tenant.client.post(
        "/settings/secrets", data={"csrf_token": csrf, "name": "WEB_SECRET", "value": value}, follow_redirects=False
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/settings/secrets"
    page = tenant.client.get("/settings/secrets")
    assert 'data-secret="WEB_SECRET"' in page.text and value not in page.text
    assert 'type="password"' in page.text
    assert names(tenant) == ["WEB_SECRET"]

    # A bad name re-shows the form with the reason, and neither stores nor echoes the value.
    refused = tenant.client.post("/settings/secrets", data={"csrf_token": csrf, "name": "bad-name", "value": value})
    assert refused.status_code == 422 and 'id="secret-error"' in refused.text and value not in refused.text
    # Without the form's token nothing happens.
    forged = tenant.client.post("/settings/secrets", data={"name": "FORGED", "value": "x"})
    assert_error(forged, 403, "csrf_failed")
    forged = tenant.client.post("/settings/secrets/WEB_SECRET/delete", data={"csrf_token": csrf[:-1] + "x"})
    assert_error(forged, 403, "csrf_failed")
    assert names(tenant) == ["WEB_SECRET"]

    deleted = tenant.client.post(
        "/settings/secrets/WEB_SECRET/delete", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
    )
    assert deleted.status_code == 303
    assert names(tenant) == []
    assert tenant.client.post("/settings/secrets/WEB_SECRET/delete", data={"csrf_token": csrf}).status_code == 404
