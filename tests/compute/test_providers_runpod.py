"""RunPodBackend through the official runpod SDK against a local stand-in of RunPod's GraphQL API.

The stand-in starts the worker as a local process with exactly the pod's environment; the worker
trains the tiny model for real and streams through Dagster Pipes over a moto S3 server on loopback.
"""

from __future__ import annotations

import dagster as dg
import pytest

from standins.pipeline import ACCESS_KEY, SECRET_KEY, WORKER_CREDENTIALS, run_stage_asset, training_config

API_KEY = "rpa_STANDIN_4f9c2e-never-in-logs"
FAST = {"poll_interval_seconds": 0.3, "message_poll_seconds": 0.3, "message_flush_seconds": 0.3,
        **WORKER_CREDENTIALS}


def backend(**fields):
    from llm_assets.compute.backends.runpod import RunPodBackend

    return RunPodBackend(api_key=dg.EnvVar("TEST_RUNPOD_API_KEY"), gpu_type_id="NVIDIA GeForce RTX 4090",
                         cloud_type="SECURE", image="ghcr.io/llm-assets/worker:test", **{**FAST, **fields})


def everything_said(result) -> str:
    """Every event and log line of the run, as the UI would show them."""
    from dagster._serdes import serialize_value

    return serialize_value(result.all_events) + result.logged_text


def test_training_runs_on_a_pod_and_the_pod_is_terminated(s3, runpod):
    store, inputs = s3
    result = run_stage_asset(backend(), store, inputs, training_config())
    assert result.success
    metadata = result.asset_materializations_for_node("stage_under_test")[0].metadata
    assert metadata["uri"].value.startswith("s3://artifacts/pipeline/")
    assert metadata["compute_backend"].value == "runpod"
    assert metadata["hourly_price_usd"].value == pytest.approx(0.44)  # RunPod's securePrice, from gpuTypes
    assert metadata["cost_usd"].value > 0 and metadata["cost_per_training_example_usd"].value > 0
    # the pod got exactly the Pipes + store environment, and the worker command as its arguments
    (launch,) = runpod.launches
    env = launch["env"]
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "LLM_ASSETS_S3_ENDPOINT_URL"} <= set(env)
    # the worker's own credential, never the orchestrator's key
    assert env["AWS_ACCESS_KEY_ID"] == WORKER_CREDENTIALS["worker_aws_access_key_id"]
    assert SECRET_KEY not in env.values() and ACCESS_KEY not in env.values()
    (created,) = runpod.created_inputs
    assert created["gpuTypeId"] == "NVIDIA GeForce RTX 4090" and created["cloudType"] == "SECURE"
    assert created["imageName"] == "ghcr.io/llm-assets/worker:test"
    assert "python -m llm_assets.compute.worker lora_adapter" in created["dockerArgs"]
    # logs streamed from the pod into Dagster through Pipes
    logs = everything_said(result)
    assert "lora_adapter step" in logs
    # the pod stopped itself after the worker, and the backend terminated it: nothing left billing
    assert runpod.stops == ["pod0001"] and runpod.terminations == ["pod0001"] and runpod.leaked() == []
    assert API_KEY not in logs and SECRET_KEY not in logs


def failures(result) -> str:
    return "\n".join(str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure)


def checkpoint_in_store(store):
    """True once the worker mirrored a complete training checkpoint and pointed LATEST.json at it."""
    import json

    client = store.store().client

    def seen(machine) -> bool:
        listed = client.list_objects_v2(Bucket="artifacts", Prefix="pipeline/checkpoints/")
        for item in listed.get("Contents", []):
            if item["Key"].endswith("/LATEST.json"):
                body = client.get_object(Bucket="artifacts", Key=item["Key"])["Body"].read()
                if json.loads(body).get("checkpoint"):
                    return True
        return False
    return seen


def test_no_capacity_and_preemption_are_retried_and_training_resumes(s3, runpod):
    store, inputs = s3
    runpod.faults.no_capacity = 1                         # attempt 1: RunPod has no 4090 free
    runpod.faults.preempt_when = checkpoint_in_store(store)  # attempt 2: reclaimed after a checkpoint
    config = training_config(max_steps=60, save_steps=5, logging_steps=5, seed=11)
    result = run_stage_asset(backend(), store, inputs, config, max_retries=2, raise_on_error=False)
    assert result.success, failures(result) + everything_said(result)[-3000:]
    said = everything_said(result)
    assert "RETRYABLE (queue_full)" in said and "no longer any instances available" in said
    assert "RETRYABLE (preemption)" in said
    metadata = result.asset_materializations_for_node("stage_under_test")[0].metadata
    assert "checkpoint-" in metadata["resumed_from"].value  # the third attempt resumed, not restarted
    assert len(runpod.created_inputs) == 3 and len(runpod.launches) == 2
    assert sorted(runpod.terminations) == ["pod0001", "pod0002"] and runpod.leaked() == []
    assert API_KEY not in said and SECRET_KEY not in said


def test_budget_cap_stops_the_pod_and_fails_fatally(s3, runpod):
    store, inputs = s3
    result = run_stage_asset(backend(max_cost_usd=0.00001), store, inputs,
                             training_config(seed=12), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "BudgetExceededError" in str(failure.step_failure_data.error) or \
        "budget cap" in str(failure.step_failure_data.error)
    assert len(runpod.launches) == 1  # fatal: not retried
    assert runpod.terminations == ["pod0001"] and runpod.leaked() == []
    runpod.wait_all_exited(10)
    assert runpod.running_processes() == []


def test_refused_key_is_fatal_and_never_shown(s3, runpod, monkeypatch):
    store, inputs = s3
    monkeypatch.setenv("TEST_RUNPOD_API_KEY", "rpa_WRONG-key-also-secret")
    result = run_stage_asset(backend(), store, inputs, training_config(seed=13), raise_on_error=False)
    assert not result.success
    said = everything_said(result)
    assert "FATAL (config)" in said, failures(result) and "RUNPOD_API_KEY" in said
    assert "rpa_WRONG-key-also-secret" not in said and runpod.launches == []
