"""``qualgent test-cases sync DIR``: a Maestro workspace becomes the organisation's test cases (see
:mod:`qualgent.client.testsync`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from qualgent.cli.text import plain
from qualgent.cli.waiting import EXIT_USAGE

if TYPE_CHECKING:
    from qualgent.client import testsync

out = Console()
err = Console(stderr=True)


def sync(
    folder: Annotated[
        Path,
        typer.Argument(
            help="A Maestro workspace: flow files and an optional config.yaml (flows, includeTags, excludeTags, "
            "executionOrder). Without a config, the top-level flows are the test cases."
        ),
    ],
    prune: Annotated[bool, typer.Option("--prune", help="Deactivate synced test cases whose flow is gone.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per flow on stdout (JSON Lines).")
    ] = False,
    url: Annotated[str | None, typer.Option("--url", help="Server URL (env QUALGENT_URL).")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="API key (env QUALGENT_API_KEY).")] = None,
) -> None:
    """Make the flows of a Maestro workspace the organisation's test cases (create and update by file path).
    Exits 3 when a flow was refused (the others are synced)."""
    from qualgent.cli.client_commands import _client
    from qualgent.client import testsync  # the flow parser and PyYAML: loaded by this command only

    try:
        workspace = testsync.read_workspace(folder)
    except testsync.WorkspaceError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    _notes(workspace)
    with _client(url, api_key) as client, _progress(len(workspace.flows)) as advance:
        changes = testsync.plan(client, workspace, prune=prune, progress=advance("Reading"))
        if not dry_run:
            writes = sum(c.action in ("create", "update", "deactivate") for c in changes)
            if writes:
                testsync.apply(client, workspace, changes, progress=advance("Syncing", writes))
    if as_json:
        for change in changes:
            sys.stdout.write(json.dumps(change.as_dict()) + "\n")
        sys.stdout.flush()
    else:
        _report(workspace, changes, dry_run)
    refused = [c for c in changes if c.action == "refused"]
    if refused:
        err.print(f"[red]error:[/red] {len(refused)} flow(s) refused", highlight=False)
        raise typer.Exit(EXIT_USAGE)


def _notes(workspace: testsync.Workspace) -> None:
    """What a person should know about the workspace, on stderr (stdout stays the result)."""
    config = workspace.config
    if workspace.left_out:
        shown = ", ".join(f.path for f in workspace.left_out[:5]) + (" …" if len(workspace.left_out) > 5 else "")
        err.print(plain(f"Left out by the tags of {config.file}: {shown}"), highlight=False)
    nested = [p for p in workspace.unused if "/" in p]
    if nested and config.file is None:
        err.print(
            plain(
                f"note: {len(nested)} flow file(s) in sub-folders are neither test cases nor used by one "
                f"(e.g. {nested[0]}): without a config.yaml only the top-level flows are test cases "
                '(Maestro\'s default); for <category>/<test>.yaml add a config.yaml with flows: ["*/*"]'
            ),
            highlight=False,
        )
    if workspace.missing_order:
        err.print(
            plain(f"warning: executionOrder.flowsOrder names no synced flow: {', '.join(workspace.missing_order)}"),
            highlight=False,
        )


@contextmanager
def _progress(total: int) -> Iterator[Callable[..., Callable[[str], None] | None]]:
    """On a terminal, a progress bar on stderr (removed when done); elsewhere nothing."""
    if not err.is_terminal or total < 2:
        yield lambda *_args: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[path]}"),
    )
    with Progress(*columns, console=err, transient=True) as progress:

        def advance(label: str, size: int = total) -> Callable[[str], None]:
            task = progress.add_task(label, total=size, path="")

            def step(path: str) -> None:
                progress.update(task, advance=1, path=path)

            return step

        yield advance


def _report(workspace: testsync.Workspace, changes: list[testsync.Change], dry_run: bool) -> None:
    verb = "would " if dry_run else ""
    for change in changes:
        where = f" [{change.category}]" if change.category else ""
        extra = f" ({', '.join(change.fields)})" if change.fields else ""
        tags = f"  tags: {', '.join(change.tags)}" if change.tags else ""
        action = change.action if change.action == "refused" else verb + change.action
        line = f"{action:<16} {change.path}{where} → {change.name}{extra}{tags}"
        if change.error:
            line += f"\n    error: {change.error}"
        out.print(plain(line), highlight=False, soft_wrap=True)
    order = workspace.config.execution_order
    if workspace.order and order is not None:
        names = {c.path: c.name for c in changes}
        sequence = ", ".join(f"{n}. {names.get(p, p)} ({p})" for n, p in enumerate(workspace.order, 1))
        out.print(
            plain(f"Execution order (continueOnFailure: {str(order.continue_on_failure).lower()}): {sequence}"),
            highlight=False,
            soft_wrap=True,
        )
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.action] = counts.get(change.action, 0) + 1
    summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "nothing"
    out.print(("Plan: " if dry_run else "Synced: ") + summary, highlight=False)


def register(app: typer.Typer) -> None:
    from qualgent.cli.client_commands import ClientCommand

    app.command("sync", cls=ClientCommand)(sync)
