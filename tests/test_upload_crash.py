"""Crash safety of uploads: `qualgent serve` SIGKILLed in the middle of an upload."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.fixtures.factories import apk_bytes
from tests.fixtures.processes import clean_env, processes, serve_env

FIRST_KEY = re.compile(r"qg_[A-Za-z0-9_-]{43}")
HIGH_LIMITS = {"default_rate_limit": "100000", "auth_failure_limit": "100000"}
MB = 1024 * 1024


def _staging(data_dir: Path) -> list[Path]:
    tmp = data_dir / "tmp"
    return sorted(tmp.glob("upload-*.part")) if tmp.exists() else []


def test_a_server_killed_mid_upload_keeps_no_app_and_the_cleanup_removes_the_partial_data(
    backend: str, tmp_path: Path
) -> None:
    with serve_env(backend, tmp_path, embedded_agent="false", **HIGH_LIMITS) as (env, _), processes() as procs:
        data_dir = Path(env["QUALGENT_DATA_DIR"])
        server = procs.serve(env, tmp_path / "serve.log")
        found = FIRST_KEY.search(server.output())
        assert found, server.output()
        key = found.group(0)

        content = apk_bytes(extra={"assets/big.bin": os.urandom(20 * MB)})
        request = httpx.Client().build_request(
            "POST",
            f"{server.url}/v1/apps/upload",
            data={"app_name": "Crash", "version": "1"},
            files={"file": ("crash.apk", content, "application/octet-stream")},
        )
        body = request.read()
        url = urlsplit(server.url)
        head = (
            f"POST /v1/apps/upload HTTP/1.1\r\nHost: {url.netloc}\r\nX-Api-Key: {key}\r\n"
            f"Content-Type: {request.headers['content-type']}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection((url.hostname, url.port)) as sock:
            sock.sendall(head + body[: 6 * MB])
            deadline = time.monotonic() + 20
            while not any(p.stat().st_size >= 4 * MB for p in _staging(data_dir)):
                assert time.monotonic() < deadline, "the upload never reached the disk"
                time.sleep(0.05)
            server.kill()  # SIGKILL: no clean-up code of the server runs
        partial = _staging(data_dir)
        assert partial, "the killed upload left its partial data behind (what the clean-up must remove)"

        restarted = procs.serve(env, tmp_path / "serve-2.log")
        with httpx.Client(base_url=restarted.url, headers={"X-Api-Key": key}, timeout=30) as client:
            assert client.get("/v1/apps").json() == [], "no app record for the upload that was cut off"
            # The clean-up: at start-up and in `qualgent admin purge`, a staging file no live process
            # holds is removed (its flock died with the killed process); give it its 2 s of grace.
            time.sleep(2.1)
            purged = subprocess.run(
                [sys.executable, "-m", "qualgent", "admin", "purge"],
                env=clean_env(env),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert purged.returncode == 0, purged.stdout + purged.stderr
            assert not any(p.exists() for p in partial)
            assert _staging(data_dir) == []

            # The restarted server takes the same upload whole.
            again = client.post(
                "/v1/apps/upload",
                data={"app_name": "Crash", "version": "1"},
                files={"file": ("crash.apk", content, "application/octet-stream")},
            )
            assert again.status_code == 200, again.text
            assert [a["id"] for a in client.get("/v1/apps").json()] == [again.json()["file"]["id"]]
            assert _staging(data_dir) == []
