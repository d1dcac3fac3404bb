"""``qualgent test-cases sync DIR``: tests as code (see :mod:`qualgent.client.testsync`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from qualgent.cli.waiting import EXIT_USAGE
from qualgent.client import testsync

out = Console()
err = Console(stderr=True)


def sync(
    folder: Annotated[Path, typer.Argument(help="Folder of flow files (.yaml/.yml); sub-folders are categories.")],
    prune: Annotated[bool, typer.Option("--prune", help="Deactivate synced test cases whose file is gone.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")] = False,
    url: Annotated[str | None, typer.Option("--url", help="Server URL (env QUALGENT_URL).")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="API key (env QUALGENT_API_KEY).")] = None,
) -> None:
    """Make the flow files in FOLDER the organisation's test cases (create and update by file path)."""
    from qualgent.cli.client_commands import _client

    try:
        files = testsync.read_folder(folder)
    except (FileNotFoundError, UnicodeDecodeError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    with _client(url, api_key) as client:
        changes = testsync.plan(client, files, prune=prune)
        if not dry_run:
            testsync.apply(client, files, changes)
    failed = [c for c in changes if c.error]
    if as_json:
        sys.stdout.write(json.dumps({"dry_run": dry_run, "changes": [c.as_dict() for c in changes]}, indent=2) + "\n")
    else:
        verb = "would " if dry_run else ""
        for change in changes:
            where = f" [{change.category}]" if change.category else ""
            extra = f" ({', '.join(change.fields)})" if change.fields else ""
            line = f"{verb}{change.action:<10} {change.path}{where} → {change.name}{extra}"
            if change.error:
                line += f"\n    error: {change.error}"
            out.print(line, markup=False, highlight=False)
        counts: dict[str, int] = {}
        for change in changes:
            counts[change.action] = counts.get(change.action, 0) + 1
        out.print(
            ("Plan: " if dry_run else "Synced: ") + ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
            or "nothing",
            highlight=False,
        )
    if failed:
        err.print(f"[red]error:[/red] {len(failed)} flow(s) refused by the server", highlight=False)
        raise typer.Exit(EXIT_USAGE)


def register(app: typer.Typer) -> None:
    from qualgent.cli.client_commands import ClientCommand

    app.command("sync", cls=ClientCommand)(sync)
