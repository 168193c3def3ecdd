"""Kubernetes: the worker as a pod on the user's own cluster, through dagster-k8s's PipesK8sClient.

The pod spec comes from a pure function (`worker_pod_spec`), so it is tested without a cluster. Logs
and Pipes messages stream from the pod's log (PipesK8sClient's reader); artifacts and checkpoints go
to the S3 artifact store, whose credentials the pod takes from Kubernetes Secrets (`env_from_secrets`),
never from the pod spec in clear. The pod is deleted when the step ends, however it ends.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import dagster as dg
from pydantic import Field

from llm_assets.compute.cost import BudgetExceededError
from llm_assets.core.errors import PipelineError
from llm_assets.core.s3_settings import S3Settings
from resources.artifact_store import _resolved
from llm_assets.core.failures import (
    BootstrapError, OutOfMemoryError, PreemptedError, ProviderQueueFullError, RetryableError, error_from_exit,
)
from llm_assets.compute.backends import (
    ComputeBackend, StageRequest, raise_with_verdict, resolve_secret, result_from_pipes,
)

WORKER_CONTAINER = "worker"


def worker_pod_spec(*, image: str, command: list[str], gpus: int = 0, gpu_resource: str = "nvidia.com/gpu",
                    cpu: Optional[str] = None, memory: Optional[str] = None,
                    node_selector: Optional[dict] = None, tolerations: Optional[list[dict]] = None,
                    service_account_name: Optional[str] = None, image_pull_secrets: Optional[list[str]] = None,
                    env_from_secrets: Optional[list[str]] = None, shm_size: Optional[str] = None) -> dict:
    """The base pod spec of a worker pod (PipesK8sClient adds the Pipes variables and the name)."""
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    if gpus:
        limits[gpu_resource] = str(gpus)  # GPUs are requested through limits; the scheduler matches requests
    if cpu:
        requests["cpu"] = cpu
    if memory:
        requests["memory"] = limits["memory"] = memory
    container: dict[str, Any] = {"name": WORKER_CONTAINER, "image": image, "command": list(command),
                                 "resources": {k: v for k, v in (("limits", limits), ("requests", requests)) if v}}
    if env_from_secrets:
        container["env_from"] = [{"secret_ref": {"name": name}} for name in env_from_secrets]
    spec: dict[str, Any] = {"containers": [container], "restart_policy": "Never"}
    if shm_size:  # DDP's NCCL needs more shared memory than a container's 64 MiB default
        spec["volumes"] = [{"name": "dshm", "empty_dir": {"medium": "Memory", "size_limit": shm_size}}]
        container["volume_mounts"] = [{"name": "dshm", "mount_path": "/dev/shm"}]
    if node_selector:
        spec["node_selector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    if service_account_name:
        spec["service_account_name"] = service_account_name
    if image_pull_secrets:
        spec["image_pull_secrets"] = [{"name": name} for name in image_pull_secrets]
    return spec


def pod_failure(exc: BaseException) -> BaseException:
    """A pod's failure as a llm_assets.core.failures class: what a retry can fix, and what it cannot.

    The worker's own verdict (its log headline) wins; then what Kubernetes says about the pod; then the
    container's exit status, read the way every backend reads it (error_from_exit).
    """
    text = str(exc)
    if "RETRYABLE (" in text:
        return RetryableError(f"worker reported a retryable failure: {text[:500]}")
    if "FATAL (" in text:
        return PipelineError(f"worker failed: {text[:500]}")
    if "OOMKilled" in text:
        return OutOfMemoryError(f"the worker pod was OOMKilled: {text[:300]}")
    if any(reason in text for reason in ("ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff",
                                         "RunContainerError")):
        return BootstrapError(f"the worker pod never started: {text[:300]}")
    if "Timed out while waiting for pod to become ready" in text or "Unschedulable" in text:
        return ProviderQueueFullError(f"no node could take the worker pod (GPUs busy?): {text[:300]}")
    if "unexpectedly killed" in text or "Evicted" in text or "preempt" in text.lower():
        return PreemptedError(f"the worker pod was lost: {text[:300]}")
    code = re.search(r"exit code (-?\d+)", text)
    return (error_from_exit(int(code.group(1)), "the worker pod", f": {text[:300]}") if code else None) or exc


class K8sBackend(ComputeBackend):
    """The worker as a pod on a Kubernetes cluster (dagster-k8s PipesK8sClient)."""

    image: str = Field(description="Worker image (docker/worker.Dockerfile), e.g. registry/llm-assets-worker:tag.")
    namespace: Optional[str] = Field(default=None, description="Namespace of the pod, e.g. "
                                     "dg.EnvVar('LLM_ASSETS_K8S_NAMESPACE'), read at launch (unset or empty: the current one).")
    gpu_resource: str = Field(default="nvidia.com/gpu", description="Extended resource name GPUs are requested as.")
    cpu: Optional[str] = Field(default=None, description="CPU request, e.g. '4'.")
    memory: Optional[str] = Field(default=None, description="Memory request and limit, e.g. '32Gi'.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pod must match, "
                                          "e.g. {'nvidia.com/gpu.product': 'NVIDIA-A10G'}.")
    tolerations: list[dict] = Field(default_factory=list, description="Pod tolerations (GPU node taints).")
    service_account_name: Optional[str] = Field(default=None, description="Service account of the pod.")
    image_pull_secrets: list[str] = Field(default_factory=list, description="Secrets to pull a private image.")
    env_from_secrets: list[str] = Field(default_factory=list, description="Kubernetes Secrets whose keys become "
                                        "the worker's environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY...).")
    shm_size: Optional[str] = Field(default=None, description="Size of /dev/shm for multi-GPU (DDP) pods, e.g. '8Gi'.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra, non-secret environment of the worker.")
    kubeconfig_file: Optional[str] = Field(default=None, description="Kubeconfig path (unset: default loading).")
    kube_context: Optional[str] = Field(default=None, description="Kubeconfig context to use.")
    load_incluster_config: Optional[bool] = Field(default=None, description="Use the in-cluster service account "
                                                  "(unset: when KUBERNETES_SERVICE_HOST is set).")
    poll_interval_seconds: float = Field(default=5.0, gt=0, description="Seconds between pod status polls.")
    pod_wait_timeout_seconds: float = Field(default=86400.0, ge=0, description="Longest a pod may run (0: no limit).")

    def pod_spec(self, stage: str) -> dict:
        return worker_pod_spec(
            image=resolve_secret(self.image, "image"), command=self.command(stage), gpus=self.gpus,
            gpu_resource=self.gpu_resource, cpu=self.cpu, memory=self.memory, node_selector=self.node_selector,
            tolerations=self.tolerations, service_account_name=self.service_account_name,
            image_pull_secrets=self.image_pull_secrets, env_from_secrets=self.env_from_secrets,
            shm_size=self.shm_size)

    def container_env(self, request: StageRequest) -> dict[str, str]:
        """Non-secret environment of the worker: the store's endpoint and region."""
        public = S3Settings(**request.artifact_store.s3_settings().public())  # credentials come from env_from_secrets
        return {"PYTHONUNBUFFERED": "1", **self.env, **public.to_env()}

    def pipes_client(self):
        from dagster_k8s import PipesK8sClient

        return PipesK8sClient(load_incluster_config=self.load_incluster_config, kubeconfig_file=self.kubeconfig_file,
                              kube_context=self.kube_context, poll_interval=self.poll_interval_seconds)

    def run_stage(self, context: dg.AssetExecutionContext, request: StageRequest) -> dg.Output:
        meter = self.meter()
        cap_seconds = meter.seconds_until_cap()  # the budget cap becomes the pod's deadline
        timeout = self.pod_wait_timeout_seconds if cap_seconds is None else \
            min(self.pod_wait_timeout_seconds or cap_seconds, cap_seconds)
        try:
            invocation = self.pipes_client().run(
                context=context, extras=request.extras(context.run.run_id), namespace=_resolved(self.namespace) or None,
                env=self.container_env(request), base_pod_spec=self.pod_spec(request.stage),
                base_pod_meta={"labels": {"app.kubernetes.io/name": "llm-assets-worker",
                                          "llm-assets/stage": request.stage}},
                pod_wait_timeout=timeout)
        except dg.Failure:
            raise
        except Exception as exc:
            if cap_seconds is not None and meter.seconds() >= cap_seconds:
                exc = BudgetExceededError(meter.cost(), self.max_cost_usd, self.backend_name)
            raise_with_verdict(pod_failure(exc), context.log, self.backend_name)
        return result_from_pipes(invocation.get_results(implicit_materializations=False), context, meter,
                                 request.training_examples)
