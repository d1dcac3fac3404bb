"""An agent's devices file: the catalogue format, plus which driver runs each device, its settings, and
the tags and pools runs' device selectors match."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from qualgent.devices.catalogue import Catalogue, CatalogueError, load_catalogue, parse_catalogue
from qualgent.devices.selectors import POOL_PREFIX
from qualgent.drivers.base import DeviceConfig

# What the built-in catalogue's simulated devices declare (with their device type: phone | tablet).
SIMULATED_TAG = "simulated"


def _names(value: Any, where: str) -> list[str]:
    """``tags: [a, b]`` or ``tags: a``; every tag a non-empty string."""
    values = value if isinstance(value, list) else [value]
    out = []
    for item in values:
        if not isinstance(item, str | int | float) or not str(item).strip() or len(str(item).strip()) > 100:
            raise CatalogueError(f"{where}: tags and pools are non-empty strings of at most 100 characters")
        out.append(str(item).strip())
    return out


def devices_from_catalogue(
    catalogue: Catalogue, default_driver: str = "simulator", default_tags: bool = False
) -> list[DeviceConfig]:
    """The devices of a devices file; ``default_tags`` gives a device that declares none its device
    type and ``simulated`` (the built-in catalogue served as simulated devices)."""
    configs = []
    for device in catalogue.devices:
        extra: dict[str, Any] = dict(device.extra)
        driver = str(extra.pop("driver", default_driver))
        options = extra.pop(driver, None) or extra.pop("options", None) or {}
        where = f"device {device.id}"
        tags = _names(extra.pop("tags", None) or [], where)
        for key in ("pool", "pools"):
            tags += [POOL_PREFIX + name for name in _names(extra.pop(key, None) or [], where)]
        if not tags and default_tags:
            tags = [device.device_type, SIMULATED_TAG]
        configs.append(
            DeviceConfig(
                id=device.id,
                name=device.name,
                platform=device.platform,
                os_version=device.os_version,
                device_type=device.device_type,
                driver=driver,
                options=dict(options),
                tags=tuple(dict.fromkeys(tags)),
            )
        )
    return configs


def load_devices(path: Path | None) -> list[DeviceConfig]:
    """Devices from a YAML file (see docs/agents.md), or the built-in catalogue as simulated devices
    (tagged with their device type and ``simulated``)."""
    if path is None:
        return devices_from_catalogue(load_catalogue(None), default_tags=True)
    return devices_from_catalogue(parse_catalogue(yaml.safe_load(path.read_text()), str(path)))
