"""The dashboard in a real browser (Debian's chromium through Playwright) against a real `qualgent serve`.

One server for the module: SQLite, the embedded agent executing runs on simulated devices, and the
first start's output read for the API key and the admin's password, as a person would. Every test
signs in through the form. Each page is photographed into docs/screenshots/ (docs/dashboard.md shows
the pictures).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from tests.fixtures.factories import IPHONE_14_PRO, apk_bytes, ipa_bytes
from tests.fixtures.flows import FAILING_FLOW, PASSING_FLOW, TEXTS
from tests.fixtures.servers import ServeProcess, start_serve_process

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
KEY = re.compile(r"qg_[A-Za-z0-9_-]{43}")
LONG_FLOW = "appId: com.example.app\n---\n- launchApp\n" + "- tapOn: Sign in\n" * 80
IPHONE = "iPhone 14 Pro · iOS 16.0"
STEP_SECONDS = 0.4


@dataclass
class Dashboard:
    url: str
    email: str
    password: str
    key: str
    api: httpx.Client
    env: dict[str, str]
    ids: dict[str, str]

    def admin(self, *args: str, stdin: str = "") -> str:
        """`qualgent admin …` against the server's database, as an operator would run it."""
        done = subprocess.run(
            [sys.executable, "-m", "qualgent", "admin", *args],
            env={**os.environ, **self.env},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.strip()


def _seed(api: httpx.Client) -> dict[str, str]:
    """An iOS build, a category and three test cases, through the API (as a pipeline would)."""
    files = {"file": ("Example.ipa", ipa_bytes(texts=TEXTS), "application/octet-stream")}
    app = api.post("/v1/apps/upload", data={"app_name": "Example", "version": "1.2.3"}, files=files)
    assert app.status_code == 200, app.text
    category = api.post("/v1/categories", json={"name": "Smoke Tests", "description": "Run on every build"})
    assert category.status_code == 201, category.text
    ids = {"app": app.json()["file"]["id"], "cat": category.json()["id"]}
    for name, flow in (
        ("Login Flow Test", PASSING_FLOW),
        ("Checkout Flow Test", FAILING_FLOW),
        ("Long Flow", LONG_FLOW),
    ):
        case = api.post("/v1/test-cases", json={"name": name, "category_id": ids["cat"], "flow": flow})
        assert case.status_code == 201, case.text
        ids[name] = case.json()["id"]
    return ids


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    tmp = tmp_path_factory.mktemp("dashboard")
    data = tmp / "data"
    data.mkdir()
    env = {
        "QUALGENT_DATA_DIR": str(data),
        "QUALGENT_SECRET_KEY": "dashboard-test-secret",
        "QUALGENT_SIMULATOR_STEP_SECONDS": str(STEP_SECONDS),
        # A cancelled run stops at its agent's next heartbeat.
        "QUALGENT_HEARTBEAT_SECONDS": "0.5",
    }
    server: ServeProcess = start_serve_process(env, tmp / "serve.log")
    try:
        output = server.output()
        key = KEY.search(output)
        email = re.search(r"email:\s+(\S+)", output)
        password = re.search(r"password:\s+(\S+)", output)
        assert key and email and password, output
        assert f"{server.url}/sign-in" in output
        api = httpx.Client(base_url=server.url, headers={"X-Api-Key": key.group(0)}, timeout=30)
        try:
            yield Dashboard(server.url, email.group(1), password.group(1), key.group(0), api, env, _seed(api))
        finally:
            api.close()
    finally:
        server.stop()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, dash: Dashboard, path: str = "/test-runs", email: str | None = None) -> None:
    page.goto(f"{dash.url}{path}")
    expect(page).to_have_url(re.compile(r"/sign-in\?next="))
    page.get_by_label("Email").fill(email or dash.email)
    page.get_by_label("Password").fill(dash.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{dash.url}{path}")


def queue(dash: Dashboard, test_case: str, **extra: Any) -> dict[str, Any]:
    job = {"test_case_id": dash.ids[test_case], "app_file_id": dash.ids["app"], "device": IPHONE_14_PRO, **extra}
    response = dash.api.post("/v1/test-cases/run", json={"jobs": [job]})
    assert response.status_code == 200, response.text
    queued: dict[str, Any] = {**response.json()["jobs"][0], "batch_id": response.json()["batch_id"]}
    return queued


# ------------------------------------------------------------------------------------------ sign-in


def test_sign_in_with_the_keyboard_only(page: Page, dash: Dashboard) -> None:
    page.goto(f"{dash.url}/test-runs")
    expect(page).to_have_url(f"{dash.url}/sign-in?next=%2Ftest-runs")
    # A wrong password first: the form says so and nothing opens.
    page.get_by_label("Email").fill(dash.email)
    page.get_by_label("Password").fill("not the password")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")

    # The email field has the focus, Tab goes to the password, then to the button; Enter signs in.
    assert page.evaluate("document.activeElement.id") == "email"
    page.keyboard.press("Control+A")
    page.keyboard.type(dash.email)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "password"
    page.keyboard.type(dash.password)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Sign in"
    shot(page, "sign-in")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{dash.url}/test-runs")
    expect(page.get_by_role("heading", name="Test runs")).to_be_visible()
    # The first Tab from the top of a page lands on the skip link, which moves focus to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"

    cookie = next(c for c in page.context.cookies() if c["name"] == "qg_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"


def test_sign_out_ends_the_session_on_the_server(browser: Browser, dash: Dashboard) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        sign_in(page, dash, "/devices")
        stolen = [c for c in context.cookies() if c["name"] == "qg_session"]
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(f"{dash.url}/sign-in")
        # The old cookie, put back (as a thief would), opens nothing: the server ended the session.
        context.add_cookies(stolen)  # type: ignore[arg-type]
        page.goto(f"{dash.url}/devices")
        expect(page).to_have_url(re.compile(r"/sign-in\?next=%2Fdevices$"))
    finally:
        context.close()


# ----------------------------------------------------------------------------------------- API keys


def test_generate_a_key_use_it_and_revoke_it(context: BrowserContext, page: Page, dash: Dashboard) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, dash, "/settings/developer")
    page.get_by_label("Name").fill("CI pipeline")
    page.get_by_role("button", name="Generate key").click()
    secret = page.locator("#new-key-value").input_value()
    assert KEY.fullmatch(secret), secret
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-status")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    shot(page, "developer-new-key")

    # The key works against the API at once.
    assert httpx.get(f"{dash.url}/v1/jobs/list", headers={"X-Api-Key": secret}).status_code == 200

    # Listed by prefix, never shown again.
    page.goto(f"{dash.url}/settings/developer")
    assert secret not in page.content()
    row = page.locator("tr", has=page.locator("code", has_text=f"{secret[:10]}…"))
    expect(row).to_contain_text("CI pipeline")
    expect(row).to_contain_text("read write")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(row).to_contain_text("revoked")
    shot(page, "developer")
    refused = httpx.get(f"{dash.url}/v1/jobs/list", headers={"X-Api-Key": secret})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


# --------------------------------------------------------------------------------------------- apps


def test_upload_an_app_with_a_progress_bar(page: Page, dash: Dashboard, tmp_path: Path) -> None:
    build = tmp_path / "hello.apk"
    build.write_bytes(apk_bytes(size_padding=3 * 1024 * 1024))
    sign_in(page, dash, "/apps")
    # Record every value the progress bar takes; sessionStorage outlives the reload after the upload.
    page.evaluate(
        """() => new MutationObserver(() => {
            const values = JSON.parse(sessionStorage.getItem('progress') || '[]');
            values.push(document.getElementById('upload-progress').value);
            sessionStorage.setItem('progress', JSON.stringify(values));
        }).observe(document.getElementById('upload-progress'), {attributes: true})"""
    )
    page.get_by_label("App name").fill("Hello")
    page.get_by_label("Version").fill("1.4.2")
    page.get_by_label(re.compile("^Build")).set_input_files(str(build))
    with page.expect_response(lambda r: r.url.endswith("/apps/upload")) as uploaded:
        page.get_by_role("button", name="Upload").click()
    assert uploaded.value.status == 200
    # The page reloads with the new build listed.
    row = page.locator("#app-rows tr", has_text="Hello v1.4.2")
    expect(row).to_have_count(1)
    app_id = row.get_attribute("data-app-id")
    expect(row).to_contain_text("com.example.app")  # the package's own metadata
    expect(row).to_contain_text("android")
    progress = json.loads(page.evaluate("sessionStorage.getItem('progress')"))
    assert progress and progress[-1] == 100, progress
    shot(page, "apps")
    assert dash.api.get(f"/v1/apps/{app_id}").json()["app_name"] == "Hello"

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete Hello v1.4.2").click()
    expect(page.locator(f"tr[data-app-id='{app_id}']")).to_have_count(0)
    assert dash.api.get(f"/v1/apps/{app_id}").status_code == 404


# ------------------------------------------------------------------------------------------- runs


def test_run_a_test_case_and_watch_it_pass_without_a_reload(page: Page, dash: Dashboard) -> None:
    sign_in(page, dash, "/test-cases")
    page.get_by_role("link", name="Smoke Tests").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Test cases in Smoke Tests")
    shot(page, "test-cases")
    page.get_by_role("link", name="Login Flow Test").click()
    # The flow, highlighted: its keys and values are marked up as separate tokens.
    flow = page.locator(".flow .highlight")
    expect(flow).to_contain_text("assertVisible: Welcome back")
    assert flow.locator("span").count() > 10
    shot(page, "test-case")

    page.get_by_label("Build").select_option(label="Example v1.2.3 (ios)")
    # Only devices that can run an iOS build are offered.
    assert page.locator("#run-device option[data-platform='android']").evaluate_all("os => os.every(o => o.disabled)")
    page.get_by_label("Device").select_option(label=IPHONE)
    page.get_by_role("button", name="Run on this device").click()
    expect(page).to_have_url(re.compile(r"/test-runs/run_[0-9a-z]{26}$"))
    status = page.locator("#run-status")
    assert status.inner_text() in ("queued", "running")
    page.evaluate("window.stillThisPage = true")

    # Every status the page shows, recorded as the live region is swapped (no reload can reset it).
    page.evaluate(
        """() => { window.seen = [document.getElementById('run-status').textContent];
        new MutationObserver(() => window.seen.push(document.getElementById('run-status').textContent))
            .observe(document.getElementById('run-live'), {childList: true}); }"""
    )
    expect(status).to_have_text("passed", timeout=30_000)
    seen = page.evaluate("window.seen")
    assert seen[0] in ("queued", "running") and seen[-1] == "passed", seen
    assert page.evaluate("window.stillThisPage") is True  # updated in place, never reloaded
    expect(page.locator("#run-progress")).to_have_attribute("value", "100")
    expect(page.locator("li.step.passed")).to_have_count(7)
    expect(page.locator("li.step").first).to_contain_text("launchApp")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    expect(page.locator(".facts")).to_contain_text("Admin <admin@localhost>")
    shot(page, "run-passed")

    with page.expect_download() as download:
        page.get_by_role("link", name="JSON report").click()
    report = json.loads(Path(download.value.path()).read_text())
    assert report["run"]["status"] == "passed" and len(report["steps"]) == 7
    with page.expect_download() as download:
        page.get_by_role("link", name="JUnit XML").click()
    junit = Path(download.value.path()).read_text()
    assert "<testsuite" in junit and "Login Flow Test" in junit and "<failure" not in junit


def test_a_failed_run_shows_its_failing_step_and_screenshot(page: Page, dash: Dashboard) -> None:
    run = queue(dash, "Checkout Flow Test")
    sign_in(page, dash, "/test-runs")
    page.goto(run["link"])
    expect(page.locator("#run-status")).to_have_text("failed", timeout=30_000)
    expect(page.locator("#failure-message")).to_contain_text("Checkout complete")
    expect(page.locator(".failure")).to_contain_text('Failing step 3: assertVisible "Checkout complete"')
    failed = page.locator("li.step.failed")
    expect(failed).to_have_count(1)
    image = failed.locator("img")
    expect(image).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    shot(page, "run-failed")

    image.click()
    dialog = page.locator("dialog#shot-dialog")
    expect(dialog).to_be_visible()
    assert page.evaluate("document.getElementById('shot-dialog-img').naturalWidth") > 0
    shot(page, "run-screenshot")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_a_recorded_run_plays_its_video_and_a_failed_one_shows_the_device_log(page: Page, dash: Dashboard) -> None:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    run = queue(dash, "Checkout Flow Test", record_video=True)
    sign_in(page, dash, "/test-runs")
    page.goto(run["link"])
    expect(page.locator("#run-status")).to_have_text("failed", timeout=30_000)
    video = page.locator("figure.recording video")
    expect(video).to_have_count(1)
    expect(video).to_have_attribute("src", f"/test-runs/{run['id']}/artifacts/1/run.mp4")
    # The browser reads the video's metadata (its length) and seeks in it: Range requests, under the CSP.
    page.wait_for_function("v => v.readyState >= 1 && v.duration > 0", arg=video.element_handle(), timeout=15_000)
    duration = video.evaluate("v => v.duration")
    assert duration >= 2, duration
    video.evaluate(
        "v => new Promise(done => { v.addEventListener('seeked', done, {once: true}); v.currentTime = v.duration / 2; })"
    )
    # The device log's last lines, by the failing step, with a link to all of it.
    failed = page.locator("li.step.failed")
    expect(failed.locator("#device-log-tail")).to_contain_text('assertVisible "Checkout complete"')
    with page.expect_download() as download:
        failed.get_by_role("link", name=re.compile("Download the whole log")).click()
    text = Path(download.value.path()).read_text()
    lines = text.splitlines()
    assert 'tapOn "Sign in"' in text and 'assertVisible "Checkout complete"' in lines[-1], lines
    shot(page, "run-video")
    assert not problems, problems


def test_cancel_a_running_run(page: Page, dash: Dashboard) -> None:
    run = queue(dash, "Long Flow")
    sign_in(page, dash, "/test-runs")
    page.goto(run["link"])
    status = page.locator("#run-status")
    expect(status).to_have_text("running", timeout=20_000)
    page.get_by_role("button", name="Cancel run").click()
    expect(status).to_have_text("cancelled", timeout=15_000)
    assert dash.api.get(f"/v1/jobs/status/{run['id']}").json()["status"] == "cancelled"
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)


def test_the_run_page_follows_its_run_events_between_polls(page: Page, dash: Dashboard) -> None:
    """With its poll slowed to a minute, the run page still shows the run start and pass as they happen:
    the run's events (GET /test-runs/events) make it fetch its live region at once."""
    sign_in(page, dash, "/test-runs")

    def slow_poll(route: Route) -> None:
        response = route.fetch()
        body = response.text().replace('data-live-every="1000"', 'data-live-every="60000"')
        assert 'data-live-every="60000"' in body
        route.fulfill(response=response, body=body)

    page.route(re.compile(r"/test-runs/run_[0-9a-z]{26}$"), slow_poll)
    run = queue(dash, "Login Flow Test")
    with page.expect_request(re.compile(r"/test-runs/events\?ids=run_")):
        page.goto(f"{dash.url}/test-runs/{run['id']}")
    status = page.locator("#run-status")
    assert status.inner_text() in ("queued", "running")
    expect(status).to_have_text("passed", timeout=30_000)


def test_the_run_list_updates_live_and_filters(page: Page, dash: Dashboard) -> None:
    sign_in(page, dash, "/test-runs")
    page.evaluate("window.stillThisPage = true")
    run = queue(dash, "Login Flow Test")
    row = page.locator(f"tr[data-run-id='{run['id']}']")
    expect(row).to_be_visible(timeout=10_000)
    expect(row.locator(".status")).to_have_text("passed", timeout=30_000)
    assert page.evaluate("window.stillThisPage") is True
    shot(page, "runs")

    failed = queue(dash, "Checkout Flow Test")
    page.get_by_label("Status").select_option("failed")
    page.get_by_label("Test case").select_option(label="Checkout Flow Test")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"status=failed.*test_case_id=tc_"))
    expect(page.locator(f"tr[data-run-id='{failed['id']}']")).to_be_visible(timeout=30_000)
    statuses = page.locator("#run-rows tr .status").all_inner_texts()
    assert statuses and set(statuses) == {"failed"}, statuses
    expect(page.locator(f"tr[data-run-id='{run['id']}']")).to_have_count(0)
    page.get_by_label("Device").select_option("Pixel 7")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#run-rows")).to_contain_text("No runs match these filters")


def test_devices_are_grouped_by_type_with_online_and_busy(page: Page, dash: Dashboard) -> None:
    sign_in(page, dash, "/devices")
    expect(page.get_by_role("heading", name="Phones")).to_be_visible()
    expect(page.get_by_role("heading", name="Tablets")).to_be_visible()
    pixel = page.locator("tr", has=page.get_by_role("cell", name="Pixel 7", exact=True))
    expect(pixel).to_contain_text("online")
    expect(pixel).to_contain_text("0 of 1 busy")
    shot(page, "devices")


# ------------------------------------------------------------- history, quarantine, batches (issue 7)


def _wait_finished(dash: Dashboard, batch_id: str) -> dict[str, Any]:
    for _ in range(600):
        batch: dict[str, Any] = dash.api.get(f"/v1/batches/{batch_id}").json()
        if batch["finished"]:
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not finish")


def test_history_chart_quarantine_switch_batch_and_settings(page: Page, dash: Dashboard) -> None:
    """A suite run twice with a test retry: the failing test case is tried again and fails; its page shows
    the history chart and is put in quarantine with the switch; the batch page lists the runs with their
    retries; the organisation's settings change."""
    jobs = [
        {"test_case_id": dash.ids[name], "app_file_id": dash.ids["app"], "device": IPHONE_14_PRO}
        for name in ("Login Flow Test", "Checkout Flow Test")
    ]
    batch_id = ""
    for _ in range(2):
        queued = dash.api.post("/v1/test-cases/run", json={"jobs": jobs, "retries": 1})
        assert queued.status_code == 200, queued.text
        batch_id = queued.json()["batch_id"]
        batch = _wait_finished(dash, batch_id)
        assert batch["verdict"] == "failed" and batch["test_retries"] == 1

    # Earlier tests of this module may have run the test case too: the chart shows what the history says,
    # these two runs included.
    history = dash.api.get(f"/v1/test-cases/{dash.ids['Checkout Flow Test']}/history").json()
    failed = [r for r in history["runs"] if r["status"] == "failed" and not r.get("quarantined")]
    assert len(failed) >= 2, history
    sign_in(page, dash, f"/test-cases/{dash.ids['Checkout Flow Test']}")
    chart = page.locator("svg.history-chart")
    expect(chart).to_be_visible()
    expect(chart.locator("rect.bar.failed")).to_have_count(len(failed))
    expect(page.locator("#history-stats")).to_contain_text("0 %")
    page.get_by_label("Reason (optional)").fill("Checkout backend is down in staging")
    page.get_by_role("button", name="Put in quarantine").click()
    expect(page.locator("#quarantine-badge")).to_be_visible()
    expect(page.locator("#quarantine-state")).to_contain_text("Checkout backend is down in staging")
    shot(page, "test-case-history")

    page.goto(f"{dash.url}/batches/{batch_id}")
    expect(page.locator("#batch-verdict")).to_have_text("failed")
    expect(page.locator("#batch-runs tbody tr")).to_have_count(2)
    expect(page.locator("#batch-runs")).to_contain_text("1 / 1")  # the failing run used its retry
    shot(page, "batch")
    page.get_by_role("link", name="Checkout Flow Test").click()
    expect(page.locator("#quarantine-badge")).to_be_visible()

    # Again with the test case in quarantine: its failure no longer fails the gate.
    queued = dash.api.post("/v1/test-cases/run", json={"jobs": jobs, "retries": 0})
    assert _wait_finished(dash, queued.json()["batch_id"])["verdict"] == "passed"
    page.goto(f"{dash.url}/test-runs/{queued.json()['jobs'][1]['id']}")
    expect(page.locator("#run-quarantined")).to_be_visible()

    page.goto(f"{dash.url}/settings/organization")
    page.get_by_label("Test retries by default").fill("2")
    page.get_by_label("Quarantine flaky test cases automatically").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_label("Test retries by default")).to_have_value("2")
    expect(page.get_by_label("Quarantine flaky test cases automatically")).to_be_checked()
    shot(page, "organization")
    settings = dash.api.get("/v1/organization/settings").json()
    assert (settings["default_retries"], settings["auto_quarantine"]) == (2, True)
    dash.api.patch("/v1/organization/settings", json={"default_retries": 0, "auto_quarantine": False})


# ---------------------------------------------------------------------------------------- tenancy


def test_another_organisation_cannot_open_the_runs(browser: Browser, dash: Dashboard) -> None:
    run = queue(dash, "Login Flow Test")

    email = "mallory@other.example"
    org_id = dash.admin("create-org", "Other Org")
    dash.admin("create-user", email, "--name", "Mallory", "--org", org_id)
    dash.admin("set-password", email, "--password-stdin", stdin=dash.password + "\n")
    context = browser.new_context()
    try:
        page = context.new_page()
        sign_in(page, dash, "/test-runs", email=email)
        expect(page.locator("#run-rows")).to_contain_text("No runs")
        response = page.goto(run["link"])
        assert response is not None and response.status == 404
        expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
        assert "Login Flow Test" not in page.content() and "Example v1.2.3" not in page.content()
        shot(page, "not-found")
        for suffix in ("/live", "/report.json", "/junit.xml", "/screenshots/1/5.png"):
            assert context.request.get(f"{run['link']}{suffix}").status == 404, suffix
        cancel = context.request.post(f"{run['link']}/cancel", form={"csrf_token": "x"})
        assert cancel.status == 403  # no form of theirs carries this session's token
        page.goto(f"{dash.url}/apps")
        expect(page.locator("#app-rows")).to_contain_text("No builds yet")
    finally:
        context.close()


# ---------------------------------------------------------------------------------------- phones


def test_every_page_fits_a_phone(browser: Browser, dash: Dashboard) -> None:
    run = queue(dash, "Checkout Flow Test")
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        # Every request goes to this server, and nothing is refused by the pages' CSP or fails in scripts.
        requests: list[str] = []
        problems: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        sign_in(page, dash, "/test-runs")
        pages = {
            "runs": "/test-runs",
            "run": f"/test-runs/{run['id']}",
            "apps": "/apps",
            "test-cases": "/test-cases",
            "test-case": f"/test-cases/{dash.ids['Login Flow Test']}",
            "devices": "/devices",
            "developer": "/settings/developer",
            "organization": "/settings/organization",
            "batch": f"/batches/{run['batch_id']}",
        }
        for name, path in pages.items():
            page.goto(f"{dash.url}{path}")
            expect(page.get_by_role("navigation", name="Main")).to_be_visible()
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow} px wider than a phone"
            if name in ("runs", "run"):
                if name == "run":
                    expect(page.locator("#run-status")).to_have_text("failed", timeout=30_000)
                shot(page, f"phone-{name}")
        assert requests and all(url.startswith(dash.url + "/") for url in requests), requests
        assert not problems, problems
    finally:
        context.close()
