"""An agent's devices file: the catalogue format, plus which driver runs each device and its settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from qualgent.devices.catalogue import Catalogue, load_catalogue, parse_catalogue
from qualgent.drivers.base import DeviceConfig


def devices_from_catalogue(catalogue: Catalogue, default_driver: str = "simulator") -> list[DeviceConfig]:
    configs = []
    for device in catalogue.devices:
        extra: dict[str, Any] = dict(device.extra)
        driver = str(extra.pop("driver", default_driver))
        options = extra.pop(driver, None) or extra.pop("options", None) or {}
        configs.append(
            DeviceConfig(
                id=device.id,
                name=device.name,
                platform=device.platform,
                os_version=device.os_version,
                device_type=device.device_type,
                driver=driver,
                options=dict(options),
            )
        )
    return configs


def load_devices(path: Path | None) -> list[DeviceConfig]:
    """Devices from a YAML file (see docs/agents.md), or the built-in catalogue as simulated devices."""
    if path is None:
        return devices_from_catalogue(load_catalogue(None))
    return devices_from_catalogue(parse_catalogue(yaml.safe_load(path.read_text()), str(path)))
