"""VastAIBackend through Vast.ai's REST API against a local stand-in: offer search, rent, bootstrap failure, destroy."""

from __future__ import annotations

import dagster as dg
import pytest

from standins.pipeline import SECRET_KEY, WORKER_CREDENTIALS, run_stage_asset, training_config
from standins.vastai_api import VastAIStandin

API_KEY = "vast_STANDIN_91be77-never-in-logs"
FAST = {"poll_interval_seconds": 0.3, "message_poll_seconds": 0.3, "message_flush_seconds": 0.3,
        **WORKER_CREDENTIALS}


@pytest.fixture
def vast(tmp_path, monkeypatch):
    with VastAIStandin(tmp_path, api_key=API_KEY) as cloud:
        monkeypatch.setenv("TEST_VAST_API_KEY", API_KEY)
        yield cloud


def backend(cloud, **fields):
    from llm_assets.compute.backends.vastai import VastAIBackend

    defaults = {"gpu_name": "RTX 4090", "min_reliability": 0.98, "max_price_per_hour": 0.45,
                "image": "ghcr.io/llm-assets/worker:test", **FAST}
    return VastAIBackend(api_key=dg.EnvVar("TEST_VAST_API_KEY"), server_url=cloud.url, **{**defaults, **fields})


def test_offer_search_bootstrap_failure_retry_and_destroy(s3, vast):
    store, inputs = s3
    vast.faults.bootstrap_failure = "image pull"   # first instance: Docker cannot start the container
    result = run_stage_asset(backend(vast), store, inputs, training_config(seed=21), max_retries=1,
                             raise_on_error=False)
    said = result.logged_text
    assert result.success, said[-3000:]
    # cheapest 4090 at >= 0.98 reliability under $0.45/h: 1001 ($0.42); 1002 is cheaper but unreliable
    search = vast.searches[0]
    assert search["gpu_name"] == {"eq": "RTX 4090"} and search["reliability2"] == {"gte": 0.98}
    assert search["dph_total"] == {"lte": 0.45} and search["order"] == [["dph_total", "asc"]]
    assert [r["offer"] for r in vast.rents] == [1001, 1001]
    assert vast.rents[1]["runtype"] == "args" and "llm_assets.compute.worker lora_adapter" in vast.rents[1]["args"][1]
    assert "RETRYABLE (bootstrap)" in said and "pull access denied" in said
    assert "lora_adapter step" in said
    metadata = result.asset_materializations_for_node("stage_under_test")[0].metadata
    assert metadata["compute_backend"].value == "vastai" and metadata["hourly_price_usd"].value == pytest.approx(0.42)
    env = vast.launches[1]["env"]
    assert SECRET_KEY not in env.values() and "DAGSTER_PIPES_CONTEXT" in env  # the worker key, not ours
    assert env["AWS_SECRET_ACCESS_KEY"] == WORKER_CREDENTIALS["worker_aws_secret_access_key"]
    assert sorted(vast.terminations) == ["7001", "7002"] and vast.leaked() == []  # both destroyed
    assert API_KEY not in said and SECRET_KEY not in said


def test_no_matching_offer_is_retryable_and_names_the_search(s3, vast):
    store, inputs = s3
    result = run_stage_asset(backend(vast, gpu_name="H100 SXM"), store, inputs, training_config(seed=22),
                             max_retries=1, raise_on_error=False)
    assert not result.success
    said = result.logged_text
    assert said.count("RETRYABLE (queue_full)") == 2 and "no offer for 1x H100 SXM" in said
    assert vast.launches == [] and vast.leaked() == [] and API_KEY not in said


def test_state_reads_the_status_field_not_the_free_text_message(vast):
    """A running instance whose status_msg says 'unable to ...' is running; a container that exited before the
    worker spoke is an ended machine (the run loop calls that bootstrap), whatever its message says."""
    from llm_assets.compute.providers.vastai import InstanceSpec, OfferQuery, VastAIClient

    client = VastAIClient(API_KEY, server_url=vast.url)
    instance_id, _ = client.create(OfferQuery(gpu_name="RTX 4090"), InstanceSpec(image="w", onstart="sleep 30",
                                                                                label="llm-assets-status-test"))
    vast.machines[instance_id].status_message = "unable to reach the registry mirror; using the cached image"
    state = client.state(instance_id)
    assert state.phase == "running" and state.error is None and "unable to" in state.message
    vast.faults.bootstrap_failure = "image pull"
    failed_id, _ = client.create(OfferQuery(gpu_name="RTX 4090"), InstanceSpec(image="w", onstart="true",
                                                                              label="llm-assets-status-test2"))
    ended = client.state(failed_id)
    assert ended.phase == "succeeded" and "pull access denied" in ended.message  # exited: the loop decides
    assert [row["label"] for row in client.instances()] == ["llm-assets-status-test", "llm-assets-status-test2"]
    for machine in (instance_id, failed_id):
        client.destroy(machine)
        assert client.state(machine).phase == "gone"
    with pytest.raises(Exception, match="no instance"):
        client.destroy(instance_id)  # Vast's 404 for an instance that no longer exists
    assert vast.leaked() == []
