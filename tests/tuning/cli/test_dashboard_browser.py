"""The dashboard and the report in a real browser: Debian's chromium, headless, driven by Playwright.

Playwright never downloads a browser here (executable_path is Debian's /usr/bin/chromium; .ci/run
installs it). A study made by `tune run` is served by `tune dashboard` on 127.0.0.1; the test opens it
as a person would, checks the study, its trials and a learning-curve plot, and saves screenshots under
test-artifacts/. The report is opened from disk with every network request blocked.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, run_tune
from tests.tuning.servers import HOST, free_port, get_json, start, stop, tune_args, wait_http

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts"
STUDY = "browse-me"
REPLAYED = "replayed"  # a second study, made after STUDY
TRIALS = 10
TIMEOUT_MS = 90_000  # a loaded 2-core CI machine renders slowly


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study with learning curves and pruned trials (analytic objective: seconds, not minutes)."""
    cwd = tmp_path_factory.mktemp("browser")
    result = run_tune(
        "run", "--study", STUDY, "--sampler", "random", "--trials", str(TRIALS), "--epochs", "5",
        "--pruner", "median", "--set", "objective.kind=analytic", "-q", cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    curves = REPO / "bench" / "curves"  # and trials with a per-epoch log (replayed curves: seconds)
    result = run_tune(
        "run", "--study", REPLAYED, "--spec", str(curves / "spec.yaml"), "--set", "objective.kind=replay",
        "--set", f"objective.surrogate={curves / 'surrogate.json'}", "--trials", "2", "-q", cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return cwd


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A fresh chromium profile each run: no cached state from an earlier test."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "install Debian's chromium: apt-get install -y chromium (make test does)"
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def dashboard(workdir: Path) -> Iterator[str]:
    port = free_port()
    log = workdir / "dashboard.log"
    proc = start(tune_args("dashboard", "--port", str(port)), log, workdir)  # the default storage
    base = f"http://{HOST}:{port}"
    try:
        wait_http(f"{base}/api/studies", proc, log)
        yield base
    finally:
        assert stop(proc) in (0, 130, -15), log.read_text()
    text = log.read_text()
    assert f"optuna-dashboard on {base}/dashboard" in text and "Traceback" not in text, text


def _shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 20_000, f"{name} looks empty"
    return path


def test_dashboard_shows_the_study_its_trials_and_learning_curves(browser: Any, dashboard: str) -> None:
    page = browser.new_page()
    page.goto(f"{dashboard}/dashboard")
    link = page.get_by_text(STUDY, exact=False).first
    link.wait_for(state="visible")
    _shot(page, "dashboard-studies.png")

    link.click()  # navigate as a person would
    page.wait_for_url("**/dashboard/studies/*")
    sid = next(s["study_id"] for s in get_json(f"{dashboard}/api/studies")["study_summaries"])
    assert page.url.rstrip("/").endswith(f"/dashboard/studies/{sid}")
    curves = page.locator(".MuiCard-root", has=page.get_by_text("Intermediate values", exact=True))
    curves.first.locator(".main-svg").first.wait_for(state="visible")
    for number in (0, TRIALS - 1):  # one legend entry per trial with reported epochs
        assert curves.first.get_by_text(f"trial #{number}", exact=True).count() == 1
    assert curves.first.locator("g.trace").count() >= TRIALS
    history = page.locator(".MuiCard-root", has=page.get_by_text("History", exact=True))
    history.first.locator(".main-svg").first.wait_for(state="visible")  # the optimization history plot
    # The metric is named (set_metric_names when the study is made), never "Objective 0".
    page.get_by_text("val mIoU").first.wait_for(state="visible")
    assert "Objective 0" not in page.inner_text("body")
    _shot(page, "dashboard-study.png")

    page.goto(f"{dashboard}/dashboard/studies/{sid}/trials")
    page.get_by_text(f"{TRIALS} Trials", exact=True).wait_for(state="visible")
    assert page.get_by_text("Best Trial", exact=True).count() >= 1
    assert page.get_by_text("Pruned", exact=True).count() >= 1  # pruned trials are listed too
    detail = page.get_by_text("Intermediate Values", exact=True)
    detail.wait_for(state="visible")
    body = page.inner_text("body")
    for attr in ("epochs_run", "wall_seconds", "worker", "enqueued_as"):
        assert attr in body, attr
    _shot(page, "dashboard-trials.png")
    page.close()


def test_report_renders_in_a_browser_without_network(browser: Any, workdir: Path) -> None:
    result = run_tune("report", "--study", STUDY, "--no-examples", cwd=workdir)
    assert result.returncode == 0, result.stderr
    report = workdir / "studies" / STUDY / "report.html"
    requests: list[str] = []

    def block(route: Any) -> None:
        requests.append(route.request.url)
        route.abort()

    page = browser.new_page()
    page.route("http://**/*", block)
    page.route("https://**/*", block)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(report.as_uri())
    for key in ("optimization-history", "parallel-coordinates", "param-importances", "intermediate-values"):
        page.locator(f"#plot-{key} .main-svg").first.wait_for(state="visible")
    page.locator("#plot-sampler-comparison .main-svg").first.wait_for(state="visible")
    assert page.title() == f"tune report: {STUDY}"
    assert requests == [] and errors == [], (requests, errors)
    page.locator("#section-intermediate-values").scroll_into_view_if_needed()
    _shot(page, "report-browser.png")
    page.close()


def test_a_trial_page_is_no_wider_than_the_window(browser: Any, dashboard: str) -> None:
    """A trial with a per-epoch log must not widen the trial page: the log is no user attribute the
    dashboard lists (it made a 1,400-px window scroll to 4,368 px)."""
    summaries = get_json(f"{dashboard}/api/studies")["study_summaries"]
    sid = next(s["study_id"] for s in summaries if s["study_name"] == REPLAYED)
    page = browser.new_page()
    page.goto(f"{dashboard}/dashboard/studies/{sid}/trials")
    page.get_by_text("Intermediate Values", exact=True).wait_for(state="visible")
    page.get_by_text("compute_seconds").first.wait_for(state="visible")  # the user attributes are drawn
    scrolled, window = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    _shot(page, "dashboard-trial-width.png")
    page.close()
    assert scrolled <= window, f"the trial page is {scrolled} px wide in a {window} px window"
