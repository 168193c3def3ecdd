"""A real `dagster dev` on loopback and Debian's Chromium driven by Playwright, for the UI journey tests.

`dagster dev` runs the browser tests' code location (tests/browser/workspace.yaml: production's Definitions plus
the UI smoke fixture's job) in a throwaway folder (its own DAGSTER_HOME, artifact root, checkpoints and registry),
on a free port, so the journeys never touch a developer's instance. Chromium is the system's (`apt-get install
chromium`); Playwright never downloads a browser. Screenshots go to $LLM_ASSETS_SCREENSHOT_DIR (default
test-artifacts/screenshots at the repository root), one per step, and `dagster dev`'s log beside them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKSPACE = Path(__file__).resolve().parent / "workspace.yaml"
SCREENSHOTS = Path(os.environ.get("LLM_ASSETS_SCREENSHOT_DIR", REPO / "test-artifacts" / "screenshots"))
# Two shared cores: dagster dev loads the code location (torch, transformers) in a subprocess before it answers.
STARTUP_TIMEOUT_S = 300
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")


def chromium_path() -> str:
    """Debian's Chromium, or $LLM_ASSETS_CHROMIUM; a clear failure (never a skip) when there is none."""
    explicit = os.environ.get("LLM_ASSETS_CHROMIUM")
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"LLM_ASSETS_CHROMIUM={explicit} is not an executable file")
        return explicit
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no Chromium found on PATH (looked for chromium, chromium-browser): install Debian's package with "
                "`apt-get install -y --no-install-recommends chromium` (.ci/run does), or set LLM_ASSETS_CHROMIUM")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DagsterUI:
    url: str
    home: Path
    workdir: Path
    env: dict
    log: Path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """One GraphQL request, the API the UI itself uses; raises with the server's errors."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        if answer.get("errors"):
            raise AssertionError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"


LOCATION_STATUS = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus " \
                  "locationOrLoadError { __typename ... on PythonError { message } } } } } }"


def _wait_until_loaded(ui: DagsterUI, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {process.returncode}; its log:\n{ui.log_tail()}")
        try:
            entries = ui.graphql(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
            errors = [e for e in entries if e["locationOrLoadError"]
                      and e["locationOrLoadError"]["__typename"] == "PythonError"]
            if errors:
                raise RuntimeError(f"the code location failed to load: {errors[0]['locationOrLoadError']['message']}")
            if entries and all(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries):
                return
            last = f"locations: {entries}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError, TypeError) as exc:
            last = repr(exc)
        time.sleep(2)
    raise RuntimeError(f"dagster dev did not load the code location within {STARTUP_TIMEOUT_S}s ({last}); "
                       f"its log:\n{ui.log_tail()}")


def _add_model_partitions(home: Path) -> None:
    """The fixtures' models as partitions now, as model_files_sensor does on its first tick (up to 30 s later)."""
    import dagster as dg

    from resources.model_catalog import ModelCatalogResource, register_models

    with dg.DagsterInstance.from_config(str(home)) as instance:
        register_models(instance, ModelCatalogResource(folder=str(REPO / "tests" / "fixtures" / "models")).specs())


def _stop(process: subprocess.Popen) -> None:
    """dagster dev shuts its webserver, daemon and code servers down on Ctrl-C (SIGINT), not on SIGTERM;
    killing its process group is the fallback, and takes any run worker it started along."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:  # whatever of the group outlived the graceful stop
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


# Module scope, not session: the webserver, daemon and browser must be gone before the rest of the
# suite runs, or their CPU use slows the timing-sensitive tests that follow on a 2-core machine.
@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory, screenshot_dir) -> DagsterUI:
    root = tmp_path_factory.mktemp("dagster-ui")
    home, workdir = root / "home", root / "work"
    home.mkdir()
    workdir.mkdir()
    # Dagster's "Join the community" prompt (nux) is a modal that can open over a menu mid-click: off here; the
    # page fixture still answers it if it shows.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "LLM_ASSETS_ENV": "local",
           "LLM_ASSETS_ARTIFACT_ROOT": str(root / "artifacts"),
           "LLM_ASSETS_CHECKPOINT_DIR": str(root / "checkpoints"),
           "LLM_ASSETS_REGISTRY_URL": f"sqlite:///{home / 'registry.db'}",
           "LLM_ASSETS_MODELS_DIR": str(REPO / "tests" / "fixtures" / "models"),
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    for watched in ("LLM_ASSETS_WATCH_DIR", "LLM_ASSETS_WATCH_S3_URI"):  # no retraining on a developer's data
        env.pop(watched, None)
    port = free_port()
    log = screenshot_dir / "dagster-dev.log"
    ui = DagsterUI(url=f"http://127.0.0.1:{port}", home=home, workdir=workdir, env=env, log=log)
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(WORKSPACE), "-h", "127.0.0.1", "-p", str(port)],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_loaded(ui, process)
        _add_model_partitions(home)
        yield ui
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield instance
        finally:
            instance.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so the page fixture knows whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def page(request, browser, dagster_ui, screenshot_dir):
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, base_url=dagster_ui.url)
    context.set_default_timeout(60_000)
    tab = context.new_page()
    # Dagster asks each new instance once to join its community; answer it whenever it shows up.
    tab.add_locator_handler(tab.get_by_text("Join the Dagster community"),
                            lambda _: tab.get_by_role("button", name="Skip").click())
    try:
        yield tab
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:  # what the page showed when the test gave up
            tab.screenshot(path=str(screenshot_dir / f"FAILED-{request.node.name}.png"))
    finally:
        context.close()
