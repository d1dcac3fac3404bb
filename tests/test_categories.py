"""Categories: list (and its alias), create, rename, delete; names unique per organisation."""

from __future__ import annotations

from typing import Any

import httpx

from qualgent.ids import new_id
from tests.fixtures.contract import CATEGORY_EXAMPLE, assert_error, assert_shape, next_link
from tests.fixtures.factories import Tenant, create_category, create_test_case
from tests.fixtures.servers import LiveServer


def listed(tenant: Tenant, path: str = "/v1/categories/list", **params: Any) -> list[dict[str, Any]]:
    response = tenant.client.get(path, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, list), body
    return body


def test_list_and_alias(tenant: Tenant, other_tenant: Tenant) -> None:
    assert listed(tenant) == []
    smoke = create_category(tenant, "Smoke Tests", description="Fast checks run on every build")
    regression = create_category(tenant, "Regression")
    create_category(other_tenant, "Theirs")

    body = listed(tenant)
    for item in body:
        assert_shape(item, CATEGORY_EXAMPLE)
    assert {c["id"]: (c["name"], c["description"]) for c in body} == {
        smoke["id"]: ("Smoke Tests", "Fast checks run on every build"),
        regression["id"]: ("Regression", ""),
    }
    assert listed(tenant, "/v1/categories") == body
    assert [c["name"] for c in listed(other_tenant)] == ["Theirs"]


def test_list_pages(tenant: Tenant) -> None:
    ids = sorted(create_category(tenant, f"Category {i}")["id"] for i in range(5))
    first = tenant.client.get("/v1/categories/list", params={"limit": 3})
    link = next_link(first)
    assert link is not None
    second = tenant.client.get(link)
    assert next_link(second) is None
    seen = [c["id"] for c in first.json() + second.json()]
    assert seen == ids


def test_create_patch_delete(tenant: Tenant) -> None:
    created = tenant.client.post("/v1/categories", json={"name": " Smoke ", "description": "Fast"})
    assert created.status_code == 201, created.text
    category = created.json()
    assert category["id"].startswith("cat_")
    assert (category["name"], category["description"]) == ("Smoke", "Fast")

    patched = tenant.client.patch(f"/v1/categories/{category['id']}", json={"name": "Smoke Tests"})
    assert patched.status_code == 200, patched.text
    assert patched.json() == {"id": category["id"], "name": "Smoke Tests", "description": "Fast"}
    patched = tenant.client.patch(f"/v1/categories/{category['id']}", json={"description": "Every build"})
    assert patched.json() == {"id": category["id"], "name": "Smoke Tests", "description": "Every build"}
    # Renaming to its own name is not a duplicate.
    assert tenant.client.patch(f"/v1/categories/{category['id']}", json={"name": "Smoke Tests"}).status_code == 200
    assert listed(tenant) == [patched.json()]

    deleted = tenant.client.delete(f"/v1/categories/{category['id']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"success": True, "deleted": [category["id"]]}
    assert listed(tenant) == []
    assert_error(tenant.client.delete(f"/v1/categories/{category['id']}"), 404, "not_found")
    assert_error(tenant.client.patch(f"/v1/categories/{category['id']}", json={"name": "x"}), 404, "not_found")


def test_duplicate_name_is_422(tenant: Tenant, other_tenant: Tenant) -> None:
    smoke = create_category(tenant, "Smoke")
    other = create_category(tenant, "Regression")
    error = assert_error(tenant.client.post("/v1/categories", json={"name": "Smoke"}), 422, "duplicate_name")
    assert error["details"][0]["field"] == "name"
    assert_error(tenant.client.post("/v1/categories", json={"name": "  Smoke  "}), 422, "duplicate_name")
    assert_error(tenant.client.patch(f"/v1/categories/{other['id']}", json={"name": "Smoke"}), 422, "duplicate_name")
    assert sorted(c["name"] for c in listed(tenant)) == ["Regression", "Smoke"]
    # Names are unique per organisation only.
    assert create_category(other_tenant, "Smoke")["id"] != smoke["id"]


def test_validation(tenant: Tenant) -> None:
    post = tenant.client.post
    assert_error(post("/v1/categories", json={}), 400, "bad_request")
    assert_error(post("/v1/categories", json={"description": "no name"}), 400)
    assert_error(post("/v1/categories", json={"name": ""}), 422, "invalid_request")
    assert_error(post("/v1/categories", json={"name": "x", "colour": "red"}), 422, "invalid_request")
    assert_error(post("/v1/categories", json={"name": 5}), 422)
    assert_error(
        post("/v1/categories", content=b'{"name": ', headers={"Content-Type": "application/json"}), 400, "bad_request"
    )
    assert_error(post("/v1/categories", json={"name": "a\u0000b"}), 422, "invalid_request")
    category = create_category(tenant)
    assert_error(tenant.client.patch(f"/v1/categories/{category['id']}", json={"description": "\u0000"}), 422)
    assert_error(tenant.client.patch(f"/v1/categories/{category['id']}", json={"colour": "red"}), 422)
    assert_error(tenant.client.patch(f"/v1/categories/{category['id']}", json={"name": ""}), 422)
    assert [c["name"] for c in listed(tenant)] == ["Smoke Tests"]


def test_other_organisations_categories_are_404(tenant: Tenant, other_tenant: Tenant) -> None:
    theirs = create_category(other_tenant, "Theirs")
    for category_id in (theirs["id"], new_id("cat"), "cat_nope", new_id("tc")):
        assert_error(tenant.client.patch(f"/v1/categories/{category_id}", json={"name": "Mine"}), 404, "not_found")
        assert_error(tenant.client.delete(f"/v1/categories/{category_id}"), 404, "not_found")
    assert listed(other_tenant) == [theirs]


def test_deleting_a_category_keeps_its_test_cases(tenant: Tenant) -> None:
    doomed = create_category(tenant, "Doomed")
    kept = create_category(tenant, "Kept")
    a = create_test_case(tenant, "A", category_id=doomed["id"])
    b = create_test_case(tenant, "B", category_id=doomed["id"])
    c = create_test_case(tenant, "C", category_id=kept["id"])
    assert tenant.client.delete(f"/v1/categories/{doomed['id']}").status_code == 200

    cases = {t["id"]: t for t in tenant.client.get("/v1/test-cases/list").json()}
    assert set(cases) == {a["id"], b["id"], c["id"]}
    assert cases[a["id"]]["category"] is None
    assert cases[b["id"]]["category"] is None
    assert cases[c["id"]]["category"] == {"id": kept["id"], "name": "Kept"}
    assert tenant.client.get(f"/v1/test-cases/{a['id']}").json()["category"] is None
    assert tenant.client.get("/v1/test-cases/list", params={"category": doomed["id"]}).json() == []
    # The name is free again.
    assert create_category(tenant, "Doomed")["id"] != doomed["id"]


def test_requires_an_api_key(server: LiveServer) -> None:
    for path in ("/v1/categories/list", "/v1/categories"):
        assert_error(httpx.get(server.url + path), 401)
    assert_error(httpx.post(server.url + "/v1/categories", json={"name": "x"}), 401)
