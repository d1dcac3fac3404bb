"""Devices: the catalogue keyed by device type, built in or from a YAML file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.contract import DEVICES_EXAMPLE, assert_error, assert_shape
from tests.fixtures.factories import Database, Tenant, create_test_case, make_tenant, upload_app
from tests.fixtures.servers import LiveServer, live_server


def devices(tenant: Tenant, path: str = "/v1/devices/list") -> dict[str, list[dict[str, Any]]]:
    response = tenant.client.get(path)
    assert response.status_code == 200, response.text
    body: dict[str, list[dict[str, Any]]] = response.json()
    return body


def entries(body: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [device for group in body.values() for device in group]


def same_version(a: str, b: str) -> bool:
    return a.removesuffix(".0") == b.removesuffix(".0")


def test_built_in_catalogue(tenant: Tenant) -> None:
    body = devices(tenant)
    assert_shape(body, DEVICES_EXAMPLE)
    assert set(body) <= {"phone", "tablet"}
    for device_type, group in body.items():
        assert group, device_type
        for device in group:
            assert device["device_type"] == device_type
            assert device["platform"] in ("Android", "iOS")
            assert device["name"] and device["os_version"]
    listed = entries(body)
    assert any(
        d["name"] == "Pixel 7" and d["platform"] == "Android" and same_version(d["os_version"], "14") for d in listed
    )
    assert any(
        d["name"] == "iPhone 14 Pro" and d["platform"] == "iOS" and same_version(d["os_version"], "16")
        for d in body["phone"]
    )
    assert any(d["name"] == "iPad Pro" and d["platform"] == "iOS" for d in body["tablet"])
    assert {d["platform"] for d in body["phone"]} == {"Android", "iOS"}


def test_alias_lists_the_same(tenant: Tenant) -> None:
    assert devices(tenant, "/v1/devices") == devices(tenant)


def test_requires_an_api_key(server: LiveServer) -> None:
    assert_error(httpx.get(f"{server.url}/v1/devices/list"), 401)
    assert_error(httpx.get(f"{server.url}/v1/devices"), 401)


CUSTOM = """\
devices:
  - {name: Lab Phone, platform: android, os_version: "12", device_type: phone}
  - {name: Lab Tablet, platform: iOS, os_version: "17.2", device_type: tablet, id: dev_lab-tablet}
"""


@pytest.fixture
def custom_server(backend: str, tmp_path: Path) -> Iterator[tuple[LiveServer, Tenant]]:
    path = tmp_path / "devices.yaml"
    path.write_text(CUSTOM)
    with live_server(backend, tmp_path / "server", devices_file=path) as srv:
        database = Database(srv.settings.resolved_database_url)
        tenant = make_tenant(database, srv.url)
        try:
            yield srv, tenant
        finally:
            tenant.client.close()
            database.close()


def test_a_devices_file_replaces_the_catalogue(custom_server: tuple[LiveServer, Tenant]) -> None:
    _, tenant = custom_server
    body = devices(tenant)
    assert_shape(body, {"phone": DEVICES_EXAMPLE["phone"], "tablet": DEVICES_EXAMPLE["tablet"]})
    assert [(d["name"], d["platform"], d["os_version"], d["device_type"]) for d in entries(body)] == [
        ("Lab Phone", "Android", "12", "phone"),
        ("Lab Tablet", "iOS", "17.2", "tablet"),
    ]
    assert body["tablet"][0]["id"] == "dev_lab-tablet"
    assert devices(tenant, "/v1/devices") == body

    # Runs may ask only for the catalogue's devices.
    upload = upload_app(tenant)
    assert upload.status_code == 200, upload.text
    file_id = upload.json()["file"]["id"]
    case = create_test_case(tenant)
    pixel = {"name": "Pixel 7", "platform": "Android", "os_version": "14"}
    rejected = tenant.client.post(
        "/v1/test-cases/run", json={"jobs": [{"test_case_id": case["id"], "app_file_id": file_id, "device": pixel}]}
    )
    assert_error(rejected, 422)
    lab = {"name": "lab phone", "platform": "ANDROID", "os_version": "12.0"}
    accepted = tenant.client.post(
        "/v1/test-cases/run",
        json={
            "jobs": [
                {"test_case_id": case["id"], "app_file_id": file_id, "device": lab},
                {"test_case_id": case["id"], "platform": "android"},
            ]
        },
    )
    assert accepted.status_code == 200, accepted.text
    named, any_android = accepted.json()["jobs"]
    assert tenant.client.get(f"/v1/jobs/status/{named['id']}").json()["device"] == "Lab Phone"
    # A platform alone is matched when a device claims the run, against the devices agents serve.
    assert tenant.client.get(f"/v1/jobs/status/{any_android['id']}").json()["device"] == "any Android device"
