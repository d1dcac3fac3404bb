"""What an Android manifest says about its app, whichever encoding it came in.

Binary XML (APK) and proto XML (AAB) readers both hand each element to a ManifestCollector, which
keeps the few attributes the service reports. Android attributes are matched by resource ID, as
Android itself does, so a manifest whose attribute names were obfuscated still reads; the name is
the fallback when a file carries no IDs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from qualgent.packages.binres import FormatError, ResourceRef, Value

ANDROID_NS = "http://schemas.android.com/apk/res/android"

ATTR_LABEL = 0x01010001
ATTR_NAME = 0x01010003
ATTR_MIN_SDK = 0x0101020C
ATTR_VERSION_CODE = 0x0101021B
ATTR_VERSION_NAME = 0x0101021C
ATTR_TARGET_SDK = 0x01010270

_ANDROID_NAMES = {
    ATTR_LABEL: "label",
    ATTR_NAME: "name",
    ATTR_MIN_SDK: "minSdkVersion",
    ATTR_VERSION_CODE: "versionCode",
    ATTR_VERSION_NAME: "versionName",
    ATTR_TARGET_SDK: "targetSdkVersion",
}
_PERMISSION_ELEMENTS = ("uses-permission", "uses-permission-sdk-23", "uses-permission-sdk-m")

MAX_DEPTH = 100
MAX_PERMISSIONS = 1000


@dataclass(frozen=True)
class Attribute:
    namespace: str
    name: str
    resource_id: int
    value: Value | None


@dataclass
class Manifest:
    """The manifest's own values: references (``@string/app_name``) are left for the caller to resolve."""

    package: str | None = None
    version_code: Value | None = None
    version_name: Value | None = None
    min_sdk: Value | None = None
    target_sdk: Value | None = None
    permissions: list[str] = field(default_factory=list)
    label: Value | None = None
    # Every resource any attribute refers to, by ID.
    resource_refs: set[int] = field(default_factory=set)


class ManifestCollector:
    def __init__(self) -> None:
        self.manifest = Manifest()
        self._roots = 0

    @staticmethod
    def wants(depth: int) -> bool:
        """Whether an element this deep can hold anything the collector keeps."""
        return depth <= 2

    def reference(self, value: Value | None) -> None:
        if isinstance(value, ResourceRef) and value.id:
            self.manifest.resource_refs.add(value.id)

    def element(self, path: Sequence[str], attributes: Sequence[Attribute]) -> None:
        m = self.manifest
        if len(path) == 1:
            self._roots += 1
            if self._roots > 1:
                raise FormatError("it has more than one root element")
            if path[0] != "manifest":
                raise FormatError(f"its root element is <{path[0][:100]}>, not <manifest>")
            package = _plain(attributes, "package")
            m.package = package if isinstance(package, str) else None
            m.version_code = _android(attributes, ATTR_VERSION_CODE)
            m.version_name = _android(attributes, ATTR_VERSION_NAME)
        elif len(path) == 2 and path[0] == "manifest":
            tag = path[1]
            if tag == "uses-sdk":
                m.min_sdk = _android(attributes, ATTR_MIN_SDK)
                m.target_sdk = _android(attributes, ATTR_TARGET_SDK)
            elif tag in _PERMISSION_ELEMENTS:
                name = _android(attributes, ATTR_NAME)
                if isinstance(name, str) and name not in m.permissions and len(m.permissions) < MAX_PERMISSIONS:
                    m.permissions.append(name)
            elif tag == "application":
                m.label = _android(attributes, ATTR_LABEL)

    def finish(self) -> Manifest:
        if not self._roots:
            raise FormatError("it has no root element")
        return self.manifest


def _android(attributes: Sequence[Attribute], resource_id: int) -> Value | None:
    name = _ANDROID_NAMES[resource_id]
    for attr in attributes:
        if attr.resource_id == resource_id or (
            attr.resource_id == 0 and attr.name == name and attr.namespace == ANDROID_NS
        ):
            return attr.value
    return None


def _plain(attributes: Sequence[Attribute], name: str) -> Value | None:
    for attr in attributes:
        if attr.name == name and not attr.namespace:
            return attr.value
    return None
