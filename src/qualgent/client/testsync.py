"""Tests as code: a Maestro workspace, as it is, becomes the organisation's test cases.

A workspace is a folder of flow files with an optional ``config.yaml`` (or ``config.yml``), read as
Maestro reads it: ``flows`` (globs choosing which flow files are test cases; default ``*``, the
top-level folder only), ``includeTags`` / ``excludeTags`` / ``requireTags`` (which of them, by the
flows' ``tags``) and ``executionOrder``. Each test case carries its flow and every file the flow
reaches (subflows, scripts, media, reference images), with paths relative to the flow's own folder.

A test case made by sync is recognised by its description, ``qualgent sync: <path>`` (the file's path
relative to the workspace), so a renamed test keeps its runs' history as long as its file stays put, and
test cases made by hand are never touched. Its category is the file's folder ("smoke/login.yaml" →
"smoke"; nested folders join with "/"; a top-level flow has none), its name the flow's ``name:`` or the
file's stem, its tags the flow's ``tags:`` (the server reads them from the flow).

Only ``qualgent.flows.parse`` / ``bundle`` / ``commands`` are used from the flow language: they need
PyYAML and nothing of the server's, so the client stays light.
"""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from qualgent.client.errors import APIError, PayloadTooLargeError, ValidationError
from qualgent.client.models import TestCase, TestCaseDetail
from qualgent.client.sync import Client
from qualgent.flows.commands import Kind
from qualgent.flows.model import FlowError
from qualgent.flows.parse import parse_file
from qualgent.flows.paths import reference_image, resolve

MARK = "qualgent sync: "
FLOW_SUFFIXES = (".yaml", ".yml")
CONFIG_NAMES = ("config.yaml", "config.yml")
DEFAULT_FLOWS = ("*",)

Action = Literal["create", "update", "unchanged", "deactivate", "refused"]
Progress = Callable[[str], None]  # called once per flow handled, with its path


class WorkspaceError(Exception):
    """The workspace cannot be synced at all (a bad config, no flows): nothing is sent."""


# ------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class ExecutionOrder:
    flows_order: tuple[str, ...] = ()
    continue_on_failure: bool = True


@dataclass(frozen=True)
class WorkspaceConfig:
    flows: tuple[str, ...] = DEFAULT_FLOWS
    include_tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    require_tags: tuple[str, ...] = ()
    execution_order: ExecutionOrder | None = None
    file: str | None = None  # the config file's name, when there is one


def find_config(folder: Path) -> Path | None:
    """``config.yaml``, else ``config.yml``, directly in the workspace (Maestro's rule)."""
    for name in CONFIG_NAMES:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def load_config(folder: Path) -> WorkspaceConfig:
    path = find_config(folder)
    if path is None:
        return WorkspaceConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkspaceError(f"{path.name}: cannot be read ({exc})") from None
    return parse_config(text, path.name)


def parse_config(text: str, name: str = "config.yaml") -> WorkspaceConfig:
    """A workspace config's text; a blank file is the defaults; unknown keys are ignored (as Maestro does)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise WorkspaceError(
            f'{name}{where}: not valid YAML ({problem}); quote patterns that start with `*` or `!`, e.g. - "*/*"'
        ) from None
    if data is None:
        return WorkspaceConfig(file=name)
    if not isinstance(data, dict):
        raise WorkspaceError(f"{name}: must be a mapping of keys (flows, includeTags, …), not {type(data).__name__}")

    def strings(key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return default
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str | int | float) for i in items):
            raise WorkspaceError(f"{name}: `{key}` must be a list of strings")
        return tuple(str(i) for i in items)

    flows = strings("flows", DEFAULT_FLOWS)
    if not flows:
        raise WorkspaceError(f"{name}: `flows` lists no pattern")
    order: ExecutionOrder | None = None
    raw_order = data.get("executionOrder")
    if raw_order is not None:
        if not isinstance(raw_order, dict):
            raise WorkspaceError(f"{name}: `executionOrder` must be a mapping (flowsOrder, continueOnFailure)")
        cont = raw_order.get("continueOnFailure", True)
        if not isinstance(cont, bool):
            raise WorkspaceError(f"{name}: `executionOrder.continueOnFailure` must be true or false")
        listed = raw_order.get("flowsOrder") or []
        listed = [listed] if isinstance(listed, str) else listed
        if not isinstance(listed, list) or not all(isinstance(i, str) for i in listed):
            raise WorkspaceError(f"{name}: `executionOrder.flowsOrder` must be a list of flow names")
        order = ExecutionOrder(tuple(dict.fromkeys(listed)), cont)
    config = WorkspaceConfig(
        flows=flows,
        include_tags=strings("includeTags"),
        exclude_tags=strings("excludeTags"),
        require_tags=strings("requireTags"),
        execution_order=order,
        file=name,
    )
    FlowGlobs(config.flows, name)  # a bad pattern is an error now, not a silent mismatch
    return config


# ------------------------------------------------------------------------------------------- globs


class GlobError(ValueError):
    pass


def glob_regex(pattern: str) -> str:
    """A regular expression for Java NIO's glob syntax (``FileSystem.getPathMatcher("glob:…")``, the one
    Maestro uses), matched against a whole `/`-separated path: ``*`` and ``?`` stay within a folder,
    ``**`` crosses folders, ``[…]`` is a class (``[!…]`` negated; never `/`), ``{a,b}`` alternatives
    (not nested), ``\\`` escapes the next character."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    in_group = False
    while i < n:
        c = pattern[i]
        i += 1
        if c == "\\":
            if i == n:
                raise GlobError(f"{pattern!r}: nothing to escape after the final `\\`")
            out.append(re.escape(pattern[i]))
            i += 1
        elif c == "*":
            if i < n and pattern[i] == "*":
                out.append(".*")
                i += 1
            else:
                out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            regex, i = _glob_class(pattern, i)
            out.append(regex)
        elif c == "{":
            if in_group:
                raise GlobError(f"{pattern!r}: groups `{{…}}` cannot be nested")
            out.append("(?:(?:")
            in_group = True
        elif c == "}" and in_group:
            out.append("))")
            in_group = False
        elif c == "," and in_group:
            out.append(")|(?:")
        else:
            out.append(re.escape(c))
    if in_group:
        raise GlobError(f"{pattern!r}: a `{{` has no closing `}}`")
    return "".join(out)


def _glob_class(pattern: str, i: int) -> tuple[str, int]:
    """``[…]`` from just after its `[`: the regex and the index after its `]`."""
    n = len(pattern)
    negate = False
    items: list[str] = []
    if i < n and pattern[i] == "!":
        negate = True
        i += 1
    if i < n and pattern[i] == "-":
        items.append(r"\-")
        i += 1
    previous: str | None = None  # a character that may start a range
    while i < n:
        c = pattern[i]
        i += 1
        if c == "]":
            break
        if c == "/":
            raise GlobError(f"{pattern!r}: `/` cannot be inside `[…]`")
        if c == "-":
            if previous is None:
                raise GlobError(f"{pattern!r}: a range in `[…]` has no start")
            if i >= n or pattern[i] == "]":  # a final `-` is itself
                items.append(r"\-")
                continue
            end = pattern[i]
            i += 1
            if end < previous:
                raise GlobError(f"{pattern!r}: the range {previous}-{end} is backwards")
            items[-1] = f"{_class_char(previous)}-{_class_char(end)}"
            previous = None
            continue
        items.append(_class_char(c))
        previous = c
    else:
        raise GlobError(f"{pattern!r}: a `[` has no closing `]`")
    if not items:
        raise GlobError(f"{pattern!r}: `[]` is empty")
    return f"(?!/)[{'^' if negate else ''}{''.join(items)}]", i


def _class_char(c: str) -> str:
    return "\\" + c if c in "\\]^-[" else c


class FlowGlobs:
    """The ``flows`` patterns: a path is chosen when it matches a positive pattern and no ``!`` one."""

    def __init__(self, patterns: Iterable[str], where: str = "config.yaml") -> None:
        self.positive: list[re.Pattern[str]] = []
        self.negative: list[re.Pattern[str]] = []
        for pattern in patterns:
            negative = pattern.startswith("!")
            body = pattern[1:] if negative else pattern
            if not body:
                raise WorkspaceError(f"{where}: `flows` has an empty pattern")
            try:
                compiled = re.compile(glob_regex(body), re.DOTALL)
            except (GlobError, re.error) as exc:
                raise WorkspaceError(f"{where}: `flows` pattern {exc}") from None
            (self.negative if negative else self.positive).append(compiled)
        if not self.positive:
            raise WorkspaceError(f'{where}: `flows` has only exclusions (`!…`); add the flows to include, e.g. - "**"')

    def matches(self, path: str) -> bool:
        return any(p.fullmatch(path) for p in self.positive) and not any(p.fullmatch(path) for p in self.negative)


def tags_selected(
    tags: Iterable[str], include: Iterable[str] = (), exclude: Iterable[str] = (), require: Iterable[str] = ()
) -> bool:
    """Maestro's tag rule: at least one include tag (when there are any), every require tag, no exclude tag."""
    have = set(tags)
    wanted = set(include)
    return (not wanted or bool(have & wanted)) and set(require) <= have and not have & set(exclude)


# --------------------------------------------------------------------------------------- workspace


@dataclass
class LocalFlow:
    """A flow file that is a test case, with every file it reaches (``error``: refused before sending)."""

    path: str  # relative to the workspace, with "/"
    name: str
    category: str | None
    tags: tuple[str, ...] = ()
    flow: str = ""
    files: dict[str, bytes] = field(default_factory=dict)  # bundle path (relative to the flow's folder) → bytes
    error: str | None = None

    def digests(self) -> set[tuple[str, str]]:
        return {(path, hashlib.sha256(data).hexdigest()) for path, data in self.files.items()}

    def files_payload(self) -> list[dict[str, str]]:
        """The files as the API takes them: UTF-8 text as ``content``, anything else as ``content_base64``."""
        payload = []
        for path, data in sorted(self.files.items()):
            try:
                payload.append({"path": path, "content": data.decode("utf-8")})
            except UnicodeDecodeError:
                payload.append({"path": path, "content_base64": base64.b64encode(data).decode("ascii")})
        return payload


@dataclass
class Workspace:
    root: Path
    config: WorkspaceConfig
    flows: list[LocalFlow]  # the test cases (refused ones included), by path
    left_out: list[LocalFlow] = field(default_factory=list)  # chosen by `flows` but not by the tags
    unused: list[str] = field(default_factory=list)  # flow files neither chosen nor used by a chosen flow
    order: list[str] = field(default_factory=list)  # paths of executionOrder.flowsOrder, in that order
    missing_order: list[str] = field(default_factory=list)  # flowsOrder names that are no test case here

    def order_of(self, path: str) -> int | None:
        return self.order.index(path) + 1 if path in self.order else None


def is_flow_file(relative: str) -> bool:
    """A flow file by its name (Maestro's rule): .yaml/.yml, and not a config (``…config.yaml``)."""
    name = posixpath.basename(relative)
    stem, suffix = posixpath.splitext(name)
    return suffix.lower() in FLOW_SUFFIXES and not stem.lower().endswith("config")


def flow_files(root: Path, config_file: str | None = None) -> list[str]:
    """Every flow file under ``root`` (recursively), as sorted relative paths. Dot-folders and dot-files
    (``.github/``, ``.git/``) are not part of a workspace."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(folder).relative_to(root).as_posix()
        for name in files:
            if name.startswith("."):
                continue
            relative = name if base == "." else f"{base}/{name}"
            if relative == config_file or not is_flow_file(relative):
                continue
            if (Path(folder) / name).is_file():
                found.append(relative)
    return sorted(found)


def read_workspace(folder: Path) -> Workspace:
    """Read a workspace: its config, which flow files are test cases, and each one's bundle.

    A flow that cannot be read, parsed or bundled is kept with its ``error`` (it is reported as refused,
    the others go on); a workspace with no test case at all is a WorkspaceError, as in Maestro.
    """
    if not folder.is_dir():
        raise WorkspaceError(f"{folder}: not a folder")
    root = folder.resolve()
    config = load_config(root)
    globs = FlowGlobs(config.flows, config.file or "config.yaml")
    candidates = flow_files(root, config.file)
    chosen = [p for p in candidates if globs.matches(p)]
    if not chosen:
        raise WorkspaceError(_nothing_matched(config, candidates))

    flows: list[LocalFlow] = []
    left_out: list[LocalFlow] = []
    used: set[str] = set()
    for path in chosen:
        local = _read_flow(root, path)
        if local.error is None and not tags_selected(
            local.tags, config.include_tags, config.exclude_tags, config.require_tags
        ):
            left_out.append(local)
            continue
        if local.error is None:
            _bundle(root, local, used)
        flows.append(local)
    if not flows:
        raise WorkspaceError(
            "the tags leave no flow: "
            + ", ".join(
                f"{key} {list(values)}"
                for key, values in (
                    ("includeTags", config.include_tags),
                    ("excludeTags", config.exclude_tags),
                    ("requireTags", config.require_tags),
                )
                if values
            )
        )
    selected = {f.path for f in flows} | {f.path for f in left_out}
    workspace = Workspace(root, config, flows, left_out, [p for p in candidates if p not in selected and p not in used])
    if config.execution_order is not None:
        by_name: dict[str, str] = {}
        for local in flows:
            by_name.setdefault(local.name, local.path)
        for name in config.execution_order.flows_order:
            if name in by_name:
                workspace.order.append(by_name[name])
            else:
                workspace.missing_order.append(name)
    return workspace


def _nothing_matched(config: WorkspaceConfig, candidates: list[str]) -> str:
    if config.flows == DEFAULT_FLOWS:
        message = "no flow file at the top of the folder"
        nested = [p for p in candidates if "/" in p]
        if nested:
            message += (
                f" ({len(nested)} in sub-folders, e.g. {nested[0]}). As in Maestro, only the top-level flows "
                'are test cases unless a config.yaml says otherwise: for <category>/<test>.yaml write flows: ["*/*"]'
            )
        return message
    return f"no flow file matches the `flows` patterns of {config.file}: {list(config.flows)}"


def _read_flow(root: Path, path: str) -> LocalFlow:
    parent = posixpath.dirname(path)
    stem = posixpath.splitext(posixpath.basename(path))[0]
    local = LocalFlow(path, stem, parent or None)
    try:
        local.flow = (root / path).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        local.error = f"{path}: not UTF-8 text"
        return local
    except OSError as exc:
        local.error = f"{path}: cannot be read ({exc.strerror or exc})"
        return local
    try:
        parsed = parse_file(local.flow)
    except FlowError as exc:
        local.error = f"{path}{_line(exc.line)}: {exc.message}"
        return local
    local.name = (parsed.flow.name or "").strip() or stem
    local.tags = parsed.flow.tags
    return local


_WHAT = {
    Kind.FLOW_FILE: "flow file",
    Kind.SCRIPT_FILE: "script",
    Kind.MEDIA_FILES: "media file",
    Kind.REFERENCE_IMAGE: "reference image",
}


def _bundle(root: Path, local: LocalFlow, used: set[str]) -> None:
    """Collect every file the flow reaches, following subflows' own references; the first problem (with
    the workspace path and line of the file that names it) refuses the flow."""
    folder = (root / local.path).parent
    pending: list[tuple[str, str]] = [("", local.flow)]  # (bundle path, text) of flows to read
    while pending:
        base, text = pending.pop()
        shown = _shown(root, folder, base) if base else local.path
        try:
            parsed = parse_file(text, path=base)
        except FlowError as exc:
            local.error = f"{shown}{_line(exc.line)}: {exc.message}"
            return
        for line, kind, written in parsed.references:
            what = _WHAT[kind]
            try:
                target = resolve(base, reference_image(written) if kind is Kind.REFERENCE_IMAGE else written)
            except ValueError as exc:
                local.error = f"{shown} line {line}: {what} {written!r}: {exc}"
                return
            if target in local.files:
                continue
            disk = Path(os.path.normpath(folder / target))
            if not disk.is_file():
                local.error = f"{shown} line {line}: {what} {written!r} not found ({_shown(root, folder, target)})"
                return
            try:
                data = disk.read_bytes()
            except OSError as exc:
                local.error = f"{shown} line {line}: {what} {written!r} cannot be read ({exc.strerror or exc})"
                return
            local.files[target] = data
            used.add(_shown(root, folder, target))
            if kind is Kind.FLOW_FILE:
                try:
                    pending.append((target, data.decode("utf-8")))
                except UnicodeDecodeError:
                    local.error = f"{shown} line {line}: {what} {written!r} is not UTF-8 text"
                    return


def _shown(root: Path, folder: Path, target: str) -> str:
    """A bundle path as the workspace sees it (relative to the workspace, `../` when outside it)."""
    return Path(os.path.relpath(os.path.normpath(folder / target), root)).as_posix()


def _line(line: int | None) -> str:
    return f" line {line}" if line else ""


# --------------------------------------------------------------------------------------- plan, apply


@dataclass
class Change:
    action: Action
    path: str
    name: str
    category: str | None
    tags: tuple[str, ...] = ()
    test_case_id: str | None = None
    fields: list[str] = field(default_factory=list)  # what an update changes
    error: str | None = None
    order: int | None = None  # position in the config's executionOrder.flowsOrder

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "action": self.action,
            "test_case_id": self.test_case_id,
            "error": self.error,
            "name": self.name,
            "category": self.category,
            "tags": list(self.tags),
            "fields": self.fields,
            "order": self.order,
        }


def synced_path(case: TestCase) -> str | None:
    first = case.description.splitlines()[0] if case.description else ""
    return first[len(MARK) :].strip() if first.startswith(MARK) else None


def _differences(detail: TestCaseDetail, local: LocalFlow) -> list[str]:
    differ = []
    if detail.name != local.name:
        differ.append("name")
    if detail.flow != local.flow:
        differ.append("flow")
    if {(f.path, f.sha256) for f in detail.files} != local.digests():
        differ.append("files")
    if (detail.category.name if detail.category else None) != local.category:
        differ.append("category")
    if detail.status != "active":
        differ.append("status")
    return differ


def plan(client: Client, workspace: Workspace, *, prune: bool, progress: Progress | None = None) -> list[Change]:
    """What sync would do, reading (never writing) the server."""
    existing: dict[str, TestCase] = {}
    for listed in client.list_test_cases():
        path = synced_path(listed)
        if path is not None and path not in existing:
            existing[path] = listed
    changes = []
    for local in workspace.flows:
        case = existing.get(local.path)
        change = Change(
            "create",
            local.path,
            local.name,
            local.category,
            local.tags,
            case.id if case else None,
            order=workspace.order_of(local.path),
        )
        if local.error is not None:
            change.action, change.error = "refused", local.error
        elif case is not None:
            change.fields = _differences(client.get_test_case(case.id), local)
            change.action = "update" if change.fields else "unchanged"
        changes.append(change)
        if progress is not None:
            progress(local.path)
    if prune:
        present = {f.path for f in workspace.flows}
        for path, case in sorted(existing.items()):
            if path not in present and case.status == "active":
                category = case.category.name if case.category else None
                changes.append(Change("deactivate", path, case.name, category, tuple(case.tags), case.id))
    return changes


def apply(client: Client, workspace: Workspace, changes: list[Change], progress: Progress | None = None) -> None:
    """Carry out a plan. A flow the server refuses (422, 413) becomes ``refused`` with the server's reason
    (file and line); the others go on. Other errors (authentication, an unreachable server) propagate."""
    by_path = {f.path: f for f in workspace.flows}
    categories: dict[str, str] | None = None

    def category_id(name: str | None) -> str | None:
        nonlocal categories
        if name is None:
            return None
        if categories is None:
            categories = {c.name: c.id for c in client.list_categories()}
        if name not in categories:
            categories[name] = client.create_category(name, f"Test cases synced from {name}/").id
        return categories[name]

    for change in changes:
        writes = change.action in ("create", "update", "deactivate")
        try:
            if change.action == "create":
                local = by_path[change.path]
                created = client.create_test_case(
                    local.name,
                    flow=local.flow,
                    files=local.files_payload(),
                    category_id=category_id(local.category),
                    description=MARK + local.path,
                )
                change.test_case_id = created.id
            elif change.action == "update":
                local = by_path[change.path]
                assert change.test_case_id is not None
                fields: dict[str, Any] = {}
                if "name" in change.fields:
                    fields["name"] = local.name
                if "flow" in change.fields or "files" in change.fields:  # one unit: checked together
                    fields["flow"] = local.flow
                    fields["files"] = local.files_payload()
                if "category" in change.fields:
                    fields["category_id"] = category_id(local.category)
                if "status" in change.fields:
                    fields["status"] = "active"
                client.update_test_case(change.test_case_id, **fields)
            elif change.action == "deactivate":
                assert change.test_case_id is not None
                client.update_test_case(change.test_case_id, status="inactive")
        except (ValidationError, PayloadTooLargeError) as exc:
            change.action = "refused"
            change.error = refusal(exc, workspace.root, change.path)
        if progress is not None and writes:
            progress(change.path)


def refusal(exc: APIError, root: Path, path: str) -> str:
    """The server's reason for refusing a flow, naming the workspace file and line it is about."""
    details = [d for d in exc.details if isinstance(d, Mapping)]
    if exc.code == "invalid_flow" and details:
        detail = details[0]
        where = path
        if isinstance(detail.get("path"), str):
            where = _shown(root, (root / path).parent, str(detail["path"]))
        line = detail.get("line")
        return f"{where}{_line(line if isinstance(line, int) else None)}: {detail.get('issue') or exc.message}"
    extra = "; ".join(_reason(d) for d in details[:5])
    return f"{path}: {exc.message}{' (' + extra + ')' if extra else ''}"


def _reason(detail: Mapping[str, Any]) -> str:
    """One entry of an error's details as a sentence (``name: must not …``), never the raw mapping."""
    where = detail.get("path") or detail.get("field")
    issue = detail.get("issue") or "invalid"
    return f"{where}: {issue}" if where else str(issue)
