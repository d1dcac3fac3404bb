"""Device targets: the selector rules on their own (devices/selectors.py), the agent's devices file
(tags, pools, the simulated catalogue's default tags), and migration 0010 giving every existing run the
target of the device it asked for, with the registered devices that fit it."""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from qualgent.agent.config import load_devices
from qualgent.db.migrations import upgrade
from qualgent.db.session import make_engine
from qualgent.devices import selectors
from qualgent.devices.selectors import DeviceFacts, SelectorError, from_canonical, parse_os, version_key
from tests.test_migrations import fresh_database

PIXEL_7 = DeviceFacts("Pixel 7", "Android", "14.0", "phone", ("lab", "pool:a"))
TABLET = DeviceFacts("Pixel Tablet", "Android", "12.1", "tablet", ())
IPHONE = DeviceFacts("iPhone 15", "iOS", "17.0.1", "phone", ("lab",))
ODD = DeviceFacts("Prototype", "Android", "Tiramisu", "phone", ())


def test_versions_compare_part_by_part() -> None:
    assert version_key("14.0") == version_key("14") == (14,)
    assert version_key("13.1.2") == (13, 1, 2)
    assert version_key("v17 beta") == (17,)
    assert version_key("Tiramisu") is None
    assert parse_os(">=13") == ((">=", "13"),)
    assert parse_os("=14.0") == (("==", "14"),)
    assert parse_os(" <15 , >=13 ") == (("<", "15"), (">=", "13"))
    for bad in ("", "about 13", ">=", "13,", "=>13", "13.x"):
        with pytest.raises(SelectorError):
            parse_os(bad)


@pytest.mark.parametrize(
    ("os_version", "fits"),
    [
        ("14", True),
        ("==14.0", True),
        ("!=14", False),
        (">13.9", True),
        (">14", False),
        (">=14", True),
        ("<14.0.1", True),
        ("<=13", False),
        (">=13,<15", True),
        (">=15,<16", False),
    ],
)
def test_os_comparisons(os_version: str, fits: bool) -> None:
    assert selectors.selector("android", os_version=os_version).matches(PIXEL_7) is fits
    # A device whose version is not a number fits no comparison, but fits a selector without one.
    assert not selectors.selector("android", os_version=os_version).matches(ODD)
    assert selectors.selector("android").matches(ODD)


def test_each_criterion() -> None:
    any_android = selectors.selector("android")
    assert any_android.matches(PIXEL_7) and any_android.matches(TABLET) and not any_android.matches(IPHONE)
    assert selectors.selector("ios", os_version=">=17").matches(IPHONE)  # 17.0.1
    assert selectors.selector("android", name=["PIXEL 7", "Pixel 8"]).matches(PIXEL_7)
    assert not selectors.selector("android", name="Pixel").matches(PIXEL_7)
    assert selectors.selector("android", model="pixel *").matches(TABLET)
    assert not selectors.selector("android", model="Pixel ?").matches(TABLET)
    assert selectors.selector("android", model="*[7]").matches(PIXEL_7)
    assert selectors.selector("android", tags=["lab"], pool="a").matches(PIXEL_7)
    assert not selectors.selector("android", tags=["Lab"]).matches(PIXEL_7)  # tags are exact
    assert not selectors.selector("android", pool="b").matches(PIXEL_7)
    assert selectors.selector("android", device_type="tablet").matches(TABLET)
    assert not selectors.selector("android", device_type="tablet").matches(PIXEL_7)
    named = selectors.pinned("pixel 7", "Android", "14")
    assert named.pinned and named.matches(PIXEL_7) and not named.matches(TABLET)
    either = selectors.one_of("android", [("Pixel 7", "14"), ("Pixel Tablet", "12.1")])
    assert not either.pinned and either.matches(PIXEL_7) and either.matches(TABLET)
    with pytest.raises(SelectorError):
        selectors.selector("android", model="  ")


def test_equal_asks_are_one_target_and_survive_storage() -> None:
    a = selectors.selector("android", name=["Pixel 8", "pixel 7"], tags=["b", "a"], os_version=">=13,<15")
    b = selectors.selector("android", name=["PIXEL 7", "Pixel 8"], tags=["a", "b"], os_version="<15, >=13")
    assert a.key == b.key and a.key.startswith("tgt_") and len(a.key) <= 40
    assert selectors.selector("android").key != selectors.selector("ios").key
    stored = from_canonical(a.canonical())
    assert stored == a and stored.key == a.key
    for device in (PIXEL_7, TABLET, IPHONE, ODD):
        assert stored.matches(device) == a.matches(device)
    assert a.public() == {
        "platform": "android",
        "name": ["Pixel 8", "pixel 7"],
        "os_version": "<15,>=13",
        "tags": ["a", "b"],
    }
    assert a.label() == "Android device: name Pixel 8 or pixel 7; os_version <15,>=13; tags a, b"
    assert selectors.selector("ios").label() == "any iOS device"
    assert selectors.selector("ios").public() == {"platform": "ios", "any": True}
    assert selectors.pinned("Pixel 7", "Android", "14.0").label() is None


def test_the_devices_file_declares_tags_and_pools(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    entries = [
        {"name": "Pixel 7", "platform": "Android", "os_version": "14.0", "tags": ["lab", "wifi"], "pool": "nightly"},
        {"name": "Pixel 8", "platform": "Android", "os_version": "14.0", "tags": "solo", "pools": ["a", "b"]},
        {"name": "iPad Pro", "platform": "iOS", "os_version": "16.0", "device_type": "tablet"},
    ]
    path.write_text(yaml.safe_dump({"devices": entries}))
    first, second, third = load_devices(path)
    assert first.tags == ("lab", "wifi", "pool:nightly")
    assert second.tags == ("solo", "pool:a", "pool:b")
    assert third.tags == ()  # a devices file's devices declare only their own
    built_in = {d.name: d.tags for d in load_devices(None)}
    assert built_in["Pixel 7"] == ("phone", "simulated") and built_in["iPad Pro"] == ("tablet", "simulated")
    path.write_text(yaml.safe_dump({"devices": [{**entries[0], "tags": ["", "x"]}]}))
    with pytest.raises(ValueError, match="tags"):
        load_devices(path)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0010_gives_existing_runs_the_target_of_their_device(backend: str, tmp_path: Path) -> None:
    migration = importlib.import_module("qualgent.db.migrations.versions.0010_device_targets_and_queue_order")
    with fresh_database(backend, tmp_path) as url:
        upgrade(url, "0009")
        now = "2026-12-01 12:00:00+00:00"
        rows = [
            "INSERT INTO organizations (id, name, running_runs, created_at, updated_at) "
            "VALUES ('org_1', 'Org', 0, :now, :now)",
            "INSERT INTO users (id, organization_id, name, email, created_at, updated_at) "
            "VALUES ('user_1', 'org_1', 'U', 'u@example.com', :now, :now)",
            "INSERT INTO app_files (id, organization_id, user_id, app_name, version, os, original_name, filename, "
            "storage_key, file_path, file_size, file_type, sha256, metadata, created_at, updated_at) VALUES "
            "('file_1', 'org_1', 'user_1', 'A', '1', 'android', 'a.apk', 'a.apk', 'k', 'k', 1, 't', 'x', '{}', "
            ":now, :now)",
            "INSERT INTO test_cases (id, organization_id, name, description, status, flow, tags, created_at, "
            "updated_at) VALUES ('tc_1', 'org_1', 'T', '', 'active', '', '[]', :now, :now)",
            "INSERT INTO agents (id, name, token_prefix, token_hash, embedded, created_at, updated_at) "
            "VALUES ('agent_1', 'A', 'qga_', 'h', false, :now, :now)",
        ]
        for n, (name, os_version) in enumerate([("Pixel 7", "14.0"), ("pixel 7", "14"), ("Pixel 8", "14.0")]):
            rows.append(
                "INSERT INTO devices (id, agent_id, config_id, name, platform, os_version, device_type, driver, "
                f"online, created_at, updated_at) VALUES ('dev_{n}', 'agent_1', 'c{n}', '{name}', 'Android', "
                f"'{os_version}', 'phone', 'simulator', true, :now, :now)"
            )
        for n, status in enumerate(["queued", "passed"]):
            rows.append(
                "INSERT INTO test_runs (id, organization_id, test_case_id, app_id, user_id, device_name, "
                "device_platform, device_os_version, device_orientation, status, priority, priority_rank, progress, "
                "attempt, max_attempts, cancel_requested, step_count, queued_at, record_video, created_at, updated_at) "
                f"VALUES ('run_{n}', 'org_1', 'tc_1', 'file_1', 'user_1', 'Pixel 7', 'Android', '14.0', 'portrait', "
                f"'{status}', 'medium', 1, 0, 0, 3, false, 0, :now, false, :now, :now)"
            )

        async def run(statements: list[str], query: str | None = None) -> list[tuple[object, ...]]:
            engine = make_engine(url, pool_size=1)
            try:
                async with engine.begin() as conn:
                    for statement in statements:
                        params = {"now": now} if backend == "sqlite" else {}
                        sql = statement if backend == "sqlite" else statement.replace(":now", "now()")
                        await conn.execute(text(sql), params)
                    if query is None:
                        return []
                    return [tuple(r) for r in (await conn.execute(text(query))).all()]
            finally:
                await engine.dispose()

        asyncio.run(run(rows))
        upgrade(url, "0010")
        expected = selectors.pinned("Pixel 7", "Android", "14.0").key
        assert migration._pinned_target("Pixel 7", "Android", "14.0")[0] == expected
        runs = asyncio.run(run([], "SELECT id, target_id, queue_order FROM test_runs ORDER BY id"))
        assert runs == [("run_0", expected, 0), ("run_1", expected, 0)]
        matches = asyncio.run(run([], "SELECT device_id, target_id FROM device_matches ORDER BY device_id"))
        assert matches == [("dev_0", expected), ("dev_1", expected)]  # not the Pixel 8
        tags = asyncio.run(run([], "SELECT tags FROM devices ORDER BY id"))
        assert [t[0] if isinstance(t[0], list) else json.loads(str(t[0])) for t in tags] == [[]] * 3
