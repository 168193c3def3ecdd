"""VastAIBackend: a stage on a rented Vast.ai instance, through Vast.ai's REST API (the SDK's endpoints).

launch = search offers by GPU name and count, price cap and reliability (cheapest first), rent the
first one still free with the worker image, exactly the Pipes + artifact-store environment and an
onstart command that runs the worker, labelled launch.machine_name; poll = the instance's actual_status;
terminate = destroy (an unknown instance is Vast's 404; gone = the instance reads null); find /
list_machines = show instances by label. The hourly price is the offer's dph_total. An offer taken
meanwhile or none matching -> ProviderQueueFullError; a container that exits before the worker talks (image
pull, daemon error) -> BootstrapError quoting status_msg; an instance gone offline under a running worker
-> PreemptedError (all retryable).
"""

from __future__ import annotations

import shlex
from typing import Optional

import dagster as dg
from pydantic import Field

from llm_assets.compute.providers.vastai import InstanceSpec, OfferQuery, VastAIClient
from llm_assets.compute.backends import JobStatus, LaunchedJob, LaunchSpec, resolve_secret
from llm_assets.compute.backends.remote import RemoteComputeBackend, _is_set
from llm_assets.compute.launch import MACHINE_NAME_PREFIX



class VastAIBackend(RemoteComputeBackend):
    """Runs the worker on the cheapest reliable Vast.ai offer; set the key with dg.EnvVar("VAST_API_KEY")."""

    api_key: Optional[str] = Field(default=None, repr=False,
                                   description="Vast.ai API key; set with dg.EnvVar('VAST_API_KEY'), read at launch.")
    server_url: str = Field(default="https://console.vast.ai", description="Vast.ai API server.")
    gpu_name: str = Field(default="RTX 4090", description="GPU model to rent, as Vast.ai names it ('RTX 4090').")
    num_gpus: int = Field(default=1, ge=1, description="GPUs per instance; more than 1 runs the worker through "
                          "torchrun (set `gpus` to the same number).")
    max_price_per_hour: Optional[float] = Field(default=None, gt=0,
                                                description="Highest dph_total (USD/hour) to rent; unset: any.")
    min_reliability: float = Field(default=0.98, ge=0, le=1, description="Lowest host reliability (0..1) to rent.")
    image: str = Field(default="ghcr.io/llm-assets/worker:latest",
                       description="Worker image (docker/worker.Dockerfile) the instance runs.")
    disk_gb: float = Field(default=40.0, gt=0, description="Instance disk in GB.")
    onstart_prefix: str = Field(default="", description="Shell run before the worker in the onstart script "
                                "(e.g. a pip install when the image lacks the project).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra, non-secret environment for the instance.")

    @property
    def backend_name(self) -> str:
        return "vastai"

    def client(self, secrets: tuple[str, ...] = ()) -> VastAIClient:
        return VastAIClient(resolve_secret(self.api_key, "vastai api_key"), server_url=self.server_url,
                            secrets=secrets)

    def onstart(self, command: list[str]) -> str:
        steps = [self.onstart_prefix.strip(), "exec " + shlex.join(command)]
        return "set -e\n" + "\n".join(step for step in steps if step) + "\n"

    def launch(self, context: dg.AssetExecutionContext, spec: LaunchSpec) -> LaunchedJob:
        client = self.client(tuple(spec.env.values()))
        query = OfferQuery(gpu_name=self.gpu_name, num_gpus=self.num_gpus, max_dph=self.max_price_per_hour,
                           min_reliability=self.min_reliability, disk_gb=self.disk_gb)
        instance_id, offer = client.create(query, InstanceSpec(
            image=self.image, onstart=self.onstart(spec.command), env={**self.env, **spec.env},
            disk_gb=self.disk_gb, label=spec.name))
        return LaunchedJob(job_id=instance_id, hourly_price_usd=offer.get("dph_total"), details={
            "provider": "vastai", "instance_id": instance_id, "offer_id": offer.get("id"),
            "machine_id": offer.get("machine_id"), "gpu_name": offer.get("gpu_name"),
            "reliability": offer.get("reliability2")})

    def poll(self, job_id: str) -> JobStatus:
        state = self.client().state(job_id)
        return JobStatus(phase=state.phase, error=state.error, message=state.message)

    def terminate(self, job_id: str) -> None:
        self.client().destroy(job_id)

    def find(self, name: str) -> list[str]:
        return [str(row["id"]) for row in self.client().instances() if row.get("label") == name]

    def list_machines(self) -> list[tuple[str, str]]:
        return [(str(row["id"]), row.get("label") or "") for row in self.client().instances()
                if (row.get("label") or "").startswith(MACHINE_NAME_PREFIX + "-")]

    def configured(self) -> bool:
        return _is_set(self.api_key)
