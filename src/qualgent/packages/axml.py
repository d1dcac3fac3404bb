"""Android binary XML (AXML), the encoding of an APK's AndroidManifest.xml.

The document is read as a stream of chunks, never built into a tree: memory is the string pool's
index plus one name per open element, and elements deeper than MAX_DEPTH are refused.
"""

from __future__ import annotations

import struct
from array import array

from qualgent.packages.binres import (
    NO_INDEX,
    RES_STRING_POOL_TYPE,
    RES_XML_END_ELEMENT_TYPE,
    RES_XML_RESOURCE_MAP_TYPE,
    RES_XML_START_ELEMENT_TYPE,
    RES_XML_TYPE,
    TYPE_DYNAMIC_REFERENCE,
    TYPE_REFERENCE,
    TYPE_STRING,
    Chunk,
    FormatError,
    ResourceRef,
    StringPool,
    Value,
    iter_chunks,
    read_chunk,
    simple_value,
    u32_array,
)
from qualgent.packages.manifest import MAX_DEPTH, Attribute, Manifest, ManifestCollector

# A 4 MB manifest cannot hold more chunks than this (the smallest is 8 bytes); the cap only
# matters for hostile files, which it stops early.
MAX_CHUNKS = 600_000

# ResXMLTree_node (line number, comment) then ResXMLTree_attrExt.
_ELEMENT = struct.Struct("<IIHHHHHH")
_ATTRIBUTE = struct.Struct("<IIIHBBI")
_ELEMENT_EXT_AT = 16


def parse_manifest(data: bytes) -> Manifest:
    """Read the manifest's package, versions, SDK levels, permissions and label; FormatError if malformed."""
    collector = ManifestCollector()
    _walk(data, collector)
    return collector.finish()


def _walk(data: bytes, collector: ManifestCollector) -> None:
    if len(data) < 8:
        raise FormatError("it is shorter than a chunk header")
    (kind,) = struct.unpack_from("<H", data, 0)
    if kind != RES_XML_TYPE:
        raise FormatError(f"it starts with chunk type 0x{kind:04x}, not an XML document (0x0003)")
    root = read_chunk(data, 0, len(data))
    pool: StringPool | None = None
    resource_ids: array[int] = array("I")
    path: list[str] = []
    for chunk in iter_chunks(data, root.body, root.end, MAX_CHUNKS):
        if chunk.type == RES_STRING_POOL_TYPE:
            if pool is None:  # Android reads the first pool and ignores any other
                pool = StringPool(data, chunk)
        elif chunk.type == RES_XML_RESOURCE_MAP_TYPE:
            resource_ids = u32_array(data, chunk.body, (chunk.size - chunk.header_size) // 4)
        elif chunk.type == RES_XML_START_ELEMENT_TYPE:
            if pool is None:
                raise FormatError("an element comes before the string pool")
            if len(path) >= MAX_DEPTH:
                raise FormatError(f"elements nest deeper than {MAX_DEPTH} levels")
            name, attributes = _element(data, chunk, pool, resource_ids, collector, len(path) + 1)
            path.append(name)
            if attributes is not None:
                collector.element(path, attributes)
        elif chunk.type == RES_XML_END_ELEMENT_TYPE:
            if not path:
                raise FormatError("an element ends that never started")
            path.pop()
        # Namespaces, text and chunk types this reader does not know are skipped, as Android does.


def _element(
    data: bytes,
    chunk: Chunk,
    pool: StringPool,
    resource_ids: array[int],
    collector: ManifestCollector,
    depth: int,
) -> tuple[str, list[Attribute] | None]:
    ext = chunk.offset + _ELEMENT_EXT_AT
    if chunk.header_size < _ELEMENT_EXT_AT or ext + _ELEMENT.size > chunk.end:
        raise FormatError(f"the element at byte {chunk.offset} is too short")
    _ns, name_index, attr_start, attr_size, attr_count, *_ = _ELEMENT.unpack_from(data, ext)
    name = pool.get(name_index)
    if attr_count and attr_size < _ATTRIBUTE.size:
        raise FormatError(f"the element <{name[:100]}> declares attributes of {attr_size} bytes")
    first = ext + attr_start
    if first + attr_count * attr_size > chunk.end:
        raise FormatError(f"the attributes of <{name[:100]}> run past the end of their element")
    wanted = collector.wants(depth)
    attributes: list[Attribute] | None = [] if wanted else None
    for i in range(attr_count):
        ns_index, name_idx, raw_index, _size, _res0, data_type, value = _ATTRIBUTE.unpack_from(
            data, first + i * attr_size
        )
        if data_type in (TYPE_REFERENCE, TYPE_DYNAMIC_REFERENCE):
            collector.reference(ResourceRef(value))
        if attributes is None:
            continue
        attributes.append(
            Attribute(
                namespace=pool.get(ns_index) if ns_index != NO_INDEX else "",
                name=pool.get(name_idx),
                resource_id=resource_ids[name_idx] if name_idx < len(resource_ids) else 0,
                value=_value(pool, data_type, value, raw_index),
            )
        )
    return name, attributes


def _value(pool: StringPool, data_type: int, data: int, raw_index: int) -> Value | None:
    if data_type == TYPE_STRING:
        return pool.get(data)
    value = simple_value(data_type, data)
    if value is None and raw_index != NO_INDEX:
        return pool.get(raw_index)
    return value
