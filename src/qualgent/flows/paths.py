"""Paths of a test case's files: relative to the flow's folder, `/`-separated, checked.

Kept apart from ``flows.bundle`` (which compiles JavaScript) so the CI client can bundle a workspace
with nothing but this module and the parser.
"""

from __future__ import annotations

import posixpath
import re
from typing import Final

# Limits on the files a test case carries (the API refuses more; see docs/api.md).
MAX_FILES: Final = 200
MAX_FILE_BYTES: Final = 10 * 1024 * 1024
MAX_BUNDLE_BYTES: Final = 24 * 1024 * 1024
MAX_PATH_CHARS: Final = 300
# How far above the flow's folder a path may reach (`../../shared/x.yaml`).
MAX_PARENT_SEGMENTS: Final = 8
MAX_SCRIPT_BYTES: Final = 256 * 1024
# Image extensions Maestro recognises on an assertScreenshot path (others get `.png` added).
IMAGE_EXTENSIONS: Final = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tiff", ".wbmp", ".heic", ".heif")

_SEGMENT = re.compile(r"[^\x00-\x1f\x7f/\\:*?\"<>|]+")


def normalize_path(path: str) -> str:
    """A file's path inside a bundle: relative, `/`-separated, without `.` or empty segments.

    Leading `..` segments are kept (a flow may use `../subflows/x.yaml`); a `..` after a folder
    cancels it (`a/../b` is `b`). Raises ValueError with a reason a person reads.
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
    """The bundle path of ``reference`` written in the flow file at bundle path ``base`` ("" = the main flow)."""
    folder = posixpath.dirname(base)
    return normalize_path(posixpath.join(folder, reference) if folder else reference)


def reference_image(path: str) -> str:
    """assertScreenshot's file: `.png` is added unless the path already ends with an image extension."""
    return path if path.lower().endswith(IMAGE_EXTENSIONS) else f"{path}.png"
