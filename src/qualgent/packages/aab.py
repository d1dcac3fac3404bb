"""An Android App Bundle's manifest and resource table, in aapt2's protobuf formats.

An AAB keeps base/manifest/AndroidManifest.xml as an XmlNode message and base/resources.pb as a
ResourceTable message (aapt2's Resources.proto). Field numbers used here:

  XmlNode:       1 element, 2 text
  XmlElement:    3 name, 4 attribute, 5 child
  XmlAttribute:  1 namespace_uri, 2 name, 3 value, 5 resource_id, 6 compiled_item
  Item:          1 ref, 2 str, 3 raw_str, 4 styled_str, 7 prim
  Reference:     2 id, 3 name;  String/RawString/StyledString: 1 value
  Primitive:     6 int_decimal_value, 7 int_hexadecimal_value, 8 boolean_value
  ResourceTable: 2 package;  Package: 1 package_id{1 id}, 2 package_name, 3 type
  Type:          1 type_id{1 id}, 2 name, 3 entry;  Entry: 1 entry_id{1 id}, 2 name, 6 config_value
  ConfigValue:   1 config (empty for the default configuration), 2 value;  Value: 4 item
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qualgent.packages.binres import FormatError, ResourceRef, Value
from qualgent.packages.manifest import MAX_DEPTH, Attribute, Manifest, ManifestCollector
from qualgent.packages.protobuf import LEN, VARINT, FieldBudget, as_int32, iter_fields

# A real manifest has tens of thousands of fields at most. A table costs about ten fields per resource
# (other configurations' values are skipped unread), so this admits ~100k resources and parses in
# about half a second at worst.
MAX_MANIFEST_FIELDS = 500_000
MAX_TABLE_FIELDS = 1_000_000
MAX_RESOURCES = 200_000
MAX_REFERENCE_HOPS = 8


def parse_proto_manifest(data: bytes) -> Manifest:
    """Read an AAB's manifest (proto XML); FormatError when it is not one."""
    collector = ManifestCollector()
    budget = FieldBudget(MAX_MANIFEST_FIELDS)
    for number, wire, a, b in iter_fields(data, 0, len(data), budget):
        if number == 1 and wire == LEN:
            _element(data, a, b, [], collector, budget)
    return collector.finish()


def _text(data: bytes, start: int, end: int) -> str:
    return data[start:end].decode("utf-8", "replace")


def _element(
    data: bytes, start: int, end: int, path: list[str], collector: ManifestCollector, budget: FieldBudget
) -> None:
    if len(path) >= MAX_DEPTH:
        raise FormatError(f"elements nest deeper than {MAX_DEPTH} levels")
    name = ""
    attributes: list[Attribute] = []
    children: list[tuple[int, int]] = []
    for number, wire, a, b in iter_fields(data, start, end, budget):
        if wire != LEN:
            continue
        if number == 3:
            name = _text(data, a, b)
        elif number == 4:
            attributes.append(_attribute(data, a, b, budget))
        elif number == 5:
            children.append((a, b))
    path.append(name)
    for attr in attributes:
        collector.reference(attr.value)
    if collector.wants(len(path)):
        collector.element(path, attributes)
    for child_start, child_end in children:
        for number, wire, a, b in iter_fields(data, child_start, child_end, budget):
            if number == 1 and wire == LEN:
                _element(data, a, b, path, collector, budget)
    path.pop()


def _attribute(data: bytes, start: int, end: int, budget: FieldBudget) -> Attribute:
    namespace = name = ""
    text: str | None = None
    resource_id = 0
    compiled: Value | None = None
    for number, wire, a, b in iter_fields(data, start, end, budget):
        if wire == VARINT and number == 5:
            resource_id = a & 0xFFFFFFFF
        elif wire != LEN:
            continue
        elif number == 1:
            namespace = _text(data, a, b)
        elif number == 2:
            name = _text(data, a, b)
        elif number == 3:
            text = _text(data, a, b)
        elif number == 6:
            compiled = _item(data, a, b, budget)
    # The compiled item is typed (an int, a reference); the text is what the developer wrote.
    value: Value | None = compiled if compiled is not None else text
    return Attribute(namespace=namespace, name=name, resource_id=resource_id, value=value)


def _item(data: bytes, start: int, end: int, budget: FieldBudget) -> Value | None:
    for number, wire, a, b in iter_fields(data, start, end, budget):
        if wire != LEN:
            continue
        if number == 1:
            return _reference(data, a, b, budget)
        if number in (2, 3, 4):
            return _string_field(data, a, b, budget)
        if number == 7:
            return _primitive(data, a, b, budget)
    return None


def _reference(data: bytes, start: int, end: int, budget: FieldBudget) -> ResourceRef | None:
    ref_id = 0
    name: str | None = None
    for number, wire, a, b in iter_fields(data, start, end, budget):
        if number == 2 and wire == VARINT:
            ref_id = a & 0xFFFFFFFF
        elif number == 3 and wire == LEN:
            name = _text(data, a, b)
    return ResourceRef(ref_id, name) if ref_id or name else None


def _string_field(data: bytes, start: int, end: int, budget: FieldBudget) -> str:
    for number, wire, a, b in iter_fields(data, start, end, budget):
        if number == 1 and wire == LEN:
            return _text(data, a, b)
    return ""


def _primitive(data: bytes, start: int, end: int, budget: FieldBudget) -> int | bool | None:
    for number, wire, a, _ in iter_fields(data, start, end, budget):
        if wire != VARINT:
            continue
        if number == 6:
            return as_int32(a)
        if number == 7:
            return a & 0xFFFFFFFF
        if number == 8:
            return a != 0
    return None


# ------------------------------------------------------------------------------------ resource table


@dataclass
class _Entry:
    id: int | None = None
    name: str = ""
    value: tuple[int, int] | None = None  # the chosen ConfigValue's Value message
    is_default: bool = False


@dataclass
class ProtoResourceTable:
    """An AAB's resources.pb: resource names and one value per resource (the default configuration's)."""

    names: dict[int, str] = field(default_factory=dict)
    values: dict[str, Value] = field(default_factory=dict)
    strings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes) -> ProtoResourceTable:
        table = cls()
        budget = FieldBudget(MAX_TABLE_FIELDS)
        for number, wire, a, b in iter_fields(data, 0, len(data), budget):
            if number == 2 and wire == LEN:
                table._package(data, a, b, budget)
        # A string resource may be an alias of another (@string/other): once all are read, follow it.
        for full_name, value in table.values.items():
            type_name, _, name = full_name.partition("/")
            if type_name == "string" and isinstance(value, ResourceRef) and name not in table.strings:
                resolved = table.resolve(value)
                if isinstance(resolved, str):
                    table.strings[name] = resolved
        return table

    def resolve(self, ref: ResourceRef) -> str | int | bool | None:
        """The value a reference points at, following references; None when the table lacks it."""
        current: ResourceRef = ref
        for _ in range(MAX_REFERENCE_HOPS):
            name = self.names.get(current.id) if current.id else None
            if name is None and current.name:
                name = current.name.split(":", 1)[-1]  # "com.example:string/app_name"
            value = self.values.get(name) if name else None
            if not isinstance(value, ResourceRef):
                return value
            current = value
        return None

    def _package(self, data: bytes, start: int, end: int, budget: FieldBudget) -> None:
        package_id = 0
        types: list[tuple[int, int]] = []
        for number, wire, a, b in iter_fields(data, start, end, budget):
            if wire != LEN:
                continue
            if number == 1:
                package_id = _wrapped_id(data, a, b, budget)
            elif number == 3:
                types.append((a, b))
        for a, b in types:
            self._type(data, a, b, package_id, budget)

    def _type(self, data: bytes, start: int, end: int, package_id: int, budget: FieldBudget) -> None:
        type_id = 0
        type_name = ""
        entries: list[tuple[int, int]] = []
        for number, wire, a, b in iter_fields(data, start, end, budget):
            if wire != LEN:
                continue
            if number == 1:
                type_id = _wrapped_id(data, a, b, budget)
            elif number == 2:
                type_name = _text(data, a, b)
            elif number == 3:
                entries.append((a, b))
        for a, b in entries:
            entry = self._entry(data, a, b, budget)
            full_name = f"{type_name}/{entry.name}"
            if entry.id is not None:
                self.names[(package_id << 24) | (type_id << 16) | entry.id] = full_name
            if len(self.names) > MAX_RESOURCES or len(self.values) > MAX_RESOURCES:
                raise FormatError(f"it defines more than {MAX_RESOURCES} resources")
            if entry.value is None:
                continue
            value = self._value(data, *entry.value, budget)
            if value is None:
                continue
            self.values.setdefault(full_name, value)
            if type_name == "string" and isinstance(value, str):
                self.strings.setdefault(entry.name, value)

    def _entry(self, data: bytes, start: int, end: int, budget: FieldBudget) -> _Entry:
        entry = _Entry()
        for number, wire, a, b in iter_fields(data, start, end, budget):
            if wire != LEN:
                continue
            if number == 1:
                entry.id = _wrapped_id(data, a, b, budget) & 0xFFFF
            elif number == 2:
                entry.name = _text(data, a, b)
            elif number == 6:
                config, value = _config_value(data, a, b, budget)
                if value is not None and (entry.value is None or config == 0):
                    entry.value, entry.is_default = value, config == 0
                if entry.is_default and entry.id is not None and entry.name:
                    # aapt2 writes the default configuration first: the other configurations' values
                    # are not needed, so they are not read.
                    break
        return entry

    def _value(self, data: bytes, start: int, end: int, budget: FieldBudget) -> Value | None:
        for number, wire, a, b in iter_fields(data, start, end, budget):
            if number == 4 and wire == LEN:
                return _item(data, a, b, budget)
        return None


def _wrapped_id(data: bytes, start: int, end: int, budget: FieldBudget) -> int:
    for number, wire, a, _ in iter_fields(data, start, end, budget):
        if number == 1 and wire == VARINT:
            return a & 0xFFFF
    return 0


def _config_value(data: bytes, start: int, end: int, budget: FieldBudget) -> tuple[int, tuple[int, int] | None]:
    """(size of the configuration message, 0 for the default one; the Value message's span)."""
    config = 0
    value: tuple[int, int] | None = None
    for number, wire, a, b in iter_fields(data, start, end, budget):
        if wire != LEN:
            continue
        if number == 1:
            config = b - a
        elif number == 2:
            value = (a, b)
    return config, value
