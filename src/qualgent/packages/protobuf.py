"""Just enough of the protobuf wire format to read aapt2's proto XML and resource tables.

No schema and no generated code: a message is a run of (field number, wire type, value) triples, and
the readers in aab.py pick out the few fields they know. Every field read is paid for from a
FieldBudget, so a file of millions of tiny fields is refused instead of read slowly.
"""

from __future__ import annotations

from collections.abc import Iterator

from qualgent.packages.binres import FormatError

VARINT = 0
I64 = 1
LEN = 2
I32 = 5


class FieldBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit


def read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise FormatError("a varint runs past the end of its message")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise FormatError("a varint is longer than 10 bytes")


def iter_fields(data: bytes, start: int, end: int, budget: FieldBudget) -> Iterator[tuple[int, int, int, int]]:
    """``(field number, wire type, a, b)``: a varint or fixed value is ``a``; a LEN field is ``data[a:b]``."""
    pos = start
    while pos < end:
        budget.left -= 1
        if budget.left < 0:
            raise FormatError(f"it holds more than {budget.limit} protobuf fields")
        # Keys and lengths are nearly always one byte: read those inline, the rest the long way.
        key = data[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise FormatError("a protobuf field has number 0")
        if wire == LEN:
            if pos >= end:
                raise FormatError("a length-delimited protobuf field runs past the end of its message")
            size = data[pos]
            if size < 0x80:
                pos += 1
            else:
                size, pos = read_varint(data, pos, end)
            if pos + size > end:
                raise FormatError("a length-delimited protobuf field runs past the end of its message")
            yield number, wire, pos, pos + size
            pos += size
        elif wire == VARINT:
            if pos < end and data[pos] < 0x80:
                value = data[pos]
                pos += 1
            else:
                value, pos = read_varint(data, pos, end)
            yield number, wire, value, 0
        elif wire in (I32, I64):
            width = 4 if wire == I32 else 8
            if pos + width > end:
                raise FormatError("a fixed-width protobuf field runs past the end of its message")
            yield number, wire, int.from_bytes(data[pos : pos + width], "little"), 0
            pos += width
        else:
            raise FormatError(f"protobuf wire type {wire} is not one aapt2 writes")


def as_int32(value: int) -> int:
    """A varint-encoded int32 (negative values arrive as 64-bit two's complement)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value
