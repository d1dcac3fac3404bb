"""The client half of the ``qualgent`` command: talk to a server over HTTP with the SDK
(:mod:`qualgent.client`) to upload builds, queue runs, wait for them in a pipeline and report.

Configuration: ``--url`` / ``--api-key``, or ``QUALGENT_URL`` / ``QUALGENT_API_KEY`` (environment or
``.env``). Exit codes: see :mod:`qualgent.cli.waiting`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from qualgent.cli import ci_output, waiting
from qualgent.cli.text import add_row, describe_detail, escaped, plain
from qualgent.cli.waiting import EXIT_INFRASTRUCTURE, EXIT_USAGE, SignalGuard
from qualgent.client.errors import (
    APIError,
    ConfigurationError,
    QualgentClientError,
    RateLimitError,
    ServerError,
    TransportError,
)
from qualgent.client.junit import render_runs
from qualgent.reports.junit import step_link

if TYPE_CHECKING:
    # The SDK's client (httpx) and models (pydantic) load when a command first talks to the server, not
    # for `--help` or a usage error: see `_client`.
    from qualgent.client import Client
    from qualgent.client.models import App, Device, QueuedJob, Run, RunReport

MIB = 1024 * 1024


# typer vendors its own click (typer._click); its UsageError is the base of the public BadParameter.
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class ClientCommand(TyperCommand):
    """Usage errors of the client commands exit 3 (click's default is 2, which here means infrastructure)."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except UsageError as exc:
            exc.exit_code = EXIT_USAGE  # type: ignore[attr-defined]
            raise


class ClientGroup(TyperGroup):
    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except UsageError as exc:
            exc.exit_code = EXIT_USAGE  # type: ignore[attr-defined]
            raise

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except UsageError as exc:
            exc.exit_code = EXIT_USAGE  # type: ignore[attr-defined]
            raise


apps_app = typer.Typer(help="Uploaded builds.", no_args_is_help=True, cls=ClientGroup)
jobs_app = typer.Typer(help="Test runs: list, status, cancel, report.", no_args_is_help=True, cls=ClientGroup)
test_cases_app = typer.Typer(help="Test cases: list, sync a folder of flows.", no_args_is_help=True, cls=ClientGroup)

out = Console()
err = Console(stderr=True)

UrlOpt = Annotated[
    str | None, typer.Option("--url", help="Server URL (env QUALGENT_URL; default http://127.0.0.1:8000).")
]
KeyOpt = Annotated[str | None, typer.Option("--api-key", help="API key (env QUALGENT_API_KEY).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
ThresholdOpt = Annotated[
    int,
    typer.Option(
        "--resumable-threshold",
        envvar="QUALGENT_RESUMABLE_THRESHOLD",
        help="Builds of this many bytes or more go through the resumable upload.",
        min=0,
    ),
]


def _fail(code: int, message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {escaped(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def exit_code_for_error(exc: QualgentClientError) -> int:
    """Server unreachable, failing or rate-limiting beyond patience: 2 (retry the job); the request
    itself wrong (usage, authentication, validation): 3."""
    if isinstance(exc, TransportError | ServerError | RateLimitError):
        return EXIT_INFRASTRUCTURE
    return EXIT_USAGE


def _describe(exc: QualgentClientError) -> str:
    if isinstance(exc, APIError):
        text = f"{exc.message} ({exc.status_code} {exc.code})"
        for detail in exc.details[:10]:
            text += f"\n  - {describe_detail(detail)}"
        return text
    return str(exc)


@contextmanager
def _client(url: str | None, api_key: str | None) -> Iterator[Client]:
    """A client, with every SDK error turned into a message and an exit code."""
    from qualgent.client import Client

    try:
        with Client(api_key=api_key, base_url=url) as client:
            yield client
    except QualgentClientError as exc:
        _fail(exit_code_for_error(exc), _describe(exc))


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _print_table(table: Table) -> None:
    if out.is_terminal:
        out.print(table)
        return
    width = out.measure(table, options=out.options.update_width(10_000)).maximum
    Console(file=out.file, width=max(width, out.width)).print(table)


# ------------------------------------------------------------------------------------------- uploads


def upload_file(
    client: Client,
    path: Path,
    app_name: str,
    version: str,
    os_name: str | None,
    *,
    resumable: bool | None,
    threshold: int,
    console: Console,
) -> str:
    """Upload a build with a progress bar (speed, ETA); large files (or ``resumable=True``) through the
    resumable endpoint when the server has one. Returns the app's ID."""
    if not path.is_file():
        raise ConfigurationError(f"{path}: no such file")
    size = path.stat().st_size
    use_tus = resumable if resumable is not None else size >= threshold
    if use_tus and not client.supports_resumable_uploads():
        console.print("The server has no resumable uploads; sending the file in one request.", highlight=False)
        use_tus = False
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        label = f"Uploading {path.name}" + (" (resumable)" if use_tus else "")
        task = progress.add_task(label, total=size)

        def advance(done: int) -> None:
            progress.update(task, completed=done)

        if use_tus:
            app: App = client.upload_app_resumable(path, app_name, version, os_name, on_progress=advance)
            app_id = app.id
        else:
            app_id = client.upload_app(path, app_name, version, os_name, on_progress=advance).id
        progress.update(task, completed=size)
    return app_id


@apps_app.command("upload", cls=ClientCommand)
def apps_upload(
    file: Annotated[Path, typer.Argument(help="The build: .apk, .aab, .ipa or a zipped .app.")],
    name: Annotated[str, typer.Option("--name", help="Application name.")],
    version: Annotated[str, typer.Option("--version", help="Application version.")],
    os_name: Annotated[str | None, typer.Option("--os", help="android or ios (detected from the file).")] = None,
    resumable: Annotated[
        bool | None,
        typer.Option(
            "--resumable/--single-request",
            help="Force the resumable (tus) upload, or one request. Default: resumable from --resumable-threshold.",
            show_default=False,
        ),
    ] = None,
    threshold: ThresholdOpt = 64 * MIB,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Upload a build; prints its app ID (use it with --app)."""
    with _client(url, api_key) as client:
        app_id = upload_file(
            client, file, name, version, os_name, resumable=resumable, threshold=threshold, console=err
        )
        app = client.get_app(app_id)
    if as_json:
        _print_json(app.model_dump(mode="json"))
    else:
        out.print(app.id, highlight=False)


@apps_app.command("list", cls=ClientCommand)
def apps_list(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List uploaded builds, newest first."""
    with _client(url, api_key) as client:
        apps = client.list_apps()
    if as_json:
        _print_json([a.model_dump(mode="json") for a in apps])
        return
    table = Table("id", "app", "version", "os", "size", "uploaded")
    for a in apps:
        add_row(table, a.id, a.app_name, a.version, a.os, str(a.file_size), str(a.created_at or ""))
    _print_table(table)


# ---------------------------------------------------------------------------------------------- runs


def resolve_devices(client: Client, specs: list[str]) -> list[dict[str, str]]:
    """``--device`` values: a catalogue ID (dev_…), a name ("Pixel 7"), or a name and OS ("Pixel 7@14")."""
    if not specs:
        return []
    catalogue = client.list_devices()
    chosen = []
    for spec in specs:
        name, _, os_version = spec.partition("@")
        matches = [
            d
            for d in catalogue
            if d.id == spec
            or (
                d.name.lower() == name.strip().lower()
                and (not os_version or _same_version(d.os_version, os_version.strip()))
            )
        ]
        if not matches:
            names = ", ".join(sorted({f"{d.name}@{d.os_version}" for d in catalogue}))
            raise ConfigurationError(f"No device {spec!r} in the catalogue. Devices: {names}")
        device: Device = matches[0]
        chosen.append({"name": device.name, "platform": device.platform, "os_version": device.os_version})
    return chosen


def _same_version(a: str, b: str) -> bool:
    def norm(v: str) -> str:
        return v[:-2] if v.endswith(".0") else v

    return norm(a) == norm(b)


def resolve_test_cases(client: Client, refs: list[str]) -> list[str]:
    """Test case IDs (tc_…) or exact names; a name shared by several test cases is refused."""
    if all(r.startswith("tc_") for r in refs):
        return refs
    by_name: dict[str, list[str]] = {}
    for case in client.list_test_cases():
        by_name.setdefault(case.name, []).append(case.id)
    ids = []
    for ref in refs:
        if ref.startswith("tc_"):
            ids.append(ref)
            continue
        found = by_name.get(ref, [])
        if len(found) != 1:
            problem = "no test case" if not found else f"{len(found)} test cases ({', '.join(found)})"
            raise ConfigurationError(f"{problem} named {ref!r}; use its ID.")
        ids.append(found[0])
    return ids


def resolve_category(client: Client, ref: str) -> str:
    if ref.startswith("cat_"):
        return ref
    for category in client.list_categories():
        if category.name == ref or category.name.lower() == ref.lower():
            return category.id
    raise ConfigurationError(f"No category named {ref!r}.")


class WaitOptions:
    """Options common to `run` and `run-all` for waiting and reporting."""

    def __init__(
        self,
        wait: bool,
        timeout: float | None,
        junit: Path | None,
        as_json: bool,
        poll_interval: float,
        no_device_grace: float | None = None,
    ) -> None:
        self.wait = wait or timeout is not None or junit is not None
        self.timeout = timeout
        self.junit = junit
        self.as_json = as_json
        self.poll_interval = poll_interval
        self.no_device_grace = no_device_grace


WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait until every run has finished; exit by the result.")]
TimeoutOpt = Annotated[
    float | None,
    typer.Option("--timeout", help="Seconds to wait at most; then cancel the unfinished runs and exit 2.", min=0),
]
JunitOpt = Annotated[Path | None, typer.Option("--junit", help="Write one JUnit XML file for all runs.")]
PollOpt = Annotated[
    float,
    typer.Option(
        "--poll-interval",
        help="Seconds between status polls (while the server's live event stream is up, a change is seen at "
        "once and the polls come every 5 s or this, the longer).",
        min=0.1,
    ),
]
NoDeviceGraceOpt = Annotated[
    float,
    typer.Option(
        "--no-device-grace",
        help="While waiting: when a run has had no online device that fits it for this many seconds, cancel "
        "the runs and exit 3.",
        min=0,
    ),
]
# The default of --no-device-grace: long enough for agents that are (re)starting to register their devices.
NO_DEVICE_GRACE = 60.0
ModeOpt = Annotated[
    str | None,
    typer.Option(
        "--mode",
        help="spread: each test case once, on any device that fits; matrix: each test case on each device "
        "(--device, or each kind of online device that fits). Default: matrix for several --device, else spread.",
        show_default=False,
    ),
]
OsVersionOpt = Annotated[
    str | None,
    typer.Option("--os-version", help='Any device whose OS version fits: "14", ">=13", "<15", ">=13,<15".'),
]
ModelOpt = Annotated[str | None, typer.Option("--model", help='Any device whose name fits a pattern: "Pixel *".')]
DeviceNameOpt = Annotated[
    list[str] | None,
    typer.Option("--device-name", help="Any device of this name, any OS version (repeatable: any of them)."),
]
DeviceTagOpt = Annotated[
    list[str] | None,
    typer.Option("--device-tag", help="Any device its agent tags so (repeatable: all of them).", show_default=False),
]
PoolOpt = Annotated[str | None, typer.Option("--pool", help="Any device of this pool (its agent's devices file).")]
DeviceTypeOpt = Annotated[str | None, typer.Option("--device-type", help="phone or tablet.")]
PriorityOpt = Annotated[str | None, typer.Option("--priority", help="low, medium or high.")]
RunTimeoutOpt = Annotated[
    int | None, typer.Option("--run-timeout", help="Seconds each run may execute (server-side timeout).", min=10)
]
RecordVideoOpt = Annotated[
    bool,
    typer.Option("--record-video", help="Record a video of each device's screen (in the run's report and page)."),
]
RetriesOpt = Annotated[
    int | None,
    typer.Option(
        "--retries",
        help="Test retries: a run that fails as a test is tried again (ahead of the queue, on another device "
        "where one fits) up to N times; one that then passes counts as flaky (exit 0). Default: the test case's, "
        "else the organisation's.",
        min=0,
        max=5,
    ),
]
GroupOpt = Annotated[
    str | None,
    typer.Option("--group", help="A concurrency group (a branch, a pull request) for this run's batch."),
]
CancelPreviousOpt = Annotated[
    bool,
    typer.Option(
        "--cancel-previous",
        help="With --group: cancel the queued and running runs of the group's earlier batches (as CI "
        "concurrency groups do).",
    ),
]


def _batch_options(retries: int | None, group: str | None, cancel_previous: bool) -> dict[str, Any]:
    if cancel_previous and not group:
        _fail(EXIT_USAGE, "--cancel-previous cancels a group's earlier runs: give --group too.")
    out: dict[str, Any] = {}
    if retries is not None:
        out["retries"] = retries
    if group:
        out["group"] = group
    if cancel_previous:
        out["cancel_previous"] = True
    return out


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_values(values: list[str] | None) -> list[str] | None:
    """Check ``-e KEY=VALUE`` while the command line is parsed, so a bad one is a usage error (exit 3)."""
    for value in values or []:
        name, equals, _ = value.partition("=")
        if not equals:
            raise typer.BadParameter(f"{value!r}: write KEY=VALUE")
        if not ENV_NAME.fullmatch(name):
            raise typer.BadParameter(
                f"{name!r} is not a variable name (letters, digits and _, not starting with a digit)"
            )
    return values


def env_mapping(values: list[str] | None) -> dict[str, str]:
    """``-e`` values as the API's ``env``: a later KEY wins over an earlier one."""
    return {name: value for name, _, value in (item.partition("=") for item in values or [])}


def tag_list(values: list[str] | None) -> list[str] | None:
    """``--include-tags a,b --include-tags c`` → ["a", "b", "c"]."""
    tags = [tag.strip() for value in values or [] for tag in value.split(",") if tag.strip()]
    return list(dict.fromkeys(tags)) or None


def device_selector(
    os_version: str | None,
    model: str | None,
    names: list[str] | None,
    tags: list[str] | None,
    pool: str | None,
    device_type: str | None,
) -> dict[str, Any] | None:
    """The selector options as the API's ``device_selector`` (None when none was given)."""
    selector = {
        "os_version": os_version,
        "model": model,
        "name": [n.strip() for n in names or [] if n.strip()] or None,
        "tags": tag_list(tags),
        "pool": pool,
        "device_type": device_type,
    }
    return {key: value for key, value in selector.items() if value} or None


def _check_target(devices: list[str] | None, platform: str | None, selector: dict[str, Any] | None) -> None:
    if devices and selector:
        _fail(
            EXIT_USAGE,
            "--device names devices; --os-version, --model, --device-name, --device-tag, --pool and --device-type "
            "choose any device that fits: give one or the other.",
        )
    if not devices and not platform and not selector:
        _fail(EXIT_USAGE, "Give --device, --platform or a device selector (--os-version, --model, --device-tag…).")


EnvOpt = Annotated[
    list[str] | None,
    typer.Option(
        "-e",
        "--env",
        help="KEY=VALUE for the flows' ${KEY} (as `maestro test -e`). Repeatable.",
        callback=_env_values,
        show_default=False,
    ),
]


def queue_and_wait(
    client: Client, guard: SignalGuard, queue: Callable[[], list[QueuedJob]], options: WaitOptions
) -> int:
    """Queue (through ``queue``), then wait and report; returns the exit code."""
    jobs = queue()
    if not jobs:  # the server refuses an empty run-all; a pipeline must never read "nothing ran" as green
        _fail(EXIT_USAGE, "No runs were queued.")
    run_ids = [j.id for j in jobs]
    # A server with batches waits on them (their runs and the gate's verdict, one request each per poll).
    batch_ids = list(dict.fromkeys(j.batch_id for j in jobs if j.batch_id)) if all(j.batch_id for j in jobs) else []
    console = err if options.as_json else out
    batches = f" (batch {', '.join(batch_ids)})." if batch_ids else "."
    console.print(plain(f"Queued {len(run_ids)} run(s){batches}"), highlight=False)
    if not options.wait:  # queued and reported: nothing to cancel, whatever signal came meanwhile
        if options.as_json:
            _print_json({"runs": [j.model_dump(mode="json") for j in jobs]})
        else:
            for job in jobs:
                out.print(plain(f"{job.id}  {job.link}"), highlight=False, soft_wrap=True)
        return 0
    result = waiting.wait(
        client,
        run_ids,
        guard,
        console,
        timeout=options.timeout,
        poll_interval=options.poll_interval,
        no_device_grace=options.no_device_grace,
        batch_ids=batch_ids,
    )
    runs = result.runs
    code = waiting.exit_code_for(runs, result.batches)
    if result.note is not None and code != waiting.EXIT_TEST_FAILED:
        # Timed out or interrupted: never green. No device fits a run: a re-run would not help either.
        code = EXIT_USAGE if result.no_device else EXIT_INFRASTRUCTURE
    reports: dict[str, RunReport] = {}
    if options.junit is not None or code != 0 or any(r.flaky or r.quarantined for r in runs):
        for run in runs:
            if options.junit is not None or run.status == "failed" or run.flaky:
                try:
                    reports[run.id] = client.run_report(run.id)
                except APIError as exc:
                    console.print(plain(f"no report for {run.id}: {exc}"), highlight=False)
    if options.junit is not None:
        options.junit.parent.mkdir(parents=True, exist_ok=True)
        options.junit.write_bytes(render_runs(runs, reports, note=result.note, stopped=result.stopped or "timeout"))
        console.print(plain(f"JUnit report: {options.junit}"), highlight=False, soft_wrap=True)
    _summarise(runs, reports, code, result, options, console, client.pacer.rate_limited)
    ci_output.publish(
        client, runs, reports, code, note=result.note, stopped=result.stopped, junit=options.junit, stream=console.file
    )
    return code


def _summarise(
    runs: list[Run],
    reports: dict[str, RunReport],
    code: int,
    result: waiting.WaitResult,
    options: WaitOptions,
    console: Console,
    rate_limited: int,
) -> None:
    counts: dict[str, int] = {}
    for run in runs:
        # A run the CLI cancelled that its agent has not stopped yet (it stops at its next heartbeat).
        status = "cancelling" if run.id in result.cancelled and not run.finished else run.status
        counts[status] = counts.get(status, 0) + 1
    for run in runs:
        if run.flaky:
            report = reports.get(run.id)
            failed = [a for a in report.attempts if a.outcome == "failed"] if report is not None else []
            first = (
                f" (failed first: {failed[0].failure.message if failed[0].failure else failed[0].message})"
                if failed
                else ""
            )
            console.print(
                plain(f"FLAKY {run.test_case.name} on {run.device}: passed on a test retry{first}\n  {run.link}"),
                highlight=False,
                soft_wrap=True,
            )
    for run in runs:
        if run.status == "failed" and run.failure is not None:
            label = "QUARANTINED (not gating), FAILED" if run.quarantined else "FAILED"
            console.print(
                plain(f"{label} {run.test_case.name} on {run.device} [{run.failure.kind}]: {run.failure.message}"),
                highlight=False,
                soft_wrap=True,
            )
            console.print(plain(f"  {run.link}"), highlight=False, soft_wrap=True)
            report = reports.get(run.id)
            if report is None:
                continue
            for step in report.steps:
                if step.status == "failed":
                    for line in step.logs[-20:]:
                        console.print(plain(f"    {line}"), highlight=False, soft_wrap=True)
                    if step.screenshot:
                        # The run page's place of the step, not the screenshot's own link (signed for minutes).
                        link = step_link(run.link, report.attempt, step.index)
                        console.print(plain(f"    screenshot: {link}"), highlight=False, soft_wrap=True)
    flaky = [r for r in runs if r.flaky]
    quarantined = [r for r in runs if r.quarantined]
    extra = []
    if flaky:
        extra.append(f"{len(flaky)} flaky")
    if quarantined:
        failing = sum(r.status != "passed" for r in quarantined)
        extra.append(f"{len(quarantined)} quarantined ({failing} not passed, not gating)")
    summary = ", ".join([*(f"{n} {status}" for status, n in sorted(counts.items())), *extra])
    verdict = {0: "[green]PASSED[/green]", 1: "[red]FAILED[/red]"}.get(code, "[yellow]INCOMPLETE[/yellow]")
    if code == 0 and flaky:
        verdict = "[green]PASSED[/green] [yellow](flaky)[/yellow]"
    superseded = sorted({b.superseded_by for b in result.batches if b.superseded_by})
    if superseded:
        console.print(plain(f"superseded by batch {', '.join(superseded)} of the same group"), highlight=False)
    console.print(f"{verdict} {len(runs)} run(s): {summary} (exit {code})", highlight=False)
    if options.as_json:
        _print_json(
            {
                "exit_code": code,
                "summary": counts,
                "note": result.note,
                "cancelled": result.cancelled,
                "rate_limited": rate_limited,  # 429s the client waited out
                "batches": [b.model_dump(mode="json", exclude={"runs"}) for b in result.batches],
                "flaky": [r.id for r in flaky],
                "quarantined": [r.id for r in quarantined],
                "runs": [r.model_dump(mode="json") for r in runs],
            }
        )


def _run_pipeline(url: str | None, api_key: str | None, body: Callable[[Client, SignalGuard], int]) -> None:
    from qualgent.client import Client

    guard = SignalGuard()
    with guard.installed():
        try:
            with Client(api_key=api_key, base_url=url) as client:
                code = body(client, guard)
        except waiting.Interrupted as exc:  # a signal before anything was queued
            _fail(EXIT_INFRASTRUCTURE, f"interrupted by {exc} before any run was queued")
        except QualgentClientError as exc:
            _fail(exit_code_for_error(exc), _describe(exc))
    raise typer.Exit(code)


def _app_for(
    client: Client,
    app_id: str | None,
    latest: bool,
    upload: Path | None,
    upload_name: str | None,
    upload_version: str | None,
    platform: str | None,
    console: Console,
    threshold: int = 64 * MIB,
) -> str | None:
    given = sum(x for x in (app_id is not None, latest, upload is not None))
    if given > 1:
        raise ConfigurationError("Give one of --app, --latest and --upload.")
    if app_id is not None:
        return app_id
    if upload is not None:
        if not upload_version:
            raise ConfigurationError("--upload needs --version (the build's version, e.g. the commit).")
        name = upload_name or upload.stem
        return upload_file(
            client, upload, name, upload_version, None, resumable=None, threshold=threshold, console=console
        )
    if latest and platform:
        return client.latest_app(platform.lower()).id
    return None  # --latest over devices of several platforms: the newest app of each device's platform


def run(
    test_cases: Annotated[list[str], typer.Argument(help="Test case IDs (tc_…) or exact names.")],
    device: Annotated[
        list[str] | None, typer.Option("--device", help='A device: "Pixel 7", "Pixel 7@14" or its dev_ ID. Repeatable.')
    ] = None,
    platform: Annotated[str | None, typer.Option("--platform", help="android or ios: any device of it.")] = None,
    app_id: Annotated[str | None, typer.Option("--app", help="The app's ID (file_…).")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Use the newest uploaded app of the platform.")] = False,
    priority: PriorityOpt = None,
    run_timeout: RunTimeoutOpt = None,
    env: EnvOpt = None,
    record_video: RecordVideoOpt = False,
    retries: RetriesOpt = None,
    group: GroupOpt = None,
    cancel_previous: CancelPreviousOpt = False,
    os_version: OsVersionOpt = None,
    model: ModelOpt = None,
    device_name: DeviceNameOpt = None,
    device_tag: DeviceTagOpt = None,
    pool: PoolOpt = None,
    device_type: DeviceTypeOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = None,
    junit: JunitOpt = None,
    as_json: JsonOpt = False,
    poll_interval: PollOpt = 1.0,
    no_device_grace: NoDeviceGraceOpt = NO_DEVICE_GRACE,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Run test cases on devices (one run per test case and --device; with --platform or selector options,
    one run per test case on any device that fits, chosen when it is free); with --wait, exit by the result."""
    options = WaitOptions(wait, timeout, junit, as_json, poll_interval, no_device_grace)
    selector = device_selector(os_version, model, device_name, device_tag, pool, device_type)
    _check_target(device, platform, selector)
    batch = _batch_options(retries, group, cancel_previous)

    def body(client: Client, guard: SignalGuard) -> int:
        case_ids = resolve_test_cases(client, test_cases)
        devices = resolve_devices(client, device or [])
        app = _app_for(client, app_id, latest, None, None, None, platform or _platform_of(devices), err)
        jobs: list[dict[str, Any]] = []
        extra: dict[str, Any] = {}
        if priority:
            extra["priority"] = priority
        if run_timeout:
            extra["timeout_seconds"] = run_timeout
        if env:
            extra["env"] = env_mapping(env)
        if record_video:
            extra["record_video"] = True
        latest_of = _LatestApps(client)
        for case_id in case_ids:
            if devices:
                for d in devices:
                    app_for_device = app or latest_of(d["platform"])
                    jobs.append({"test_case_id": case_id, "device": d, "app_file_id": app_for_device, **extra})
            else:
                job = {"test_case_id": case_id, **extra}
                if platform:
                    job["platform"] = platform
                if selector:
                    job["device_selector"] = selector
                if app:
                    job["app_file_id"] = app
                jobs.append(job)
        return queue_and_wait(client, guard, lambda: client.run(jobs, **batch), options)

    _run_pipeline(url, api_key, body)


class _LatestApps:
    """The newest app of a platform, asked once per platform."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.ids: dict[str, str] = {}

    def __call__(self, platform: str) -> str:
        key = platform.lower()
        if key not in self.ids:
            self.ids[key] = self.client.latest_app(key).id
        return self.ids[key]


def _platform_of(devices: list[dict[str, str]]) -> str | None:
    platforms = {d["platform"].lower() for d in devices}
    return platforms.pop() if len(platforms) == 1 else None


def run_all(
    category: Annotated[str | None, typer.Option("--category", help="Only this category (name or cat_ ID).")] = None,
    platform: Annotated[str | None, typer.Option("--platform", help="android or ios: any device of it.")] = None,
    device: Annotated[
        list[str] | None, typer.Option("--device", help='A device: "Pixel 7", "Pixel 7@14" or its dev_ ID. Repeatable.')
    ] = None,
    app_id: Annotated[str | None, typer.Option("--app", help="The app's ID (file_…).")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Use the newest uploaded app of the platform.")] = False,
    upload: Annotated[Path | None, typer.Option("--upload", help="Upload this build first and run on it.")] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="With --upload: the app name (default: file name).")
    ] = None,
    version: Annotated[str | None, typer.Option("--version", help="With --upload: the app version.")] = None,
    threshold: ThresholdOpt = 64 * MIB,
    priority: PriorityOpt = None,
    run_timeout: RunTimeoutOpt = None,
    env: EnvOpt = None,
    record_video: RecordVideoOpt = False,
    retries: RetriesOpt = None,
    group: GroupOpt = None,
    cancel_previous: CancelPreviousOpt = False,
    include_tags: Annotated[
        list[str] | None,
        typer.Option(
            "--include-tags",
            help="Only test cases with at least one of these tags (comma-separated; repeatable).",
            show_default=False,
        ),
    ] = None,
    exclude_tags: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude-tags",
            help="Skip test cases with any of these tags (comma-separated; repeatable).",
            show_default=False,
        ),
    ] = None,
    mode: ModeOpt = None,
    os_version: OsVersionOpt = None,
    model: ModelOpt = None,
    device_name: DeviceNameOpt = None,
    device_tag: DeviceTagOpt = None,
    pool: PoolOpt = None,
    device_type: DeviceTypeOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = None,
    junit: JunitOpt = None,
    as_json: JsonOpt = False,
    poll_interval: PollOpt = 1.0,
    no_device_grace: NoDeviceGraceOpt = NO_DEVICE_GRACE,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Run every active test case (of a category, with or without tags) on a device, a platform or the devices
    that fit a selector, longest expected first; with --wait, exit by the result."""
    options = WaitOptions(wait, timeout, junit, as_json, poll_interval, no_device_grace)
    selector = device_selector(os_version, model, device_name, device_tag, pool, device_type)
    _check_target(device, platform, selector)
    if mode not in (None, "spread", "matrix"):
        _fail(EXIT_USAGE, f"--mode is spread or matrix, not {mode!r}.")
    batch = _batch_options(retries, group, cancel_previous)

    def body(client: Client, guard: SignalGuard) -> int:
        category_id = resolve_category(client, category) if category else None
        devices = resolve_devices(client, device or [])
        target_platform = platform or _platform_of(devices)
        app = _app_for(client, app_id, latest, upload, name, version, target_platform, err, threshold)
        common: dict[str, Any] = {
            "category_id": category_id,
            "priority": priority,
            "timeout_seconds": run_timeout,
            "env": env_mapping(env) or None,
            "include_tags": tag_list(include_tags),
            "exclude_tags": tag_list(exclude_tags),
            # Not sent unless asked: an older server refuses no request it took before.
            "record_video": True if record_video else None,
            "retries": batch.get("retries"),
            "group": batch.get("group"),
        }
        cancel_first = bool(batch.get("cancel_previous"))

        latest_of = _LatestApps(client)

        def queue() -> list[QueuedJob]:
            if not devices:
                return client.run_all(
                    app_file_id=app,
                    platform=platform,
                    device_selector=selector,
                    mode=mode,
                    cancel_previous=cancel_first,
                    **common,
                )
            if len(devices) == 1:
                return client.run_all(
                    app_file_id=app or latest_of(devices[0]["platform"]),
                    device=devices[0],
                    cancel_previous=cancel_first,
                    **common,
                )
            chosen = mode or "matrix"  # several devices: each test case on each, as before there were modes
            by_platform: dict[str, list[dict[str, str]]] = {}
            for d in devices:
                by_platform.setdefault(d["platform"].lower(), []).append(d)
            if chosen == "spread" and len(by_platform) > 1:
                raise ConfigurationError(
                    "--mode spread runs each test case once: give --device values of one platform."
                )
            jobs: list[QueuedJob] = []
            try:
                for name, same in by_platform.items():  # one request per platform (its app); each is atomic
                    # Only the first cancels the group's earlier batches: the later ones are this step's own.
                    first = cancel_first and not jobs
                    jobs += client.run_all(
                        app_file_id=app or latest_of(name), devices=same, mode=chosen, cancel_previous=first, **common
                    )
            except QualgentClientError:
                # A later platform was refused: the step fails, so the runs queued for earlier ones go too.
                waiting.cancel_unfinished(client, [j.id for j in jobs], [], err)
                raise
            return jobs

        return queue_and_wait(client, guard, queue, options)

    _run_pipeline(url, api_key, body)


# ---------------------------------------------------------------------------------------------- jobs


def _run_rows(runs: list[Run]) -> Table:
    table = Table("id", "test case", "device", "status", "progress", "failure", "created")
    for r in runs:
        failure = f"{r.failure.kind}: {r.failure.message}" if r.failure else ""
        add_row(table, r.id, r.test_case.name, r.device, r.status, f"{r.progress}%", failure, r.created_at or "")
    return table


@jobs_app.command("list", cls=ClientCommand)
def jobs_list(
    status: Annotated[str | None, typer.Option("--status", help="queued, running, passed, failed, cancelled.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many of the newest.", min=1, max=1000)] = 50,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """List test runs, newest first."""
    with _client(url, api_key) as client:
        runs = client.list_runs(status=status, limit=limit)
    if as_json:
        _print_json([r.model_dump(mode="json") for r in runs])
    else:
        _print_table(_run_rows(runs))


@jobs_app.command("status", cls=ClientCommand)
def jobs_status(
    run_ids: Annotated[list[str], typer.Argument(help="Run IDs (run_…).")],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """The state of runs."""
    with _client(url, api_key) as client:
        runs = [client.get_run(run_ids[0])] if len(run_ids) == 1 else client.get_runs(run_ids)
    missing = set(run_ids) - {r.id for r in runs}
    if as_json:
        _print_json([r.model_dump(mode="json") for r in runs])
    else:
        _print_table(_run_rows(runs))
    if missing:
        _fail(EXIT_USAGE, f"No test run {', '.join(sorted(missing))}.")


@jobs_app.command("cancel", cls=ClientCommand)
def jobs_cancel(
    run_ids: Annotated[list[str], typer.Argument(help="Run IDs (run_…).")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Cancel runs: queued ones at once, running ones at their agent's next heartbeat."""
    with _client(url, api_key) as client:
        for run_id in run_ids:
            result = client.cancel_run(run_id)
            out.print(plain(f"{result.id}  {result.status}"), highlight=False)


@jobs_app.command("report", cls=ClientCommand)
def jobs_report(
    run_ids: Annotated[list[str], typer.Argument(help="Run IDs (run_…).")],
    junit: JunitOpt = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """A run's steps, logs and screenshots; --junit writes the runs as one JUnit XML file."""
    with _client(url, api_key) as client:
        reports = {run_id: client.run_report(run_id) for run_id in run_ids}
    if junit is not None:
        junit.write_bytes(render_runs([r.run for r in reports.values()], reports))
    if as_json:
        _print_json([r.model_dump(mode="json") for r in reports.values()])
        return
    for report in reports.values():
        run = report.run
        out.print(
            f"[bold]{escaped(run.id)}[/bold] {escaped(run.test_case.name)} on {escaped(run.device)}: {escaped(run.status)}",
            highlight=False,
        )
        if run.failure:
            out.print(plain(f"  {run.failure.kind}: {run.failure.message}"), highlight=False)
        out.print(plain(f"  {run.link}"), highlight=False, soft_wrap=True)
        for step in report.steps:
            out.print(plain(f"  [{step.status}] {step.index + 1}. {step.description} {step.message}"), highlight=False)
            for line in step.logs:
                out.print(plain(f"      {line}"), highlight=False)
            if step.screenshot:
                link = step_link(run.link, report.attempt, step.index)
                out.print(plain(f"      screenshot: {link}"), highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------- catalogue listings


def devices(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Devices of the catalogue (use a name, "name@os" or the ID with --device)."""
    with _client(url, api_key) as client:
        found = client.list_devices()
    if as_json:
        _print_json([d.model_dump(mode="json") for d in found])
        return
    table = Table("id", "name", "platform", "os", "type")
    for d in found:
        add_row(table, d.id, d.name, d.platform, d.os_version, d.device_type)
    _print_table(table)


def categories(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Categories of test cases."""
    with _client(url, api_key) as client:
        found = client.list_categories()
    if as_json:
        _print_json([c.model_dump(mode="json") for c in found])
        return
    table = Table("id", "name", "description")
    for c in found:
        add_row(table, c.id, c.name, c.description)
    _print_table(table)


@test_cases_app.command("list", cls=ClientCommand)
def test_cases_list(
    category: Annotated[str | None, typer.Option("--category", help="Only this category (name or cat_ ID).")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Test cases of the organisation."""
    with _client(url, api_key) as client:
        category_id = resolve_category(client, category) if category else None
        found = client.list_test_cases(category_id)
    if as_json:
        _print_json([t.model_dump(mode="json") for t in found])
        return
    table = Table("id", "name", "status", "category", "last run", "pass rate", "flags")
    for t in found:
        last = (t.latest_completed_run or {}).get("status", "")
        rate = t.stats.pass_rate if t.stats is not None else None
        add_row(
            table,
            t.id,
            t.name,
            t.status,
            t.category.name if t.category else "",
            str(last),
            "" if rate is None else f"{rate:.0%}",
            _flags(t.flaky, t.quarantined),
        )
    _print_table(table)


def _flags(flaky: bool, quarantined: bool) -> str:
    return ", ".join(name for name, on in (("flaky", flaky), ("quarantined", quarantined)) if on)


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}s"


@test_cases_app.command("history", cls=ClientCommand)
def test_cases_history(
    test_case: Annotated[str, typer.Argument(help="A test case ID (tc_…) or exact name.")],
    limit: Annotated[int, typer.Option("--limit", help="How many of its latest runs.", min=1, max=200)] = 20,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """A test case's latest runs (build, device, duration, attempts, result), whether it is flaky, its figures."""
    with _client(url, api_key) as client:
        [case_id] = resolve_test_cases(client, [test_case])
        history = client.test_case_history(case_id, limit=limit)
    if as_json:
        _print_json(history.model_dump(mode="json"))
        return
    stats = history.stats
    flags = _flags(history.flaky, history.quarantine is not None)
    out.print(
        f"[bold]{escaped(history.test_case.name)}[/bold] {escaped(history.test_case.id)}"
        + (f" ({flags})" if flags else ""),
        highlight=False,
    )
    if history.flaky_reason:
        out.print(plain(f"  flaky: {history.flaky_reason}"), highlight=False)
    if history.quarantine is not None:
        why = f": {history.quarantine.reason}" if history.quarantine.reason else ""
        out.print(
            plain(f"  quarantined since {history.quarantine.since} ({history.quarantine.source}){why}"), highlight=False
        )
    if stats.runs:
        out.print(
            f"  {stats.runs} runs: pass rate {stats.pass_rate:.0%}, flaky rate {stats.flaky_rate:.0%}, "
            f"p50 {_seconds(stats.p50_seconds)}, p90 {_seconds(stats.p90_seconds)}",
            highlight=False,
        )
    table = Table("run", "result", "app", "sha256", "device", "duration", "attempts", "finished")
    for run in history.runs:
        result = run.status + (" (flaky)" if run.flaky else "") + (" (quarantined)" if run.quarantined else "")
        if run.failure is not None:
            result += f" [{run.failure.kind}]"
        add_row(
            table,
            run.id,
            result,
            run.app.name,
            run.app.sha256[:12],
            run.device,
            _seconds(run.duration_seconds),
            str(run.attempts),
            str(run.finished_at or ""),
        )
    _print_table(table)


@test_cases_app.command("quarantine", cls=ClientCommand)
def test_cases_quarantine(
    test_case: Annotated[str, typer.Argument(help="A test case ID (tc_…) or exact name.")],
    off: Annotated[bool, typer.Option("--off", help="Take it out of quarantine.")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (shown beside it).")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Put a test case in quarantine (its runs still run and are reported, but never fail the exit code), or
    take it out with --off."""
    with _client(url, api_key) as client:
        [case_id] = resolve_test_cases(client, [test_case])
        case = client.release_test_case(case_id) if off else client.quarantine_test_case(case_id, reason)
    if as_json:
        _print_json(case.model_dump(mode="json"))
        return
    state = "in quarantine" if case.quarantined else "out of quarantine"
    out.print(plain(f"{case.id} {case.name}: {state}"), highlight=False)


def register(app: typer.Typer) -> None:
    """Add the client commands to the ``qualgent`` command (one call in cli/main.py)."""
    app.add_typer(apps_app, name="apps")
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(test_cases_app, name="test-cases")
    app.command("run", cls=ClientCommand)(run)
    app.command("run-all", cls=ClientCommand)(run_all)
    app.command("devices", cls=ClientCommand)(devices)
    app.command("categories", cls=ClientCommand)(categories)
    from qualgent.cli import sync_commands

    sync_commands.register(test_cases_app)
