"""What a request goes through between the route and a model process: the model it names, admission (a bounded
queue per model, a wait for a model being loaded), its deadline, and cancellation when its client goes away."""

from __future__ import annotations

import asyncio
import functools
import logging
import time

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse

from llm_assets.serving.config import ServeConfig
from llm_assets.serving.fleet import Fleet, ServedModel
from llm_assets.serving.generation import StreamBridge, with_serving_defaults
from llm_assets.serving.grammar import compile_response_format
from llm_assets.serving.grammar_pool import GrammarPool
from llm_assets.serving.holder import BusyError, NoModelError
from llm_assets.serving.metrics import Metrics
from llm_assets.serving.schemas import ApiError
from llm_assets.serving.slot import ModelSlot, SlotError

log = logging.getLogger("llm_assets.serving")
DISCONNECT_POLL_S = 0.05  # how soon work (or a load) for a client that went away is given up


class ClientGone(Exception):
    """The client closed the connection before its answer was ready (its work was cancelled)."""


class ServerState:
    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = Metrics()
        self.fleet = Fleet(config, self.metrics)
        self.grammars = GrammarPool(workers=config.grammar_workers, memory_bytes=config.grammar_worker_memory_bytes,
                                    cache_bytes=config.grammar_cache_bytes)
        self._wait_limiter = anyio.CapacityLimiter(config.max_waiting)
        m, fleet = self.metrics, self.fleet
        m.gauge("model_version", "Registry version being served, by model (absent when not loaded).",
                lambda: {(("model", s.key),): s.holder.current.info.version for s in fleet.models()
                         if s.holder.current})
        m.gauge("model_bytes", "GGUF bytes of every loaded model, draining ones included.",
                fleet.budget.loaded_bytes)
        m.gauge("in_flight_requests", "Requests running or queued, by model.",
                lambda: {(("model", s.key),): s.holder.current.in_flight for s in fleet.models()
                         if s.holder.current})
        m.gauge("waiting_requests", "Requests held while a model loads or swaps with a queue.",
                lambda: sum(s.holder.waiting for s in fleet.models()))
        m.gauge("swap_in_progress", "1 while a new version is being fetched, verified, loaded or smoke-tested.",
                lambda: int(any(s.follower.swapping is not None for s in fleet.models())))
        m.gauge("evictions", "Models unloaded to make room for another (memory_budget_bytes).",
                lambda: fleet.budget.evictions)

    # ---- admission -----------------------------------------------------------------------------------------

    async def acquire(self, served: ServedModel, request: Request | None = None) -> ModelSlot:
        """The slot of `served`, entered: 429 when its queue is full, a wait when it is being loaded."""
        served.touch()
        current = served.holder.current
        limit = self.config.max_queue_per_model
        if current is not None and current.in_flight >= limit:
            self.metrics.count("rejected_requests_total")
            raise ApiError(429, f"{served.key} has {current.in_flight} requests running or queued "
                           f"(max_queue_per_model={limit}); retry shortly", type="rate_limit_error",
                           code="queue_full", headers={"Retry-After": "1"})
        try:
            slot = served.holder.try_acquire()
            if slot is None:  # a swap with a queue is running: wait in the short queue
                self.metrics.count("queued_requests_total")
                slot = await anyio.to_thread.run_sync(served.holder.acquire, limiter=self._wait_limiter)
            return slot
        except NoModelError:
            return await self._load_for(served, request)
        except BusyError as exc:
            raise ApiError(503, str(exc), type="server_error", code="busy", headers={"Retry-After": "1"}) from exc

    async def _load_for(self, served: ServedModel, request: Request | None) -> ModelSlot:
        """Load a model that is not resident (first use, evicted, or its process died) and enter it. While this
        waits the model counts as queued for (never evicted once loaded, until this request is on it); a client
        that goes away stops waiting, and a load nobody waits for any more is given up."""
        follower = served.follower
        served.load_waiters += 1
        try:
            self.metrics.count("queued_requests_total")
            deadline = time.monotonic() + self.config.wait_timeout_s
            while True:
                follower.on_demand, follower.wanted = True, True  # a load with no room gave it up: ask again
                outcome = await self._until(asyncio.wrap_future(follower.request_check()), deadline, request)
                try:
                    slot = served.holder.try_acquire()
                except NoModelError as exc:
                    if follower.no_room and time.monotonic() < deadline:
                        continue  # no room yet (the other models busy): ask again until the deadline
                    why = outcome or "still loading"
                    if follower.alias_version is None:
                        why = follower.registry_error or str(exc)
                    raise ApiError(503, f"{served.key} is not loaded: {why}", type="server_error",
                                   code="model_not_loaded", headers={"Retry-After": "2"}) from exc
                if slot is None:
                    slot = await anyio.to_thread.run_sync(served.holder.acquire, limiter=self._wait_limiter)
                return slot
        finally:
            served.load_waiters -= 1

    async def _until(self, waiting: asyncio.Future, deadline: float, request: Request | None):
        """The future's result, or None at the deadline; ClientGone when the client leaves first."""
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=max(0.0, min(DISCONNECT_POLL_S,
                                                                         deadline - time.monotonic())))
            if done:
                return waiting.result()
            if time.monotonic() >= deadline:
                waiting.add_done_callback(_consume)
                return None
            if request is not None and await request.is_disconnected():
                waiting.add_done_callback(_consume)
                self.metrics.count("cancelled_requests_total")
                raise ClientGone()

    # ---- running -------------------------------------------------------------------------------------------

    def _defaults(self, slot: ModelSlot, kind: str, params: dict) -> dict:
        if kind not in ("chat", "completion"):
            return params
        return with_serving_defaults(kind, params, slot.info.serving, slot.info.model, self.config.max_tokens_limit)

    async def _prepared(self, slot: ModelSlot, kind: str, params: dict) -> dict:
        """The job's params with the version's defaults, a chat's response_format compiled to grammar text in a
        grammar worker (off the event loop, out of the model process); a refused schema leaves the slot."""
        try:
            params = self._defaults(slot, kind, params)
            if kind != "chat":
                return params
            params = dict(params)
            c = self.config
            params["grammar"] = await anyio.to_thread.run_sync(functools.partial(
                compile_response_format, params.pop("response_format", None),
                max_schema_bytes=c.grammar_max_schema_bytes, timeout_s=c.grammar_timeout_s,
                max_depth=c.grammar_max_depth, max_grammar_bytes=c.grammar_max_bytes, pool=self.grammars))
            return params
        except BaseException:
            slot.leave()
            raise

    async def run(self, served: ServedModel, kind: str, params: dict, request: Request | None = None
                  ) -> tuple[ModelSlot, object]:
        """The answer of one job; cancelled in the model process on its deadline or when the client goes away."""
        started = time.monotonic()
        slot = await self.acquire(served, request)
        future = slot.submit(kind, await self._prepared(slot, kind, params))
        future.add_done_callback(lambda _: slot.leave())  # in flight until the model is done with it
        waiting = asyncio.wrap_future(future)
        deadline = started + self.config.request_timeout_s
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=max(0.0, min(DISCONNECT_POLL_S,
                                                                             deadline - time.monotonic())))
                if done:
                    return slot, waiting.result()
                if time.monotonic() >= deadline:
                    slot.cancel(future)
                    waiting.add_done_callback(_consume)
                    self.metrics.count("timed_out_requests_total")
                    raise ApiError(504, f"the request took longer than request_timeout_s="
                                   f"{self.config.request_timeout_s:g}s and was cancelled", type="timeout_error",
                                   code="request_timeout")
                if request is not None and await request.is_disconnected():
                    slot.cancel(future)
                    waiting.add_done_callback(_consume)
                    self.metrics.count("cancelled_requests_total")
                    raise ClientGone()
        except SlotError as exc:
            raise ApiError(503, f"{served.key}: {exc}; it is being restarted", type="server_error",
                           code="model_restarting", headers={"Retry-After": "1"}) from exc

    async def stream(self, served: ServedModel, kind: str, params: dict, on_chunk) -> StreamingResponse:
        slot = await self.acquire(served)
        bridge = StreamBridge(asyncio.get_running_loop())
        future = slot.submit(kind, await self._prepared(slot, kind, params), on_chunk=bridge.on_chunk)
        future.add_done_callback(lambda _: slot.leave())
        future.add_done_callback(bridge.on_done)
        try:
            first = await asyncio.wait_for(bridge.first(), self.config.request_timeout_s)
        except asyncio.TimeoutError:
            slot.cancel(future)
            raise ApiError(504, f"no answer within request_timeout_s={self.config.request_timeout_s:g}s",
                           type="timeout_error", code="request_timeout") from None
        except SlotError as exc:
            raise ApiError(503, f"{served.key}: {exc}; it is being restarted", type="server_error",
                           code="model_restarting", headers={"Retry-After": "1"}) from exc
        events = bridge.events(first, lambda c: on_chunk(served, slot, c), lambda: slot.cancel(future))
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", **model_headers(served, slot)})

    def label(self, served: ServedModel, result: dict, slot: ModelSlot) -> dict:
        result["model"] = served.key
        result["system_fingerprint"] = f"{slot.info.model}-v{slot.info.version}-{slot.info.sha256[:12]}"
        usage = result.get("usage")
        if usage:
            self.metrics.tokens(served.key, slot.info.version, usage["prompt_tokens"], usage["completion_tokens"])
        return result

    def count_chunk(self, served: ServedModel, slot: ModelSlot, chunk: dict) -> None:
        chunk["model"] = served.key
        choice = (chunk.get("choices") or [{}])[0]
        if choice.get("text") or (choice.get("delta") or {}).get("content"):
            self.metrics.tokens(served.key, slot.info.version, 0, 1)  # one chunk per decoded token


def _consume(future) -> None:
    """Retrieve the outcome of a job whose request already got its answer (cancelled), so it is not reported."""
    if not future.cancelled():
        future.exception()


def model_headers(served: ServedModel, slot: ModelSlot) -> dict:
    """Which model answered, on every model response: the version and the GGUF's sha256."""
    return {"X-Model": served.key, "X-Model-Version": str(slot.info.version), "X-Model-Sha256": slot.info.sha256}
