"""What binary XML and resource tables share: chunk headers, string pools and typed values.

Both formats are little-endian trees of chunks (Android's ResourceTypes.h). Every offset read from a
file is checked against the chunk that holds it before it is used, so a hostile file fails with a
FormatError instead of reading out of bounds, and the work done stays linear in the file's size.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

RES_STRING_POOL_TYPE = 0x0001
RES_TABLE_TYPE = 0x0002
RES_XML_TYPE = 0x0003
RES_XML_START_NAMESPACE_TYPE = 0x0100
RES_XML_END_NAMESPACE_TYPE = 0x0101
RES_XML_START_ELEMENT_TYPE = 0x0102
RES_XML_END_ELEMENT_TYPE = 0x0103
RES_XML_RESOURCE_MAP_TYPE = 0x0180
RES_TABLE_PACKAGE_TYPE = 0x0200
RES_TABLE_TYPE_TYPE = 0x0201
RES_TABLE_TYPE_SPEC_TYPE = 0x0202

# Res_value data types.
TYPE_NULL = 0x00
TYPE_REFERENCE = 0x01
TYPE_STRING = 0x03
TYPE_DYNAMIC_REFERENCE = 0x07
TYPE_INT_DEC = 0x10
TYPE_INT_HEX = 0x11
TYPE_INT_BOOLEAN = 0x12

NO_INDEX = 0xFFFFFFFF
UTF8_FLAG = 0x100
STRING_POOL_HEADER = 28

# Real manifests hold a few thousand strings; the largest resource tables stay under this too.
MAX_STRINGS = 100_000

_CHUNK = struct.Struct("<HHI")
_POOL = struct.Struct("<IIIII")


class FormatError(ValueError):
    """The bytes are not the binary format they claim to be; the message says what is wrong."""


@dataclass(frozen=True)
class ResourceRef:
    """A reference to a resource (``@0x7f030000``), with its ``type/name`` when the format carries it."""

    id: int
    name: str | None = None

    def __str__(self) -> str:
        return f"@{self.name}" if self.name else f"@0x{self.id:08x}"


# A decoded attribute or resource value.
Value = str | int | bool | ResourceRef


@dataclass(frozen=True)
class Chunk:
    type: int
    header_size: int
    size: int
    offset: int

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def body(self) -> int:
        return self.offset + self.header_size


def read_chunk(data: bytes, offset: int, end: int) -> Chunk:
    if offset + 8 > end:
        raise FormatError(f"a chunk header at byte {offset} runs past the end of its container")
    kind, header_size, size = _CHUNK.unpack_from(data, offset)
    if header_size < 8 or size < header_size or offset + size > end:
        raise FormatError(
            f"the chunk of type 0x{kind:04x} at byte {offset} declares sizes ({header_size}, {size}) "
            "that do not fit its container"
        )
    return Chunk(kind, header_size, size, offset)


def iter_chunks(data: bytes, start: int, end: int, limit: int) -> Iterator[Chunk]:
    """The chunks laid end to end in ``data[start:end]``; fewer than 8 trailing bytes are padding."""
    offset = start
    count = 0
    while end - offset >= 8:
        count += 1
        if count > limit:
            raise FormatError(f"it holds more than {limit} chunks")
        chunk = read_chunk(data, offset, end)
        yield chunk
        offset = chunk.end


def u32_array(data: bytes, start: int, count: int) -> array[int]:
    values = array("I")
    values.frombytes(data[start : start + 4 * count])
    if sys.byteorder == "big":
        values.byteswap()
    return values


def u16_array(data: bytes, start: int, count: int) -> array[int]:
    values = array("H")
    values.frombytes(data[start : start + 2 * count])
    if sys.byteorder == "big":
        values.byteswap()
    return values


class StringPool:
    """A ResStringPool chunk, decoded lazily: a string costs nothing until it is asked for."""

    def __init__(self, data: bytes, chunk: Chunk, max_strings: int = MAX_STRINGS) -> None:
        if chunk.type != RES_STRING_POOL_TYPE:
            raise FormatError(f"expected a string pool at byte {chunk.offset}, found chunk type 0x{chunk.type:04x}")
        if chunk.header_size < STRING_POOL_HEADER:
            raise FormatError("the string pool's header is too short")
        count, style_count, flags, strings_start, _styles_start = _POOL.unpack_from(data, chunk.offset + 8)
        if count > max_strings:
            raise FormatError(f"the string pool holds {count} strings, more than the limit of {max_strings}")
        index_end = chunk.body + 4 * (count + style_count)
        if index_end > chunk.end:
            raise FormatError("the string pool's index runs past the end of the pool")
        if count and not (chunk.header_size <= strings_start < chunk.size):
            raise FormatError("the string pool's string data starts outside the pool")
        self._data = data
        self._base = chunk.offset + strings_start
        self._end = chunk.end
        self._utf8 = bool(flags & UTF8_FLAG)
        self._offsets = u32_array(data, chunk.body, count)
        self._cache: dict[int, str] = {}
        # Each string is decoded once; strings that overlap (a hostile pool) could otherwise make the
        # decoded total far larger than the pool itself.
        self._budget = 2 * chunk.size + 65536

    def __len__(self) -> int:
        return len(self._offsets)

    @property
    def is_utf8(self) -> bool:
        return self._utf8

    def get(self, index: int) -> str:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        if not 0 <= index < len(self._offsets):
            raise FormatError(f"string index {index} is outside the string pool of {len(self._offsets)}")
        pos = self._base + self._offsets[index]
        if self._utf8:
            _, pos = self._length8(pos)  # the length in UTF-16 units, which UTF-8 decoding does not need
            size, pos = self._length8(pos)
        else:
            units, pos = self._length16(pos)
            size = 2 * units
        if pos + size > self._end:
            raise FormatError(f"string {index} runs past the end of the string pool")
        self._budget -= size
        if self._budget < 0:
            raise FormatError("the string pool's strings overlap far more than a real pool's")
        raw = self._data[pos : pos + size]
        text = raw.decode("utf-8" if self._utf8 else "utf-16-le", "replace")
        self._cache[index] = text
        return text

    def _length8(self, pos: int) -> tuple[int, int]:
        if pos + 1 > self._end:
            raise FormatError("a string's length runs past the end of the string pool")
        first = self._data[pos]
        if not first & 0x80:
            return first, pos + 1
        if pos + 2 > self._end:
            raise FormatError("a string's length runs past the end of the string pool")
        return ((first & 0x7F) << 8) | self._data[pos + 1], pos + 2

    def _length16(self, pos: int) -> tuple[int, int]:
        if pos + 2 > self._end:
            raise FormatError("a string's length runs past the end of the string pool")
        (first,) = struct.unpack_from("<H", self._data, pos)
        if not first & 0x8000:
            return first, pos + 2
        if pos + 4 > self._end:
            raise FormatError("a string's length runs past the end of the string pool")
        (second,) = struct.unpack_from("<H", self._data, pos + 2)
        return ((first & 0x7FFF) << 16) | second, pos + 4


def simple_value(data_type: int, data: int) -> int | bool | ResourceRef | None:
    """The value of a Res_value that is not a string; None for types nothing here reads."""
    if data_type in (TYPE_REFERENCE, TYPE_DYNAMIC_REFERENCE):
        return ResourceRef(data) if data else None
    if data_type == TYPE_INT_DEC:
        return data - (1 << 32) if data & 0x80000000 else data
    if data_type == TYPE_INT_HEX:
        return data
    if data_type == TYPE_INT_BOOLEAN:
        return data != 0
    return None
