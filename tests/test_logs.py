"""QUALGENT_LOG_FORMAT=json: `qualgent serve` logs one JSON object per line, a request's lines with its
request ID."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.fixtures.servers import start_serve_process


def test_json_log_lines_carry_the_request_id(tmp_path: Path) -> None:
    env = {
        "QUALGENT_DATA_DIR": str(tmp_path / "data"),
        "QUALGENT_EMBEDDED_AGENT": "false",
        "QUALGENT_LOG_FORMAT": "json",
    }
    serve = start_serve_process(env, tmp_path / "serve.log", "--log-level", "info")
    try:
        response = httpx.get(f"{serve.url}/v1/jobs/status/run_nope", headers={"X-Api-Key": "qg_nope"}, timeout=10)
        assert response.status_code == 401
        request_id = response.headers["x-request-id"]
        deadline = time.monotonic() + 10
        while request_id not in serve.output():
            assert time.monotonic() < deadline, serve.output()
            time.sleep(0.05)
    finally:
        serve.stop()
    # Log lines are the JSON ones; the first start's banner (the key, the password) is printed, not logged.
    lines = [json.loads(line) for line in serve.output().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["logger"] == "uvicorn.error" and "Ready in" in line["message"] for line in lines)
    [access] = [line for line in lines if line.get("request_id") == request_id]
    assert access["logger"] == "uvicorn.access" and access["status"] == 401
    assert access["method"] == "GET" and access["path"] == "/v1/jobs/status/run_nope"
    assert not any(line.startswith("INFO:") for line in serve.output().splitlines())
