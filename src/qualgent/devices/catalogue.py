"""The device catalogue, read from a YAML file: which devices exist and how runs name them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PLATFORMS = {"android": "Android", "ios": "iOS"}
DEVICE_TYPES = ("phone", "tablet")


def normalise_platform(value: str) -> str | None:
    """``Android``/``android`` → ``android``; None for anything else."""
    key = value.strip().lower()
    return key if key in PLATFORMS else None


def normalise_version(value: str) -> str:
    """``14`` and ``14.0`` name the same OS version."""
    parts = value.strip().split(".")
    while len(parts) > 1 and parts[-1] == "0":
        parts.pop()
    return ".".join(parts)


@dataclass(frozen=True)
class Device:
    id: str
    name: str
    platform: str  # canonical spelling: Android | iOS
    os_version: str
    device_type: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def platform_key(self) -> str:
        return self.platform.lower()

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "os_version": self.os_version,
            "platform": self.platform,
            "device_type": self.device_type,
        }


class CatalogueError(ValueError):
    pass


class Catalogue:
    def __init__(self, devices: list[Device]) -> None:
        if not devices:
            raise CatalogueError("the device catalogue is empty")
        self.devices = devices

    def by_type(
        self, availability: dict[tuple[str, str, str], tuple[int, int]] | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """The catalogue grouped by device type; with ``availability`` ((name, platform, os) → (online,
        free)), each device also says whether one is online and free now."""
        grouped: dict[str, list[dict[str, Any]]] = {}
        for device in self.devices:
            entry = device.public()
            if availability is not None:
                online, free = availability.get((device.name, device.platform, device.os_version), (0, 0))
                entry.update(online=online > 0, available=free > 0, online_count=online, free_count=free)
            grouped.setdefault(device.device_type, []).append(entry)
        return grouped

    def find(self, name: str, platform: str, os_version: str | None) -> Device | None:
        """The device with this name (case-insensitive) on this platform and, if given, OS version."""
        wanted_name = name.strip().casefold()
        wanted_version = normalise_version(os_version) if os_version else None
        for device in self.devices:
            if device.name.casefold() != wanted_name or device.platform_key != platform:
                continue
            if wanted_version is None or normalise_version(device.os_version) == wanted_version:
                return device
        return None

    def first_for(self, platform: str) -> Device | None:
        """The catalogue's first phone of a platform (else its first device), or None when it has none: a
        run that names only a platform is refused when the catalogue has no device of it."""
        candidates = [d for d in self.devices if d.platform_key == platform]
        phones = [d for d in candidates if d.device_type == "phone"]
        chosen = phones or candidates
        return chosen[0] if chosen else None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def parse_catalogue(data: Any, source: str) -> Catalogue:
    if not isinstance(data, dict) or not isinstance(data.get("devices"), list):
        raise CatalogueError(f"{source}: expected a mapping with a 'devices' list")
    devices: list[Device] = []
    seen: set[str] = set()
    for index, entry in enumerate(data["devices"]):
        where = f"{source}: devices[{index}]"
        if not isinstance(entry, dict):
            raise CatalogueError(f"{where}: expected a mapping")
        try:
            name = str(entry["name"]).strip()
            platform = normalise_platform(str(entry["platform"]))
            os_version = str(entry["os_version"]).strip()
        except KeyError as exc:
            raise CatalogueError(f"{where}: missing {exc.args[0]}") from None
        if platform is None:
            raise CatalogueError(f"{where}: platform must be Android or iOS")
        device_type = str(entry.get("device_type", "phone"))
        if device_type not in DEVICE_TYPES:
            raise CatalogueError(f"{where}: device_type must be phone or tablet")
        device_id = str(entry.get("id") or f"dev_{_slug(name)}-{_slug(os_version)}")
        if device_id in seen:
            raise CatalogueError(f"{where}: duplicate device id {device_id}")
        seen.add(device_id)
        extra = {k: v for k, v in entry.items() if k not in {"id", "name", "platform", "os_version", "device_type"}}
        devices.append(Device(device_id, name, PLATFORMS[platform], os_version, device_type, extra))
    return Catalogue(devices)


def load_catalogue(path: Path | None) -> Catalogue:
    if path is None:
        text = resources.files("qualgent.devices").joinpath("devices.yaml").read_text()
        return parse_catalogue(yaml.safe_load(text), "built-in devices.yaml")
    return parse_catalogue(yaml.safe_load(path.read_text()), str(path))
