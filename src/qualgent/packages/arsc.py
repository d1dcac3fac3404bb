"""An APK's resources.arsc: resource names, and the values of string resources.

Opening a table indexes its chunks and reads nothing else, so resolving one reference (the app's
label) costs one lookup per configuration of its type. Every loop is paid for from a budget
(chunks indexed, type chunks visited by lookups, entry slots and resources seen by a full scan), so
a hostile 64 MB table is refused in well under a second instead of being read slowly.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from dataclasses import dataclass, field

from qualgent.packages.binres import (
    NO_INDEX,
    RES_STRING_POOL_TYPE,
    RES_TABLE_PACKAGE_TYPE,
    RES_TABLE_TYPE,
    RES_TABLE_TYPE_SPEC_TYPE,
    RES_TABLE_TYPE_TYPE,
    TYPE_REFERENCE,
    TYPE_STRING,
    Chunk,
    FormatError,
    ResourceRef,
    StringPool,
    iter_chunks,
    read_chunk,
    simple_value,
    u16_array,
    u32_array,
)

MAX_CHUNKS = 200_000
MAX_ENTRY_SLOTS = 2_000_000
MAX_RESOURCES = 200_000
MAX_REFERENCE_HOPS = 8
# Type chunks visited while resolving references; a real lookup visits a handful.
MAX_LOOKUP_VISITS = 300_000

FLAG_SPARSE = 0x01
FLAG_OFFSET16 = 0x02
ENTRY_COMPLEX = 0x0001
ENTRY_COMPACT = 0x0008
_NO_OFFSET16 = 0xFFFF

_PACKAGE = struct.Struct("<I256sIIII")
_PACKAGE_HEADER = 8 + _PACKAGE.size
_TYPE = struct.Struct("<BBHII")
_SPEC = struct.Struct("<BBHI")
_ENTRY = struct.Struct("<HHI")
_VALUE = struct.Struct("<HBBI")
_TYPE_CONFIG_AT = 20


@dataclass(frozen=True)
class _TypeChunk:
    chunk: Chunk
    type_id: int
    flags: int
    entry_count: int
    entries_start: int  # absolute
    is_default: bool


@dataclass
class _Package:
    id: int
    name: str
    type_names: StringPool
    keys: StringPool
    type_id_offset: int
    # Per type ID, its chunks with the default configuration first.
    types: dict[int, list[_TypeChunk]] = field(default_factory=dict)
    entry_counts: dict[int, int] = field(default_factory=dict)

    def type_name(self, type_id: int) -> str:
        return self.type_names.get(type_id - 1 - self.type_id_offset)


@dataclass
class _Scan:
    names: dict[int, str] = field(default_factory=dict)
    strings: dict[str, str] = field(default_factory=dict)
    slots: int = 0


class ResourceTable:
    """A parsed resources.arsc; FormatError when its framing or string pools are malformed."""

    def __init__(self, data: bytes, max_strings: int) -> None:
        self._data = data
        if len(data) < 12:
            raise FormatError("it is shorter than a resource table header")
        (kind,) = struct.unpack_from("<H", data, 0)
        if kind != RES_TABLE_TYPE:
            raise FormatError(f"it starts with chunk type 0x{kind:04x}, not a resource table (0x0002)")
        root = read_chunk(data, 0, len(data))
        if root.header_size < 12:
            raise FormatError("its header is too short")
        self._values: StringPool | None = None
        self._packages: dict[int, _Package] = {}
        self._chunks_left = MAX_CHUNKS
        for chunk in iter_chunks(data, root.body, root.end, MAX_CHUNKS):
            if chunk.type == RES_STRING_POOL_TYPE and self._values is None:
                self._values = StringPool(data, chunk, max_strings)
            elif chunk.type == RES_TABLE_PACKAGE_TYPE:
                package = self._package(chunk, max_strings)
                self._packages.setdefault(package.id, package)
        if self._values is None:
            raise FormatError("it has no value string pool")
        self._scan: _Scan | None = None
        self._visits = MAX_LOOKUP_VISITS

    def resolve(self, resource_id: int) -> str | int | bool | None:
        """A resource's value in the default configuration (else its first), following references."""
        for _ in range(MAX_REFERENCE_HOPS):
            found = self._lookup(resource_id)
            if found is None:
                return None
            data_type, data = found
            if data_type == TYPE_STRING:
                return self._value_strings.get(data)
            value = simple_value(data_type, data)
            if not isinstance(value, ResourceRef):
                return value
            resource_id = value.id
        return None

    def name_of(self, resource_id: int) -> str | None:
        """``type/name`` of a resource ID, or None when the table has no such resource."""
        package = self._packages.get(resource_id >> 24)
        if package is None:
            return None
        type_id, index = (resource_id >> 16) & 0xFF, resource_id & 0xFFFF
        for chunk in package.types.get(type_id, []):
            self._visit()
            pos = self._entry_position(chunk, index)
            if pos is not None:
                key, _, _ = self._entry(chunk, pos)
                return f"{package.type_name(type_id)}/{package.keys.get(key)}"
        return None

    def strings(self) -> dict[str, str]:
        """Every string resource, ``name -> value``: the default configuration's value, else the first."""
        return dict(self._full_scan().strings)

    def resource_names(self) -> dict[int, str]:
        """Every resource, ``id -> type/name``."""
        return dict(self._full_scan().names)

    # ------------------------------------------------------------------------------------ reading

    @property
    def _value_strings(self) -> StringPool:
        assert self._values is not None
        return self._values

    def _package(self, chunk: Chunk, max_strings: int) -> _Package:
        data = self._data
        if chunk.header_size < _PACKAGE_HEADER:
            raise FormatError(f"the package at byte {chunk.offset} has a header of {chunk.header_size} bytes")
        package_id, raw_name, type_strings, _, key_strings, _ = _PACKAGE.unpack_from(data, chunk.offset + 8)
        type_id_offset = 0
        if chunk.header_size >= _PACKAGE_HEADER + 4:
            (type_id_offset,) = struct.unpack_from("<I", data, chunk.offset + _PACKAGE_HEADER)
        name = raw_name.decode("utf-16-le", "replace").split("\x00", 1)[0]
        type_names = self._pool_at(chunk, type_strings, max_strings, "type names")
        keys = self._pool_at(chunk, key_strings, max_strings, "key names")
        package = _Package(package_id, name, type_names, keys, type_id_offset)
        defaults: dict[int, list[_TypeChunk]] = {}
        others: dict[int, list[_TypeChunk]] = {}
        for inner in iter_chunks(data, chunk.body, chunk.end, MAX_CHUNKS):
            self._chunks_left -= 1
            if self._chunks_left < 0:
                raise FormatError(f"it holds more than {MAX_CHUNKS} chunks")
            if inner.type == RES_TABLE_TYPE_SPEC_TYPE:
                if inner.header_size < 16:
                    raise FormatError(f"the type spec at byte {inner.offset} is too short")
                type_id, _, _, count = _SPEC.unpack_from(data, inner.offset + 8)
                package.entry_counts.setdefault(type_id, count)
            elif inner.type == RES_TABLE_TYPE_TYPE:
                typed = self._type_chunk(inner)
                if typed.type_id not in package.entry_counts:
                    raise FormatError(f"the type chunk at byte {inner.offset} comes before its type spec")
                (defaults if typed.is_default else others).setdefault(typed.type_id, []).append(typed)
        for type_id in {*defaults, *others}:
            package.types[type_id] = defaults.get(type_id, []) + others.get(type_id, [])
        return package

    def _pool_at(self, package: Chunk, offset: int, max_strings: int, what: str) -> StringPool:
        if not package.header_size <= offset < package.size:
            raise FormatError(f"the package's {what} pool lies outside the package")
        return StringPool(self._data, read_chunk(self._data, package.offset + offset, package.end), max_strings)

    def _type_chunk(self, chunk: Chunk) -> _TypeChunk:
        data = self._data
        if chunk.header_size < _TYPE_CONFIG_AT + 4:
            raise FormatError(f"the type chunk at byte {chunk.offset} is too short")
        type_id, flags, _, entry_count, entries_start = _TYPE.unpack_from(data, chunk.offset + 8)
        if type_id == 0:
            raise FormatError(f"the type chunk at byte {chunk.offset} has type ID 0")
        (config_size,) = struct.unpack_from("<I", data, chunk.offset + _TYPE_CONFIG_AT)
        config_size = min(config_size, chunk.header_size - _TYPE_CONFIG_AT)
        config = data[chunk.offset + _TYPE_CONFIG_AT + 4 : chunk.offset + _TYPE_CONFIG_AT + config_size]
        width = 2 if flags & FLAG_OFFSET16 and not flags & FLAG_SPARSE else 4
        if chunk.header_size + width * entry_count > entries_start or entries_start > chunk.size:
            raise FormatError(f"the entries of the type chunk at byte {chunk.offset} overlap its index")
        return _TypeChunk(
            chunk=chunk,
            type_id=type_id,
            flags=flags,
            entry_count=entry_count,
            entries_start=chunk.offset + entries_start,
            is_default=not config.strip(b"\x00"),
        )

    def _entry_position(self, typed: _TypeChunk, index: int) -> int | None:
        data, index_at = self._data, typed.chunk.body
        if typed.flags & FLAG_SPARSE:
            # (entry index, offset / 4) pairs sorted by index: a binary search over the indices.
            pairs = u16_array(data, index_at, 2 * typed.entry_count)
            found = bisect_left(pairs[0::2], index)
            if found == typed.entry_count or pairs[2 * found] != index:
                return None
            offset = pairs[2 * found + 1] * 4
        elif index >= typed.entry_count:
            return None
        elif typed.flags & FLAG_OFFSET16:
            (offset,) = struct.unpack_from("<H", data, index_at + 2 * index)
            if offset == _NO_OFFSET16:
                return None
            offset *= 4
        else:
            (offset,) = struct.unpack_from("<I", data, index_at + 4 * index)
            if offset == NO_INDEX:
                return None
        return typed.entries_start + offset

    def _present(self, typed: _TypeChunk, skip: set[int], scan: _Scan) -> list[tuple[int, int]]:
        """(entry index, position) of each entry in the chunk whose index is not in ``skip``."""
        scan.slots += typed.entry_count
        if scan.slots > MAX_ENTRY_SLOTS:
            raise FormatError(f"it has more than {MAX_ENTRY_SLOTS} entry slots")
        data, index_at, base = self._data, typed.chunk.body, typed.entries_start
        if typed.flags & FLAG_SPARSE:
            pairs = u16_array(data, index_at, 2 * typed.entry_count)
            return [(i, base + 4 * o) for i, o in zip(pairs[0::2], pairs[1::2], strict=True) if i not in skip]
        if typed.flags & FLAG_OFFSET16:
            short = u16_array(data, index_at, typed.entry_count)
            return [(i, base + 4 * o) for i, o in enumerate(short) if o != _NO_OFFSET16 and i not in skip]
        offsets = u32_array(data, index_at, typed.entry_count)
        return [(i, base + o) for i, o in enumerate(offsets) if o != NO_INDEX and i not in skip]

    def _entry(self, typed: _TypeChunk, pos: int) -> tuple[int, int | None, int]:
        """(key index, value type or None for a complex entry, value data) of the entry at ``pos``."""
        end = typed.chunk.end
        if pos + _ENTRY.size > end:
            raise FormatError(f"an entry at byte {pos} runs past the end of its type chunk")
        size, flags, key = _ENTRY.unpack_from(self._data, pos)
        if flags & ENTRY_COMPACT:
            # Compact entries keep the key in the size field and the value's type in the flags' high byte.
            return size, flags >> 8, key
        if flags & ENTRY_COMPLEX:
            return key, None, 0
        if size < _ENTRY.size or pos + size + _VALUE.size > end:
            raise FormatError(f"the entry at byte {pos} runs past the end of its type chunk")
        _, _, data_type, data = _VALUE.unpack_from(self._data, pos + size)
        return key, data_type, data

    def _lookup(self, resource_id: int) -> tuple[int, int] | None:
        package = self._packages.get(resource_id >> 24)
        if package is None:
            return None
        index = resource_id & 0xFFFF
        for typed in package.types.get((resource_id >> 16) & 0xFF, []):
            self._visit()
            pos = self._entry_position(typed, index)
            if pos is None:
                continue
            _, data_type, data = self._entry(typed, pos)
            if data_type is not None:
                return data_type, data
        return None

    def _visit(self) -> None:
        self._visits -= 1
        if self._visits < 0:
            raise FormatError(f"resolving its references visits more than {MAX_LOOKUP_VISITS} type chunks")

    def _full_scan(self) -> _Scan:
        if self._scan is not None:
            return self._scan
        scan = _Scan()
        for package in self._packages.values():
            for type_id, chunks in package.types.items():
                type_name = package.type_name(type_id)
                total = package.entry_counts.get(type_id)
                seen: set[int] = set()
                for typed in chunks:  # default configuration first, so its values win
                    if total is not None and len(seen) >= total:
                        break
                    for index, pos in self._present(typed, seen, scan):
                        seen.add(index)
                        key, data_type, data = self._entry(typed, pos)
                        name = package.keys.get(key)
                        scan.names[(package.id << 24) | (type_id << 16) | index] = f"{type_name}/{name}"
                        if len(scan.names) > MAX_RESOURCES:
                            raise FormatError(f"it defines more than {MAX_RESOURCES} resources")
                        if type_name == "string":
                            text = self._text(data_type, data)
                            if text is not None:
                                scan.strings.setdefault(name, text)
        self._scan = scan
        return scan

    def _text(self, data_type: int | None, data: int) -> str | None:
        if data_type == TYPE_STRING:
            return self._value_strings.get(data)
        if data_type == TYPE_REFERENCE:
            value = self.resolve(data)
            return value if isinstance(value, str) else None
        return None
