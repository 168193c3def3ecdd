"""Two runs of the training graph started together, in one Dagster instance on one artifact store, with different
data: each run evaluates its own GGUF and registers its own lineage, their compute steps take turns in the
concurrency pool, and re-executing registration or the gate check adds no second version.

Before run-scoped manifests every step read the asset's one global manifest, whichever run wrote it last. This
test against that IO manager: run B (400 rows) trained on run A's 190 rows, and run A was registered with run B's
dataset, adapter and GGUF.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import dagster as dg
import pytest

from llm_assets.core.artifacts import LocalArtifactStore
from llm_assets.core.registry import ModelRegistry
from resources.manifest_io_manager import manifest_key, read_manifest
from resources.model_catalog import register_models
from tests.pipeline_configs import MODEL, resources_for, tiny_run_config

ROOT = "LLM_ASSETS_TEST_ISOLATION_ROOT"
GATE_STEP = "eval_report_accuracy_gate"


def run_config(rows: int, seed: int, threshold: float) -> dict:
    config = tiny_run_config(num_examples=rows)
    config["ops"]["raw_dataset"]["config"]["seed"] = seed
    # 4 steps score 0.0: threshold 0 passes (a candidate), 0.5 fails (a rejected version). No baseline: faster.
    config["ops"]["eval_report"]["config"].update({"threshold": threshold, "evaluate_baseline": False})
    return config


CONFIGS = {"A": run_config(200, 0, 0.0), "B": run_config(400, 1, 0.5)}


def training_job():
    """The code location's training graph (compute steps in its pool) on the test's store, each run's steps in
    that run's process; module-level so a re-execution can reconstruct it."""
    from jobs import PIPELINE
    from llm_assets.assets import PIPELINE_ASSETS, PIPELINE_CHECKS

    job = dg.define_asset_job("training", selection=PIPELINE, executor_def=dg.in_process_executor)
    defs = dg.Definitions(assets=PIPELINE_ASSETS, asset_checks=PIPELINE_CHECKS, jobs=[job],
                          resources=resources_for(os.environ[ROOT]))
    return defs.resolve_job_def("training")


def execute(instance, config, **kwargs):
    """One run (or re-execution) of the training graph for the tests' model partition."""
    return dg.execute_job(dg.reconstructable(training_job), instance, run_config=config, raise_on_error=False,
                          tags={"dagster/partition": MODEL}, **kwargs)


# Each run in its own process, as `dagster job execute` or the daemon would start them: Dagster's log manager
# setup (logging.config.dictConfig) deadlocks against another run's logging in the same interpreter.
CHILD = textwrap.dedent("""
    import json, sys
    import dagster as dg
    from tests.test_run_isolation import execute
    with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
        print(execute(instance, json.loads(sys.argv[2])).run_id)
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("isolation")
    env = {**os.environ, ROOT: str(root), "LLM_ASSETS_CHECKPOINT_DIR": str(root / "checkpoints"),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ROOT, str(root))  # the re-executions run in this process
        mp.setenv("LLM_ASSETS_CHECKPOINT_DIR", str(root / "checkpoints"))
        # deploy/dagster.yaml's setting: one compute step at a time across runs.
        (root / "dagster").mkdir()
        with dg.instance_for_test(set_dagster_home=False, temp_dir=str(root / "dagster"),
                                  overrides={"concurrency": {"pools": {"default_limit": 1}}}) as instance:
            register_models(instance, [MODEL])
            logs = {name: open(root / f"run-{name}.log", "w") for name in CONFIGS}
            children = {}
            for name, config in CONFIGS.items():
                children[name] = subprocess.Popen(
                    [sys.executable, "-c", CHILD, instance.root_directory, json.dumps(config)], env=env,
                    stdout=subprocess.PIPE, stderr=logs[name], text=True)
                # Seconds apart, as the sensors start runs: two steps asking for the pool's first free slot in
                # the same instant can both get it on SQLite storage (Dagster's claim is a select, then an
                # update, with no row lock there); PostgreSQL's SELECT ... FOR UPDATE serializes them.
                time.sleep(3)
            run_ids = {name: child.communicate(timeout=900)[0].strip() for name, child in children.items()}
            for log in logs.values():
                log.close()
            assert all(run_ids.values()), f"a run did not start; see {root}/run-*.log"
            yield instance, root, run_ids


def materialized(instance, run_id: str, asset: str) -> dict:
    [event] = [e.dagster_event.event_specific_data.materialization
               for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
               if e.dagster_event.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in event.metadata.items()}


def failed_steps(instance, run_id: str) -> list[str]:
    return [e.dagster_event.step_key for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)]


def versions(root) -> list:
    with ModelRegistry(f"sqlite:///{root}/registry.db") as registry:
        return registry.list_versions(MODEL)


def test_each_run_evaluates_its_own_gguf_and_registers_its_own_lineage(runs):
    instance, root, run_ids = runs
    store = LocalArtifactStore(root)
    assert instance.get_run_by_id(run_ids["A"]).status == dg.DagsterRunStatus.SUCCESS
    assert failed_steps(instance, run_ids["B"]) == ["registered_model"]  # B's gate failed: rejected, run fails
    by_run = {v.dagster_run_id: v for v in versions(root)}
    assert len(by_run) == 2
    rows = set()
    for name, run_id in run_ids.items():
        dataset, adapter = materialized(instance, run_id, "training_dataset"), materialized(instance, run_id,
                                                                                            "lora_adapter")
        gguf = read_manifest(store, manifest_key("gguf_model", run_id, MODEL))
        report = read_manifest(store, manifest_key("eval_report", run_id, MODEL))
        assert report["gguf_model_sha256"] == gguf["sha256"] == materialized(instance, run_id, "gguf_model")["sha256"]
        version = by_run[run_id]
        assert (version.status, version.gate_passed) == (("candidate", True) if name == "A" else ("rejected", False))
        assert version.dataset_rows == dataset["train_rows"]
        assert version.dataset_uris[0] == dataset["uri"] and f"/runs/{run_id}/" in dataset["uri"]
        assert version.dataset_version == dataset["sha256"][:16]
        assert version.adapter_uri == adapter["uri"] and f"/runs/{run_id}/" in adapter["uri"]
        assert version.gguf_sha256 == gguf["variants"][version.quantization]["sha256"]
        assert version.gguf_uri.startswith(gguf["uri"] + "/")
        rows.add(version.dataset_rows)
    assert len(rows) == 2  # 200 and 400 rows: the runs really had different data


def test_the_runs_compute_steps_took_turns_in_the_pool(runs):
    POOLED = ("base_model", "lora_adapter", "gguf_model", "eval_report")  # the steps in the llm_compute pool
    instance, _, run_ids = runs
    spans = []
    for run_id in run_ids.values():
        started = {}
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None or event.step_key not in POOLED:
                continue
            if event.event_type_value == "STEP_START":
                started[event.step_key] = entry.timestamp
            elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                spans.append((started[event.step_key], entry.timestamp))
    assert len(spans) == 2 * len(POOLED)
    spans.sort()
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans


def test_re_executed_registration_and_gate_add_no_version(runs):
    instance, root, run_ids = runs
    before = versions(root)
    passed = materialized(instance, run_ids["A"], "registered_model")
    again = execute(instance, CONFIGS["A"], reexecution_options=dg.ReexecutionOptions(
        run_ids["A"], step_selection=["registered_model", GATE_STEP]))
    assert again.success and again.dagster_run.root_run_id == run_ids["A"]
    assert materialized(instance, again.run_id, "registered_model")["version"] == passed["version"]
    retried = execute(instance, CONFIGS["B"],
                      reexecution_options=dg.ReexecutionOptions.from_failure(run_ids["B"], instance))
    assert failed_steps(instance, retried.run_id) == ["registered_model"]
    assert [(v.version, v.status, v.dagster_run_id) for v in versions(root)] == \
           [(v.version, v.status, v.dagster_run_id) for v in before]
    with ModelRegistry(f"sqlite:///{root}/registry.db") as registry:
        assert [e.event for e in registry.history(MODEL)].count("stage") == 1  # staged once, not again
