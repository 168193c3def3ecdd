"""The HTTP API: OpenAI-compatible completions and chat (streaming too) for every served model, the pet's typed
decision, models, health, metrics and a refresh notification. Every model call runs in a slot's model process;
the event loop only parses, queues and writes.

Auth fails closed: on an address other machines reach the server refuses to start without a client key (unless
insecure_no_auth), admin endpoints take their own key, and /health tells the unauthenticated only ok/degraded.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager

import anyio
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llm_assets.core import pet_task as pt
from llm_assets.serving.config import ServeConfig
from llm_assets.serving.generation import check_max_tokens
from llm_assets.serving.middleware import (
    SENT_CONTENT_TYPE, JsonWhateverContentType, LimitsAndMetrics, validation_message,
)
from llm_assets.serving.pet import decision_schema, pet_messages, pet_state
from llm_assets.serving.schemas import ApiError, ChatRequest, CompletionRequest, PetDecideRequest
from llm_assets.serving.state import ClientGone, ServerState, model_headers

log = logging.getLogger("llm_assets.serving")


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else ""


def _matches(given: str, key: str | None) -> bool:
    return key is not None and hmac.compare_digest(given.encode(), key.encode())


def create_app(config: ServeConfig) -> FastAPI:
    problem = config.exposure_problem()
    if problem:
        raise ValueError(problem)
    if config.insecure_no_auth and config.api_key() is None:
        log.warning("SERVING WITHOUT AUTHENTICATION on %s:%s (--insecure-no-auth): anyone who reaches this "
                    "address can use every model", config.host, config.port)
    state = ServerState(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await anyio.to_thread.run_sync(state.fleet.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(state.fleet.stop)
            await anyio.to_thread.run_sync(state.grammars.close)

    app = FastAPI(title="llm-assets serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serve = state
    app.add_middleware(JsonWhateverContentType)
    app.add_middleware(LimitsAndMetrics, metrics=state.metrics, max_body_bytes=config.max_body_bytes)

    def open_access() -> bool:  # no key at all: loopback development, or --insecure-no-auth
        return config.api_key() is None and config.admin_key() is None

    async def authorized(request: Request) -> None:
        key = config.api_key()
        if key is None:
            return
        given = _bearer(request)
        if not (_matches(given, key) or _matches(given, config.admin_key())):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           type="authentication_error", code="invalid_api_key")

    async def admin(request: Request) -> None:
        if open_access():
            return
        given, admin_key = _bearer(request), config.admin_key()
        if _matches(given, admin_key):
            return
        if _matches(given, config.api_key()) or (admin_key is None and given):
            raise ApiError(403, f"admin endpoints need the admin key (${config.admin_api_key_env})"
                           + ("" if admin_key else ", which is not set on this server"),
                           type="permission_error", code="admin_key_required")
        raise ApiError(401, "missing or wrong admin key: send 'Authorization: Bearer <admin key>'",
                       type="authentication_error", code="invalid_api_key")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone):
        return Response(status_code=499)  # nobody reads it; logged and counted as the client closing first

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
    async def completions(body: CompletionRequest, request: Request):
        served = state.fleet.get(body.model)
        max_tokens = check_max_tokens(body.max_tokens, config.max_tokens_limit)
        params = {"prompt": body.prompt, "max_tokens": max_tokens, "stream": body.stream, **_sampling(body)}
        if body.stream:
            return await state.stream(served, "completion", params, state.count_chunk)
        slot, result = await state.run(served, "completion", params, request)
        return JSONResponse(state.label(served, result, slot), headers=model_headers(served, slot))

    @app.post("/v1/chat/completions", dependencies=v1)
    async def chat_completions(body: ChatRequest, request: Request):
        served = state.fleet.get(body.model)
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        max_tokens = check_max_tokens(body.max_completion_tokens or body.max_tokens, config.max_tokens_limit, param)
        try:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        except ValueError as exc:
            raise ApiError(400, f"messages: {exc}", param="messages") from exc
        params = {"messages": messages, "max_tokens": max_tokens, "stream": body.stream,
                  "response_format": body.response_format, **_sampling(body)}
        if body.stream:
            return await state.stream(served, "chat", params, state.count_chunk)
        slot, result = await state.run(served, "chat", params, request)
        return JSONResponse(state.label(served, result, slot), headers=model_headers(served, slot))

    @app.post("/v1/pet/decide", dependencies=v1)
    async def pet_decide(body: PetDecideRequest, request: Request):
        served = state.fleet.get(body.model)
        s = pet_state(body.hunger, body.energy, body.happiness, body.hygiene, body.time, body.objects)
        messages = pet_messages(s, body.phrasing)
        started = time.perf_counter()
        slot, out = await state.run(served, "pet", {"messages": messages, "max_tokens": config.pet_max_tokens},
                                    request)
        state.metrics.tokens(served.key, slot.info.version, out["usage"]["prompt_tokens"],
                             out["usage"]["completion_tokens"])
        return JSONResponse({"decision": out["decision"], "model": served.key, "version": slot.info.version,
                             "prompt": messages[0]["content"], "usage": out["usage"],
                             "seconds": round(time.perf_counter() - started, 4)}, headers=model_headers(served, slot))

    @app.get("/v1/pet/schema", dependencies=v1)
    async def pet_schema():
        return {"decision": decision_schema(), "times": list(pt.TIMES), "objects": list(pt.OBJECTS),
                "max_distance": pt.MAX_DISTANCE}

    @app.get("/v1/models", dependencies=v1)
    async def models():
        data = []
        for served in sorted(state.fleet.models(), key=lambda m: m.key):
            slot, record = served.holder.current, served.follower.record
            if slot is None and record is None:
                continue
            data.append({"id": served.key, "object": "model", "owned_by": "llm-assets",
                         "created": int(slot.loaded_at) if slot else 0, "loaded": slot is not None,
                         "version": slot.info.version if slot else record.version,
                         "sha256": slot.info.sha256 if slot else record.gguf_sha256,
                         "bytes": slot.info.bytes if slot else record.gguf_bytes,
                         "context_window": slot.n_ctx if slot else None})
        return {"object": "list", "data": data}

    @app.post("/v1/admin/refresh", dependencies=[Depends(admin)])
    async def refresh(model: str | None = None):
        """Check the registry now, for one model (?model=) or every served one; waits up to wait_timeout_s."""
        if not model:
            await anyio.to_thread.run_sync(state.fleet.discover)
        targets = [state.fleet.get(model)] if model else state.fleet.models()
        checks = {s.key: asyncio.wrap_future(s.follower.request_check()) for s in targets}
        done, _ = await asyncio.wait(checks.values(), timeout=config.wait_timeout_s) if checks else (set(), set())
        out = {}
        for served in targets:
            check, slot = checks[served.key], served.holder.current
            out[served.key] = {"outcome": check.result() if check in done else "still checking",
                               "serving": slot.info.version if slot else None}
        return {"models": out}

    @app.get("/health")
    async def health(request: Request):
        given = _bearer(request)
        detailed = open_access() or _matches(given, config.api_key()) or _matches(given, config.admin_key())
        return _health(state, detailed)

    @app.get("/metrics", dependencies=v1)
    async def metrics():
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    return app


def _sampling(body) -> dict:
    out = {"temperature": body.temperature, "top_p": body.top_p, "stop": body.stop or [],
           "include_usage": body.include_usage}
    if body.seed is not None:
        out["seed"] = body.seed
    return out


def _model_health(served) -> tuple[str, dict]:
    slot, follower = served.holder.current, served.follower.status()
    serving = None if slot is None else {
        "version": slot.info.version, "sha256": slot.info.sha256, "bytes": slot.info.bytes, "uri": slot.info.uri,
        "loaded_at": slot.loaded_at, "in_flight": slot.in_flight, "llama_settings": slot.llama_settings}
    # Behind the alias with no swap under way means the last attempt failed: still serving, but degraded.
    stuck = slot is not None and follower["alias_version"] not in (None, slot.info.version) \
        and follower["swapping_to"] is None
    if slot is None:
        status = "not_loaded" if not follower["wanted"] and follower["alias_version"] else "unavailable"
    else:
        status = "degraded" if stuck or follower["registry_error"] else "ok"
    return status, {"status": status, "serving": serving, "registry": follower,
                    "waiting_requests": served.holder.waiting}


def _health(state: ServerState, detailed: bool) -> JSONResponse:
    models = {s.key: _model_health(s) for s in state.fleet.models()}
    statuses = [status for status, _ in models.values()]
    if not statuses or all(s == "unavailable" for s in statuses):
        status = "unavailable"
    elif any(s in ("unavailable", "degraded") for s in statuses) or state.fleet.discovery_error:
        status = "degraded"
    else:
        status = "ok"
    body = {"status": status}
    if detailed:
        body.update(models={key: detail for key, (_, detail) in models.items()},
                    loaded_bytes=state.fleet.budget.loaded_bytes(),
                    memory_budget_bytes=state.config.memory_budget_bytes,
                    registry_error=state.fleet.discovery_error)
    return JSONResponse(body, status_code=503 if status == "unavailable" else 200)
