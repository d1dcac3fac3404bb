"""Package inspection: binary XML manifests, resource tables, bundles' proto formats, Info.plist,
and the limits that keep a hostile upload cheap.

Packages built by real aapt and aapt2 (tests/fixtures/apks/) check the readers against real tooling;
the rest are written by tests/fixtures/packages.py, so each test makes exactly the package it needs.
"""

from __future__ import annotations

import json
import os
import plistlib
import struct
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from qualgent.packages.aab import MAX_TABLE_FIELDS, ProtoResourceTable, parse_proto_manifest
from qualgent.packages.arsc import MAX_CHUNKS, MAX_ENTRY_SLOTS, MAX_RESOURCES, ResourceTable
from qualgent.packages.axml import parse_manifest
from qualgent.packages.binres import MAX_STRINGS, FormatError, ResourceRef, StringPool, read_chunk
from qualgent.packages.inspect import (
    MAX_TABLE_STRINGS,
    PackageError,
    PackageTexts,
    inspect_package,
    package_texts,
)
from tests.fixtures.packages import (
    APKS,
    Element,
    Resources,
    aab,
    apk,
    axml,
    ipa,
    manifest,
    manifest_element,
    nested,
    pb_bytes,
    pb_text,
    pb_varint,
    proto_manifest,
    proto_resources,
    shared_entry_chunk,
    simple_entry,
    spec_chunk,
    string_pool,
    table,
    type_chunk,
    with_declared_size,
    write,
    zip_bytes,
)

MB = 1024 * 1024
# What every reader must stay under, however hostile its input.
# Bounded work, not speed: a parser without limits takes minutes on these inputs. CPU time, with wide
# room, so a busy machine does not fail the suite (measured worst case here: about 0.5 s).
HOSTILE_SECONDS = 10.0

REAL_METADATA = {
    "package_type": "apk",
    "package_id": "com.qualgent.fixture",
    "package_name": "com.qualgent.fixture",
    "version_code": 42,
    "version_name": "1.4.2-fixture",
    "min_sdk": 21,
    "target_sdk": 29,
    "permissions": ["android.permission.INTERNET", "android.permission.CAMERA"],
    "app_label": "QualGent Fixture",
    "display_name": "QualGent Fixture",
}
REAL_STRINGS = {
    "app_name": "QualGent Fixture",
    "login_title": "Sign in",
    "welcome": "Welcome, café ☕ 日本語",
    "login_button_text": "Log in",
}
REAL_IDS = {
    "id/login_button",
    "id/username",
    "layout/login",
    "string/app_name",
    "string/login_title",
    "string/welcome",
    "string/login_button_text",
}


@contextmanager
def fast() -> Iterator[None]:
    started = time.process_time()
    yield
    elapsed = time.process_time() - started
    assert elapsed < HOSTILE_SECONDS, f"took {elapsed:.2f} s of CPU"


def refused(path: str, claimed: str | None = None) -> str:
    with fast(), pytest.raises(PackageError) as caught:
        inspect_package(path, claimed)
    return str(caught.value)


def labelled_apk(tmp_path: Path, resources: Resources, label: int, **arsc: bool) -> str:
    content = apk(manifest(label=ResourceRef(label)), resources.arsc(**arsc))
    return write(tmp_path, "app.apk", content)


# ------------------------------------------------------------------------------------ real tooling


def test_an_apk_built_by_aapt_reads_as_aapt_dump_badging_says() -> None:
    # aapt writes the manifest's strings in UTF-16 and the table's in UTF-8.
    assert inspect_package(str(APKS / "aapt.apk"), "apk").metadata == REAL_METADATA


def test_an_apk_built_by_aapt2_with_sparse_entries_reads_the_same() -> None:
    info = inspect_package(str(APKS / "aapt2-sparse.apk"), "apk")
    assert info.metadata == {**REAL_METADATA, "min_sdk": 26}


def test_texts_of_a_real_apk_are_its_default_strings_and_resource_names() -> None:
    texts = package_texts(str(APKS / "aapt.apk"))
    # aapt keeps a string with no default value: its only translation stands in.
    assert texts.strings == {**REAL_STRINGS, "greeting_fr_only": "Bonjour"}
    assert texts.texts == {*REAL_STRINGS.values(), "Bonjour"}
    assert "Appli QualGent" not in texts.texts  # the French label is not the default
    assert texts.ids == REAL_IDS | {"string/greeting_fr_only"}
    sparse = package_texts(str(APKS / "aapt2-sparse.apk"))
    assert (sparse.strings, sparse.ids) == (REAL_STRINGS, REAL_IDS)  # aapt2 drops the untranslatable one


def test_a_bundle_built_by_aapt2_proto_format_reads_its_manifest_and_table() -> None:
    info = inspect_package(str(APKS / "aapt2-bundle.aab"), "aab")
    assert info.metadata == {**REAL_METADATA, "package_type": "aab"}
    texts = package_texts(str(APKS / "aapt2-bundle.aab"))
    assert (texts.strings, texts.texts, texts.ids) == (REAL_STRINGS, set(REAL_STRINGS.values()), REAL_IDS)


def test_the_real_manifests_list_every_resource_they_refer_to() -> None:
    with zipfile.ZipFile(APKS / "aapt.apk") as z:
        binary = parse_manifest(z.read("AndroidManifest.xml"))
        arsc = ResourceTable(z.read("resources.arsc"), MAX_TABLE_STRINGS)
    with zipfile.ZipFile(APKS / "aapt2-bundle.aab") as z:
        proto = parse_proto_manifest(z.read("base/manifest/AndroidManifest.xml"))
        proto_table = ProtoResourceTable.parse(z.read("base/resources.pb"))
    # The application's label and the activity's (aapt2 numbers resources in another order).
    assert {arsc.name_of(ref) for ref in binary.resource_refs} == {"string/app_name", "string/login_title"}
    assert {proto_table.names[ref] for ref in proto.resource_refs} == {"string/app_name", "string/login_title"}
    assert binary.label == ResourceRef(0x7F030000)
    assert proto.label == ResourceRef(0x7F030000, "string/app_name")  # proto XML names what it refers to


# ------------------------------------------------------------------------------------- binary XML


@pytest.mark.parametrize(
    "options",
    [{}, {"utf8": True}, {"obfuscate": True}, {"resource_map": False}, {"utf8": True, "obfuscate": True}],
    ids=["utf16", "utf8", "obfuscated-names", "no-resource-map", "utf8-obfuscated"],
)
def test_manifest_fields_read_in_every_encoding(options: dict[str, bool]) -> None:
    root = manifest_element(
        package="org.example.ünïcode",
        version_code=2_100_000_000,
        version_name="2.0 (βeta)",
        min_sdk=23,
        target_sdk="Tiramisu",
        permissions=["android.permission.CAMERA", "com.example.permission.C2D"],
        label="Ünïcode ☕",
    )
    parsed = parse_manifest(axml(root, **options))
    assert parsed.package == "org.example.ünïcode"
    assert parsed.version_code == 2_100_000_000
    assert parsed.version_name == "2.0 (βeta)"
    assert (parsed.min_sdk, parsed.target_sdk) == (23, "Tiramisu")
    assert parsed.permissions == ["android.permission.CAMERA", "com.example.permission.C2D"]
    assert parsed.label == "Ünïcode ☕"


def test_an_apk_with_a_literal_label_needs_no_resource_table(tmp_path: Path) -> None:
    root = manifest_element(
        version_code=3, permissions=["android.permission.INTERNET", "android.permission.INTERNET"], label="Plain"
    )
    root.children.append(Element("uses-permission-sdk-23", {"android:name": "android.permission.CAMERA"}))
    info = inspect_package(write(tmp_path, "a.apk", apk(axml(root))), "apk")
    assert info.platform == "android"
    assert info.metadata == {
        "package_type": "apk",
        "package_id": "com.example.app",
        "package_name": "com.example.app",
        "version_code": 3,
        "version_name": "1.2.3",
        "min_sdk": 24,
        "target_sdk": 34,
        "permissions": ["android.permission.INTERNET", "android.permission.CAMERA"],
        "app_label": "Plain",
        "display_name": "Plain",
    }


@pytest.mark.parametrize(
    "encoding",
    [{}, {"utf8": False}, {"sparse": True}, {"offset16": True}, {"compact": True}],
    ids=["utf8", "utf16", "sparse", "offset16", "compact"],
)
def test_a_label_reference_resolves_through_the_resource_table(tmp_path: Path, encoding: dict[str, bool]) -> None:
    resources = Resources(package="com.example.app")
    resources.add("string", "app_name", "Default name")
    resources.add("string", "app_name", "Nom", config="fr")
    # Only translated: found in the French chunk, however its index is encoded.
    french = resources.add("string", "french_only", "Seulement français", config="fr")
    resources.add("string", "other", "x")
    metadata = inspect_package(labelled_apk(tmp_path, resources, french, **encoding), "apk").metadata
    assert metadata["app_label"] == metadata["display_name"] == "Seulement français"
    label = resources.id_of("string", "app_name")
    metadata = inspect_package(labelled_apk(tmp_path, resources, label, **encoding), "apk").metadata
    assert metadata["app_label"] == "Default name"


def test_references_in_any_field_resolve_and_follow_aliases(tmp_path: Path) -> None:
    resources = Resources()
    name = resources.add("string", "app_name", "Aliased")
    alias = resources.add("string", "launcher_name", ResourceRef(name))
    version = resources.add("string", "version", "9.9.9")
    code = resources.add("integer", "version_code", 99)
    content = apk(
        manifest(label=ResourceRef(alias), version_name=ResourceRef(version), version_code=ResourceRef(code)),
        resources.arsc(),
    )
    metadata = inspect_package(write(tmp_path, "a.apk", content), "apk").metadata
    assert (metadata["app_label"], metadata["version_name"], metadata["version_code"]) == ("Aliased", "9.9.9", 99)
    texts = package_texts(write(tmp_path, "a.apk", content))
    assert texts.strings == {"app_name": "Aliased", "launcher_name": "Aliased", "version": "9.9.9"}
    assert texts.ids == {"string/app_name", "string/launcher_name", "string/version", "integer/version_code"}


def test_a_label_the_package_cannot_resolve_is_named_not_invented(tmp_path: Path) -> None:
    no_table = apk(manifest(label=ResourceRef(0x7F030000)))
    metadata = inspect_package(write(tmp_path, "a.apk", no_table), "apk").metadata
    assert "app_label" not in metadata and "display_name" not in metadata
    assert metadata["app_label_resource"] == "@0x7f030000"
    resources = Resources()
    resources.add("string", "app_name", "x")
    missing = apk(manifest(label=ResourceRef(0x7F010005)), resources.arsc())
    metadata = inspect_package(write(tmp_path, "b.apk", missing), "apk").metadata
    assert metadata["app_label_resource"] == "@0x7f010005"


def test_a_reference_loop_in_the_table_ends(tmp_path: Path) -> None:
    resources = Resources()
    first = 0x7F010000  # string/a; string/b is the next ID
    resources.add("string", "a", ResourceRef(first + 1))
    resources.add("string", "b", ResourceRef(first))
    content = apk(manifest(label=ResourceRef(first)), resources.arsc())
    with fast():
        metadata = inspect_package(write(tmp_path, "a.apk", content), "apk").metadata
    assert metadata["app_label_resource"] == "@string/a"
    assert package_texts(write(tmp_path, "a.apk", content)).strings == {}


def test_complex_entries_have_names_but_no_text(tmp_path: Path) -> None:
    resources = Resources()
    resources.add("style", "AppTheme", None)
    resources.add("string", "hello", "Hello")
    texts = package_texts(write(tmp_path, "a.apk", apk(manifest(), resources.arsc())))
    assert texts.ids == {"style/AppTheme", "string/hello"}
    assert texts.texts == {"Example", "Hello"}  # the manifest's literal label is shown too


def test_metadata_strings_lose_control_characters_and_are_capped(tmp_path: Path) -> None:
    content = apk(manifest(label="Bad\x00Name\x1b", version_name="v" * 2000))
    metadata = inspect_package(write(tmp_path, "a.apk", content), "apk").metadata
    assert metadata["app_label"] == "BadName"
    assert metadata["version_name"] == "v" * 500


# ------------------------------------------------------------------------------- corrupt manifests


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x03\x00\x08\x00manifest", "container"),
        (b"m", "shorter than a chunk header"),
        (b"<?xml version='1.0'?><manifest package='a'/>", "not an XML document"),
        (axml(Element("resources", {}, [])), "root element is <resources>"),
        (axml(Element("manifest", {}, [])), "names no package"),
        (axml(manifest_element())[:-40], "container"),
        (axml(manifest_element()).replace(b"\x02\x01\x10\x00", b"\x03\x01\x10\x00", 1), "never started"),
        (struct.pack("<HHI", 3, 8, 8), "no root element"),
    ],
    ids=["fixture-stub", "one-byte", "text-xml", "wrong-root", "no-package", "truncated", "end-before-start", "empty"],
)
def test_a_corrupt_manifest_in_a_valid_zip_is_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    message = refused(write(tmp_path, "a.apk", apk(content)), "apk")
    assert reason in message
    if reason != "names no package":
        assert message.startswith("The APK's AndroidManifest.xml is not valid binary XML: ")


def test_element_before_string_pool_and_bad_string_index_are_refused() -> None:
    doc = axml(manifest_element())
    pool_size = struct.unpack_from("<I", doc, 12)[0]
    without_pool = doc[:8] + doc[8 + pool_size :]
    with pytest.raises(FormatError, match="before the string pool"):
        parse_manifest(struct.pack("<HHI", 3, 8, len(without_pool)) + without_pool[8:])
    # An element whose name index points past the pool.
    element_at = doc.index(b"\x02\x01\x10\x00")
    bad = bytearray(doc)
    struct.pack_into("<I", bad, element_at + 20, 999_999)
    with pytest.raises(FormatError, match="outside the string pool"):
        parse_manifest(bytes(bad))


def test_a_corrupt_resource_table_is_refused_when_the_label_needs_it(tmp_path: Path) -> None:
    content = apk(manifest(label=ResourceRef(0x7F010000)), b"\x02\x00\x0c\x00garbage-table")
    assert "The APK's resources.arsc is not a valid resource table" in refused(write(tmp_path, "a.apk", content))
    with pytest.raises(PackageError, match="not a valid resource table"):
        package_texts(write(tmp_path, "a.apk", content))


def test_type_chunks_need_their_spec_first() -> None:
    data = table(["string"], ["k"], ["v"], [type_chunk(1, 1, {0: simple_entry(0, 1)})])
    with pytest.raises(FormatError, match="before its type spec"):
        ResourceTable(data, MAX_TABLE_STRINGS)


# -------------------------------------------------------------------------------------------- AAB


def test_a_bundle_reads_its_proto_manifest_and_resources(tmp_path: Path) -> None:
    resources = Resources(package="com.example.bundle")
    label = resources.add("string", "app_name", "Bundle App")
    resources.add("string", "app_name", "Appli", config="fr")
    resources.add("id", "submit", False)
    root = manifest_element(package="com.example.bundle", version_code=12, label=ResourceRef(label, "string/app_name"))
    path = write(tmp_path, "b.aab", aab(proto_manifest(root), proto_resources(resources)))
    metadata = inspect_package(path, "aab").metadata
    assert metadata["package_id"] == "com.example.bundle"
    assert (metadata["version_code"], metadata["version_name"]) == (12, "1.2.3")
    assert (metadata["min_sdk"], metadata["target_sdk"]) == (24, 34)
    assert metadata["permissions"] == ["android.permission.INTERNET"]
    assert metadata["app_label"] == "Bundle App"
    texts = package_texts(path)
    assert texts.strings == {"app_name": "Bundle App"}
    assert texts.ids == {"string/app_name", "id/submit"}
    assert texts.contains_id("submit")


def test_a_bundle_whose_label_has_no_table_names_the_resource(tmp_path: Path) -> None:
    root = manifest_element(label=ResourceRef(0x7F010000, "string/app_name"))
    metadata = inspect_package(write(tmp_path, "b.aab", aab(proto_manifest(root))), "aab").metadata
    assert metadata["app_label_resource"] == "@string/app_name"
    assert metadata["package_name"] == "com.example.app"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x0a\x0bmanifest", "runs past the end"),
        (proto_manifest(Element("resources")), "root element is <resources>"),
        (b"", "no root element"),
        (proto_manifest(manifest_element(package=None)), "names no package"),
    ],
    ids=["truncated", "wrong-root", "empty", "no-package"],
)
def test_a_corrupt_bundle_manifest_is_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    message = refused(write(tmp_path, "b.aab", aab(content)), "aab")
    assert reason in message and message.startswith("The AAB's")


def test_a_corrupt_bundle_resource_table_is_refused_when_the_label_needs_it(tmp_path: Path) -> None:
    root = manifest_element(label=ResourceRef(0x7F010000, "string/app_name"))
    path = write(tmp_path, "b.aab", aab(proto_manifest(root), b"\x12\xff\x01"))
    assert "The AAB's resources.pb is not a valid resource table" in refused(path, "aab")


def test_proto_manifest_nesting_is_limited() -> None:
    parse_proto_manifest(proto_manifest(nested(100)))
    with pytest.raises(FormatError, match="deeper than 100"):
        parse_proto_manifest(proto_manifest(nested(101)))


def test_protobuf_framing_errors_are_format_errors() -> None:
    for bad in (b"\x0a\xff\xff\xff\xff\x0f", b"\x0b", b"\x08" + b"\xff" * 11, b"\x00\x01"):
        with pytest.raises(FormatError):
            parse_proto_manifest(bad)


# -------------------------------------------------------------------------------------------- iOS


def test_an_ipa_has_the_uniform_keys_and_its_plist_texts(tmp_path: Path) -> None:
    plist = {
        "CFBundleIdentifier": "com.example.ios",
        "CFBundleShortVersionString": "3.1",
        "CFBundleVersion": "310",
        "CFBundleName": "Example iOS",
        "MinimumOSVersion": "16.0",
        "NSCameraUsageDescription": "Scan receipts",
        "CFBundleURLTypes": [{"CFBundleURLSchemes": ["example"], "Depth": {"Deeper": ["leaf text"]}}],
        "UIRequiredDeviceCapabilities": ["arm64"],
        "LSRequiresIPhoneOS": True,
    }
    path = write(tmp_path, "a.ipa", ipa(plist))
    assert inspect_package(path, "ipa").metadata == {
        "package_type": "ipa",
        "package_id": "com.example.ios",
        "bundle_id": "com.example.ios",
        "version_name": "3.1",
        "build_number": "310",
        "display_name": "Example iOS",
        "app_label": "Example iOS",
        "min_os_version": "16.0",
    }
    texts = package_texts(path)
    assert texts.texts == {
        "com.example.ios",
        "3.1",
        "310",
        "Example iOS",
        "16.0",
        "Scan receipts",
        "example",
        "leaf text",
        "arm64",
    }
    assert texts.ids == set() and texts.strings == {}


def test_a_binary_plist_sharing_one_list_everywhere_is_walked_once(tmp_path: Path) -> None:
    # 1000 references to one 1000-item list: 10^6 values if every reference were walked.
    leaf = [f"t{i}" for i in range(1000)]
    shared = [leaf] * 1000
    path = write(tmp_path, "a.ipa", ipa({"CFBundleIdentifier": "x", "Shared": shared}, binary=True))
    with fast():
        texts = package_texts(path)
    assert len(texts.texts) == 1001


def test_a_zipped_simulator_app_reads_like_an_ipa(tmp_path: Path) -> None:
    content = zip_bytes(
        {"Sim.app/Info.plist": plistlib.dumps({"CFBundleIdentifier": "com.sim", "CFBundleName": "Sim"})}
    )
    path = write(tmp_path, "sim.zip", content)
    assert inspect_package(path, "app.zip").metadata["package_id"] == "com.sim"
    assert package_texts(path).texts == {"com.sim", "Sim"}


# ----------------------------------------------------------------------------- matching flow steps


def test_flow_ids_match_in_the_forms_flows_write_them() -> None:
    texts = PackageTexts(ids={"id/login_button", "string/app_name"})
    for needle in ("login_button", "id/login_button", "@id/login_button", "@+id/login_button", "com.x:id/login_button"):
        assert texts.contains_id(needle), needle
    assert texts.contains_id("string/app_name")
    assert not texts.contains_id("app_name")  # a bare name is a view id
    assert not texts.contains_id("logout_button")
    assert not texts.contains_id("")


def test_flow_texts_match_exactly_ignoring_case_or_through_format_strings() -> None:
    texts = PackageTexts(texts={"Sign in", "Hello, %1$s!", "%d items in %s", "Save 50% now", "%s%s", "a%s%sb%s%sa"})
    assert texts.contains_text("Sign in") and texts.contains_text("  SIGN IN ")
    assert texts.contains_text("Hello, Bob!")
    assert texts.contains_text("3 items in Cart")
    assert not texts.contains_text("Hello, !")
    assert not texts.contains_text("Sign")
    assert not texts.contains_text("Save 50% later")
    assert not texts.contains_text("")
    assert not texts.contains_text("anything at all")  # "%s%s" alone matches nothing
    with fast():  # adjacent placeholders collapse: no catastrophic backtracking
        assert not texts.contains_text("a" + "ab" * 499)


# -------------------------------------------------------------------------------------------- limits


def test_a_manifest_declared_over_4_mb_is_refused_before_it_is_read(tmp_path: Path) -> None:
    content = with_declared_size(apk(), "AndroidManifest.xml", 4 * MB + 1)
    assert "larger than 4 MB" in refused(write(tmp_path, "a.apk", content), "apk")


def test_a_manifest_really_over_4_mb_is_refused(tmp_path: Path) -> None:
    # Incompressible padding inside a valid document: only the size is wrong.
    doc = axml(manifest_element())
    padding = os.urandom(4 * MB)
    body = doc[8:] + struct.pack("<HHI", 0x0104, 8, 8 + len(padding)) + padding
    big = struct.pack("<HHI", 3, 8, 8 + len(body)) + body
    content = zip_bytes({"AndroidManifest.xml": big}, compression=0)
    assert "larger than 4 MB" in refused(write(tmp_path, "a.apk", content), "apk")


def test_a_size_that_lies_low_reads_no_more_than_it_says(tmp_path: Path) -> None:
    doc = axml(manifest_element())
    padding = os.urandom(2 * MB)
    body = doc[8:] + struct.pack("<HHI", 0x0104, 8, 8 + len(padding)) + padding
    real = struct.pack("<HHI", 3, 8, 8 + len(body)) + body
    content = with_declared_size(apk(real), "AndroidManifest.xml", 1000)
    # zipfile stops at the declared size, and the checksum of what it read then fails.
    assert "AndroidManifest.xml cannot be read from the archive: Bad CRC-32" in refused(
        write(tmp_path, "a.apk", content)
    )


def test_a_manifest_that_inflates_over_200_times_is_refused(tmp_path: Path) -> None:
    doc = axml(manifest_element())
    zeros = bytes(3 * MB)
    body = doc[8:] + struct.pack("<HHI", 0x0104, 8, 8 + len(zeros)) + zeros
    bomb = struct.pack("<HHI", 3, 8, 8 + len(body)) + body
    assert "inflates more than 200 times" in refused(write(tmp_path, "a.apk", apk(bomb)), "apk")


def test_a_resource_table_over_64_mb_or_a_bomb_is_refused(tmp_path: Path) -> None:
    resources = Resources()
    label = resources.add("string", "app_name", "x")
    content = apk(manifest(label=ResourceRef(label)), resources.arsc())
    declared = with_declared_size(content, "resources.arsc", 64 * MB + 1)
    assert "resources.arsc is larger than 64 MB" in refused(write(tmp_path, "a.apk", declared))
    with pytest.raises(PackageError, match="larger than 64 MB"):
        package_texts(write(tmp_path, "a.apk", declared))
    bomb = apk(manifest(label=ResourceRef(label)), resources.arsc() + bytes(2 * MB))
    assert "resources.arsc inflates more than 200 times" in refused(write(tmp_path, "b.apk", bomb))


def test_a_manifest_with_more_than_100k_strings_is_refused(tmp_path: Path) -> None:
    pool = string_pool([f"s{i}" for i in range(MAX_STRINGS + 1)], utf8=True)
    doc = struct.pack("<HHI", 3, 8, 8 + len(pool)) + pool
    assert "more than the limit of 100000" in refused(write(tmp_path, "a.apk", apk(doc)), "apk")
    at_limit = string_pool([f"s{i}" for i in range(MAX_STRINGS)], utf8=True)
    assert len(StringPool(at_limit, read_chunk(at_limit, 0, len(at_limit)))) == MAX_STRINGS


def test_nesting_deeper_than_100_is_refused(tmp_path: Path) -> None:
    assert parse_manifest(axml(nested(100))).package == "com.example.app"
    message = refused(write(tmp_path, "a.apk", apk(axml(nested(101)))), "apk")
    assert "nest deeper than 100 levels" in message


# ----------------------------------------------------------------------------- hostile parse time


def _hostile_manifest_chunks() -> bytes:
    # A 4 MB document of the smallest chunks there are.
    doc = axml(manifest_element())
    flood = struct.pack("<HHI", 0x0104, 8, 8) * ((4 * MB - len(doc)) // 8)
    body = doc[8:] + flood
    return struct.pack("<HHI", 3, 8, 8 + len(body)) + body


def _overlapping_pool() -> bytes:
    # 100k strings that all start at the same long string.
    count, text = MAX_STRINGS, "x" * 30_000
    raw = text.encode()
    data = bytes([0x80 | (len(raw) >> 8), len(raw) & 0xFF]) * 2 + raw + b"\x00"
    data += b"\x00" * (-len(data) % 4)
    header = struct.pack("<IIIII", count, 0, 0x100, 28 + 4 * count, 0)
    pool = struct.pack("<HHI", 1, 28, 28 + 4 * count + len(data)) + header + bytes(4 * count) + data
    return pool


def _chunk_flood_table() -> bytes:
    resources = Resources()
    resources.add("string", "a", "b")
    body = resources.arsc()[12:] + struct.pack("<HHI", 0x0999, 8, 8) * (MAX_CHUNKS + 10)
    return struct.pack("<HHII", 2, 12, 12 + len(body), 1) + body


def _slot_flood_table() -> bytes:
    empty = type_chunk(1, 65535, {}, config="fr")
    return table(["id"], ["k"], [], [spec_chunk(1, 65535), *[empty] * (MAX_ENTRY_SLOTS // 65535 + 1)])


def _resource_flood_table() -> bytes:
    chunks = []
    for type_id in range(1, 5):
        chunks += [spec_chunk(type_id, 65535), shared_entry_chunk(type_id, 65535)]
    return table(["a", "b", "c", "d"], ["k"], [], chunks)


def _reference_loop_flood_table() -> bytes:
    # Thousands of configurations of one type, none holding the entry a reference asks for.
    chunks = [spec_chunk(1, 2)] + [type_chunk(1, 2, {0: simple_entry(0, 1)}, config=f"{i:02d}") for i in range(3000)]
    return table(["string"], ["k"], [], chunks)


def _proto_field_flood(size: int) -> bytes:
    return pb_bytes(1, pb_text(3, "manifest") + pb_varint(9, 1) * (size // 2))


def _proto_entry_flood() -> bytes:
    entries = b"".join(
        pb_bytes(3, pb_bytes(1, pb_varint(1, i % 65536)) + pb_text(2, f"n{i}") + pb_bytes(6, pb_bytes(2, b"")))
        for i in range(MAX_TABLE_FIELDS // 4)
    )
    return pb_bytes(2, pb_bytes(3, pb_text(2, "string") + entries))


def _scan(data: bytes) -> object:
    return ResourceTable(data, MAX_TABLE_STRINGS).resource_names()


HOSTILE: dict[str, tuple[Callable[[], bytes], Callable[[bytes], object], str | None]] = {
    "manifest-chunk-flood": (_hostile_manifest_chunks, parse_manifest, None),
    "table-chunk-flood": (_chunk_flood_table, _scan, f"more than {MAX_CHUNKS} chunks"),
    "table-slot-flood": (_slot_flood_table, _scan, f"more than {MAX_ENTRY_SLOTS} entry slots"),
    "table-resource-flood": (_resource_flood_table, _scan, f"more than {MAX_RESOURCES} resources"),
    "proto-manifest-field-flood": (lambda: _proto_field_flood(4 * MB), parse_proto_manifest, "protobuf fields"),
    "proto-table-field-flood": (
        lambda: pb_bytes(2, pb_bytes(3, pb_varint(9, 1) * (32 * MB // 2))),
        ProtoResourceTable.parse,
        "protobuf fields",
    ),
    "proto-table-entry-flood": (_proto_entry_flood, ProtoResourceTable.parse, "protobuf fields"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_inputs_are_read_or_refused_within_a_second(case: str) -> None:
    build, read, refusal = HOSTILE[case]
    data = build()
    with fast():
        if refusal is None:
            read(data)
        else:
            with pytest.raises(FormatError, match=refusal):
                read(data)


def test_overlapping_strings_cannot_multiply_decoding_work() -> None:
    data = _overlapping_pool()
    pool = StringPool(data, read_chunk(data, 0, len(data)))
    with fast(), pytest.raises(FormatError, match="overlap"):
        for index in range(len(pool)):
            pool.get(index)


def test_a_lookup_through_thousands_of_configurations_is_bounded() -> None:
    data = _reference_loop_flood_table()
    resources = ResourceTable(data, MAX_TABLE_STRINGS)
    with fast(), pytest.raises(FormatError, match="type chunks"):
        for _ in range(200):
            resources.resolve(0x7F010001)  # in no configuration: every lookup visits them all


def test_a_hostile_apk_is_refused_end_to_end_within_a_second(tmp_path: Path) -> None:
    members = {"AndroidManifest.xml": manifest(label=ResourceRef(0x7F010000)), "resources.arsc": _slot_flood_table()}
    path = write(tmp_path, "a.apk", zip_bytes(members, compression=0))  # stored: no ratio to refuse it by
    with fast():
        inspect_package(path, "apk")  # the label's lookup touches one slot per chunk, not all of them
    with fast(), pytest.raises(PackageError, match="entry slots"):
        package_texts(path)


def test_metadata_is_small_json() -> None:
    info = inspect_package(str(APKS / "aapt.apk"), "apk")
    encoded = json.dumps(info.metadata)
    assert json.loads(encoded) == info.metadata
    assert len(encoded) < 1000  # the full string and name lists live in package_texts, not here


# ------------------------------------------------------------------------- central directory (issue 4)


def _with_end_record(body: bytes, entries: int, directory: int, *, zip64: bool = False) -> bytes:
    """``body`` followed by an end-of-central-directory record declaring ``entries`` in ``directory``
    bytes (and, for ZIP64, the ZIP64 record and locator that carry the real numbers)."""
    if not zip64:
        return body + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, entries, entries, directory, 0, 0)
    record_at = len(body)
    record = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, directory, 0)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, record_at, 1)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body + record + locator + end


@pytest.mark.parametrize("zip64", [False, True])
def test_an_archive_declaring_a_huge_directory_is_refused_before_it_is_read(tmp_path: Path, zip64: bool) -> None:
    # Millions of entries declared: Python's ZipFile would build an object per entry before any check.
    content = _with_end_record(b"\x00" * 1024, 5_000_000 if zip64 else 65_000, 400 * 1024 * 1024, zip64=zip64)
    message = refused(write(tmp_path, "a.apk", content), "apk")
    assert "refusing to inspect it" in message and "directory" in message


def test_a_real_archive_passes_the_directory_check(tmp_path: Path) -> None:
    # The end record of an ordinary APK (and of one with a zip comment) is read and let through.
    for comment in (b"", b"x" * 1000):
        path = tmp_path / f"ok{len(comment)}.apk"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("AndroidManifest.xml", manifest())
            z.comment = comment
        assert inspect_package(str(path), "apk").metadata["package_name"] == "com.example.app"
