"""RunPodBackend: a stage on a RunPod GPU pod, through the official `runpod` SDK.

launch = podFindAndDeployOnDemand with the worker image, the GPU type and count, the cloud type, the
worker command as the container's arguments and exactly the Pipes + artifact-store environment;
poll = the pod's desiredStatus; terminate = podTerminate (an unknown pod is an error; gone = `pod` is null);
find / list_machines = myself.pods by name (pods are named launch.machine_name). The hourly price comes from
RunPod's gpuTypes (per cloud type) and the pod's costPerHr. No capacity -> ProviderQueueFullError,
a pod that exits under a running worker -> PreemptedError (both retryable); a refused key or an
unknown GPU type -> fatal. RUNPOD_API_BASE_URL (read by the SDK) points it at another endpoint.
"""

from __future__ import annotations

import shlex
from typing import Optional

import dagster as dg
from pydantic import Field

from llm_assets.compute.providers.runpod import CLOUD_TYPES, PodSpec, RunPodClient
from llm_assets.compute.backends import JobStatus, LaunchedJob, LaunchSpec, resolve_secret
from llm_assets.compute.backends.remote import RemoteComputeBackend, _is_set
from llm_assets.compute.launch import MACHINE_NAME_PREFIX



class RunPodBackend(RemoteComputeBackend):
    """Runs the worker on a RunPod on-demand pod; set the key with dg.EnvVar("RUNPOD_API_KEY")."""

    api_key: Optional[str] = Field(default=None, repr=False,
                                   description="RunPod API key; set with dg.EnvVar('RUNPOD_API_KEY'), read at launch.")
    gpu_type_id: str = Field(default="NVIDIA GeForce RTX 4090",
                             description="RunPod GPU type id, as runpod.get_gpus() lists it.")
    gpu_count: int = Field(default=1, ge=1, description="GPUs on the pod; more than 1 runs the worker through "
                           "torchrun (set `gpus` to the same number).")
    cloud_type: str = Field(default="SECURE", description=f"RunPod cloud: one of {', '.join(CLOUD_TYPES)}.")
    image: str = Field(default="ghcr.io/llm-assets/worker:latest",
                       description="Worker image (docker/worker.Dockerfile) the pod runs.")
    container_disk_gb: int = Field(default=40, ge=5, description="Container disk of the pod in GB.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra, non-secret environment for the pod.")

    @property
    def backend_name(self) -> str:
        return "runpod"

    def client(self) -> RunPodClient:
        return RunPodClient(resolve_secret(self.api_key, "runpod api_key"))

    @staticmethod
    def pod_command(command: list[str]) -> str:
        """The container's arguments: the worker, then the pod stops itself, because RunPod restarts a
        container whose process exits (runpodctl and RUNPOD_POD_ID are in every pod)."""
        return "bash -c " + shlex.quote(f"{shlex.join(command)}; runpodctl stop pod $RUNPOD_POD_ID")

    def launch(self, context: dg.AssetExecutionContext, spec: LaunchSpec) -> LaunchedJob:
        client = RunPodClient(resolve_secret(self.api_key, "runpod api_key"),
                              secrets=tuple(spec.env.values()))
        price = client.gpu_price(self.gpu_type_id, self.gpu_count, self.cloud_type)
        pod_id = client.create(PodSpec(
            name=spec.name, image=self.image,
            gpu_type_id=self.gpu_type_id, gpu_count=self.gpu_count, cloud_type=self.cloud_type,
            command=self.pod_command(spec.command), env={**self.env, **spec.env},
            container_disk_gb=self.container_disk_gb))
        return LaunchedJob(job_id=pod_id, hourly_price_usd=price, details={
            "provider": "runpod", "pod_id": pod_id, "gpu_type_id": self.gpu_type_id, "gpu_count": self.gpu_count,
            "cloud_type": self.cloud_type, "image": self.image})

    def poll(self, job_id: str) -> JobStatus:
        state = self.client().state(job_id)
        return JobStatus(phase=state.phase, error=state.error, message=state.message)

    def terminate(self, job_id: str) -> None:
        self.client().terminate(job_id)

    def find(self, name: str) -> list[str]:
        return [pod["id"] for pod in self.client().pods() if pod.get("name") == name]

    def list_machines(self) -> list[tuple[str, str]]:
        return [(pod["id"], pod.get("name") or "") for pod in self.client().pods()
                if (pod.get("name") or "").startswith(MACHINE_NAME_PREFIX + "-")]

    def configured(self) -> bool:
        return _is_set(self.api_key)
