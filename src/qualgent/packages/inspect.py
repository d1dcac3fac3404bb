"""What an uploaded build is: its kind, platform and what its package says about itself.

Reading is bounded: only the zip's central directory and a few size-checked members are read (the
manifest, resources.arsc when a manifest value refers to it, Info.plist), each refused past a size
or compression-ratio limit before a byte is inflated, and read with a cap because a zip's declared
sizes can lie. The parsers behind it do work linear in those capped sizes.
"""

from __future__ import annotations

import lzma
import os
import plistlib
import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from qualgent.packages.aab import ProtoResourceTable, parse_proto_manifest
from qualgent.packages.arsc import ResourceTable
from qualgent.packages.axml import parse_manifest
from qualgent.packages.binres import FormatError, ResourceRef, Value
from qualgent.packages.manifest import Manifest

MAX_ENTRIES = 100_000
# 100,000 entries with paths of a few hundred characters fit well within this.
MAX_DIRECTORY_BYTES = 64 * 1024 * 1024
# The end-of-central-directory record (22 bytes) plus the longest zip comment (65,535 bytes).
_EOCD_SEARCH = 22 + 65_535
MAX_PLIST_BYTES = 2 * 1024 * 1024
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_TABLE_BYTES = 64 * 1024 * 1024
# Manifests and resource tables deflate 3-10x; a bomb of zeros deflates ~1000x.
MAX_COMPRESSION_RATIO = 200
# A resource table's value pool holds every translation: Android's own framework-res has 127,684
# strings, so the table's limit is higher than a manifest's (binres.MAX_STRINGS).
MAX_TABLE_STRINGS = 1_000_000
MAX_TEXT_CHARS = 500
# Info.plist values walked for package_texts (binary plists can share one object many times over).
MAX_PLIST_NODES = 200_000
MAX_PLIST_DEPTH = 100

KIND_PLATFORM = {"apk": "android", "aab": "android", "ipa": "ios", "app.zip": "ios"}
EXTENSION_KIND = {".apk": "apk", ".aab": "aab", ".ipa": "ipa", ".zip": "app.zip"}
MIME_TYPES = {
    "apk": "application/vnd.android.package-archive",
    "aab": "application/x-authorware-bin",
    "ipa": "application/octet-stream",
    "app.zip": "application/zip",
}

APK_MANIFEST = "AndroidManifest.xml"
APK_TABLE = "resources.arsc"
AAB_MANIFEST = "base/manifest/AndroidManifest.xml"
AAB_TABLE = "base/resources.pb"

_IPA_PLIST = re.compile(r"^Payload/[^/]+\.app/Info\.plist$")
_APP_PLIST = re.compile(r"^(?:[^/]+/)?[^/]+\.app/Info\.plist$")
_UNSAFE_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# printf-style placeholders in Android strings: %s, %d, %1$s, %.2f.
_FORMAT = re.compile(r"%(?:\d+\$)?[-#+0]*\d*(?:\.\d+)?[a-zA-Z]")
MAX_FORMAT_PATTERNS = 10_000
MAX_FORMAT_NEEDLE = 1000
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, RuntimeError, NotImplementedError)


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


@dataclass
class PackageTexts:
    """What a test can look for in the app, kept out of the metadata because it can be large.

    ``texts``: strings the app can show (Android string resources in their default configuration,
    else their first, and a literal manifest label; Info.plist string values on iOS). ``ids``:
    Android resource names as ``type/name`` (``id/login_button``, ``string/app_name``); empty on
    iOS. ``strings``: Android string resources, ``name -> value``.
    """

    texts: set[str] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)
    strings: dict[str, str] = field(default_factory=dict)

    def contains_id(self, needle: str) -> bool:
        """Whether a view ID a flow names exists: ``login_button``, ``id/login_button``,
        ``@+id/login_button`` and ``com.example:id/login_button`` all name ``id/login_button``."""
        name = needle.strip().lstrip("@+").rsplit(":", 1)[-1]
        if not name:
            return False
        return (name if "/" in name else f"id/{name}") in self.ids

    def contains_text(self, needle: str) -> bool:
        """Whether the app can show ``needle``: a text equal to it (ignoring case), or a format string
        (``Hello, %1$s``) that renders to it."""
        needle = needle.strip()
        if not needle:
            return False
        if needle in self.texts or needle.casefold() in self._folded:
            return True
        return len(needle) <= MAX_FORMAT_NEEDLE and any(pattern.fullmatch(needle) for pattern in self._formats)

    @cached_property
    def _folded(self) -> set[str]:
        return {text.strip().casefold() for text in self.texts}

    @cached_property
    def _formats(self) -> list[re.Pattern[str]]:
        patterns: list[re.Pattern[str]] = []
        for text in self.texts:
            if "%" not in text or len(patterns) >= MAX_FORMAT_PATTERNS:
                continue
            parts = _FORMAT.split(text.strip())
            if len(parts) < 2 or not "".join(parts).strip():
                continue  # no placeholder, or nothing but placeholders (which would match any text)
            # Adjacent placeholders become one wildcard, so literal text separates every wildcard and
            # matching stays linear in the needle.
            inner = [re.escape(part) for part in parts[1:-1] if part]
            body = ".+?".join([re.escape(parts[0]), *inner, re.escape(parts[-1])])
            patterns.append(re.compile(body, re.IGNORECASE | re.DOTALL))
        return patterns


def kind_from_name(filename: str) -> str | None:
    lower = filename.lower()
    for ext, kind in EXTENSION_KIND.items():
        if lower.endswith(ext):
            return kind
    return None


def inspect_package(path: str, claimed_kind: str | None) -> PackageInfo:
    """Identify the package at ``path``; raise PackageError when it is not what its name claims."""
    with _open(path, claimed_kind) as archive:
        names = _members(archive)
        kind, member = _identify(names, claimed_kind)
        metadata: dict[str, Any] = {"package_type": kind}
        if kind == "apk":
            metadata.update(_apk_metadata(archive, names))
        elif kind == "aab":
            metadata.update(_aab_metadata(archive, names))
        else:
            metadata.update(_plist_metadata(_read_plist(archive, names[member])))
        return PackageInfo(kind, metadata)


def package_texts(path: str) -> PackageTexts:
    """The texts and resource names in the package at ``path``; PackageError when it cannot be read."""
    with _open(path, None) as archive:
        names = _members(archive)
        kind, member = _identify(names, None)
        if kind == "apk":
            return _apk_texts(archive, names)
        if kind == "aab":
            return _aab_texts(archive, names)
        return PackageTexts(texts=_plist_texts(_read_plist(archive, names[member])))


# ------------------------------------------------------------------------------------ the archive


def _directory_size(path: str) -> tuple[int, int] | None:
    """(entries, bytes) of the zip's central directory, from its end record; None when there is none.

    Python's ZipFile reads the whole central directory into objects before anything can be checked,
    and a hostile archive can declare millions of entries in a few hundred megabytes: read the end
    record first (the last 64 KiB, plus the ZIP64 record it may point to) and refuse before that.
    """
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        tail_start = max(0, size - _EOCD_SEARCH)
        fh.seek(tail_start)
        tail = fh.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        entries, directory = struct.unpack_from("<HI", tail, at + 10)
        if entries == 0xFFFF or directory == 0xFFFFFFFF:
            locator = at - 20
            if locator < 0 or tail[locator : locator + 4] != b"PK\x06\x07":
                return entries, directory
            (record,) = struct.unpack_from("<Q", tail, locator + 8)
            if record > size - 56:
                return None
            fh.seek(record)
            zip64 = fh.read(56)
            if len(zip64) < 56 or zip64[:4] != b"PK\x06\x06":
                return None
            entries, directory = struct.unpack_from("<QQ", zip64, 32)
        return entries, directory


def _open(path: str, claimed_kind: str | None) -> zipfile.ZipFile:
    declared = _directory_size(path)
    if declared is not None:
        entries, directory = declared
        if entries > MAX_ENTRIES or directory > MAX_DIRECTORY_BYTES:
            raise PackageError(
                f"The archive declares {entries} entries in a {directory}-byte directory (the limits are "
                f"{MAX_ENTRIES} entries and {_megabytes(MAX_DIRECTORY_BYTES)}); refusing to inspect it."
            )
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        what = f"an {claimed_kind.upper()}" if claimed_kind in ("apk", "aab", "ipa") else "a mobile app package"
        raise PackageError(
            f"The file is not {what}: it is not a zip archive. Upload an .apk, .aab, .ipa or a zipped .app."
        ) from None


def _members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise PackageError(f"The archive has more than {MAX_ENTRIES} entries; refusing to inspect it.")
    return {info.filename: info for info in infos}


def _identify(names: dict[str, zipfile.ZipInfo], claimed_kind: str | None) -> tuple[str, str]:
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
    kind = found[0]
    if claimed_kind is not None and claimed_kind != kind:
        # A zipped .app named .zip is fine; anything else must match its extension.
        raise PackageError(
            f"The file's name says {claimed_kind} but its content is {kind}; rename it or upload the right file."
        )
    return found


def _detect(names: dict[str, zipfile.ZipInfo]) -> tuple[str, str] | None:
    if APK_MANIFEST in names:
        return "apk", APK_MANIFEST
    if AAB_MANIFEST in names:
        return "aab", AAB_MANIFEST
    for name in names:
        if _IPA_PLIST.match(name):
            return "ipa", name
    for name in names:
        if _APP_PLIST.match(name):
            return "app.zip", name
    return None


def _read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, what: str, *, check_ratio: bool = True
) -> bytes:
    """The member's bytes, refused when it declares (or turns out) larger than ``limit``, or inflates too much."""
    too_large = f"{what} is larger than {_megabytes(limit)} uncompressed; refusing to read it."
    if info.file_size > limit:
        raise PackageError(too_large)
    if check_ratio and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
        raise PackageError(
            f"{what} inflates more than {MAX_COMPRESSION_RATIO} times its compressed size "
            "(a zip bomb?); refusing to read it."
        )
    try:
        with archive.open(info) as fh:
            # The declared size can lie: never read more than the limit, whatever it says.
            raw = fh.read(limit + 1)
    except _READ_ERRORS as exc:
        raise PackageError(f"{what} cannot be read from the archive: {exc}.") from None
    if len(raw) > limit:
        raise PackageError(too_large)
    return raw


def _megabytes(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MB"


def _clean(value: str) -> str:
    # Metadata is stored as JSON (PostgreSQL refuses \u0000) and shown in pages: no control characters.
    return _UNSAFE_TEXT.sub("", value)[:MAX_TEXT_CHARS]


# ---------------------------------------------------------------------------------------- Android


def _apk_manifest(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Manifest:
    data = _read_member(archive, info, MAX_MANIFEST_BYTES, "The APK's AndroidManifest.xml")
    try:
        manifest = parse_manifest(data)
    except FormatError as exc:
        raise PackageError(f"The APK's AndroidManifest.xml is not valid binary XML: {exc}.") from None
    if not manifest.package:
        raise PackageError("The APK's AndroidManifest.xml names no package; it is not an installable app.")
    return manifest


def _apk_table(archive: zipfile.ZipFile, names: dict[str, zipfile.ZipInfo]) -> ResourceTable | None:
    info = names.get(APK_TABLE)
    if info is None:
        return None
    data = _read_member(archive, info, MAX_TABLE_BYTES, "The APK's resources.arsc")
    try:
        return ResourceTable(data, MAX_TABLE_STRINGS)
    except FormatError as exc:
        raise PackageError(f"The APK's resources.arsc is not a valid resource table: {exc}.") from None


def _apk_metadata(archive: zipfile.ZipFile, names: dict[str, zipfile.ZipInfo]) -> dict[str, Any]:
    manifest = _apk_manifest(archive, names[APK_MANIFEST])
    table: ResourceTable | None = None
    loaded = False

    def resolve(ref: ResourceRef) -> tuple[Value | None, ResourceRef]:
        nonlocal table, loaded
        if not loaded:
            table, loaded = _apk_table(archive, names), True
        if table is None:
            return None, ref
        try:
            return table.resolve(ref.id), ResourceRef(ref.id, table.name_of(ref.id))
        except FormatError as exc:
            raise PackageError(f"The APK's resources.arsc is not a valid resource table: {exc}.") from None

    return _android_metadata(manifest, resolve)


def _aab_manifest(archive: zipfile.ZipFile, names: dict[str, zipfile.ZipInfo]) -> Manifest:
    data = _read_member(archive, names[AAB_MANIFEST], MAX_MANIFEST_BYTES, "The AAB's manifest")
    try:
        manifest = parse_proto_manifest(data)
    except FormatError as exc:
        raise PackageError(f"The AAB's base/manifest/AndroidManifest.xml is not valid proto XML: {exc}.") from None
    if not manifest.package:
        raise PackageError("The AAB's manifest names no package; it is not an app bundle.")
    return manifest


def _aab_table(archive: zipfile.ZipFile, names: dict[str, zipfile.ZipInfo]) -> ProtoResourceTable | None:
    info = names.get(AAB_TABLE)
    if info is None:
        return None
    data = _read_member(archive, info, MAX_TABLE_BYTES, "The AAB's resources.pb")
    try:
        return ProtoResourceTable.parse(data)
    except FormatError as exc:
        raise PackageError(f"The AAB's resources.pb is not a valid resource table: {exc}.") from None


def _aab_metadata(archive: zipfile.ZipFile, names: dict[str, zipfile.ZipInfo]) -> dict[str, Any]:
    manifest = _aab_manifest(archive, names)
    table: ProtoResourceTable | None = None
    loaded = False

    def resolve(ref: ResourceRef) -> tuple[Value | None, ResourceRef]:
        nonlocal table, loaded
        if not loaded:
            table, loaded = _aab_table(archive, names), True
        if table is None:
            return None, ref
        return table.resolve(ref), ResourceRef(ref.id, ref.name or table.names.get(ref.id))

    return _android_metadata(manifest, resolve)


def _android_metadata(
    manifest: Manifest, resolve: Callable[[ResourceRef], tuple[Value | None, ResourceRef]]
) -> dict[str, Any]:
    references: dict[str, str] = {}

    def value(key: str, raw: Value | None) -> Value | None:
        if isinstance(raw, ResourceRef):
            resolved, named = resolve(raw)
            references[key] = str(named)
            return None if isinstance(resolved, ResourceRef) else resolved
        return raw

    version_code = _as_int(value("version_code", manifest.version_code))
    version_name = value("version_name", manifest.version_name)
    label = value("app_label", manifest.label)
    fields: dict[str, Any] = {
        "package_id": manifest.package,
        "package_name": manifest.package,
        "version_code": version_code,
        "version_name": _as_text(version_name),
        "min_sdk": _sdk(value("min_sdk", manifest.min_sdk)),
        "target_sdk": _sdk(value("target_sdk", manifest.target_sdk)),
        "permissions": [_clean(p) for p in manifest.permissions],
        "app_label": _as_text(label),
        "display_name": _as_text(label),
    }
    if "app_label" in references and fields["app_label"] is None:
        # The label names a resource this package does not resolve: say which.
        fields["app_label_resource"] = references["app_label"]
    return {k: (_clean(v) if isinstance(v, str) else v) for k, v in fields.items() if v is not None}


def _as_int(value: Value | None) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _as_text(value: Value | None) -> str | None:
    if isinstance(value, bool) or value is None or isinstance(value, ResourceRef):
        return None
    return str(value) or None


def _sdk(value: Value | None) -> int | str | None:
    # An SDK level is a number, or a preview's codename ("Tiramisu").
    number = _as_int(value)
    return number if number is not None else _as_text(value)


def _apk_texts(archive: zipfile.ZipFile, names: dict[str, zipfile.ZipInfo]) -> PackageTexts:
    manifest = _apk_manifest(archive, names[APK_MANIFEST])
    table = _apk_table(archive, names)
    texts = {manifest.label} if isinstance(manifest.label, str) else set()
    if table is None:
        return PackageTexts(texts=texts)
    try:
        strings = table.strings()
        ids = set(table.resource_names().values())
    except FormatError as exc:
        raise PackageError(f"The APK's resources.arsc is not a valid resource table: {exc}.") from None
    return PackageTexts(texts=texts | set(strings.values()), ids=ids, strings=strings)


def _aab_texts(archive: zipfile.ZipFile, names: dict[str, zipfile.ZipInfo]) -> PackageTexts:
    manifest = _aab_manifest(archive, names)
    table = _aab_table(archive, names)
    texts = {manifest.label} if isinstance(manifest.label, str) else set()
    if table is None:
        return PackageTexts(texts=texts)
    ids = set(table.names.values()) | set(table.values)
    return PackageTexts(texts=texts | set(table.strings.values()), ids=ids, strings=dict(table.strings))


# -------------------------------------------------------------------------------------------- iOS


def _read_plist(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict[str, Any]:
    if info.file_size > MAX_PLIST_BYTES:
        raise PackageError("Info.plist is implausibly large; refusing to read it.")
    raw = _read_member(archive, info, MAX_PLIST_BYTES, "Info.plist", check_ratio=False)
    try:
        plist = plistlib.loads(raw)
    except Exception:
        raise PackageError("Info.plist is not a readable property list.") from None
    if not isinstance(plist, dict):
        raise PackageError("Info.plist is not a dictionary.")
    return plist


def _plist_metadata(plist: dict[str, Any]) -> dict[str, Any]:
    def text(key: str) -> str | None:
        value = plist.get(key)
        return _clean(str(value)) if isinstance(value, str | int) and not isinstance(value, bool) else None

    display_name = text("CFBundleDisplayName") or text("CFBundleName")
    fields = {
        "package_id": text("CFBundleIdentifier"),
        "bundle_id": text("CFBundleIdentifier"),
        "version_name": text("CFBundleShortVersionString"),
        "build_number": text("CFBundleVersion"),
        "display_name": display_name,
        "app_label": display_name,
        "min_os_version": text("MinimumOSVersion") or text("LSMinimumSystemVersion"),
    }
    return {k: v for k, v in fields.items() if v is not None}


def _plist_texts(plist: dict[str, Any]) -> set[str]:
    texts: set[str] = set()
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(plist, 0)]
    visited = 0
    while stack:
        node, depth = stack.pop()
        visited += 1
        if visited > MAX_PLIST_NODES:
            raise PackageError(f"Info.plist holds more than {MAX_PLIST_NODES} values; refusing to walk it.")
        if isinstance(node, str):
            texts.add(node)
        elif isinstance(node, dict | list) and depth < MAX_PLIST_DEPTH and id(node) not in seen:
            # A binary plist can refer to one container from many places: walk each container once.
            seen.add(id(node))
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return texts
