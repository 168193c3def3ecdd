"""The models one server answers for: each registry model (and each pinned `<name>@<ref>` a client asks for) has
its own holder and follower, and every load goes through one byte budget.

A client's `model` picks a ServedModel: `<name>` is the configured alias (production), `<name>@<alias>` another
alias, `<name>@<version>` a pinned version (a canary). Loads are serialized under the budget's lock: a model
that does not fit evicts the least recently used idle model (never one with a request running or queued, nor
one being swapped), and a model that is wanted again is loaded on its next request. A promotion of one model
swaps only that model's holder.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from llm_assets.core.registry import ModelRegistry, RegistryError, RegistryNotFoundError
from llm_assets.serving.config import ServeConfig
from llm_assets.serving.follower import RegistryFollower
from llm_assets.serving.holder import ModelHolder
from llm_assets.serving.metrics import Metrics
from llm_assets.serving.schemas import ApiError

log = logging.getLogger("llm_assets.serving")
ROOM_WAIT_S = 2.0  # how long a load waits for a busy model to fall idle before it gives up (503, retry)


class ServedModel:
    """One `<name>@<ref>` the server answers for: its holder (the slot requests use) and its follower."""

    def __init__(self, name: str, ref: str, key: str, config: ServeConfig, metrics: Metrics, budget: "LoadBudget"):
        self.name, self.ref, self.key = name, ref, key
        self.holder = ModelHolder(config.max_waiting, config.wait_timeout_s)
        self.follower = RegistryFollower(config, self.holder, metrics, model=name, ref=ref, budget=budget,
                                         wanted=config.load == "start")
        self.follower.owner = self
        self.load_waiters = 0  # requests waiting for this model to be loaded: it is not evicted under them
        self.follower.cache_in_use = lambda: set().union(*(m.follower.shas_in_use() for m in budget.models()))
        self.last_used = 0.0

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def busy(self) -> bool:
        """Serving, queued for, or being swapped: never evicted."""
        slot = self.holder.current
        return bool(self.follower.swapping is not None or self.holder.waiting or self.load_waiters
                    or (slot and slot.in_flight))


class LoadBudget:
    """Bytes of GGUF loaded at once, over every model. Hold `lock` from make_room until the new slot is installed,
    so two loads never count the same free bytes."""

    def __init__(self, limit: Optional[int], models: Callable[[], list[ServedModel]]):
        self.limit, self._models = limit, models
        self.lock = threading.RLock()
        self.evictions = 0

    def models(self) -> list[ServedModel]:
        return self._models()

    def loaded_bytes(self) -> int:
        return sum(m.holder.loaded_bytes() for m in self._models())

    def fits_alone(self, size: int) -> bool:
        return self.limit is None or size <= self.limit

    def make_room(self, size: int, owner: Optional[ServedModel], wait_s: float = ROOM_WAIT_S,
                  abandoned: Callable[[], bool] = lambda: False) -> bool:
        """Evict least recently used idle models until `size` more bytes fit; False if they do not within wait_s
        (every other model busy), or as soon as `abandoned()` says nobody waits for the load. Call with `lock`
        held."""
        deadline = time.monotonic() + wait_s
        while True:
            if self.limit is None or self.loaded_bytes() + size <= self.limit:
                return True
            if abandoned():
                return False
            victims = sorted((m for m in self._models() if m is not owner and m.holder.current is not None),
                             key=lambda m: m.last_used)
            for victim in victims:
                slot = None if victim.busy() else victim.holder.evict_if_idle()
                if slot is not None:
                    victim.follower.wanted = False  # loaded again on its next request, not by the poll
                    slot.close_when_idle(timeout_s=5)
                    self.evictions += 1
                    log.info("evicted %s v%s (%d bytes) to make room for %d bytes", victim.key, slot.info.version,
                             slot.info.bytes, size)
                    break
            else:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.01)


class Fleet:
    """Every ServedModel, found from the config's model list (or every model with the alias in the registry)."""

    def __init__(self, config: ServeConfig, metrics: Metrics):
        self.config, self.metrics = config, metrics
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()
        self.budget = LoadBudget(config.memory_budget_bytes, self.models)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._registry: Optional[ModelRegistry] = None
        self.discovery_error: Optional[str] = None

    def models(self) -> list[ServedModel]:
        with self._lock:
            return list(self._models.values())

    def start(self) -> None:
        for name in self.config.models:
            self._add(name, self.config.alias)
        if not self.config.models:
            self.discover()
            self._thread = threading.Thread(target=self._discover_loop, name="model-discovery", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for served in self.models():
            served.follower.stop()
        for served in self.models():
            served.holder.close()
        if self._registry is not None:
            self._registry.close()

    def discover(self) -> None:
        """Serve every model that has the alias (a model promoted for the first time appears within a poll)."""
        try:
            if self._registry is None:
                self._registry = ModelRegistry(self.config.registry_url)
            names = [m.name for m in self._registry.list_models() if self.config.alias in m.aliases]
            self.discovery_error = None
        except RegistryError as exc:
            self.discovery_error = str(exc)
            log.error("cannot list the registry's models: %s", exc)
            return
        for name in names:
            self._add(name, self.config.alias)

    def _discover_loop(self) -> None:
        while not self._stop.wait(self.config.poll_interval_s):
            self.discover()

    def _add(self, name: str, ref: str) -> ServedModel:
        key = name if ref == self.config.alias else f"{name}@{ref}"
        with self._lock:
            served = self._models.get(key)
            if served is None:
                served = self._models[key] = ServedModel(name, ref, key, self.config, self.metrics, self.budget)
                served.follower.start()
        return served

    def get(self, requested: Optional[str]) -> ServedModel:
        """The ServedModel a request's `model` names; 404 naming what is served when it is none of them."""
        with self._lock:
            served = dict(self._models)
        if requested is None:
            named = [m for m in served.values() if m.ref == self.config.alias]
            if len(named) == 1:
                return named[0]
            raise ApiError(400, f"model is required: this server serves {_names(named)}", param="model",
                           code="model_required")
        name, _, ref = requested.partition("@")
        ref = ref or self.config.alias
        key = name if ref == self.config.alias else f"{name}@{ref}"
        if key in served:
            return served[key]
        known = {m.name for m in served.values()}
        if name in known:  # another alias or a pinned version of a served model: serve it if the registry has it
            try:
                with ModelRegistry(self.config.registry_url) as registry:
                    registry.resolve(name, ref)
            except RegistryNotFoundError as exc:
                raise ApiError(404, f"unknown model {requested!r}: {exc}", param="model",
                               code="model_not_found") from None
            served_model = self._add(name, ref)
            served_model.follower.wanted = True
            return served_model
        raise ApiError(404, f"unknown model {requested!r}: this server serves {_names(served.values())}",
                       param="model", code="model_not_found")


def _names(models) -> str:
    names = sorted(m.key for m in models)
    return ", ".join(repr(n) for n in names) if names else "no model yet"
