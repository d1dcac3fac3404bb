"""A flow with the files it uses: subflows, scripts, media and reference images.

A test case stores its flow and a set of files, each under a path relative to the flow's own folder
(``subflows/login.yaml``, ``../scripts/seed.js``). ``check_bundle`` is what the server runs when a
test case is saved: it parses the flow and every flow it reaches through ``runFlow``/``retry``, checks
that every referenced file is there and that every piece of JavaScript compiles. ``load_bundle`` is
what an agent runs before executing. Both are the same code, so nothing that passes the check fails
later for a reason the check could have seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from qualgent.flows.commands import Kind
from qualgent.flows.model import Flow, FlowError
from qualgent.flows.parse import ParsedFile, parse_file
from qualgent.flows.paths import MAX_SCRIPT_BYTES, reference_image, resolve
from qualgent.flows.scripts import check_many, check_syntax


@dataclass(frozen=True)
class Bundle:
    """A parsed main flow and every flow, script and file it reaches, by bundle path."""

    flow: Flow
    flows: Mapping[str, Flow] = field(default_factory=dict)  # subflows by bundle path
    scripts: Mapping[str, str] = field(default_factory=dict)  # runScript files by bundle path
    files: Mapping[str, bytes] = field(default_factory=dict)  # every file of the test case

    @property
    def tags(self) -> tuple[str, ...]:
        return self.flow.tags

    def command_count(self) -> int:
        return self.flow.count() + sum(flow.count() for flow in self.flows.values())


def check_bundle(flow: str, files: Mapping[str, bytes] | None = None) -> Bundle:
    """Parse and check a flow with its files; raise FlowError (``path`` set for a problem in a file)."""
    return load_bundle(flow, files or {})


def load_bundle(flow: str, files: Mapping[str, bytes]) -> Bundle:
    loader = _Loader(files)
    main = loader.load_flow("", flow, ())
    loader.check_scripts()
    return Bundle(flow=main, flows=loader.flows, scripts=loader.scripts, files=dict(files))


class _Loader:
    def __init__(self, files: Mapping[str, bytes]) -> None:
        self.files = files
        self.flows: dict[str, Flow] = {}
        self.scripts: dict[str, str] = {}
        self.expressions: list[tuple[str, int, str]] = []  # (file, line, code) of every ${…}

    def load_flow(self, path: str, text: str, chain: tuple[str, ...]) -> Flow:
        parsed: ParsedFile = parse_file(text, path=path)
        self.expressions.extend((path, line, code) for line, code in parsed.scripts)
        for line, kind, reference in parsed.references:
            self._follow(path, line, kind, reference, (*chain, path))
        return parsed.flow

    def _follow(self, base: str, line: int, kind: Kind, reference: str, chain: tuple[str, ...]) -> None:
        target = self._target(base, line, kind, reference)
        if kind is Kind.FLOW_FILE:
            if target in chain:
                loop = " → ".join(p or "the flow" for p in (*chain[chain.index(target) :], target))
                raise FlowError(line, f"runFlow goes round in a circle: {loop}", base or None)
            if target not in self.flows:
                text = self._text(base, line, target, "flow")
                self.flows[target] = self.load_flow(target, text, chain)
        elif kind is Kind.SCRIPT_FILE and target not in self.scripts:
            text = self._text(base, line, target, "script")
            if len(text.encode()) > MAX_SCRIPT_BYTES:
                raise FlowError(line, f"{target} is larger than {MAX_SCRIPT_BYTES // 1024} KB", base or None)
            error = check_syntax(text)
            if error is not None:
                raise FlowError(error.line, f"JavaScript {error.name}: {error.message}", target)
            self.scripts[target] = text

    def _target(self, base: str, line: int, kind: Kind, reference: str) -> str:
        what = {
            Kind.FLOW_FILE: "flow file",
            Kind.SCRIPT_FILE: "script",
            Kind.MEDIA_FILES: "media file",
            Kind.REFERENCE_IMAGE: "reference image",
        }[kind]
        if kind is Kind.REFERENCE_IMAGE:
            reference = reference_image(reference)
        try:
            target = resolve(base, reference)
        except ValueError as exc:
            raise FlowError(line, f"{what} {reference!r}: {exc}", base or None) from None
        if target == "" or (kind is Kind.FLOW_FILE and target == base):
            raise FlowError(line, f"a flow cannot run itself ({reference!r})", base or None)
        if target not in self.files:
            known = ", ".join(sorted(self.files)[:10]) or "none"
            raise FlowError(
                line,
                f"{what} {reference!r} is not among the test case's files (looked for {target!r}; files: {known})",
                base or None,
            )
        return target

    def _text(self, base: str, line: int, target: str, what: str) -> str:
        try:
            return self.files[target].decode("utf-8")
        except UnicodeDecodeError:
            raise FlowError(line, f"the {what} {target!r} is not UTF-8 text", base or None) from None

    def check_scripts(self) -> None:
        """Compile every ${…} of every flow in one batch; the first error, with its file and line."""
        errors = check_many([code for _, _, code in self.expressions])
        for (path, line, code), error in zip(self.expressions, errors, strict=True):
            if error is not None:
                shown = code.strip() if len(code.strip()) <= 60 else code.strip()[:57] + "…"
                raise FlowError(line, f"JavaScript {error.name} in ${{{shown}}}: {error.message}", path or None)
