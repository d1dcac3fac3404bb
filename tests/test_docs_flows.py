"""docs/flows.md's compatibility table covers every command the parser knows, and its examples parse."""

from __future__ import annotations

import re
from pathlib import Path

from qualgent.flows.commands import SPECS
from qualgent.flows.model import FlowError
from qualgent.flows.parse import parse_flow

DOCS = (Path(__file__).resolve().parents[1] / "docs" / "flows.md").read_text(encoding="utf-8")
TABLE = DOCS.split("## Every command on every device", 1)[1].split("\n## ", 1)[0]
ROWS = [line for line in TABLE.splitlines() if line.startswith("| `")]


def test_every_command_has_a_row() -> None:
    named = {name for row in ROWS for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert set(SPECS) <= named, sorted(set(SPECS) - named)
    assert named <= set(SPECS), sorted(named - set(SPECS))


def test_every_row_has_five_columns_filled() -> None:
    for row in ROWS:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 6 and all(cells), row


def test_every_example_of_the_table_parses_or_is_refused_as_the_table_says() -> None:
    for row in ROWS:
        example = row.rstrip("|").rsplit("|", 1)[1].strip()
        if example == "—":
            assert "refused" in row
            continue
        step = example.strip("`")
        assert step.startswith("- "), row
        flow = parse_flow("appId: com.example.app\n---\n" + step + "\n")
        assert flow.commands[0].name in row.split("|")[1], row


def test_the_refused_commands_are_refused() -> None:
    for name in ("assertWithAI", "assertNoDefectsWithAI", "extractTextWithAI"):
        try:
            parse_flow(f"- {name}: anything\n")
        except FlowError as exc:
            assert "AI commands are not supported" in exc.message
        else:
            raise AssertionError(f"{name} was accepted")
