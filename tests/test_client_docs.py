"""The CI examples (docs/ci/, docs/workspaces.md, README's CLI section) use exactly the commands the CLI has: every
`qualgent …` line in their code blocks parses with the real command-line parser (unknown commands or
options, missing arguments or bad values fail here)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from qualgent.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "workspaces.md", *sorted((ROOT / "docs" / "ci").glob("*.md"))]


def _commands(text: str) -> list[str]:
    """`qualgent …` commands of the sh and yaml code blocks, with shell continuations and YAML folded
    scalars (`run: >`, `- >`) joined into one line."""
    found = []
    for block in re.findall(r"```(?:sh|yaml)\n(.*?)```", text, re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            stripped = line.strip().removeprefix("- ").removeprefix("run: ")
            if stripped == ">":
                indent = len(line) - len(line.lstrip())
                folded = []
                while i + 1 < len(lines) and len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent:
                    i += 1
                    folded.append(lines[i].strip())
                stripped = " ".join(folded)
            while stripped.endswith("\\") and i + 1 < len(lines):
                i += 1
                stripped = stripped[:-1] + " " + lines[i].strip()
            if stripped.startswith("qualgent "):
                found.append(stripped)
            i += 1
    return found


def _parse(args: list[str]) -> None:
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("qualgent", list(args))
    while hasattr(command, "resolve_command"):
        rest = [*ctx._protected_args, *ctx.args]
        _name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(_name, rest, parent=ctx)


EXAMPLES = [(path.name, cmd) for path in DOCS for cmd in _commands(path.read_text())]


def test_the_docs_have_examples() -> None:
    names = {name for name, _ in EXAMPLES}
    assert {"README.md", "github-actions.md", "gitlab-ci.md"} <= names
    assert any("run-all" in cmd and "--junit" in cmd and "--wait" in cmd for _, cmd in EXAMPLES)


@pytest.mark.parametrize(("doc", "command"), EXAMPLES, ids=[f"{d}:{c[:60]}" for d, c in EXAMPLES])
def test_every_documented_command_parses(doc: str, command: str) -> None:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    # The command ends where the shell's redirections, pipes or lists begin.
    end = next((i for i, t in enumerate(tokens) if set(t) <= set("<>|&;")), len(tokens))
    _parse(tokens[1:end])


def test_a_wrong_option_does_not_parse() -> None:
    """The check above can fail: an option the CLI lacks is refused."""
    with pytest.raises(Exception, match="--no-such-option"):
        _parse(["run-all", "--platform", "android", "--no-such-option"])
