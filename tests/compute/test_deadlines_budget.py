"""Deadlines and the run's budget, against the strict RunPod stand-in with the real worker: a machine that never
starts, a host that hangs after the worker spoke and a stage past max_runtime are each terminated with their
verdict; retries of a failing stage stop at one budget for the run, not one per launch."""

from __future__ import annotations

import dagster as dg
import pytest

from llm_assets.compute.backends.remote import RUN_COST_TAG, RemoteComputeBackend
from llm_assets.core.errors import ConfigError
from standins.pipeline import WORKER_CREDENTIALS, run_stage_asset, training_config
from standins.runpod_api import RunPodStandin

API_KEY = "rpa_STANDIN_deadlines-never-in-logs"
FAST = {"poll_interval_seconds": 0.3, "message_poll_seconds": 0.3, "message_flush_seconds": 0.3,
        "heartbeat_seconds": 0.5, "terminate_retry_seconds": 0.1, "terminate_confirm_seconds": 1.0, **WORKER_CREDENTIALS}


def cloud(tmp_path, monkeypatch, **kwargs):
    standin = RunPodStandin(tmp_path, api_key=API_KEY, **kwargs)
    standin.__enter__()
    monkeypatch.setenv("RUNPOD_API_BASE_URL", standin.url)
    monkeypatch.setenv("TEST_RUNPOD_API_KEY", API_KEY)
    return standin


@pytest.fixture
def runpod(tmp_path, monkeypatch):
    standin = cloud(tmp_path, monkeypatch)
    yield standin
    standin.__exit__(None, None, None)


def backend(**fields):
    from llm_assets.compute.backends.runpod import RunPodBackend

    return RunPodBackend(api_key=dg.EnvVar("TEST_RUNPOD_API_KEY"), image="ghcr.io/llm-assets/worker:test",
                         **{**FAST, **fields})


def failure_text(result) -> str:
    return "\n".join(str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure)


def worker_spoke(store):
    """True once the worker uploaded a Pipes message chunk (it started and talked)."""
    client = store.store().client

    def spoke(machine) -> bool:
        listed = client.list_objects_v2(Bucket="artifacts", Prefix="pipeline/compute/pipes/")
        return any(not item["Key"].endswith("context.json") for item in listed.get("Contents", []))
    return spoke


def test_a_machine_never_running_is_terminated_at_the_startup_deadline_and_retried(s3, runpod):
    store, inputs = s3
    runpod.faults.stuck_starting = 1
    result = run_stage_asset(backend(startup_timeout_seconds=2.0), store, inputs, training_config(seed=51),
                             max_retries=0)
    assert not result.success and "RETRYABLE (timeout)" in result.logged_text
    assert "machine pod0001 was not running within startup_timeout_seconds=2" in failure_text(result)
    assert runpod.terminations == ["pod0001"] and runpod.leaked() == []


def test_a_silent_worker_is_terminated_at_the_heartbeat_deadline(s3, runpod):
    store, inputs = s3
    runpod.faults.freeze_when = worker_spoke(store)  # the host hangs once the worker has talked
    result = run_stage_asset(backend(heartbeat_timeout_seconds=5.0), store, inputs,
                             training_config(seed=52, max_steps=2000), max_retries=0)
    assert not result.success and "RETRYABLE (timeout)" in result.logged_text
    assert "no heartbeat or message from the worker" in failure_text(result)
    assert runpod.terminations == ["pod0001"] and runpod.leaked() == []


def test_a_stage_past_max_runtime_is_terminated_and_fails_fatally(s3, runpod):
    store, inputs = s3
    result = run_stage_asset(backend(max_runtime_seconds=4.0), store, inputs, training_config(seed=53, max_steps=2000),
                             max_retries=2)
    assert not result.success and "FATAL (max_runtime)" in result.logged_text
    assert "past max_runtime=4s" in failure_text(result)
    assert len(runpod.launches) == 1 and runpod.leaked() == []  # fatal: not retried


def test_the_dagster_max_runtime_tag_lowers_the_stage_deadline(s3, runpod):
    store, inputs = s3
    result = run_stage_asset(backend(), store, inputs, training_config(seed=54, max_steps=2000), max_retries=0,
                             tags={"dagster/max_runtime": "3"})
    assert not result.success and "past max_runtime=3s" in failure_text(result)
    assert runpod.leaked() == []


def test_retries_of_a_failing_stage_stop_at_one_budget_for_the_run(s3, tmp_path, monkeypatch):
    store, inputs = s3
    runpod = cloud(tmp_path, monkeypatch, price_per_hour=3600.0)  # $1 a second
    try:
        runpod.faults.preempt_when = lambda machine: machine.billed_seconds() > 2.0
        runpod.faults.preempt_repeat = True  # every attempt is reclaimed: only the budget ends the run
        cap = 5.0
        result = run_stage_asset(backend(max_cost_usd=cap), store, inputs, training_config(seed=55), max_retries=3)
        assert not result.success
        said = result.logged_text
        assert "RETRYABLE (preemption)" in said and "budget cap max_cost_usd=$5.0000" in failure_text(result)
        assert "of its budget max_cost_usd=$5.0000; it stops at 100%" in said  # the 80% warning
        # 4 attempts at ~$2.3 each would be ~$9; one budget for the run stops it near $5.
        assert len(runpod.launches) <= 3 and runpod.leaked() == []
        assert runpod.billed_usd() <= cap * 1.2, runpod.billed_usd()
        tags = result.instance.get_run_by_id(result.run_id).tags
        assert cap * 0.8 <= float(tags[RUN_COST_TAG]) <= cap * 1.2
    finally:
        runpod.__exit__(None, None, None)


def test_a_heartbeat_deadline_shorter_than_the_message_round_trip_is_refused_by_name():
    class Probe(RemoteComputeBackend):
        pass

    probe = Probe(heartbeat_seconds=30, message_flush_seconds=5, message_poll_seconds=5, heartbeat_timeout_seconds=60)
    with pytest.raises(ConfigError, match="heartbeat_timeout_seconds=60"):
        probe._check_deadlines_config()
