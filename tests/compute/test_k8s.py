"""Kubernetes: the worker pod spec and its wiring into dagster-k8s's PipesK8sClient, without a cluster;
and one live run on a cluster when LLM_ASSETS_TEST_K8S_IMAGE names a worker image the cluster can pull."""

import os

import dagster as dg
import pytest
from dagster_k8s.pipes import build_pod_body

from llm_assets.compute.backends import StageRequest
from llm_assets.compute.backends.kubernetes import K8sBackend, worker_pod_spec
from tests.pipeline_configs import resources_for


def test_pod_spec_requests_gpus_node_selector_tolerations_and_secret_env():
    spec = worker_pod_spec(image="reg/worker:1", command=["python", "-m", "llm_assets.compute.worker", "lora_adapter"], gpus=1,
                           cpu="4", memory="16Gi", node_selector={"gpu": "a10"},
                           tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                           service_account_name="trainer", image_pull_secrets=["regcred"],
                           env_from_secrets=["llm-assets-s3"], shm_size="8Gi")
    container = spec["containers"][0]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "1", "memory": "16Gi"},
                                      "requests": {"cpu": "4", "memory": "16Gi"}}
    assert container["env_from"] == [{"secret_ref": {"name": "llm-assets-s3"}}]
    assert spec["node_selector"] == {"gpu": "a10"} and spec["restart_policy"] == "Never"
    assert spec["image_pull_secrets"] == [{"name": "regcred"}] and spec["service_account_name"] == "trainer"
    assert container["volume_mounts"][0]["mount_path"] == "/dev/shm"


def test_pipes_k8s_client_builds_the_pod_with_the_pipes_environment_and_torchrun(tmp_path):
    backend = K8sBackend(image="reg/worker:1", gpus=4, node_selector={"gpu": "h100"})
    store = resources_for(tmp_path)["artifact_store"]
    request = StageRequest(stage="lora_adapter", inputs={}, config={}, artifact_store=store, model={})
    pod = build_pod_body("pod-1", image=None, command=None,
                         env_vars={"DAGSTER_PIPES_CONTEXT": "ctx", **backend.container_env(request)},
                         base_pod_meta={"labels": {"llm-assets/stage": "lora_adapter"}},
                         base_pod_spec=backend.pod_spec("lora_adapter"))
    container = pod.spec.containers[0]
    assert container.image == "reg/worker:1" and container.command[:2] == ["torchrun", "--standalone"]
    assert container.resources.limits == {"nvidia.com/gpu": "4"} and pod.spec.node_selector == {"gpu": "h100"}
    assert {e.name: e.value for e in container.env}["DAGSTER_PIPES_CONTEXT"] == "ctx"
    assert pod.metadata.labels["llm-assets/stage"] == "lora_adapter"
    client = backend.pipes_client()
    assert client.poll_interval == backend.poll_interval_seconds


def test_image_from_an_unset_environment_variable_fails_naming_the_variable(monkeypatch):
    monkeypatch.delenv("LLM_ASSETS_WORKER_IMAGE", raising=False)
    backend = K8sBackend(image=dg.EnvVar("LLM_ASSETS_WORKER_IMAGE"))
    with pytest.raises(dg.Failure, match="environment variable LLM_ASSETS_WORKER_IMAGE for image is not set"):
        backend.pod_spec("lora_adapter")


def test_live_cluster_runs_the_worker_pod(tmp_path):
    image = os.environ.get("LLM_ASSETS_TEST_K8S_IMAGE")
    if not image:
        pytest.skip("no Kubernetes cluster configured: set LLM_ASSETS_TEST_K8S_IMAGE (a worker image the cluster "
                    "can pull), a kubeconfig, and LLM_ASSETS_TEST_K8S_S3_ROOT/_ENDPOINT for an S3 store it reaches")
    from tests.compute.conftest import materialize_stage, materialize_upstream, TRAINING_CONFIG
    from resources.artifact_store import ArtifactStoreResource

    store = ArtifactStoreResource(root=os.environ["LLM_ASSETS_TEST_K8S_S3_ROOT"],
                                  s3_endpoint_url=os.environ.get("LLM_ASSETS_TEST_K8S_S3_ENDPOINT"))
    instance = dg.DagsterInstance.ephemeral()  # the stage run loads the upstream this run materialized in it
    materialize_upstream(store, instance)
    backend = K8sBackend(image=image, namespace=os.environ.get("LLM_ASSETS_TEST_K8S_NAMESPACE"),
                         env_from_secrets=[s for s in [os.environ.get("LLM_ASSETS_TEST_K8S_S3_SECRET")] if s])
    result = materialize_stage(store, {"kubernetes": backend}, instance=instance, compute="kubernetes",
                               **TRAINING_CONFIG)
    assert result.success
