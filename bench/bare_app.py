"""The baseline: a bare FastAPI route returning a constant JSON body shaped like a run's status."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI()

BODY: dict[str, Any] = {
    "id": "run_01jd2f3g4h5j6k7m8n9p0q1r2s",
    "link": "http://127.0.0.1:8000/test-runs/run_01jd2f3g4h5j6k7m8n9p0q1r2s",
    "test_case": {"id": "tc_01jd2f3g4h5j6k7m8n9p0q1r2s", "name": "Login Flow Test"},
    "app": {"id": "file_01jd2f3g4h5j6k7m8n9p0q1r2s", "name": "MyApp v1.0.0"},
    "status": "passed",
    "priority": "medium",
    "progress": 100,
    "executed_by": {"id": "user_01jd2f3g4h5j6k7m8n9p0q1r2s", "name": "John Doe", "email": "john@example.com"},
    "device": "iPhone 14 Pro",
}


@app.get("/bare")
async def bare() -> dict[str, Any]:
    return BODY
