"""orphan_sweeper_sensor against the strict RunPod stand-in and a moto S3 store: machines no live run drives are
terminated (and confirmed), with a log line and a note in the run's event log; a live run's machine and a
machine that is not the project's are left alone."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compute"))  # the provider stand-ins

from llm_assets.compute.backends import ComputeBackends, LaunchSpec  # noqa: E402
from llm_assets.compute.backends.runpod import RunPodBackend  # noqa: E402
from llm_assets.compute.launch import JobRecord  # noqa: E402
from sensors.orphan_sweeper import orphan_sweeper_sensor  # noqa: E402
from resources.artifact_store import ArtifactStoreResource  # noqa: E402
from standins.pipeline import ACCESS_KEY, SECRET_KEY, moto_s3  # noqa: E402
from standins.runpod_api import RunPodStandin  # noqa: E402

KEY = "rpa_STANDIN_sweeper-never-in-logs"


@pytest.fixture
def world(tmp_path, monkeypatch):
    with moto_s3() as endpoint, RunPodStandin(tmp_path, api_key=KEY) as cloud:
        monkeypatch.setenv("RUNPOD_API_BASE_URL", cloud.url)
        monkeypatch.setenv("TEST_SWEEP_RUNPOD_KEY", KEY)
        backend = RunPodBackend(api_key=dg.EnvVar("TEST_SWEEP_RUNPOD_KEY"), image="w:test",
                                terminate_retry_seconds=0.1, terminate_confirm_seconds=1.0, stale_record_seconds=60)
        with dg.instance_for_test() as instance:
            # moto keeps one in-process state for every server: a root of its own keeps other tests' job records
            # out of this sweep.
            yield cloud, backend, ArtifactStoreResource(
                root=f"s3://artifacts/sweep-{uuid.uuid4().hex[:8]}", s3_endpoint_url=endpoint, aws_region="us-east-1",
                aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY), instance


def pod(backend, name: str) -> str:
    spec = LaunchSpec(stage="lora_adapter", command=["sleep", "120"], env={}, job_key="k", run_id="r", name=name)
    return backend.launch(None, spec).job_id


def record(store, backend, key: str, name: str, job_id: str, run_id: str, state: str = "running") -> JobRecord:
    entry = JobRecord(backend=backend.backend_name, job_id=job_id, job_key=key, stage="lora_adapter", run_id=run_id,
                      messages_key_prefix="p", machine_name=name, state=state, heartbeat_at=time.time())
    entry.save(store.store())
    return entry


def tick(backend, store, instance):
    context = dg.build_sensor_context(instance=instance, resources={
        "compute_backends": ComputeBackends({"runpod": backend}), "artifact_store": store})
    return orphan_sweeper_sensor(context)


def test_machines_no_live_run_drives_are_swept_and_the_rest_kept(world):
    cloud, backend, store, instance = world
    ended = create_run_for_test(instance, job_name="train", status=dg.DagsterRunStatus.FAILURE)
    live = create_run_for_test(instance, job_name="train", status=dg.DagsterRunStatus.STARTED)
    ended_pod = pod(backend, "llm-assets-lora-adapter-aaaaaaaaaaaa")
    record(store, backend, "a" * 24, "llm-assets-lora-adapter-aaaaaaaaaaaa", ended_pod, ended.run_id)
    lost_pod = pod(backend, "llm-assets-lora-adapter-bbbbbbbbbbbb")  # created, then its orchestrator died
    record(store, backend, "b" * 24, "llm-assets-lora-adapter-bbbbbbbbbbbb", "", ended.run_id, state="launching")
    stray_pod = pod(backend, "llm-assets-gguf-model-cccccccccccc")   # no record at all
    live_pod = pod(backend, "llm-assets-lora-adapter-dddddddddddd")
    record(store, backend, "d" * 24, "llm-assets-lora-adapter-dddddddddddd", live_pod, live.run_id)
    foreign_pod = pod(backend, "someone-elses-notebook")

    result = tick(backend, store, instance)
    assert sorted(cloud.terminations) == sorted([ended_pod, lost_pod, stray_pod])
    assert sorted(cloud.leaked()) == sorted([live_pod, foreign_pod])
    assert "swept 3 machine(s)" in result.skip_message
    for key in ("a" * 24, "b" * 24):
        assert JobRecord.load(store.store(), key).state == "finished"
    assert JobRecord.load(store.store(), "d" * 24).state == "running"
    said = [e.dagster_event.message if e.dagster_event else e.user_message for e in instance.all_logs(ended.run_id)]
    notes = [n for n in said if "orphan sweeper" in (n or "")]
    assert any(ended_pod in n and "its run has ended" in n for n in notes), notes
    assert KEY not in result.skip_message and all(KEY not in n for n in notes)
    assert "no orphan" in tick(backend, store, instance).skip_message  # idempotent: nothing left to do


def test_a_live_run_that_stopped_refreshing_its_record_loses_its_machine(world):
    cloud, backend, store, instance = world
    live = create_run_for_test(instance, job_name="train", status=dg.DagsterRunStatus.STARTED)
    stale_pod = pod(backend, "llm-assets-lora-adapter-eeeeeeeeeeee")
    stale = record(store, backend, "e" * 24, "llm-assets-lora-adapter-eeeeeeeeeeee", stale_pod, live.run_id)
    stale.heartbeat_at = time.time() - 3600  # its orchestrator died an hour ago; the run still reads STARTED
    stale.save(store.store())
    tick(backend, store, instance)
    assert cloud.terminations == [stale_pod] and cloud.leaked() == []


def test_the_sweeper_is_idle_without_a_configured_remote_backend(world, monkeypatch):
    cloud, backend, store, instance = world
    monkeypatch.delenv("TEST_SWEEP_RUNPOD_KEY")
    pod_id = pod(RunPodBackend(api_key=KEY, image="w"), "llm-assets-lora-adapter-ffffffffffff")
    result = tick(backend, store, instance)
    assert "no remote compute backend has credentials set" in result.skip_message
    assert cloud.leaked() == [pod_id]
