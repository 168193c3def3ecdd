"""A rented machine is never leaked nor doubled: against the strict RunPod stand-in, with the real worker training
the tiny model over a moto S3 server. A lost create response is adopted, an orchestrator killed between create
and record is adopted on restart, terminate is retried until confirmed (and a machine it never confirms fails
the run by name), and another live run's machine is never taken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from llm_assets.compute.launch import JobRecord, job_key, machine_name
from llm_assets.compute.lifecycle import Lifecycle
from llm_assets.core.failures import DuplicateJobError
from standins.pipeline import WORKER_CREDENTIALS, run_stage_asset, training_config

API_KEY = "rpa_STANDIN_lifecycle-never-in-logs"
FAST = {"poll_interval_seconds": 0.3, "message_poll_seconds": 0.3, "message_flush_seconds": 0.3,
        "heartbeat_seconds": 0.5, "terminate_retry_seconds": 0.1, "terminate_confirm_seconds": 1.0, **WORKER_CREDENTIALS,
        "stale_record_seconds": 3.0}
TESTS = Path(__file__).resolve().parent


def backend(**fields):
    from llm_assets.compute.backends.runpod import RunPodBackend

    return RunPodBackend(api_key=dg.EnvVar("TEST_RUNPOD_API_KEY"), image="ghcr.io/llm-assets/worker:test",
                         **{**FAST, **fields})


def failure_text(result) -> str:
    return "\n".join(str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure)


def key_of(inputs: dict, config: dict) -> str:
    return job_key("lora_adapter", inputs, config)


def test_a_lost_create_response_adopts_the_machine_instead_of_creating_a_second(s3, runpod):
    store, inputs = s3
    runpod.faults.lose_create_response = 1
    config = training_config(seed=41)
    result = run_stage_asset(backend(), store, inputs, config, max_retries=2)
    assert result.success, failure_text(result) + result.logged_text[-3000:]
    assert len(runpod.launches) == 1 and len(runpod.created_inputs) == 1  # one create, no duplicate
    assert "exists; adopting it instead of creating another" in result.logged_text
    assert runpod.created_inputs[0]["name"] == machine_name("lora_adapter", key_of(inputs, config))
    assert runpod.terminations == ["pod0001"] and runpod.leaked() == []
    record = JobRecord.load(store.store(), key_of(inputs, config))
    assert record.state == "finished" and record.job_id == "pod0001"


ORCHESTRATOR = textwrap.dedent("""
    import json, os, sys
    import dagster as dg
    from llm_assets.compute.backends.runpod import RunPodBackend
    from standins.pipeline import run_stage_asset, store_resource

    class DiesAfterCreate(RunPodBackend):
        def launch(self, context, spec):
            job = super().launch(context, spec)
            os._exit(137)  # killed between the provider's create and the record: no finally runs

    endpoint, inputs, config, fields = sys.argv[1], *map(json.loads, sys.argv[2:5])
    backend = DiesAfterCreate(api_key=dg.EnvVar("TEST_RUNPOD_API_KEY"), image="w:test", **fields)
    run_stage_asset(backend, store_resource(endpoint), inputs, config)
""")


def test_an_orchestrator_killed_between_create_and_record_is_adopted_on_restart(s3, runpod):
    store, inputs = s3
    config = training_config(seed=42)
    endpoint = store.s3_endpoint_url
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent), str(TESTS.parent.parent)])}
    crashed = subprocess.run([sys.executable, "-c", ORCHESTRATOR, endpoint, json.dumps(inputs), json.dumps(config),
                              json.dumps(FAST)], env=env, timeout=300, capture_output=True, text=True)
    assert crashed.returncode == 137, crashed.stderr[-2000:]
    record = JobRecord.load(store.store(), key_of(inputs, config))
    assert record.state == "launching" and record.job_id == "" and len(runpod.leaked()) == 1  # what a crash leaves
    result = run_stage_asset(backend(), store, inputs, config, max_retries=1)
    assert result.success, failure_text(result) + result.logged_text[-3000:]
    assert "re-attaching to job pod0001" in result.logged_text and len(runpod.launches) == 1
    assert runpod.leaked() == [] and JobRecord.load(store.store(), key_of(inputs, config)).state == "finished"


def test_terminate_failing_twice_is_retried_until_the_provider_confirms(s3, runpod):
    store, inputs = s3
    runpod.faults.stuck_starting = 1      # ends fast: never running, so the start-up deadline stops it
    runpod.faults.terminate_failures = 2  # then two 502s from podTerminate
    result = run_stage_asset(backend(startup_timeout_seconds=1.0), store, inputs, training_config(seed=43),
                             max_retries=0)
    assert not result.success and "RETRYABLE (timeout)" in result.logged_text
    assert "startup_timeout_seconds=1" in failure_text(result)
    assert result.logged_text.count("is not confirmed terminated") == 2
    assert runpod.terminations == ["pod0001"] and runpod.leaked() == []


def test_a_terminate_that_never_confirms_fails_the_run_naming_the_machine(s3, runpod):
    store, inputs = s3
    runpod.faults.stuck_starting = 1
    runpod.faults.terminate_never_confirms = True
    result = run_stage_asset(backend(startup_timeout_seconds=1.0, terminate_attempts=2, terminate_confirm_seconds=0.3),
                             store, inputs, training_config(seed=44), max_retries=2)
    assert not result.success
    said = failure_text(result)
    assert "FATAL (termination_unconfirmed)" in result.logged_text and "machine pod0001" in said
    assert "may still be billing" in said and len(runpod.launches) == 1  # fatal: no retry launches another
    record = JobRecord.load(store.store(), key_of(inputs, training_config(seed=44)))
    assert record.state == "running" and "pod0001" in record.note  # left live for the sweeper
    runpod.faults.terminate_never_confirms = False
    runpod.terminate("pod0001")
    record.finished(store.store(), note="cleaned up by the test")  # moto's state outlives this module


def test_another_live_runs_machine_is_never_taken_or_terminated(s3, runpod, monkeypatch):
    store, _ = s3
    machines = backend()
    lifecycle = Lifecycle(machines, store.store(), run_is_live=lambda run_id: True, stale_seconds=3.0,
                          sleep=lambda s: time.sleep(min(s, 0.2)))
    record, adopted = lifecycle.acquire(key="k" * 24, name="llm-assets-test-kkkkkkkkkkkk", run_id="run-A",
                                        stage="lora_adapter", messages_prefix="p", default_price=1.0,
                                        launch=lambda: machines.launch(None, _spec("llm-assets-test-kkkkkkkkkkkk")))
    assert not adopted and record.state == "running"

    def refreshed_by_run_a(*args):  # run A's orchestrator keeps its record fresh
        record.heartbeat_at = time.time()
        record.save(store.store())
    lifecycle.sleep = lambda s: (refreshed_by_run_a(), time.sleep(min(s, 0.2)))
    refreshed_by_run_a()
    with pytest.raises(DuplicateJobError, match="live run run-A"):
        lifecycle.reclaim(JobRecord.load(store.store(), "k" * 24), "run-B")
    assert runpod.leaked() == [record.job_id] and runpod.terminations == []
    lifecycle.release(record)  # run A's own ending
    assert runpod.leaked() == [] and JobRecord.load(store.store(), "k" * 24).state == "finished"


def _spec(name: str):
    from llm_assets.compute.backends import LaunchSpec

    return LaunchSpec(stage="lora_adapter", command=["sleep", "60"], env={}, job_key="k" * 24, run_id="run-A",
                      name=name)
