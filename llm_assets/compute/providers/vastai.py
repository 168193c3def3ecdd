"""Vast.ai through its REST API (https://console.vast.ai/api/v0), the same endpoints the `vastai` SDK calls.

Why not the SDK itself: `import vastai` downloads the GPU name list from console.vast.ai at import
time (a network call outside our control, with no endpoint override), and the SDK puts the API key
in every URL's query string, where any HTTP error message would show it. We send the key in the
Authorization header, which the API accepts too, with the SDK's request shapes:
POST /bundles/ (offer search), PUT /asks/{offer}/ (rent, with image, env and onstart),
GET /instances/ (show instances), GET /instances/{id}/, DELETE /instances/{id}/.

How an instance ended is read from its status *fields*, never from free text: `actual_status` is the
container's state (null / loading: starting; running; exited: the container's process ended, or never
started; offline: the host dropped out). `status_msg` is only quoted in messages, so a running instance whose
message says "unable to ..." is still running, and a container that never started is caught because it
exited before the worker opened its Pipes session (a BootstrapError in the run loop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from llm_assets.core.failures import (
    PreemptedError, ProviderQueueFullError, ProviderUnavailableError, TransientNetworkError,
)
from llm_assets.compute.providers.machine import (
    ENDED, FAILED, GONE, PENDING, RUNNING, MachineState, ProviderConfigError, scrub,
)

_GONE_ASKS = ("no_such_ask", "ask_unavailable", "no longer available", "not available")


@dataclass(frozen=True)
class OfferQuery:
    """Which offers to rent: the `vastai search offers` query, ordered cheapest first."""

    gpu_name: str
    num_gpus: int = 1
    max_dph: Optional[float] = None       # $/hour cap, the offer's dph_total
    min_reliability: float = 0.98         # reliability2, 0..1
    disk_gb: float = 40.0

    def body(self) -> dict:
        query = {"verified": {"eq": True}, "external": {"eq": False}, "rentable": {"eq": True},
                 "rented": {"eq": False}, "gpu_name": {"eq": self.gpu_name.replace("_", " ")},
                 "num_gpus": {"eq": self.num_gpus}, "reliability2": {"gte": self.min_reliability},
                 "order": [["dph_total", "asc"]], "type": "on-demand", "allocated_storage": self.disk_gb,
                 "limit": 20}
        if self.max_dph is not None:
            query["dph_total"] = {"lte": self.max_dph}
        return query


@dataclass(frozen=True)
class InstanceSpec:
    image: str
    onstart: str
    env: dict[str, str] = field(default_factory=dict)
    disk_gb: float = 40.0
    label: str = "llm-assets"


class VastAIClient:
    name = "vastai"

    def __init__(self, api_key: str, *, server_url: str = "https://console.vast.ai", secrets: tuple[str, ...] = (),
                 timeout: float = 30.0):
        if not api_key:
            raise ProviderConfigError("Vast.ai needs an API key: set VAST_API_KEY")
        self._api_key = api_key
        self._secrets = (api_key, *secrets)
        self.server_url = server_url.rstrip("/")
        self.timeout = timeout
        self.price_of: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"VastAIClient(server_url={self.server_url!r}, api_key=***)"

    def _request(self, method: str, path: str, what: str, body: Optional[dict] = None) -> tuple[int, dict]:
        import requests

        try:
            response = requests.request(method, f"{self.server_url}/api/v0{path}", json=body, timeout=self.timeout,
                                        headers={"Authorization": f"Bearer {self._api_key}"})
        except requests.RequestException as exc:
            raise TransientNetworkError(f"Vast.ai unreachable while trying to {what}: "
                                        f"{scrub(type(exc).__name__ + ': ' + str(exc), self._secrets)}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        status = response.status_code
        said = scrub(str(payload.get("msg") or payload.get("error") or response.reason or ""), self._secrets)
        if status in (401, 403):
            raise ProviderConfigError(f"Vast.ai refused the API key while trying to {what} (HTTP {status}): check "
                              f"VAST_API_KEY")
        if status == 429 or status >= 500:
            raise ProviderUnavailableError(f"Vast.ai answered HTTP {status} while trying to {what}: {said}")
        return status, payload | {"_said": said}

    def search(self, query: OfferQuery) -> list[dict]:
        status, payload = self._request("POST", "/bundles/", f"search {query.gpu_name} offers", query.body())
        if status >= 400:
            raise ProviderConfigError(f"Vast.ai rejected the offer search (HTTP {status}): {payload['_said']}")
        return list(payload.get("offers") or [])

    def rent(self, offer: dict, spec: InstanceSpec) -> str:
        # The documented "args" launch: onstart is the entrypoint and args its arguments, so the
        # container (and the instance's billing for GPU time) ends when the worker's script ends.
        body = {"client_id": "me", "image": spec.image, "env": spec.env, "price": None, "disk": spec.disk_gb,
                "label": spec.label, "onstart": "bash", "args": ["-c", spec.onstart], "runtype": "args",
                "cancel_unavail": True, "python_utf8": False, "lang_utf8": False, "force": False}
        status, payload = self._request("PUT", f"/asks/{offer['id']}/", f"rent offer {offer['id']}", body)
        if status >= 400 or not payload.get("success"):
            said = payload["_said"]
            if any(word in f"{payload.get('error', '')} {said}".lower() for word in _GONE_ASKS):
                raise ProviderQueueFullError(f"Vast.ai offer {offer['id']} is no longer available: {said}")
            raise ProviderConfigError(f"Vast.ai refused to rent offer {offer['id']} (HTTP {status}): {said}")
        instance_id = str(payload["new_contract"])
        if offer.get("dph_total") is not None:
            self.price_of[instance_id] = float(offer["dph_total"])
        return instance_id

    def create(self, query: OfferQuery, spec: InstanceSpec, *, tries: int = 3) -> tuple[str, dict]:
        """Rent the cheapest matching offer; an offer taken meanwhile moves on to the next one."""
        offers = self.search(query)
        if not offers:
            raise ProviderQueueFullError(
                f"Vast.ai has no offer for {query.num_gpus}x {query.gpu_name} with reliability >= "
                f"{query.min_reliability}" + (f" at <= ${query.max_dph}/h" if query.max_dph is not None else ""))
        last: Optional[Exception] = None
        for offer in offers[:tries]:
            try:
                return self.rent(offer, spec), offer
            except ProviderQueueFullError as exc:
                last = exc
        raise ProviderQueueFullError(f"Vast.ai: the {min(tries, len(offers))} cheapest offers were all taken "
                                     f"({last})")

    def state(self, instance_id: str) -> MachineState:
        status, payload = self._request("GET", f"/instances/{instance_id}/", f"read instance {instance_id}")
        row = payload.get("instances") if status < 400 else None
        if not row:
            return MachineState(GONE, "instance no longer exists", self.price_of.get(instance_id))
        message = scrub(str(row.get("status_msg") or ""), self._secrets)
        price = row.get("dph_total")
        price = float(price) if price is not None else self.price_of.get(instance_id)
        actual = (row.get("actual_status") or "").lower()
        if actual == "running":
            return MachineState(RUNNING, message, price)
        if actual == "offline":  # the host dropped out, or an interruptible instance was outbid
            return MachineState(FAILED, message, price, PreemptedError(
                f"Vast.ai instance {instance_id} went offline (host lost or outbid): {message}"))
        if actual in ("exited", "stopped"):
            return MachineState(ENDED, f"{actual}: {message}", price)
        return MachineState(PENDING, f"{actual or 'created'}: {message}", price)

    def destroy(self, instance_id: str) -> None:
        """DELETE the instance. An unknown one is Vast's 404 no_such_instance, raised here: the caller confirms
        termination by reading the instance (`state` -> gone), not by this call's answer."""
        status, payload = self._request("DELETE", f"/instances/{instance_id}/", f"destroy instance {instance_id}")
        if status == 404:
            raise ProviderConfigError(f"Vast.ai has no instance {instance_id} to destroy: {payload['_said']}")
        if status >= 400 or payload.get("success") is False:
            raise ProviderUnavailableError(f"Vast.ai did not destroy instance {instance_id} (HTTP {status}): "
                                           f"{payload['_said']}")

    def instances(self) -> list[dict]:
        """Every instance of the account (`show instances`: id, label, actual_status, dph_total...)."""
        status, payload = self._request("GET", "/instances/", "list instances")
        if status >= 400:
            raise ProviderUnavailableError(f"Vast.ai did not list instances (HTTP {status}): {payload['_said']}")
        return list(payload.get("instances") or [])

