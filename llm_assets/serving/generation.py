"""Jobs the model process runs (each owns the Llama while it runs), and the bridge that carries a streamed
answer back to the event loop."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import AsyncIterator, Callable

from llm_assets.serving.pet import decision_grammar, validate_decision
from llm_assets.serving.schemas import ApiError

CONTEXT_OVERFLOW = "exceed context window"  # llama-cpp-python's message for a prompt longer than n_ctx


def check_max_tokens(value: int | None, limit: int, param: str = "max_tokens") -> int | None:
    """The request's max_tokens, checked; None when it sent none (the served version's default applies)."""
    if value is None:
        return None
    if isinstance(value, bool) or not 1 <= value <= limit:
        raise ApiError(400, f"{param}={value!r} is out of range: want 1..{limit}", param=param,
                       code="invalid_value")
    return value


def with_serving_defaults(kind: str, params: dict, serving: dict | None, model: str, limit: int) -> dict:
    """A completion or chat request with the served version's defaults filled in where the client set nothing.

    The defaults come from the model file (recorded in the registry with the version): max_tokens (capped at the
    server's limit; without one, the limit), the system prompt before a conversation that has none (the model was
    trained and scored with it), and the answer schema as the grammar of a chat without a response_format.
    """
    serving = serving or {}
    out = dict(params)
    if out.get("max_tokens") is None:
        out["max_tokens"] = min(serving.get("max_tokens") or limit, limit)
    if kind != "chat":
        return out
    system_prompt = serving.get("system_prompt")
    if system_prompt and not (out["messages"] and out["messages"][0]["role"] == "system"):
        out["messages"] = [{"role": "system", "content": system_prompt}, *out["messages"]]
    if serving.get("json_schema") and out.get("response_format") is None:
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": model, "schema": serving["json_schema"]}}
    return out


def _fit(llm, n_prompt: int, max_tokens: int) -> None:
    n_ctx = llm.n_ctx()
    if n_prompt + max_tokens > n_ctx:
        raise ApiError(400, f"the prompt is {n_prompt} tokens; with max_tokens={max_tokens} that is "
                       f"{n_prompt + max_tokens}, more than this model's context window of {n_ctx} tokens: "
                       f"shorten the prompt or lower max_tokens", param="prompt", code="context_length_exceeded")


def response_grammar(response_format: dict | None):
    """A llama.cpp grammar for OpenAI's response_format, or None for free text."""
    if not response_format or response_format.get("type", "text") == "text":
        return None
    from llama_cpp import LlamaGrammar
    from llama_cpp.llama_grammar import JSON_GBNF

    kind = response_format.get("type")
    try:
        if kind == "json_object":
            schema = response_format.get("schema")
            return (LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False) if schema
                    else LlamaGrammar.from_string(JSON_GBNF, verbose=False))
        if kind == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            if not isinstance(schema, dict):
                raise ValueError("json_schema.schema must be an object")
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise ApiError(400, f"response_format: cannot build a grammar from it: {exc}",
                       param="response_format") from exc
    raise ApiError(400, f"response_format.type={kind!r}: want text, json_object or json_schema",
                   param="response_format")


def completion_job(prompt: str, max_tokens: int, stream: bool, **sampling) -> Callable:
    def job(llm):
        _fit(llm, len(llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)), max_tokens)
        return llm.create_completion(prompt, max_tokens=max_tokens, stream=stream, **sampling)
    return job


def chat_job(messages: list[dict], max_tokens: int, stream: bool, response_format: dict | None = None,
             **sampling) -> Callable:
    def job(llm):
        grammar = response_grammar(response_format)
        try:
            result = llm.create_chat_completion(messages, max_tokens=max_tokens, stream=stream, grammar=grammar,
                                                **sampling)
            if stream:  # the prompt is evaluated on the first step: surface its errors before answering
                return _peeked(result)
            return result
        except ValueError as exc:
            if CONTEXT_OVERFLOW in str(exc):
                raise ApiError(400, f"the conversation does not fit this model's context window: {exc}",
                               param="messages", code="context_length_exceeded") from exc
            raise
    return job


def _peeked(iterator):
    first = next(iterator, None)
    return iter(()) if first is None else itertools.chain([first], iterator)


def pet_job(messages: list[dict], max_tokens: int) -> Callable:
    def job(llm):
        out = llm.create_chat_completion(messages, grammar=decision_grammar(), temperature=0,
                                         max_tokens=max_tokens)
        text = out["choices"][0]["message"]["content"] or ""
        try:
            decision = validate_decision(text)
        except ValueError as exc:
            raise ApiError(502, f"the model's answer is not a valid decision: {exc}", type="server_error",
                           code="invalid_model_output") from exc
        return {"decision": decision, "raw": text, "usage": out["usage"]}
    return job


class StreamBridge:
    """Carries a streamed answer from the slot's reader thread to the event loop, chunk by chunk."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.finished = False

    def on_chunk(self, chunk: dict) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("chunk", chunk))

    def on_done(self, future) -> None:
        exc = future.exception()
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("error", exc) if exc else ("end", None))

    async def first(self):
        """The first chunk, or the job's error raised here (so it becomes a normal error response)."""
        kind, value = await self.queue.get()
        if kind == "error":
            self.finished = True
            raise value
        return kind, value

    async def events(self, first, on_chunk: Callable[[dict], None], cancel: Callable[[], None]
                     ) -> AsyncIterator[str]:
        try:
            kind, value = first
            while kind == "chunk":
                on_chunk(value)
                yield f"data: {json.dumps(value)}\n\n"
                kind, value = await self.queue.get()
            self.finished = True
            if kind == "error":  # a failure mid-stream: the status is sent already, so say it in the stream
                yield f"data: {json.dumps({'error': {'message': str(value), 'type': 'server_error'}})}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            if not self.finished:  # the client went away: stop generating
                cancel()
