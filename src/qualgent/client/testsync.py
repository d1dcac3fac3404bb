"""Tests as code: the flow files of a repository folder become the organisation's test cases.

A test case made by sync is recognised by its description, ``qualgent sync: <path>`` (the file's path
relative to the folder), so a renamed test keeps its runs' history as long as its file stays put, and
test cases made by hand are never touched. Its category is the file's folder ("smoke/login.yaml" →
"smoke"; nested folders join with "/"), its name the flow's ``name:`` or the file's stem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from qualgent.client.errors import APIError
from qualgent.client.models import TestCase
from qualgent.client.sync import Client

MARK = "qualgent sync: "
FLOW_SUFFIXES = (".yaml", ".yml")

Action = Literal["create", "update", "unchanged", "deactivate"]


@dataclass
class FlowFile:
    path: str  # relative, with "/"
    name: str
    category: str | None
    flow: str


@dataclass
class Change:
    action: Action
    path: str
    name: str
    category: str | None
    test_case_id: str | None = None
    fields: list[str] = field(default_factory=list)  # what an update changes
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "path": self.path,
            "name": self.name,
            "category": self.category,
            "test_case_id": self.test_case_id,
            "fields": self.fields,
            "error": self.error,
        }


def read_folder(folder: Path) -> list[FlowFile]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    files = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in FLOW_SUFFIXES):
        relative = file.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue  # .github/, .maestro/ and the like are not test folders
        text = file.read_text(encoding="utf-8")
        parent = relative.parent.as_posix()
        files.append(
            FlowFile(relative.as_posix(), _flow_name(text) or file.stem, None if parent == "." else parent, text)
        )
    return files


def _flow_name(text: str) -> str | None:
    """The ``name:`` of a Maestro flow's config section (the document before ``---``), if any."""
    try:
        documents = [d for d in yaml.safe_load_all(text)]
    except yaml.YAMLError:
        return None  # the server reports the flow's error with its line when it is saved
    if len(documents) >= 2 and isinstance(documents[0], dict) and isinstance(documents[0].get("name"), str):
        name: str = documents[0]["name"].strip()
        return name or None
    return None


def synced_path(case: TestCase) -> str | None:
    first = case.description.splitlines()[0] if case.description else ""
    return first[len(MARK) :].strip() if first.startswith(MARK) else None


def plan(client: Client, files: list[FlowFile], *, prune: bool) -> list[Change]:
    """What sync would do, reading (never writing) the server."""
    existing: dict[str, TestCase] = {}
    for listed in client.list_test_cases():
        path = synced_path(listed)
        if path is not None and path not in existing:
            existing[path] = listed
    changes = []
    for file in files:
        case = existing.get(file.path)
        if case is None:
            changes.append(Change("create", file.path, file.name, file.category))
            continue
        detail = client.get_test_case(case.id)
        differ = []
        if detail.name != file.name:
            differ.append("name")
        if detail.flow != file.flow:
            differ.append("flow")
        if (detail.category.name if detail.category else None) != file.category:
            differ.append("category")
        if detail.status != "active":
            differ.append("status")
        changes.append(
            Change("update" if differ else "unchanged", file.path, file.name, file.category, case.id, differ)
        )
    if prune:
        present = {f.path for f in files}
        for path, case in sorted(existing.items()):
            if path not in present and case.status == "active":
                category = case.category.name if case.category else None
                changes.append(Change("deactivate", path, case.name, category, case.id))
    return changes


def apply(client: Client, files: list[FlowFile], changes: list[Change]) -> list[Change]:
    """Carry out a plan; a refused flow is recorded on its change (``error``) and the rest go on."""
    by_path = {f.path: f for f in files}
    categories = {c.name: c.id for c in client.list_categories()}

    def category_id(name: str | None) -> str | None:
        if name is None:
            return None
        if name not in categories:
            categories[name] = client.create_category(name, f"Test cases synced from {name}/").id
        return categories[name]

    for change in changes:
        try:
            if change.action == "create":
                file = by_path[change.path]
                created = client.create_test_case(
                    file.name, flow=file.flow, category_id=category_id(file.category), description=MARK + file.path
                )
                change.test_case_id = created.id
            elif change.action == "update":
                file = by_path[change.path]
                assert change.test_case_id is not None
                client.update_test_case(
                    change.test_case_id,
                    name=file.name,
                    flow=file.flow,
                    category_id=category_id(file.category),
                    status="active",
                )
            elif change.action == "deactivate":
                assert change.test_case_id is not None
                client.update_test_case(change.test_case_id, status="inactive")
        except APIError as exc:
            details = "; ".join(str(d) for d in exc.details[:5])
            change.error = f"{exc.message}{' — ' + details if details else ''}"
    return changes
