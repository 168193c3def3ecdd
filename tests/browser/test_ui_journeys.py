"""The user's three journeys through the Dagster UI, in a real Chromium against a real `dagster dev`.

1. Launchpad: the preset fills the config, the run shows live training logs and succeeds.
2. The eval report: metrics table, plots rendered as images, the model card.
3. From production_model back through the lineage to the dataset version that produced it.

Journeys 2 and 3 reuse the run journey 1 launched; run alone, they launch the same preset themselves (through
GraphQL, as the UI does), so each can be run on its own with -k. Screenshots: tests/browser/conftest.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llm_assets.presets import load_preset

pytestmark = pytest.mark.timeout(900)

PRESET_JOB = "train_ui_smoke_job"  # tests/browser/definitions.py makes it from the fixture below
UI_SMOKE = Path(__file__).resolve().parents[1] / "fixtures" / "ui_smoke.yaml"
RUN_TIMEOUT_MS = 480_000  # the smoke preset takes about a minute alone; the machine is shared
MODEL = "pet-smoke"  # tests/fixtures/models/pet-smoke.yaml, the smoke job's partition
TRAINING_LINE = re.compile(r"lora_adapter step \d+/\d+ epoch [\d.]+ loss \d+\.\d+")


def contains(shown, expected) -> bool:
    """Every key and value of `expected` is in `shown` (dicts compared key by key, anything else by equality)."""
    if isinstance(expected, dict):
        return isinstance(shown, dict) and all(k in shown and contains(shown[k], v) for k, v in expected.items())
    return shown == expected


def shot(page, screenshot_dir, name: str) -> None:
    page.screenshot(path=str(screenshot_dir / f"{name}.png"), full_page=False)


def job_path(ui, job: str) -> str:
    """The UI's path of a job: /locations/<repo@location>/jobs/<job> (the repo name is left out when implicit)."""
    repos = ui.graphql("{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } "
                       "pipelines { name } } } } }")["repositoriesOrError"]["nodes"]
    repo = next(r for r in repos if job in {p["name"] for p in r["pipelines"]})
    address = repo["location"]["name"] if repo["name"] == "__repository__" else f"{repo['name']}@{repo['location']['name']}"
    return f"/locations/{address}/jobs/{job}"


def runs_of(ui, job: str, status: str | None = None) -> list[dict]:
    statuses = f", statuses: [{status}]" if status else ""
    query = f'{{ runsOrError(filter: {{pipelineName: "{job}"{statuses}}}) {{ ... on Runs {{ results {{ runId status }} }} }} }}'
    return ui.graphql(query)["runsOrError"]["results"]


def run_status(ui, run_id: str) -> str:
    return ui.graphql('query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }',
                      {"id": run_id})["runOrError"]["status"]


def wait_for_run(ui, run_id: str, timeout_s: float = RUN_TIMEOUT_MS / 1000) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = run_status(ui, run_id)
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(3)
    raise AssertionError(f"run {run_id} still {status} after {timeout_s:.0f}s; dagster dev log:\n{ui.log_tail()}")


def materializations(ui, asset: str) -> list[dict]:
    """Newest first: run id and the data version Dagster recorded for each materialization of `asset`."""
    query = ('query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset { '
             'assetMaterializations(limit: 20) { runId timestamp tags { key value } } } } }')
    asset_node = ui.graphql(query, {"path": [asset]})["assetOrError"]
    events = asset_node.get("assetMaterializations") or []
    return [{"run_id": e["runId"], "timestamp": e["timestamp"],
             "data_version": next((t["value"] for t in e["tags"] if t["key"] == "dagster/data_version"), None)}
            for e in events]


@pytest.fixture(scope="module")
def trained(dagster_ui) -> str:
    """The id of a successful run of the smoke preset: journey 1's, or one launched here when it ran alone."""
    done = runs_of(dagster_ui, PRESET_JOB, "SUCCESS")
    if done:
        return done[0]["runId"]
    from dagster_graphql import DagsterGraphQLClient

    host, port = dagster_ui.url.removeprefix("http://").split(":")
    run_id = DagsterGraphQLClient(host, port_number=int(port)).submit_job_execution(
        PRESET_JOB, run_config=load_preset(UI_SMOKE), tags={"dagster/partition": MODEL})
    status = wait_for_run(dagster_ui, run_id)
    assert status == "SUCCESS", f"{PRESET_JOB} run {run_id} ended {status}; dagster dev log:\n{dagster_ui.log_tail()}"
    return run_id


def open_markdown(page, key: str):
    """Long Markdown metadata sits behind [Show Markdown]; the dialog renders it."""
    row = page.get_by_role("row").filter(has=page.get_by_text(key, exact=True))
    row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog").filter(has=page.get_by_text(key, exact=True))
    dialog.wait_for()
    return dialog


def test_journey_1_launchpad_preset_live_logs_and_success(page, dagster_ui, screenshot_dir):
    page.goto(f"{job_path(dagster_ui, PRESET_JOB)}/playground")
    editor = page.locator(".CodeMirror").first
    editor.wait_for()
    # A run trains one model: pick its partition, as a user does, and the Launchpad fills in the preset.
    partition = page.get_by_placeholder("Partition")
    partition.click()
    partition.fill(MODEL)
    page.get_by_role("menuitem", name=MODEL).click()
    page.get_by_text("No errors").wait_for()
    # The partition's run config arrives after the scaffold (which also reads "No errors"): wait for it.
    deadline = time.monotonic() + 60
    while True:
        shown = yaml.safe_load(editor.evaluate("el => el.CodeMirror.getValue()"))
        if contains(shown, load_preset(UI_SMOKE)) or time.monotonic() > deadline:
            break
        page.wait_for_timeout(250)
    # For a partition the Launchpad expands every default around the preset's values: each of them must be there.
    assert contains(shown, load_preset(UI_SMOKE)), \
        f"the Launchpad does not show tests/fixtures/ui_smoke.yaml's values in the run config: {shown}"
    shot(page, screenshot_dir, "journey1-01-launchpad-preset")

    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}"), timeout=120_000)
    run_id = page.url.rstrip("/").split("/")[-1].split("?")[0]
    log_filter = page.get_by_placeholder("Filter…")
    log_filter.fill("lora_adapter step")
    log_filter.press("Escape")  # close the filter's suggestions, which cover the log
    first_line = page.get_by_text(TRAINING_LINE).first
    first_line.wait_for(timeout=RUN_TIMEOUT_MS)
    # Live: the training progress is on the page while the run still runs (export and evaluation follow).
    assert run_status(dagster_ui, run_id) in ("STARTING", "STARTED"), "the training lines appeared only at the end"
    shot(page, screenshot_dir, "journey1-02-run-live-training-logs")

    page.get_by_text("Success", exact=True).first.wait_for(timeout=RUN_TIMEOUT_MS)
    assert run_status(dagster_ui, run_id) == "SUCCESS"
    lines = page.get_by_text(TRAINING_LINE).all_inner_texts()
    max_steps = load_preset(UI_SMOKE)["ops"]["lora_adapter"]["config"]["max_steps"]
    assert any(f"step {max_steps}/{max_steps}" in line for line in lines), lines
    assert len(lines) >= 2, f"expected a progress line per logged step, saw {lines}"
    shot(page, screenshot_dir, "journey1-03-run-succeeded")


def test_journey_2_eval_report_metrics_plots_and_model_card(page, dagster_ui, trained, screenshot_dir):
    page.goto("/assets/eval_report")
    page.get_by_text("answering the benchmark through llama.cpp").wait_for()
    metrics = page.get_by_role("row").filter(has=page.get_by_text("metrics", exact=True))
    for header in ("strict accuracy", "exact match", "invalid rate", "ms/example"):
        metrics.get_by_text(header, exact=True).wait_for()
    export = load_preset(UI_SMOKE)["ops"]["gguf_model"]["config"]
    for variant in [export["float_type"], *export["quantizations"]]:
        metrics.get_by_role("cell", name=variant, exact=True).wait_for()
    shot(page, screenshot_dir, "journey2-01-eval-report-metrics")

    dialog = open_markdown(page, "plots")
    for title in ("Loss curve", "Accuracy per field", "Confusion matrix"):
        image = dialog.get_by_role("img", name=title)
        image.wait_for()
        # Rendered: the browser decoded the PNG (a broken data URI has naturalWidth 0).
        assert image.evaluate("img => img.complete && img.naturalWidth > 100"), f"{title} did not render"
    shot(page, screenshot_dir, "journey2-02-plots")
    dialog.get_by_role("button", name="Close").click()
    dialog.wait_for(state="hidden")

    data_version = materializations(dagster_ui, "training_dataset")[0]["data_version"]
    dialog = open_markdown(page, "model_card")
    for heading in ("Provenance", "Evaluation", "Training configuration", "Files", "Usage"):
        dialog.get_by_role("heading", name=heading).wait_for()
    dialog.get_by_role("row").filter(has=page.get_by_text("Training data version")).get_by_text(data_version).wait_for()
    shot(page, screenshot_dir, "journey2-03-model-card")


def test_journey_3_production_model_lineage_back_to_the_dataset(page, dagster_ui, trained, screenshot_dir):
    promoted = subprocess.run(
        [sys.executable, "-m", "llm_assets.cli", "registry", "promote", MODEL, "@staging", "--reason", "UI journey"],
        env=dagster_ui.env, cwd=dagster_ui.workdir, capture_output=True, text=True, timeout=120)
    assert promoted.returncode == 0, promoted.stderr
    before = {m["run_id"] for m in materializations(dagster_ui, "production_model")}

    page.goto("/assets/production_model")
    # A partitioned asset: "Materialize…" opens the launch dialog, where the model's partition (the only one
    # registered here) is selected; one run is launched for it.
    page.get_by_role("button", name=re.compile(r"(^| )Materialize…$")).click()
    dialog = page.get_by_role("dialog").filter(has=page.get_by_text("Launch runs to materialize production_model"))
    dialog.get_by_role("button", name="All", exact=True).click()
    dialog.get_by_text("1 partition", exact=True).wait_for()
    shot(page, screenshot_dir, "journey3-00-materialize-partition")
    dialog.get_by_role("button", name=re.compile(r"^Launch")).click()
    deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
    while not [m for m in materializations(dagster_ui, "production_model") if m["run_id"] not in before]:
        assert time.monotonic() < deadline, f"production_model was not materialized; log:\n{dagster_ui.log_tail()}"
        time.sleep(3)

    data_version = materializations(dagster_ui, "training_dataset")[0]["data_version"]
    page.reload()
    row = page.get_by_role("row").filter(has=page.get_by_text("dataset_version", exact=True))
    row.get_by_text(data_version, exact=True).wait_for()
    lineage = page.get_by_role("row").filter(has=page.get_by_text("lineage", exact=True))
    lineage.get_by_role("row").filter(has=page.get_by_text("dataset", exact=True)).get_by_text(
        f"version={data_version}").wait_for()
    shot(page, screenshot_dir, "journey3-01-production-model-lineage-table")

    # The lineage graph, upstream to any depth: the whole chain that led here.
    page.get_by_role("tab", name="Lineage").click()
    page.get_by_role("button", name="Upstream").click()
    page.get_by_role("button", name="All", exact=True).click()
    page.wait_for_url(re.compile(r".*lineageScope=upstream.*"))
    # The graph opens at full size (the chain, partition rows and all, is wider than the window): zoom out with
    # the viewport's zoom-out control, as a person does, until the middle of the chain is in view.
    zoom_out = page.get_by_label("zoom_out")
    zoom_out.first.wait_for()
    for _ in range(12):
        zoom_out.first.click()
        time.sleep(0.2)
    page.get_by_text("eval_report", exact=True).first.wait_for()
    for asset in ("gguf_model", "lora_adapter"):  # drawn, if not all of them in the window
        page.get_by_text(asset, exact=True).first.wait_for(state="attached")
    shot(page, screenshot_dir, "journey3-02-upstream-lineage-graph")

    # Browse back one parent at a time, as a person does, from the Overview's "Upstream assets" links.
    page.get_by_role("tab", name="Overview").click()
    for parent in ("registered_model", "eval_report", "training_dataset"):
        page.get_by_role("link", name=re.compile(rf"(^| ){parent}$")).first.click()
        page.wait_for_url(re.compile(rf".*/assets/{parent}(\?.*)?$"))
    shot(page, screenshot_dir, "journey3-03-training-dataset")
    page.get_by_role("tab", name="Events").click()
    page.get_by_text(re.compile(rf"^{data_version}[0-9a-f]{{48}}$")).first.wait_for()  # sha256, its prefix the version
    page.get_by_text(re.compile(r"Show tags")).first.click()
    # Dagster's own provenance: the data version it recorded for this materialization.
    recorded = page.get_by_role("row").filter(has=page.get_by_text("data_version", exact=True)).get_by_text(
        data_version, exact=True)
    recorded.wait_for()
    recorded.scroll_into_view_if_needed()
    shot(page, screenshot_dir, "journey3-04-training-dataset-data-version")
