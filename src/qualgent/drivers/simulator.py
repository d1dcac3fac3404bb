"""Simulated devices: a real static check of the flow against the build, never passed off as a device.

The rule (documented in docs/flows.md): ``appId`` must equal the uploaded package's id; a step that
names a text or an id passes when the package contains it (APK string resources and resource names,
Info.plist values, the app label); ``assertNotVisible`` and the steps that name nothing pass. So the
outcome is deterministic: the same flow on the same build always gives the same result.
"""

from __future__ import annotations

import asyncio
import io
import textwrap
import time
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from qualgent.drivers.base import AppUnderTest, Artifact, DeviceConfig, StepResult
from qualgent.flows.model import Flow, Selector, Step
from qualgent.packages.inspect import PackageTexts, package_texts

SIMULATED = "simulated"
MAX_FRAMES = 600  # a recording keeps at most this many steps' pictures
SECONDS_PER_FRAME = 1  # each step stays on screen for a second in a simulated recording
# Commands about the app under test, and what the log says they did.
APP_COMMANDS = {
    "launchApp": "launched",
    "stopApp": "stopped",
    "killApp": "killed",
    "clearState": "cleared",
    "setPermissions": "permissions set",
}


@dataclass
class SimulatorDriver:
    """``step_seconds``: how long each step takes (a short, realistic delay; 0 for benchmarks)."""

    step_seconds: float = 0.2
    name: str = "simulator"

    async def open(self, device: DeviceConfig, app: AppUnderTest, flow: Flow) -> SimulatorSession:
        texts = await asyncio.to_thread(package_texts, app.path)
        return SimulatorSession(device, app, flow, texts, self.step_seconds)


class SimulatorSession:
    def __init__(
        self, device: DeviceConfig, app: AppUnderTest, flow: Flow, texts: PackageTexts, step_seconds: float
    ) -> None:
        self.device = device
        self.app = app
        self.flow = flow
        self.texts = texts
        self.step_seconds = step_seconds
        self.closed = False
        self.dark = False
        self.where = f"[{SIMULATED} {device.name} · {device.platform} {device.os_version}]"
        self.log: list[str] = []  # the simulated device's log: what each step did
        self.frames: list[bytes] | None = None  # while recording: a picture per step
        self.recording_name = "recording"

    async def run_step(self, step: Step) -> StepResult:
        if self.step_seconds:
            await asyncio.sleep(self.step_seconds)
        if step.command == "startRecording":
            self.recording_name = str(step.args.get("path") or "recording")
            await self.start_recording()
            return StepResult("passed", "", [f"{self.where} recording the simulated screen"])
        if step.command == "stopRecording":
            if self.frames is None:
                return StepResult("failed", "stopRecording: no recording was started")
            video = await self._stop_recording(self.recording_name)
            return StepResult("passed", "", [f"{self.where} recording stopped"], artifacts=[video] if video else [])
        result = self._judge(step)
        if result.status == "failed" and step.optional:
            result.status = "skipped"
            result.logs.append(f"{self.where} optional step failed; continuing")
        self.log.extend(f"{time.strftime('%H:%M:%S')} {line}" for line in result.logs)
        picture: bytes | None = None
        if step.command == "takeScreenshot" or result.status == "failed" or self.frames is not None:
            picture = await asyncio.to_thread(render_screenshot, self.device, step, result)
        if step.command == "takeScreenshot" or result.status == "failed":
            result.screenshot = picture
        if self.frames is not None and picture is not None and len(self.frames) < MAX_FRAMES:
            self.frames.append(picture)
        return result

    async def start_recording(self) -> None:
        if self.frames is None:
            self.frames = []

    async def stop_recording(self) -> Artifact | None:
        if self.frames is None:
            return None
        return await self._stop_recording("run")

    async def _stop_recording(self, name: str) -> Artifact | None:
        frames, self.frames = self.frames or [], None
        if not frames:
            return None
        data = await asyncio.to_thread(encode_video, frames)
        return Artifact(f"{name}.mp4", "video", "video/mp4", data)

    async def device_log(self) -> Artifact | None:
        if not self.log:
            return None
        text = "".join(f"{line}\n" for line in self.log)
        return Artifact("device.log", "log", "text/plain; charset=utf-8", text.encode())

    def _judge(self, step: Step) -> StepResult:
        what = step.describe()
        command = step.command
        if command in APP_COMMANDS:
            wanted = step.app_id or self.flow.app_id
            actual = self.app.package_id
            if wanted and actual and wanted != actual:
                return StepResult(
                    "failed",
                    f"appId {wanted!r} is not this build's package id {actual!r}.",
                    [f"{self.where} {what}: package is {actual}"],
                )
            return StepResult("passed", "", [f"{self.where} {what}: {actual or 'app'} {APP_COMMANDS[command]}"])
        if command == "assertNotVisible":
            return StepResult("passed", "", [f"{self.where} {what}: a simulated screen shows nothing unexpected"])
        if command in ("setDarkMode", "toggleDarkMode", "assertDarkMode", "assertLightMode"):
            return self._dark_mode(step, what)
        selector = step.selector
        if selector is None and isinstance(step.args.get("from"), Selector):
            selector = step.args["from"]
        if selector is None or (selector.text is None and selector.id is None):
            note = "nothing a simulated device can check" if selector is None else "no text or id to look for"
            return StepResult("passed", "", [f"{self.where} {what}: {note}; passed"])
        if selector.id is not None:
            found = self.texts.contains_id(selector.id)
            kind = "resource id"
            needle = selector.id
        else:
            needle = selector.text or ""
            found = self.texts.contains_text(needle)
            kind = "text"
        if found:
            value = (selector.text or "") if command == "copyTextFrom" else None
            return StepResult("passed", "", [f"{self.where} {what}: {kind} found in the build"], value=value)
        return StepResult(
            "failed",
            f"No {kind} {needle!r} in the build: the simulated device cannot find it on any screen.",
            [
                f"{self.where} {what}: {kind} not found among {len(self.texts.texts)} texts and {len(self.texts.ids)} ids"
            ],
        )

    def _dark_mode(self, step: Step, what: str) -> StepResult:
        """A simulated device starts in light mode and remembers what the flow sets."""
        if step.command == "setDarkMode":
            self.dark = step.args.get("value") == "enabled"
        elif step.command == "toggleDarkMode":
            self.dark = not self.dark
        else:
            wanted = step.command == "assertDarkMode"
            if self.dark != wanted:
                mode = "dark" if self.dark else "light"
                return StepResult("failed", f"The simulated device is in {mode} mode.", [f"{self.where} {what}"])
        return StepResult("passed", "", [f"{self.where} {what}: {'dark' if self.dark else 'light'} mode"])

    async def close(self) -> None:
        self.closed = True


def render_screenshot(device: DeviceConfig, step: Step, result: StepResult) -> bytes:
    """A generated picture of a phone showing the step, labelled as simulated."""
    width, height = (480, 640) if device.device_type == "tablet" else (360, 720)
    image = Image.new("RGB", (width, height), (245, 246, 248))
    draw = ImageDraw.Draw(image)
    title = ImageFont.load_default(size=18)
    body = ImageFont.load_default(size=16)
    draw.rectangle((0, 0, width, 56), fill=(32, 33, 36))
    draw.text((14, 10), f"SIMULATED · {device.name}", fill=(255, 255, 255), font=title)
    draw.text((14, 32), f"{device.platform} {device.os_version}", fill=(190, 190, 190), font=body)
    colour = {"passed": (26, 127, 55), "failed": (207, 34, 46), "skipped": (130, 130, 130)}[result.status]
    draw.rectangle((14, 80, width - 14, 120), outline=colour, width=3)
    draw.text((26, 90), f"step {step.index + 1}: {result.status}", fill=colour, font=title)
    y = 140
    for line in [*textwrap.wrap(step.describe(), 34)[:8], "", *textwrap.wrap(result.message, 36)[:12]]:
        draw.text((20, y), line, fill=(32, 33, 36), font=body)
        y += 22
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def encode_video(frames: list[bytes]) -> bytes:
    """An H.264 MP4 (what Appium records, and what browsers play) showing each picture for a second."""
    import av  # FFmpeg's libraries; imported here, when a simulated recording is made

    first = Image.open(io.BytesIO(frames[0]))
    # H.264 with 4:2:0 colour needs even dimensions.
    width, height = first.width // 2 * 2, first.height // 2 * 2
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "28"}
        for png in frames:
            with Image.open(io.BytesIO(png)) as picture:
                image = (
                    picture.convert("RGB").resize((width, height))
                    if picture.size != (width, height)
                    else picture.convert("RGB")
                )
            frame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
            for _ in range(SECONDS_PER_FRAME):
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()
