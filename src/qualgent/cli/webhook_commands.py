"""``qualgent webhooks …``: the organisation's webhook and Slack endpoints, through the SDK (as the other
client commands: ``--url`` / ``--api-key`` or ``QUALGENT_URL`` / ``QUALGENT_API_KEY``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from qualgent.cli.client_commands import (
    ClientCommand,
    ClientGroup,
    JsonOpt,
    KeyOpt,
    UrlOpt,
    _client,
    _print_json,
    _print_table,
    out,
)
from qualgent.cli.text import add_row, plain

if TYPE_CHECKING:
    from qualgent.client.models import Webhook

EVENTS = ("run.queued", "run.started", "run.finished", "batch.finished")

webhooks_app = typer.Typer(
    help="Webhook and Slack endpoints: signed run events pushed to your services.",
    no_args_is_help=True,
    cls=ClientGroup,
)

IdArg = Annotated[str, typer.Argument(help="The endpoint's ID (whk_…).", show_default=False)]


def _show(webhook: Webhook, as_json: bool) -> None:
    if as_json:
        _print_json(webhook.model_dump(mode="json", exclude_none=True))
        return
    state = "enabled" if webhook.enabled else "disabled"
    out.print(plain(f"{webhook.id} {webhook.kind} {state}: {webhook.url}"), highlight=False, soft_wrap=True)
    out.print(plain(f"  events: {' '.join(webhook.events)}"), highlight=False, soft_wrap=True)
    if webhook.disabled_reason:
        out.print(plain(f"  {webhook.disabled_reason}"), highlight=False, soft_wrap=True)


@webhooks_app.command("create", cls=ClientCommand)
def create(
    endpoint_url: Annotated[str, typer.Argument(metavar="URL", help="Where events are POSTed.", show_default=False)],
    events: Annotated[
        list[str] | None,
        typer.Option("--event", "-e", help=f"An event to send (repeat): {', '.join(EVENTS)}. Default: all."),
    ] = None,
    slack: Annotated[
        bool, typer.Option("--slack", help="URL is a Slack incoming webhook (Block Kit messages).")
    ] = False,
    description: Annotated[str, typer.Option("--description", help="What the endpoint is for.")] = "",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Add an endpoint. Its signing secret is printed once: give it to the receiver's verifier."""
    with _client(url, api_key) as client:
        created = client.create_webhook(
            endpoint_url, list(events or EVENTS), kind="slack" if slack else "webhook", description=description
        )
    _show(created, as_json)
    if created.secret and not as_json:
        out.print(plain(f"  secret (shown once): {created.secret}"), highlight=False, soft_wrap=True)


@webhooks_app.command("list", cls=ClientCommand)
def list_endpoints(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """The organisation's endpoints."""
    with _client(url, api_key) as client:
        found = client.list_webhooks()
    if as_json:
        _print_json([w.model_dump(mode="json", exclude_none=True) for w in found])
        return
    table = Table("id", "kind", "url", "events", "enabled", "failing since")
    for w in found:
        since = w.failing_since.isoformat(timespec="seconds") if w.failing_since else ""
        add_row(table, w.id, w.kind, w.url, " ".join(w.events), "yes" if w.enabled else "no", since)
    _print_table(table)


@webhooks_app.command("show", cls=ClientCommand)
def show(webhook_id: IdArg, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """One endpoint, and why the server disabled it if it did."""
    with _client(url, api_key) as client:
        _show(client.get_webhook(webhook_id), as_json)


@webhooks_app.command("enable", cls=ClientCommand)
def enable(webhook_id: IdArg, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Enable an endpoint (messages waiting are sent again)."""
    with _client(url, api_key) as client:
        _show(client.update_webhook(webhook_id, enabled=True), as_json)


@webhooks_app.command("disable", cls=ClientCommand)
def disable(webhook_id: IdArg, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Stop sending to an endpoint."""
    with _client(url, api_key) as client:
        _show(client.update_webhook(webhook_id, enabled=False), as_json)


@webhooks_app.command("delete", cls=ClientCommand)
def delete(webhook_id: IdArg, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Delete an endpoint and its delivery log."""
    with _client(url, api_key) as client:
        client.delete_webhook(webhook_id)
    out.print(plain(f"deleted {webhook_id}"), highlight=False)


@webhooks_app.command("deliveries", cls=ClientCommand)
def deliveries(
    webhook_id: IdArg,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="How many, newest first.")] = 20,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """The endpoint's delivery log: each message's status, attempts and last answer."""
    with _client(url, api_key) as client:
        found = client.webhook_deliveries(webhook_id, limit)
    if as_json:
        _print_json([d.model_dump(mode="json") for d in found])
        return
    table = Table("id", "event", "subject", "status", "attempts", "answer", "ms", "error")
    for d in found:
        answer = str(d.response_status) if d.response_status is not None else ""
        ms = str(d.duration_ms) if d.duration_ms is not None else ""
        add_row(table, d.id, d.event_type, d.subject_id or "", d.status, str(d.attempts), answer, ms, d.error or "")
    _print_table(table)


@webhooks_app.command("redeliver", cls=ClientCommand)
def redeliver(
    webhook_id: IdArg,
    delivery_id: Annotated[str, typer.Argument(help="The delivery's ID (msg_…).", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Send a message again, now."""
    with _client(url, api_key) as client:
        d = client.redeliver_webhook(webhook_id, delivery_id)
    out.print(plain(f"{d.id} {d.event_type}: {d.status}"), highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(webhooks_app, name="webhooks")
