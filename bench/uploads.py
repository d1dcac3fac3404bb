"""App uploads at scale: our streaming upload against `cp` + `sync` and a plain FastAPI UploadFile route.

For each size (default 1 GiB and 4 GiB; `./dev bench uploads 256M` for a quick run) this builds a valid
APK of that size (a zip holding a manifest and one big stored member), then in the same run measures:
- `cp` of the file to the same disk, then `sync`;
- a plain FastAPI route taking an `UploadFile` and copying it out while hashing (bench/plain_upload.py),
  under uvicorn with the same settings as ours;
- `POST /v1/apps/upload` on `qualgent serve` (local disk), `fsync` included, and its peak RSS growth;
- the same with `QUALGENT_STORAGE_URL=s3://…` against moto's S3 server on loopback (no MinIO can be
  installed here; moto is a Python server, so its own cost is in the S3 figure).
Uploads are sent by `curl` over real HTTP on loopback. Targets (issue 4): ours ≤ 3.5× cp+sync and
≤ 0.6× the plain route; peak memory growth ≤ 64 MiB whatever the size. The big files are deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
from tests.fixtures.factories import manifest
from tests.fixtures.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
GIB = 1024**3
MIB = 1024**2
FIRST_KEY = re.compile(r"qg_[A-Za-z0-9_-]{43}")
_UNITS = {"K": 1024, "M": MIB, "G": GIB}


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in _UNITS:
        return int(float(text[:-1]) * _UNITS[text[-1]])
    return int(text)


def human(size: int) -> str:
    return f"{size / GIB:g} GiB" if size >= GIB else f"{size / MIB:g} MiB"


def build_apk(path: Path, size: int) -> None:
    """A valid APK of about ``size`` bytes: random 64 MiB blocks, stored (not deflated)."""
    block = os.urandom(64 * MIB)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("AndroidManifest.xml", manifest())
        with z.open(zipfile.ZipInfo("assets/payload.bin"), "w", force_zip64=True) as member:
            left = size - 4096
            while left > 0:
                piece = block[: min(left, len(block))]
                member.write(piece)
                left -= len(piece)


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB: current and peak resident memory."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":")
            values[name] = int(value.split()[0])
    return values["VmRSS"], values["VmHWM"]


def reset_peak(pid: int) -> None:
    # Linux ≥ 4.0: writing 5 to clear_refs resets VmHWM to the current RSS.
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{args[0]} exited: {log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url, timeout=1).status_code < 500:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{args} did not start")
                time.sleep(0.2)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def curl_upload(url: str, path: Path, headers: dict[str, str], fields: dict[str, str]) -> tuple[float, str]:
    args = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", url]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    for name, value in fields.items():
        args += ["-F", f"{name}={value}"]
    args += ["-F", f"file=@{path};filename=bench.apk;type=application/octet-stream"]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    body, _, status = done.stdout.rpartition("\n")
    if status != "200":
        raise RuntimeError(f"upload to {url} failed: {status} {body[:500]} {done.stderr[:500]}")
    return elapsed, body


def time_cp(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    subprocess.run(["sync"], check=True)
    elapsed = time.perf_counter() - start
    dst.unlink()
    return elapsed


def serve_env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUALGENT_")}
    env.update(
        {
            "QUALGENT_DATA_DIR": str(data_dir),
            "QUALGENT_EMBEDDED_AGENT": "false",
            "QUALGENT_DEFAULT_RATE_LIMIT": "100000",
            "QUALGENT_MAX_UPLOAD_BYTES": str(8 * GIB),
            "QUALGENT_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            **extra,
        }
    )
    return env


def measure_ours(
    work: Path, name: str, files: dict[int, Path], extra_env: dict[str, str]
) -> dict[int, tuple[float, float]]:
    """Upload time and peak RSS growth (MiB) per size, on one `qualgent serve`."""
    port = free_port()
    data_dir = work / f"data-{name}"
    log = work / f"serve-{name}.log"
    results: dict[int, tuple[float, float]] = {}
    args = [sys.executable, "-m", "qualgent", "serve", "--port", str(port), "--log-level", "warning"]
    with process(args, serve_env(data_dir, port, **extra_env), f"http://127.0.0.1:{port}/healthz", log) as proc:
        found = FIRST_KEY.search(log.read_text())
        assert found, log.read_text()
        headers = {"X-Api-Key": found.group(0)}
        url = f"http://127.0.0.1:{port}/v1/apps/upload"
        # Warm up (imports, first connections) with a small build, then measure each size.
        small = work / "warmup.apk"
        build_apk(small, 2 * MIB)
        curl_upload(url, small, headers, {"app_name": "Warmup", "version": "0"})
        for size, path in files.items():
            rss_before, _ = rss_kib(proc.pid)
            reset_peak(proc.pid)
            elapsed, _ = curl_upload(url, path, headers, {"app_name": "Bench", "version": human(size)})
            _, peak = rss_kib(proc.pid)
            results[size] = (elapsed, (peak - rss_before) / 1024)
        shutil.rmtree(data_dir, ignore_errors=True)
    return results


def measure_plain(work: Path, files: dict[int, Path]) -> dict[int, float]:
    port = free_port()
    env = {**os.environ, "BENCH_PLAIN_DIR": str(work), "TMPDIR": str(work)}
    args = [sys.executable, "-m", "uvicorn", "bench.plain_upload:app", "--port", str(port), "--log-level", "warning"]
    results = {}
    with process(args, env, f"http://127.0.0.1:{port}/healthz", work / "plain.log"):
        for size, path in files.items():
            results[size], _ = curl_upload(f"http://127.0.0.1:{port}/plain", path, {}, {})
    return results


@contextlib.contextmanager
def moto_server(work: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    env = {**os.environ, "TMPDIR": str(work)}
    with process([moto, "-H", "127.0.0.1", "-p", str(port)], env, url, work / "moto.log"):
        import boto3

        boto3.client(
            "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        ).create_bucket(Bucket="bench")
        yield url


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "uploads"]
    sizes = [parse_size(a) for a in args if a[0].isdigit()] or [GIB, 4 * GIB]
    skip_s3 = "--no-s3" in args
    base = Path(os.environ.get("BENCH_TMP", ROOT / ".bench-tmp"))
    base.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="uploads-", dir=base))
    try:
        files = {}
        for size in sizes:
            files[size] = work / f"build-{size}.apk"
            build_apk(files[size], size)
        print(f"uploads benchmark: {', '.join(human(s) for s in sizes)}; {os.cpu_count()} cores", flush=True)
        cp = {size: time_cp(path, work / "copy.bin") for size, path in files.items()}
        plain = measure_plain(work, files)
        ours = measure_ours(work, "local", files, {})
        s3: dict[int, tuple[float, float]] = {}
        if not skip_s3:
            with moto_server(work) as endpoint:
                s3 = measure_ours(
                    work,
                    "s3",
                    files,
                    {
                        "QUALGENT_STORAGE_URL": "s3://bench/apps",
                        "QUALGENT_S3_ENDPOINT_URL": endpoint,
                        "QUALGENT_S3_ACCESS_KEY_ID": "x",
                        "QUALGENT_S3_SECRET_ACCESS_KEY": "x",
                    },
                )
        for size in sizes:
            mb = size / 1e6
            ours_s, ours_mem = ours[size]
            print(f"\n{human(size)}:")
            print(f"  cp + sync               {cp[size]:7.2f} s  {mb / cp[size]:7.0f} MB/s")
            print(f"  plain UploadFile route  {plain[size]:7.2f} s  {mb / plain[size]:7.0f} MB/s")
            print(
                f"  ours, local disk        {ours_s:7.2f} s  {mb / ours_s:7.0f} MB/s  "
                f"{ours_s / cp[size]:.2f}× cp (≤ 3.5)  {ours_s / plain[size]:.2f}× plain (≤ 0.6)  "
                f"peak RSS +{ours_mem:.1f} MiB (≤ 64)"
            )
            if size in s3:
                s3_s, s3_mem = s3[size]
                print(
                    f"  ours, S3 (moto)         {s3_s:7.2f} s  {mb / s3_s:7.0f} MB/s  "
                    f"{s3_s / cp[size]:.2f}× cp  {s3_s / plain[size]:.2f}× plain  peak RSS +{s3_mem:.1f} MiB"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
