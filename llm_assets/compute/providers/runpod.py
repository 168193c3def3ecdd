"""RunPod through the official `runpod` SDK (GraphQL at $RUNPOD_API_BASE_URL, default https://api.runpod.io).

The SDK's module-level helpers read a global `runpod.api_key`; we pass the key per call instead
(`run_graphql_query(..., api_key=)` with the SDK's own query builders), so two resources with
different keys never race and the key lives only in the request header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from llm_assets.core.failures import (
    PreemptedError, ProviderQueueFullError, ProviderUnavailableError, TransientNetworkError,
)
from llm_assets.compute.providers.machine import (
    ENDED, FAILED, GONE, PENDING, RUNNING, MachineState, ProviderConfigError, scrub,
)

CLOUD_TYPES = ("ALL", "SECURE", "COMMUNITY")
_NO_CAPACITY = re.compile(r"no longer any instances available|no instances? (currently )?available|"
                          r"not enough (free )?gpus|out of capacity|no available (machines|gpus)", re.I)
_INTERRUPTED = re.compile(r"interrupt|preempt|reclaim|outbid|host (went )?down|machine (was )?(lost|offline)", re.I)
# RunPod's GraphQL is built by string formatting: a quote or backslash would break the query.
_UNSAFE = re.compile(r'["\\\n\r]')


@dataclass(frozen=True)
class PodSpec:
    """Everything `podFindAndDeployOnDemand` needs to start the worker."""

    name: str
    image: str
    gpu_type_id: str
    gpu_count: int
    cloud_type: str
    command: str
    env: dict[str, str] = field(default_factory=dict)
    container_disk_gb: int = 40
    volume_gb: int = 0

    def validate(self) -> None:
        if self.cloud_type not in CLOUD_TYPES:
            raise ProviderConfigError(f"runpod cloud_type={self.cloud_type!r}: expected one of {', '.join(CLOUD_TYPES)}")
        if self.gpu_count < 1:
            raise ProviderConfigError(f"runpod gpu_count={self.gpu_count}: at least 1")
        for where, text in (("image", self.image), ("gpu_type_id", self.gpu_type_id), ("command", self.command),
                            ("name", self.name)):
            if not text or _UNSAFE.search(text):
                raise ProviderConfigError(f"runpod {where}={text!r}: required, without quotes, backslashes or newlines")
        for key, value in self.env.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or _UNSAFE.search(value):
                # the value may be a secret: name the variable only
                raise ProviderConfigError(f"runpod env {key}: names must be identifiers and values may not contain "
                                  f"quotes, backslashes or newlines")


class RunPodClient:
    name = "runpod"

    def __init__(self, api_key: str, *, secrets: tuple[str, ...] = ()):
        if not api_key:
            raise ProviderConfigError("RunPod needs an API key: set RUNPOD_API_KEY")
        self._api_key = api_key
        self._secrets = (api_key, *secrets)

    def __repr__(self) -> str:
        return "RunPodClient(api_key=***)"

    def _call(self, what: str, fn):
        from runpod import error as rp_error  # lazy: the SDK pulls in its serverless stack

        try:
            return fn()
        except rp_error.AuthenticationError:
            raise ProviderConfigError(f"RunPod refused the API key while trying to {what}: check RUNPOD_API_KEY") from None
        except rp_error.QueryError as exc:  # exc.query holds the whole mutation, env included: never shown
            message = scrub(str(exc.message or exc), self._secrets)
            if _NO_CAPACITY.search(message):
                raise ProviderQueueFullError(f"RunPod has no capacity to {what}: {message}") from None
            raise ProviderConfigError(f"RunPod rejected the request to {what}: {message}") from None
        except ValueError as exc:
            text = scrub(str(exc), self._secrets)
            if "json" in type(exc).__name__.lower() or "Expecting value" in text:
                raise ProviderUnavailableError(f"RunPod answered with a non-JSON body while trying to {what} "
                                               f"(server error)") from None
            raise ProviderConfigError(f"RunPod: cannot {what}: {text}") from None
        except OSError as exc:  # requests' ConnectionError / Timeout derive from IOError
            raise TransientNetworkError(f"RunPod unreachable while trying to {what}: "
                                        f"{scrub(type(exc).__name__ + ': ' + str(exc), self._secrets)}") from None

    def gpu_price(self, gpu_type_id: str, gpu_count: int, cloud_type: str) -> Optional[float]:
        """Hourly on-demand price for the pod, from RunPod's gpuTypes (None when it reports none)."""
        from runpod.api.ctl_commands import get_gpu

        gpu = self._call(f"look up GPU type {gpu_type_id!r}", lambda: get_gpu(gpu_type_id, gpu_count,
                                                                               api_key=self._api_key))
        per_gpu = (gpu.get("lowestPrice") or {}).get("uninterruptablePrice")
        if cloud_type == "SECURE":
            per_gpu = gpu.get("securePrice") or per_gpu
        elif cloud_type == "COMMUNITY":
            per_gpu = gpu.get("communityPrice") or per_gpu
        return None if per_gpu is None else float(per_gpu) * gpu_count

    def create(self, spec: PodSpec) -> str:
        from runpod.api.graphql import run_graphql_query
        from runpod.api.mutations.pods import generate_pod_deployment_mutation

        spec.validate()
        mutation = generate_pod_deployment_mutation(
            name=spec.name, image_name=spec.image, gpu_type_id=spec.gpu_type_id, cloud_type=spec.cloud_type,
            gpu_count=spec.gpu_count, volume_in_gb=spec.volume_gb, container_disk_in_gb=spec.container_disk_gb,
            docker_args=spec.command, env=spec.env, support_public_ip=False, start_ssh=False,
            min_vcpu_count=1, min_memory_in_gb=1)
        answer = self._call(f"create a {spec.gpu_count}x {spec.gpu_type_id} pod",
                            lambda: run_graphql_query(mutation, api_key=self._api_key))
        pod = (answer.get("data") or {}).get("podFindAndDeployOnDemand")
        if not pod or not pod.get("id"):
            raise ProviderQueueFullError(f"RunPod returned no pod for {spec.gpu_count}x {spec.gpu_type_id}")
        return pod["id"]

    def state(self, pod_id: str) -> MachineState:
        from runpod.api.ctl_commands import get_pod

        pod = self._call(f"read pod {pod_id}", lambda: get_pod(pod_id, api_key=self._api_key))
        if not pod:
            return MachineState(GONE, "pod no longer exists")
        desired, change = pod.get("desiredStatus"), pod.get("lastStatusChange") or ""
        if desired == "TERMINATED":
            return MachineState(GONE, change or "terminated")
        price = pod.get("costPerHr")
        price = float(price) if price else None
        if desired == "RUNNING":
            return MachineState(RUNNING if pod.get("runtime") else PENDING, change, price)
        if desired == "EXITED" and _INTERRUPTED.search(change):
            return MachineState(FAILED, change, price, PreemptedError(f"RunPod pod {pod_id} was interrupted: {change}"))
        return MachineState(ENDED if desired == "EXITED" else GONE, change, price)

    def terminate(self, pod_id: str) -> None:
        """podTerminate. RunPod answers a pod that does not exist (any more) with a GraphQL error, raised here:
        the caller confirms termination by reading the pod (`state` -> gone), not by this call's silence."""
        from runpod.api.graphql import run_graphql_query
        from runpod.api.mutations.pods import generate_pod_terminate_mutation

        self._call(f"terminate pod {pod_id}",
                   lambda: run_graphql_query(generate_pod_terminate_mutation(pod_id), api_key=self._api_key))

    def pods(self) -> list[dict]:
        """Every pod of the account that is not terminated (myself.pods: id, name, desiredStatus, costPerHr...)."""
        from runpod.api.ctl_commands import get_pods

        return list(self._call("list pods", lambda: get_pods(api_key=self._api_key)) or [])


