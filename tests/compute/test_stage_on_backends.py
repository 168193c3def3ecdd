"""The worker for real: a subprocess through PipesSubprocessClient on the local store, and a detached process
that shares only a real S3 server (moto, loopback) with the step: context injection, streamed logs,
artifacts, checkpoints, resume after the worker is killed, re-attach after an orchestrator restart,
budget cap, and no process left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import dagster as dg
import pytest

from llm_assets.compute.checkpoint_sync import latest_in_store
from llm_assets.compute.launch import JobRecord, checkpoint_prefix, job_key
from llm_assets.core.hyperparameters import TrainingParams
from llm_assets.compute.backends import ComputeBackends, LocalProcessBackend
from llm_assets.compute.backends.remote import DetachedProcessBackend, _alive
from tests.compute.conftest import (
    TRAINING_CONFIG, UPSTREAM, log_lines, materialize_stage, materialize_upstream, pipeline_resources,
    s3_store_resource, upstream_manifest,
)
from tests.pipeline_configs import materialize, TINY_BASE, resources_for

WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
              "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def s3_instance(tmp_path_factory):
    """One persistent instance for the module: its stage runs load the upstream that s3_store materialized, and
    the restarted-orchestrator test's subprocess opens it too."""
    with dg.instance_for_test(set_dagster_home=False, temp_dir=str(tmp_path_factory.mktemp("dagster"))) as instance:
        yield instance


@pytest.fixture(scope="module")
def s3_store(s3_endpoint, s3_instance):
    store = s3_store_resource(s3_endpoint, "compute-stages")
    materialize_upstream(store, s3_instance)
    return store


def detached(**fields) -> DetachedProcessBackend:
    return DetachedProcessBackend(worker_env=WORKER_ENV, **fields)


def key_for(store, instance, **config) -> str:
    inputs = {name: upstream_manifest(store, instance, name) for name in ("training_dataset", "base_model")}
    params = TrainingParams(**{k: v for k, v in config.items() if k != "compute"}).model_dump(mode="json")
    return job_key("lora_adapter", inputs, params)


def test_local_subprocess_worker_trains_through_pipes(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_ASSETS_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    store = resources_for(tmp_path / "store")["artifact_store"]
    instance = dg.DagsterInstance.ephemeral()
    materialize_upstream(store, instance)
    result = materialize_stage(store, {"local": LocalProcessBackend(env=WORKER_ENV, hourly_price_usd=0.5)},
                               instance=instance, compute="local", **TRAINING_CONFIG)
    assert result.success
    meta = result.asset_materializations_for_node("lora_adapter")[0].metadata
    assert meta["compute_backend"].value == "LocalProcessBackend" and meta["steps"].value == 4
    assert meta["cost_usd"].value > 0 and meta["cost_per_training_example_usd"].value > 0
    assert meta["uri"].value.startswith((tmp_path / "store").as_uri())
    lines = log_lines(instance, result.run_id)
    assert any("lora_adapter step 4/4" in line for line in lines), lines  # the worker's progress, streamed


def test_export_and_evaluation_run_on_a_backend_and_the_gate_reads_the_workers_report(tmp_path, monkeypatch):
    from llm_assets.assets import PIPELINE_ASSETS, PIPELINE_CHECKS

    monkeypatch.setenv("LLM_ASSETS_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    resources = resources_for(tmp_path / "store")
    resources["compute_backends"] = ComputeBackends({"local": LocalProcessBackend(env=WORKER_ENV)})
    instance = dg.DagsterInstance.ephemeral()
    materialize_upstream(resources["artifact_store"], instance)
    stages = ["lora_adapter", "gguf_model", "eval_report"]
    result = materialize(
        [a for a in PIPELINE_ASSETS if a.key.to_user_string() in UPSTREAM + stages] + list(PIPELINE_CHECKS),
        selection=dg.AssetSelection.assets(*stages) | dg.AssetSelection.checks_for_assets(*stages),
        resources=resources, instance=instance, raise_on_error=False,
        run_config={"ops": {"lora_adapter": {"config": TRAINING_CONFIG},
                            "gguf_model": {"config": {"quantizations": ["q8_0"], "compute": "local"}},
                            "eval_report": {"config": {"max_new_tokens": 48, "compute": "local",
                                                       "threshold": 0.95}}}})  # above pet-smoke's 0
    export = result.asset_materializations_for_node("gguf_model")[0].metadata
    report = result.asset_materializations_for_node("eval_report")[0].metadata
    assert export["compute_backend"].value == report["compute_backend"].value == "LocalProcessBackend"
    assert "| q8_0 |" in export["variants"].value and "| q8_0 |" in report["metrics"].value
    store = resources["artifact_store"].store()
    assert store.exists(report["uri"].value + "/eval_report.json")
    # 4 training steps cannot pass: the worker's report says so, and the gate check reports it.
    assert report["gate_passed"].value is False and 0.0 <= report["strict_accuracy"].value < 0.95
    [gate] = [e.asset_check_evaluation_data for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"
              and e.asset_check_evaluation_data.check_name == "accuracy_gate"]
    assert gate.passed is False
    lines = log_lines(instance, result.run_id)
    assert any("eval_report: q8_0 20/20 examples" in line for line in lines), lines  # streamed from the worker


def test_the_data_stages_and_base_model_run_on_a_backend_too(s3_endpoint):
    """Every stage runs where its `compute` says: raw rows read from an s3:// prefix, the benchmark, the base
    model and the split, each in a detached worker that shares only the S3 store (and its credentials, from its
    environment) with the step; the results match the same stages run in process."""
    from llm_assets.assets import PIPELINE_ASSETS, PIPELINE_CHECKS
    from llm_assets.core.pet_task import generate_training_rows

    store = s3_store_resource(s3_endpoint, "data-stages")
    rows = "".join(json.dumps({"prompt": r["prompt"], "completion": r["completion"]}) + "\n"
                   for r in generate_training_rows(80, 3))
    store.s3_settings().client().put_object(Bucket="data-stages", Key="incoming/part-1.jsonl", Body=rows.encode())
    data = {"raw_dataset": {"source": "s3://data-stages/incoming/"}, "eval_benchmark": {"examples_per_category": 4},
            "base_model": TINY_BASE, "training_dataset": {}}

    def run(compute: str):
        return materialize(
            [a for a in PIPELINE_ASSETS if a.key.to_user_string() in data] + list(PIPELINE_CHECKS),
            selection=dg.AssetSelection.assets(*data) | dg.AssetSelection.checks_for_assets("training_dataset"),
            resources=pipeline_resources(store, {"detached": detached()}), instance=dg.DagsterInstance.ephemeral(),
            run_config={"ops": {a: {"config": {**c, "compute": compute}} for a, c in data.items()}})

    remote, here = run("detached"), run("in_process")
    for asset in data:
        meta = remote.asset_materializations_for_node(asset)[0].metadata
        assert meta["compute_backend"].value == "DetachedProcessBackend", asset
        assert meta["uri"].value.startswith("s3://data-stages/pipeline/runs/"), asset
    raw = remote.output_for_node("raw_dataset")
    assert raw["rows"] == 80 and raw["source"] == "s3://data-stages/incoming/"
    for asset in ("raw_dataset", "eval_benchmark"):  # deterministic: the same bytes wherever they were made
        assert remote.output_for_node(asset)["sha256"] == here.output_for_node(asset)["sha256"], asset
    assert remote.output_for_node("training_dataset")["train_rows"] == here.output_for_node("training_dataset")[
        "train_rows"] > 0


def test_detached_worker_over_s3_streams_logs_and_writes_artifacts_and_checkpoints(s3_store, s3_instance):
    config = {**TRAINING_CONFIG, "seed": 1}
    instance = s3_instance
    result = materialize_stage(s3_store, {"detached": detached(hourly_price_usd=1.8)}, instance=instance,
                               compute="detached", **config)
    assert result.success
    meta = result.asset_materializations_for_node("lora_adapter")[0].metadata
    uri = meta["uri"].value
    assert uri.startswith("s3://compute-stages/pipeline/runs/") and s3_store.store().exists(uri)
    assert meta["hourly_price_usd"].value == 1.8 and meta["cost_usd"].value > 0
    lines = log_lines(instance, result.run_id)
    assert any("launched job" in line for line in lines)
    assert any("lora_adapter step 4/4" in line for line in lines)
    # Checkpoints reaching the store mid-training is the kill-and-resume test's job: 4 steps can finish
    # between two polls of the mirroring thread on a loaded machine (CI saw it), so it is not asserted here.
    key = key_for(s3_store, instance, **config)
    record = JobRecord.load(s3_store.store(), key)
    assert record.state == "finished" and not _alive(int(record.job_id))
    assert latest_in_store(s3_store.store(), checkpoint_prefix(key)) is None  # finished: the next run starts fresh
    assert "compute-test-secret" not in "\n".join(lines) + json.dumps(record.__dict__)


def test_killed_worker_is_retried_and_resumes_from_the_stored_checkpoint(s3_store, s3_instance):
    # 150 steps: long enough that the first checkpoint reaches the store (mirrored every second) before training
    # ends, even with another test on the same two cores (with 60, a loaded run once finished first).
    config = {**TRAINING_CONFIG, "max_steps": 150, "save_steps": 5, "seed": 2}
    store, key, instance = s3_store.store(), key_for(s3_store, s3_instance, **config), s3_instance
    killed = []

    def kill_after_first_checkpoint():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            if latest_in_store(store, checkpoint_prefix(key)):
                record = JobRecord.load(store, key)
                os.killpg(int(record.job_id), signal.SIGKILL)  # the machine is lost mid-training
                killed.append(record.job_id)
            time.sleep(0.2)

    watcher = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    watcher.start()
    result = materialize_stage(s3_store, {"detached": detached()}, instance=instance, compute="detached", **config)
    watcher.join(timeout=5)
    assert killed, "the worker finished before a checkpoint reached the store"
    assert result.success
    meta = result.asset_materializations_for_node("lora_adapter")[0].metadata
    assert meta["resumed_from"].value.startswith("checkpoint-") and meta["steps"].value == 150
    lines = log_lines(instance, result.run_id)
    assert any("RETRYABLE (preemption)" in line for line in lines), lines
    assert any("restored checkpoint-" in line for line in lines)
    assert not _alive(int(killed[0]))


ORCHESTRATOR = textwrap.dedent("""
    import sys, json
    import dagster as dg
    from tests.compute.conftest import materialize_stage
    from resources.artifact_store import ArtifactStoreResource
    from llm_assets.compute.backends.remote import DetachedProcessBackend
    store = ArtifactStoreResource(**json.loads(sys.argv[1]))
    backend = DetachedProcessBackend(worker_env=json.loads(sys.argv[2]))
    instance = dg.DagsterInstance.from_config(sys.argv[4])  # the test's instance, holding the upstream
    materialize_stage(store, {"detached": backend}, instance=instance, compute="detached", **json.loads(sys.argv[3]))
""")


def test_restarted_orchestrator_reattaches_to_the_running_job_instead_of_launching_another(s3_store, s3_instance):
    config = {**TRAINING_CONFIG, "max_steps": 40, "save_steps": 100, "seed": 3}
    store, key, instance = s3_store.store(), key_for(s3_store, s3_instance, **config), s3_instance
    fields = {k: getattr(s3_store, k) for k in ("root", "s3_endpoint_url", "aws_region", "aws_access_key_id",
                                                "aws_secret_access_key")}
    orchestrator = subprocess.Popen([sys.executable, "-c", ORCHESTRATOR, json.dumps(fields), json.dumps(WORKER_ENV),
                                     json.dumps(config), instance.root_directory],
                                    cwd=os.getcwd(), env={**os.environ, **WORKER_ENV})
    deadline, record = time.time() + 240, None
    while time.time() < deadline and (record is None or record.state != "running"):
        record = JobRecord.load(store, key)
        time.sleep(0.2)
    assert record is not None and record.state == "running"
    orchestrator.kill()  # dies without unwinding: the job keeps running, recorded
    orchestrator.wait()
    assert _alive(int(record.job_id))
    # The killed orchestrator's run still reads as started: its machine is taken over once that run has not
    # refreshed the job record for stale_record_seconds.
    result = materialize_stage(s3_store, {"detached": detached(stale_record_seconds=3)}, instance=instance,
                               compute="detached", **config)
    assert result.success
    lines = log_lines(instance, result.run_id)
    assert any(f"re-attaching to job {record.job_id}" in line for line in lines), lines
    assert not any("launched job" in line for line in lines)
    assert JobRecord.load(store, key).state == "finished" and not _alive(int(record.job_id))
    assert result.asset_materializations_for_node("lora_adapter")[0].metadata["steps"].value == 40


def test_budget_cap_stops_the_job_fatally_and_terminates_it(s3_store, s3_instance):
    config = {**TRAINING_CONFIG, "max_steps": 2000, "seed": 4}
    instance = s3_instance
    result = materialize_stage(s3_store, {"detached": detached(hourly_price_usd=3600.0, max_cost_usd=3.0)},
                               instance=instance, compute="detached", **config)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "budget cap max_cost_usd=$3.0000" in failure.step_failure_data.error.message
    assert sum(1 for e in result.all_events if e.event_type_value == "STEP_RESTARTED") == 0  # fatal: no retry
    record = JobRecord.load(s3_store.store(), key_for(s3_store, instance, **config))
    assert record.state == "finished" and not _alive(int(record.job_id))
