"""Slack incoming-webhook messages (Block Kit) for a finished batch or a failed run."""

from __future__ import annotations

from typing import Any

MAX_LISTED = 10  # failing tests named in one message (Slack caps a section's text at 3000 characters)


def _escape(text: str) -> str:
    """Slack's mrkdwn: &, < and > are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str, text: str) -> str:
    return f"<{url}|{_escape(text)}>"


def wanted(event_type: str, payload_data: dict[str, Any]) -> bool:
    """Slack hears of a finished batch, and of a finished run only when it failed."""
    if event_type == "batch.finished":
        return True
    return event_type == "run.finished" and payload_data.get("status") == "failed"


def _run_line(run: dict[str, Any]) -> str:
    name = (run.get("test_case") or {}).get("name") or run.get("id", "")
    line = f"• {_link(run['link'], name)} on {_escape(str(run.get('device', '')))}"
    failure = run.get("failure") or {}
    if failure.get("message"):
        line += f": {_escape(str(failure['message'])[:200])}"
    return line


def message(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """The Block Kit message for an event's payload ``data``; ``text`` is the notification's fallback."""
    if event_type == "batch.finished":
        counts = data.get("counts") or {}
        verdict = data.get("verdict") or "finished"
        icon = ":white_check_mark:" if verdict == "passed" else ":x:"
        title = f"{icon} Batch {verdict}: {counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed"
        if counts.get("cancelled"):
            title += f", {counts['cancelled']} cancelled"
        failing = [r for r in data.get("runs") or [] if r.get("status") == "failed"]
        fields = [
            {"type": "mrkdwn", "text": f"*Runs*\n{data.get('total', 0)}"},
            {"type": "mrkdwn", "text": f"*Wall time*\n{data.get('wall_seconds', 0):.0f} s"},
        ]
        if data.get("flaky"):
            fields.append({"type": "mrkdwn", "text": f"*Flaky*\n{data['flaky']}"})
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
            {"type": "section", "fields": fields},
        ]
        if failing:
            lines = [_run_line(r) for r in failing[:MAX_LISTED]]
            if len(failing) > MAX_LISTED:
                lines.append(f"…and {len(failing) - MAX_LISTED} more")
            blocks.append(
                {"type": "section", "text": {"type": "mrkdwn", "text": "*Failing tests*\n" + "\n".join(lines)}}
            )
        if data.get("link"):
            blocks.append(
                {"type": "context", "elements": [{"type": "mrkdwn", "text": _link(data["link"], "Open the batch")}]}
            )
        return {"text": title, "blocks": blocks}

    name = (data.get("test_case") or {}).get("name") or data.get("id", "")
    title = f":x: Test failed: {name}"
    failure = data.get("failure") or {}
    detail = f"*{_escape(name)}* on {_escape(str(data.get('device', '')))}"
    if failure.get("message"):
        detail += f"\n{_escape(str(failure['message'])[:500])}"
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": detail}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _link(data.get("link", ""), "Open the run")}]},
    ]
    return {"text": title, "blocks": blocks}
