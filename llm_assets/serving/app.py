"""The HTTP API: OpenAI-compatible completions and chat (streaming too), the pet's typed decision, models,
health, metrics and a refresh notification. Every model call runs in the slot's model process; the event
loop only parses, queues and writes."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llm_assets.core import pet_task as pt
from llm_assets.serving.config import ServeConfig
from llm_assets.serving.follower import RegistryFollower
from llm_assets.serving.generation import StreamBridge, check_max_tokens, with_serving_defaults
from llm_assets.serving.holder import BusyError, ModelHolder, NoModelError
from llm_assets.serving.metrics import Metrics
from llm_assets.serving.middleware import (
    SENT_CONTENT_TYPE, JsonWhateverContentType, LimitsAndMetrics, validation_message,
)
from llm_assets.serving.pet import decision_schema, pet_messages, pet_state
from llm_assets.serving.schemas import ApiError, ChatRequest, CompletionRequest, PetDecideRequest
from llm_assets.serving.slot import ModelSlot

log = logging.getLogger("llm_assets.serving")


class ServerState:
    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = Metrics()
        self.holder = ModelHolder(config.max_waiting, config.wait_timeout_s)
        self.follower = RegistryFollower(config, self.holder, self.metrics)
        self._wait_limiter = anyio.CapacityLimiter(config.max_waiting)
        m, h = self.metrics, self.holder
        m.gauge("model_version", "Registry version being served (absent when none).",
                lambda: {(("model", config.model),): h.current.info.version} if h.current else {})
        m.gauge("model_bytes", "GGUF bytes of every loaded model, draining ones included.", h.loaded_bytes)
        m.gauge("in_flight_requests", "Requests running or queued on the served model.",
                lambda: h.current.in_flight if h.current else 0)
        m.gauge("waiting_requests", "Requests held while a memory-limited swap runs.", lambda: h.waiting)
        m.gauge("swap_in_progress", "1 while a new version is being fetched, verified, loaded or smoke-tested.",
                lambda: int(self.follower.swapping is not None))

    def check_model(self, name: str | None) -> None:
        known = (self.config.model, f"{self.config.model}@{self.config.alias}")
        if name is not None and name not in known:
            raise ApiError(404, f"unknown model {name!r}: this server serves {self.config.model!r} "
                           f"(its {self.config.alias} version)", param="model", code="model_not_found")

    async def acquire(self) -> ModelSlot:
        try:
            slot = self.holder.try_acquire()
            if slot is None:  # a memory-limited swap is running: wait in the short queue
                self.metrics.count("queued_requests_total")
                slot = await anyio.to_thread.run_sync(self.holder.acquire, limiter=self._wait_limiter)
            return slot
        except NoModelError as exc:
            raise ApiError(503, str(exc), type="server_error", code="model_not_loaded",
                           headers={"Retry-After": "5"}) from exc
        except BusyError as exc:
            raise ApiError(503, str(exc), type="server_error", code="busy", headers={"Retry-After": "1"}) from exc

    def _defaults(self, slot: ModelSlot, kind: str, params: dict) -> dict:
        if kind not in ("chat", "completion"):
            return params
        return with_serving_defaults(kind, params, slot.info.serving, slot.info.model, self.config.max_tokens_limit)

    async def run(self, kind: str, params: dict) -> tuple[ModelSlot, object]:
        slot = await self.acquire()
        future = slot.submit(kind, self._defaults(slot, kind, params))
        future.add_done_callback(lambda _: slot.leave())  # in flight until the model is done with it
        return slot, await asyncio.wrap_future(future)

    async def stream(self, kind: str, params: dict, on_chunk) -> StreamingResponse:
        slot = await self.acquire()
        bridge = StreamBridge(asyncio.get_running_loop())
        future = slot.submit(kind, self._defaults(slot, kind, params), on_chunk=bridge.on_chunk)
        future.add_done_callback(lambda _: slot.leave())
        future.add_done_callback(bridge.on_done)
        first = await bridge.first()
        return StreamingResponse(bridge.events(first, lambda c: on_chunk(slot, c), lambda: slot.cancel(future)),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Model-Version": str(slot.info.version)})

    def label(self, result: dict, slot: ModelSlot) -> dict:
        result["model"] = self.config.model
        result["system_fingerprint"] = f"{slot.info.model}-v{slot.info.version}-{slot.info.sha256[:12]}"
        usage = result.get("usage")
        if usage:
            self.metrics.tokens(slot.info.version, usage["prompt_tokens"], usage["completion_tokens"])
        return result

    def count_chunk(self, slot: ModelSlot, chunk: dict) -> None:
        chunk["model"] = self.config.model
        choice = (chunk.get("choices") or [{}])[0]
        if choice.get("text") or (choice.get("delta") or {}).get("content"):
            self.metrics.tokens(slot.info.version, 0, 1)  # one chunk per decoded token


def create_app(config: ServeConfig) -> FastAPI:
    state = ServerState(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.follower.start()
        try:
            yield
        finally:
            state.follower.stop()
            await anyio.to_thread.run_sync(state.holder.close)

    app = FastAPI(title="llm-assets serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serve = state
    app.add_middleware(JsonWhateverContentType)
    app.add_middleware(LimitsAndMetrics, metrics=state.metrics, max_body_bytes=config.max_body_bytes)

    async def authorized(request: Request) -> None:
        key = config.api_key()
        if key is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           type="authentication_error", code="invalid_api_key")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param, code = validation_message(exc.errors())
        sent = request.scope.get(SENT_CONTENT_TYPE)
        if code == "invalid_json" and sent:
            message += f" (the body was sent as {sent}; this route reads it as JSON whatever the content type)"
        return JSONResponse(ApiError(400, message, param=param, code=code).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return JSONResponse(ApiError(exc.status_code, str(exc.detail)).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(ApiError(500, f"internal error: {type(exc).__name__}", type="server_error").body(),
                            status_code=500)

    v1 = [Depends(authorized)]

    @app.post("/v1/completions", dependencies=v1)
    async def completions(body: CompletionRequest):
        state.check_model(body.model)
        max_tokens = check_max_tokens(body.max_tokens, config.max_tokens_limit)
        params = {"prompt": body.prompt, "max_tokens": max_tokens, "stream": body.stream, **_sampling(body)}
        if body.stream:
            return await state.stream("completion", params, state.count_chunk)
        slot, result = await state.run("completion", params)
        return state.label(result, slot)

    @app.post("/v1/chat/completions", dependencies=v1)
    async def chat_completions(body: ChatRequest):
        state.check_model(body.model)
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        max_tokens = check_max_tokens(body.max_completion_tokens or body.max_tokens, config.max_tokens_limit, param)
        try:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        except ValueError as exc:
            raise ApiError(400, f"messages: {exc}", param="messages") from exc
        params = {"messages": messages, "max_tokens": max_tokens, "stream": body.stream,
                  "response_format": body.response_format, **_sampling(body)}
        if body.stream:
            return await state.stream("chat", params, state.count_chunk)
        slot, result = await state.run("chat", params)
        return state.label(result, slot)

    @app.post("/v1/pet/decide", dependencies=v1)
    async def pet_decide(body: PetDecideRequest):
        state.check_model(body.model)
        s = pet_state(body.hunger, body.energy, body.happiness, body.hygiene, body.time, body.objects)
        messages = pet_messages(s, body.phrasing)
        started = time.perf_counter()
        slot, out = await state.run("pet", {"messages": messages, "max_tokens": config.pet_max_tokens})
        state.metrics.tokens(slot.info.version, out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"])
        return {"decision": out["decision"], "model": config.model, "version": slot.info.version,
                "prompt": messages[0]["content"], "usage": out["usage"],
                "seconds": round(time.perf_counter() - started, 4)}

    @app.get("/v1/pet/schema", dependencies=v1)
    async def pet_schema():
        return {"decision": decision_schema(), "times": list(pt.TIMES), "objects": list(pt.OBJECTS),
                "max_distance": pt.MAX_DISTANCE}

    @app.get("/v1/models", dependencies=v1)
    async def models():
        slot = state.holder.current
        data = [] if slot is None else [{
            "id": config.model, "object": "model", "created": int(slot.loaded_at), "owned_by": "llm-assets",
            "version": slot.info.version, "sha256": slot.info.sha256, "bytes": slot.info.bytes,
            "context_window": slot.n_ctx}]
        return {"object": "list", "data": data}

    @app.post("/v1/admin/refresh", dependencies=v1)
    async def refresh():
        outcome = await asyncio.wrap_future(state.follower.request_check())
        slot = state.holder.current
        return {"outcome": outcome, "serving": slot.info.version if slot else None}

    @app.get("/health")
    async def health():
        return _health(state)

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    return app


def _sampling(body) -> dict:
    out = {"temperature": body.temperature, "top_p": body.top_p, "stop": body.stop or []}
    if body.seed is not None:
        out["seed"] = body.seed
    return out


def _health(state: ServerState) -> JSONResponse:
    slot, follower = state.holder.current, state.follower.status()
    serving = None if slot is None else {
        "version": slot.info.version, "sha256": slot.info.sha256, "bytes": slot.info.bytes, "uri": slot.info.uri,
        "loaded_at": slot.loaded_at, "in_flight": slot.in_flight, "llama_settings": slot.llama_settings}
    # Behind the alias with no swap under way means the last attempt failed: still serving, but degraded.
    stuck = slot is not None and follower["alias_version"] not in (None, slot.info.version) \
        and follower["swapping_to"] is None
    status = "unavailable" if slot is None else "degraded" if stuck or follower["registry_error"] else "ok"
    body = {"status": status, "model": state.config.model, "serving": serving, "registry": follower,
            "waiting_requests": state.holder.waiting}
    return JSONResponse(body, status_code=503 if slot is None else 200)
