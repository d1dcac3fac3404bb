"""Strings from the server (names, messages, links) as the CLI prints them through Rich.

Rich reads ``[…]`` in a string as markup: a test case called ``[/x]`` raised MarkupError in a table and
ended ``run --wait`` without cancelling its runs. Control characters would rewrite the terminal (or a CI
log). Every server-provided string the CLI prints goes through ``plain`` (a table cell, a Text) or
``escaped`` (inside a string that has markup of its own)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from rich.markup import escape
from rich.table import Table
from rich.text import Text

# C0 but tab and line feed, DEL, C1.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(value: object) -> str:
    return _CONTROL.sub("", "" if value is None else str(value))


def plain(value: object) -> Text:
    """A table cell or a line that is the server's text only: no markup is read into it."""
    return Text(clean(value))


def escaped(value: object) -> str:
    """The server's text inside a string that has markup of its own (``[bold]…[/bold]``)."""
    return escape(clean(value))


def add_row(table: Table, *values: object) -> None:
    """A row of the server's values (a Text is kept: its style is the CLI's own)."""
    table.add_row(*(value if isinstance(value, Text) else plain(value) for value in values))


def describe_detail(detail: object) -> str:
    """One entry of an error's ``details`` as a person reads it (``entry 0: device: send a device …``),
    never a raw dict."""
    if not isinstance(detail, Mapping):
        return clean(detail)
    known = ("index", "field", "issue")
    where = " ".join(f"{key}={clean(value)}" for key, value in detail.items() if key not in known)
    text = f"{clean(detail.get('field') or 'request')}: {clean(detail.get('issue') or 'invalid')}"
    if detail.get("index") is not None:
        text = f"entry {clean(detail['index'])}: {text}"
    return f"{text} ({where})" if where else text
