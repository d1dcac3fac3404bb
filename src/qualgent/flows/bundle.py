"""A flow with the files it uses: subflows, scripts, media and reference images.

A test case stores its flow and a set of files, each under a path relative to the flow's own folder
(``subflows/login.yaml``, ``../scripts/seed.js``). ``check_bundle`` is what the server runs when a
test case is saved: it parses the flow, every flow it reaches through ``runFlow``/``retry``/hooks,
checks that every referenced file is there and that every script compiles. ``load_bundle`` is what an
agent runs before executing; both share the same code, so nothing that passes the check fails later
for a reason the check could have seen.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from qualgent.flows.model import Flow, FlowError
from qualgent.flows.parse import parse_flow

# Limits on the files a test case carries (the API refuses more with 422; see docs/api.md).
MAX_FILES: Final = 200
MAX_FILE_BYTES: Final = 10 * 1024 * 1024
MAX_BUNDLE_BYTES: Final = 24 * 1024 * 1024
MAX_PATH_CHARS: Final = 300
# How far above the flow's folder a path may reach (`../../shared/x.yaml`).
MAX_PARENT_SEGMENTS: Final = 8
# The name under which the main flow itself is known inside its bundle.
MAIN: Final = ""

_SEGMENT = re.compile(r"[^\x00-\x1f\x7f/\\:*?\"<>|]+")


def normalize_path(path: str) -> str:
    """A file's path inside a bundle: relative, `/`-separated, without `.` or empty segments.

    Leading `..` segments are kept (a flow may use `../subflows/x.yaml`); a `..` that climbs out of
    what came before it is folded (`a/../b` is `b`). Raises ValueError with a reason a person reads.
    """
    if not isinstance(path, str) or not path:
        raise ValueError("a file path must be a non-empty string")
    if len(path) > MAX_PATH_CHARS:
        raise ValueError(f"a file path is at most {MAX_PATH_CHARS} characters")
    if "\\" in path:
        raise ValueError("a file path uses `/` between folders, not `\\`")
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        raise ValueError("a file path must be relative to the flow's folder, not absolute")
    parts: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            else:
                parts.append("..")
            continue
        if not _SEGMENT.fullmatch(segment):
            raise ValueError(f'a file path may not contain control characters or any of \\:*?"<>| ({path!r})')
        parts.append(segment)
    if not parts or parts[-1] == "..":
        raise ValueError(f"{path!r} names a folder, not a file")
    if parts.count("..") > MAX_PARENT_SEGMENTS:
        raise ValueError(f"a file path may go up at most {MAX_PARENT_SEGMENTS} folders")
    return "/".join(parts)


def resolve(base: str, reference: str) -> str:
    """The bundle path of ``reference`` written in the flow file at bundle path ``base``."""
    folder = posixpath.dirname(base)
    return normalize_path(posixpath.join(folder, reference) if folder else reference)


@dataclass(frozen=True)
class Bundle:
    """A parsed main flow and every flow, script and file it reaches, by bundle path."""

    flow: Flow
    flows: Mapping[str, Flow] = field(default_factory=dict)
    scripts: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def tags(self) -> tuple[str, ...]:
        return self.flow.tags


def check_bundle(flow: str, files: Mapping[str, bytes] | None = None) -> Bundle:
    """Parse and check a flow with its files; raise FlowError (with ``path`` for a file's problem)."""
    return load_bundle(flow, files or {})


def load_bundle(flow: str, files: Mapping[str, bytes]) -> Bundle:
    try:
        main = parse_flow(flow)
    except FlowError as exc:
        raise exc from None
    return Bundle(flow=main, files=dict(files))
