"""What a run may run on, and which devices fit: a run's *target*.

A run names one device (``device``: kept, as the reference has it), or only a platform, or a device
selector; the last two are matched when a device claims the run, not when it is queued. Every run has
a target, stored once per distinct spec in ``device_targets`` (the key is a hash of the spec, so equal
asks share a row), and ``device_matches`` records which registered devices fit which target. The claim
then asks only "is this run's target one of my free devices' targets?", a column compared with a list.

Matching rules (:meth:`TargetSpec.matches`):
- ``platform``: always part of a target (android | ios).
- ``devices``: any of these named devices, by name (case-insensitive) and OS version (``14`` = ``14.0``).
- ``names``: the device's name is one of these (case-insensitive), any OS version.
- ``os``: every comparison holds for the device's OS version, compared numerically part by part
  (``13.1 > 13``, ``14 == 14.0``); a device whose version has no number never fits a comparison.
- ``model``: a shell-style pattern (``*``, ``?``, ``[…]``) over the device's name, case-insensitive.
- ``tags``: the device declares every one of them (a pool ``lab-a`` is the tag ``pool:lab-a``).
- ``device_type``: phone | tablet.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qualgent.devices.catalogue import PLATFORMS, normalise_version

OPERATORS = ("==", ">=", "<=", ">", "<", "!=")
_CONSTRAINT = re.compile(r"^\s*(==|=|>=|<=|>|<|!=)?\s*(\d+(?:\.\d+)*)\s*$")
_VERSION = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")
POOL_PREFIX = "pool:"


class SelectorError(ValueError):
    """A selector that cannot be matched (a malformed OS comparison, an empty pattern)."""


def version_key(text: str) -> tuple[int, ...] | None:
    """``"14.0"`` → ``(14,)``, ``"13.1.2"`` → ``(13, 1, 2)``; None when the text starts with no number."""
    found = _VERSION.match(text)
    if found is None:
        return None
    parts = [int(p) for p in found.group(1).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def parse_os(expression: str) -> tuple[tuple[str, str], ...]:
    """``">=13"``, ``"14"``, ``">=13,<15"`` → ((operator, normalised version), …), sorted. A bare version
    means ``==``."""
    out = []
    for part in expression.split(","):
        found = _CONSTRAINT.match(part)
        if found is None:
            raise SelectorError(
                f"os_version {expression!r}: write a version with an optional comparison "
                "(14, ==14, >=13, >13, <=15, <15, !=14), several joined by commas"
            )
        operator = found.group(1) or "=="
        out.append(("==" if operator == "=" else operator, normalise_version(found.group(2))))
    return tuple(sorted(set(out)))


def _compare(device: tuple[int, ...], operator: str, wanted: tuple[int, ...]) -> bool:
    width = max(len(device), len(wanted))
    a, b = device + (0,) * (width - len(device)), wanted + (0,) * (width - len(wanted))
    return {
        "==": a == b,
        "!=": a != b,
        ">=": a >= b,
        "<=": a <= b,
        ">": a > b,
        "<": a < b,
    }[operator]


@dataclass(frozen=True)
class DeviceFacts:
    """What a registered device says about itself, as matching sees it."""

    name: str
    platform: str  # Android | iOS (any case)
    os_version: str
    device_type: str = "phone"
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class TargetSpec:
    """A run's target. Equal specs are one ``device_targets`` row (see :attr:`key`)."""

    platform: str  # android | ios
    devices: tuple[tuple[str, str], ...] = ()  # (casefolded name, normalised OS version)
    names: tuple[str, ...] = ()  # casefolded
    os: tuple[tuple[str, str], ...] = ()
    model: str | None = None  # casefolded pattern
    tags: tuple[str, ...] = ()
    device_type: str | None = None
    # How people wrote it, for labels and the run's `device_selector`; not part of the identity.
    display: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def pinned(self) -> bool:
        """One named device and nothing else: the run keeps that device (the reference's `device`)."""
        return len(self.devices) == 1 and not (self.names or self.os or self.model or self.tags or self.device_type)

    def canonical(self) -> str:
        body: dict[str, Any] = {"platform": self.platform}
        if self.devices:
            body["devices"] = [list(d) for d in self.devices]
        if self.names:
            body["names"] = list(self.names)
        if self.os:
            body["os"] = [list(c) for c in self.os]
        if self.model is not None:
            body["model"] = self.model
        if self.tags:
            body["tags"] = list(self.tags)
        if self.device_type is not None:
            body["device_type"] = self.device_type
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        """The target's ID: a hash of the canonical spec, so every process names it alike."""
        return "tgt_" + hashlib.sha256(self.canonical().encode()).hexdigest()[:32]

    def matches(self, device: DeviceFacts) -> bool:
        if device.platform.lower() != self.platform:
            return False
        name = device.name.strip().casefold()
        if self.devices:
            version = normalise_version(device.os_version)
            if (name, version) not in self.devices:
                return False
        if self.names and name not in self.names:
            return False
        if self.os:
            have = version_key(device.os_version)
            if have is None:
                return False
            for operator, wanted in self.os:
                wanted_key = version_key(wanted)
                assert wanted_key is not None  # parse_os accepts numbers only
                if not _compare(have, operator, wanted_key):
                    return False
        if self.model is not None and not fnmatch.fnmatchcase(name, self.model):
            return False
        if self.tags and not set(self.tags) <= set(device.tags):
            return False
        return self.device_type is None or device.device_type == self.device_type

    # ------------------------------------------------------------------------------ how it is shown

    def label(self) -> str | None:
        """What a queued run shows as its device while no device has taken it; None when pinned (the
        run shows its named device)."""
        if self.pinned:
            return None
        platform = PLATFORMS[self.platform]
        shown = self.display
        if self.devices:
            names = [f"{n} ({v})" for n, v in shown.get("devices", [])] or [f"{n} ({v})" for n, v in self.devices]
            return f"{' or '.join(names)} ({platform})"[:300]
        parts = []
        if self.names:
            parts.append("name " + " or ".join(shown.get("names", self.names)))
        if self.os:
            parts.append("os_version " + self.os_text())
        if self.model is not None:
            parts.append("model " + str(shown.get("model", self.model)))
        if self.tags:
            parts.append("tags " + ", ".join(self.tags))
        if self.device_type is not None:
            parts.append(self.device_type)
        if not parts:
            return f"any {platform} device"
        return f"{platform} device: {'; '.join(parts)}"[:300]

    def os_text(self) -> str:
        return ",".join(f"{op}{version}" for op, version in self.os)

    def public(self) -> dict[str, Any] | None:
        """The run's ``device_selector`` (what was asked, in the request's terms); None when pinned."""
        if self.pinned:
            return None
        out: dict[str, Any] = {"platform": self.platform}
        shown = self.display
        if self.devices:
            out["devices"] = [
                {"name": n, "os_version": v} for n, v in shown.get("devices", [list(d) for d in self.devices])
            ]
        if self.names:
            out["name"] = list(shown.get("names", self.names))
        if self.os:
            out["os_version"] = self.os_text()
        if self.model is not None:
            out["model"] = shown.get("model", self.model)
        if self.tags:
            out["tags"] = list(self.tags)
        if self.device_type is not None:
            out["device_type"] = self.device_type
        if len(out) == 1:
            out["any"] = True
        return out


def _clean(values: Iterable[str]) -> list[str]:
    return sorted({v.strip() for v in values if v.strip()})


def pinned(name: str, platform: str, os_version: str) -> TargetSpec:
    """The target of a run that names one device (a catalogue device, or one an agent registered)."""
    return TargetSpec(
        platform=platform.lower(),
        devices=((name.strip().casefold(), normalise_version(os_version)),),
        display={"devices": [[name, os_version]]},
    )


def one_of(platform: str, devices: Sequence[tuple[str, str]]) -> TargetSpec:
    """Any of these named devices (spread over a list of devices); one device is :func:`pinned`."""
    if len(devices) == 1:
        return pinned(devices[0][0], platform, devices[0][1])
    keys = sorted({(n.strip().casefold(), normalise_version(v)) for n, v in devices})
    return TargetSpec(platform=platform.lower(), devices=tuple(keys), display={"devices": [list(d) for d in devices]})


def selector(
    platform: str,
    *,
    name: str | Sequence[str] | None = None,
    os_version: str | None = None,
    model: str | None = None,
    tags: Sequence[str] | None = None,
    pool: str | None = None,
    device_type: str | None = None,
) -> TargetSpec:
    """A late-bound target: ``platform`` alone (or with nothing else set) means any device of it."""
    names = [name] if isinstance(name, str) else list(name or [])
    shown_names = _clean(names)
    all_tags = _clean([*(tags or []), *([POOL_PREFIX + pool.strip()] if pool and pool.strip() else [])])
    pattern = model.strip() if model is not None else None
    if pattern == "":
        raise SelectorError("model: give a pattern such as 'Pixel *'")
    display: dict[str, Any] = {}
    if shown_names:
        display["names"] = shown_names
    if pattern is not None:
        display["model"] = pattern
    return TargetSpec(
        platform=platform.lower(),
        names=tuple(sorted({n.casefold() for n in shown_names})),
        os=parse_os(os_version) if os_version is not None and os_version.strip() else (),
        model=pattern.casefold() if pattern is not None else None,
        tags=tuple(all_tags),
        device_type=device_type,
        display=display,
    )


def from_canonical(text: str) -> TargetSpec:
    """A stored target's spec (``device_targets.spec``) as a :class:`TargetSpec`, for matching."""
    body = json.loads(text)
    return TargetSpec(
        platform=body["platform"],
        devices=tuple((str(n), str(v)) for n, v in body.get("devices", [])),
        names=tuple(body.get("names", [])),
        os=tuple((str(op), str(v)) for op, v in body.get("os", [])),
        model=body.get("model"),
        tags=tuple(body.get("tags", [])),
        device_type=body.get("device_type"),
    )
