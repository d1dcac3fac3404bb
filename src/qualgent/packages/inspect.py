"""What an uploaded build is: its kind, platform and what its package says about itself.

Reading is bounded: only the zip's central directory and small, size-checked members are read, so a
hostile archive costs fixed memory and time.
"""

from __future__ import annotations

import plistlib
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any

MAX_ENTRIES = 100_000
MAX_PLIST_BYTES = 2 * 1024 * 1024

KIND_PLATFORM = {"apk": "android", "aab": "android", "ipa": "ios", "app.zip": "ios"}
EXTENSION_KIND = {".apk": "apk", ".aab": "aab", ".ipa": "ipa", ".zip": "app.zip"}
MIME_TYPES = {
    "apk": "application/vnd.android.package-archive",
    "aab": "application/x-authorware-bin",
    "ipa": "application/octet-stream",
    "app.zip": "application/zip",
}

_IPA_PLIST = re.compile(r"^Payload/[^/]+\.app/Info\.plist$")
_APP_PLIST = re.compile(r"^(?:[^/]+/)?[^/]+\.app/Info\.plist$")


class PackageError(ValueError):
    """The file is not the package it claims to be; the message says what is wrong."""


@dataclass
class PackageInfo:
    kind: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def platform(self) -> str:
        return KIND_PLATFORM[self.kind]

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.kind]


def kind_from_name(filename: str) -> str | None:
    lower = filename.lower()
    for ext, kind in EXTENSION_KIND.items():
        if lower.endswith(ext):
            return kind
    return None


def inspect_package(path: str, claimed_kind: str | None) -> PackageInfo:
    """Identify the package at ``path``; raise PackageError when it is not what its name claims."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        what = f"an {claimed_kind.upper()}" if claimed_kind in ("apk", "aab", "ipa") else "a mobile app package"
        raise PackageError(
            f"The file is not {what}: it is not a zip archive. Upload an .apk, .aab, .ipa or a zipped .app."
        ) from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ENTRIES:
            raise PackageError(f"The archive has more than {MAX_ENTRIES} entries; refusing to inspect it.")
        names = {info.filename: info for info in infos}
        found = _detect(names)
        if found is None:
            expected = {
                "apk": "an APK has AndroidManifest.xml at its root",
                "aab": "an AAB has base/manifest/AndroidManifest.xml",
                "ipa": "an IPA has Payload/<name>.app/Info.plist",
                "app.zip": "a zipped simulator build has <name>.app/Info.plist",
            }
            hint = expected.get(claimed_kind or "", "no Android manifest or iOS Info.plist was found")
            raise PackageError(f"The file is not a valid {claimed_kind or 'app package'}: {hint}.")
        kind, member = found
        if claimed_kind is not None and claimed_kind != kind:
            # A zipped .app named .zip is fine; anything else must match its extension.
            raise PackageError(
                f"The file's name says {claimed_kind} but its content is {kind}; rename it or upload the right file."
            )
        metadata: dict[str, Any] = {"package_type": kind}
        if kind in ("ipa", "app.zip"):
            metadata.update(_read_plist(archive, names[member]))
        return PackageInfo(kind, metadata)


def _detect(names: dict[str, zipfile.ZipInfo]) -> tuple[str, str] | None:
    if "AndroidManifest.xml" in names:
        return "apk", "AndroidManifest.xml"
    if "base/manifest/AndroidManifest.xml" in names:
        return "aab", "base/manifest/AndroidManifest.xml"
    for name in names:
        if _IPA_PLIST.match(name):
            return "ipa", name
    for name in names:
        if _APP_PLIST.match(name):
            return "app.zip", name
    return None


def _read_plist(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict[str, Any]:
    if info.file_size > MAX_PLIST_BYTES:
        raise PackageError("Info.plist is implausibly large; refusing to read it.")
    with archive.open(info) as fh:
        raw = fh.read(MAX_PLIST_BYTES + 1)
    if len(raw) > MAX_PLIST_BYTES:
        raise PackageError("Info.plist is implausibly large; refusing to read it.")
    try:
        plist = plistlib.loads(raw)
    except Exception:
        raise PackageError("Info.plist is not a readable property list.") from None
    if not isinstance(plist, dict):
        raise PackageError("Info.plist is not a dictionary.")

    def text(key: str) -> str | None:
        value = plist.get(key)
        return str(value)[:500] if isinstance(value, str | int) else None

    fields = {
        "bundle_id": text("CFBundleIdentifier"),
        "version_name": text("CFBundleShortVersionString"),
        "build_number": text("CFBundleVersion"),
        "display_name": text("CFBundleDisplayName") or text("CFBundleName"),
        "min_os_version": text("MinimumOSVersion") or text("LSMinimumSystemVersion"),
    }
    return {k: v for k, v in fields.items() if v is not None}
