"""What a device agent needs from a driver: open a session on a device, run steps, always close.

Each backend lives in its own module (``simulator``, ``appium``) and implements ``Driver``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from qualgent.flows.model import Flow, Step

StepStatus = Literal["passed", "failed", "skipped"]


class InfrastructureError(Exception):
    """The device or its server failed (not the app under test): the run may be retried elsewhere."""


@dataclass(frozen=True)
class DeviceConfig:
    """A device an agent serves, from its devices file (or the built-in simulated catalogue)."""

    id: str
    name: str
    platform: str  # Android | iOS
    os_version: str
    device_type: str = "phone"
    driver: str = "simulator"  # simulator | appium
    # Driver settings, e.g. for appium: {"server_url": "...", "capabilities": {...}}
    options: dict[str, Any] = field(default_factory=dict)
    # Tags the agent declares for the device (a pool NAME is the tag `pool:NAME`); selectors match them.
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class AppUnderTest:
    path: str  # the app file on the agent's disk (cached by SHA-256)
    sha256: str
    platform: str  # android | ios
    package_id: str | None  # package name / bundle id read from the build, when known
    metadata: dict[str, Any] = field(default_factory=dict)  # what packages.inspect read from the build


@dataclass
class Artifact:
    """A file a run produced besides screenshots: a screen recording, the device's log."""

    name: str  # e.g. "login.mp4", "device.log"
    kind: str  # video | log
    content_type: str
    data: bytes


@dataclass
class StepResult:
    status: StepStatus
    message: str = ""
    logs: list[str] = field(default_factory=list)
    screenshot: bytes | None = None  # PNG
    value: str | None = None  # what the step read off the device (copyTextFrom: the element's text)
    artifacts: list[Artifact] = field(default_factory=list)  # stopRecording: the video


class DeviceSession(Protocol):
    async def run_step(self, step: Step) -> StepResult:
        """Run one step; a failed assertion is a ``failed`` result, never an exception.

        Raises InfrastructureError when the device itself fails.
        """
        ...

    async def close(self) -> None:
        """End the session on the device. Always called, also after errors and cancellation."""
        ...

    async def start_recording(self) -> None:
        """Start recording the screen (the whole run's video); an error is logged, never raised."""
        ...

    async def stop_recording(self) -> Artifact | None:
        """Stop a recording started by ``start_recording`` (or a flow's startRecording): its video."""
        ...

    async def device_log(self) -> Artifact | None:
        """The device's log since the session started (trimmed), or None when there is none."""
        ...


class Driver(Protocol):
    name: str

    async def open(self, device: DeviceConfig, app: AppUnderTest, flow: Flow) -> DeviceSession:
        """Start a session with the app installed/launched as the driver needs.

        Raises InfrastructureError when no session can be created.
        """
        ...
