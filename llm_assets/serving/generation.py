"""Jobs the model process runs (each owns the Llama while it runs), and the bridge that carries a streamed
answer back to the event loop."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import AsyncIterator, Callable

from llm_assets.serving.grammar import compile_in_process, parse_error
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
    chosen = out.get("max_tokens") is not None
    if not chosen:
        out["max_tokens"] = min(serving.get("max_tokens") or limit, limit)
    if kind != "chat":
        return out
    out["answer_must_fit"] = chosen
    system_prompt = serving.get("system_prompt")
    if system_prompt and not (out["messages"] and out["messages"][0]["role"] == "system"):
        out["messages"] = [{"role": "system", "content": system_prompt}, *out["messages"]]
    if serving.get("json_schema") and out.get("response_format") is None:
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": model, "schema": serving["json_schema"]}}
    return out


def _fit(n_prompt: int, max_tokens: int, n_ctx: int, what: str = "prompt", param: str = "prompt") -> None:
    """A 400 when `what` (the prompt, or a chat's formatted conversation) leaves less than max_tokens of context."""
    if n_prompt + max_tokens > n_ctx:
        raise ApiError(400, f"the {what} is {n_prompt} tokens; with max_tokens={max_tokens} that is "
                       f"{n_prompt + max_tokens}, more than this model's context window of {n_ctx} tokens: "
                       f"shorten the {what} or lower max_tokens", param=param, code="context_length_exceeded")


def completion_job(prompt: str, max_tokens: int, stream: bool, include_usage: bool = False, **sampling) -> Callable:
    def job(llm):
        _fit(len(llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)), max_tokens, llm.n_ctx())
        budget = TokenBudget(llm, max_tokens)
        result = budget.finished(llm.create_completion(prompt, max_tokens=max_tokens, stream=stream, **sampling),
                                 stream)
        return _with_usage(result, llm, budget) if stream and include_usage else result
    return job


def chat_job(messages: list[dict], max_tokens: int, stream: bool, grammar: str | None = None,
             response_format: dict | None = None, include_usage: bool = False, answer_must_fit: bool = False,
             **sampling) -> Callable:
    """A chat answer, decoded with `grammar` (GBNF text from grammar.compile_response_format, compiled outside this
    process) when one is given. `response_format` is the older way in, compiled here without a time bound; it is
    used only while the server still sends it instead of `grammar`. With `answer_must_fit` (the client chose
    max_tokens), a conversation that leaves less room than max_tokens is refused rather than answered shorter."""
    def job(llm):
        text = grammar if grammar is not None else compile_in_process(response_format)
        constraint = None if text is None else _llama_grammar(text)
        budget = TokenBudget(llm, max_tokens, answer_must_fit)
        try:
            result = llm.create_chat_completion(messages, max_tokens=max_tokens, stream=stream, grammar=constraint,
                                                **sampling)
            if stream:  # the prompt is evaluated on the first step: surface its errors before answering
                result = budget.finished(_peeked(result), stream)
                return _with_usage(result, llm, budget) if include_usage else result
            return budget.finished(result, stream)
        except ValueError as exc:
            if CONTEXT_OVERFLOW in str(exc):
                raise ApiError(400, f"the conversation does not fit this model's context window: {exc}",
                               param="messages", code="context_length_exceeded") from exc
            raise
    return job


def _llama_grammar(text: str):
    """LlamaGrammar of GBNF text, refused with a 400 when llama.cpp cannot parse it: llama-cpp-python would add the
    missing sampler to its chain anyway and this process would segfault."""
    from llama_cpp import LlamaGrammar

    error = parse_error(text)
    if error:
        raise ApiError(400, f"response_format: llama.cpp cannot use the grammar: {error}", param="response_format",
                       code="invalid_schema")
    return LlamaGrammar.from_string(text, verbose=False)


class TokenBudget:
    """Ends this job's generation at max_tokens sampled tokens, and before the context window is full.

    llama-cpp-python skips its own max_tokens check while the answer ends in an incomplete UTF-8 character
    (abetlen/llama-cpp-python#1470): a model that keeps sampling lead bytes, as a barely trained byte-level
    one does, generates on to the end of the context, where llama_decode fails ("returned 1") and the request
    would get a 500. The generator checks stopping criteria after every sampled token, before evaluating it;
    when this one stops it, the generator hands on an end-of-generation token, so the completion keeps the
    answer so far (the partial character is dropped when the text is decoded) and calls it "stop", which
    `finished` puts back to "length".
    """

    def __init__(self, llm, max_tokens: int, answer_must_fit: bool = False):
        self.sampled, self.max_tokens, self.n_ctx, self.hit = _sample_log(llm), max_tokens, llm.n_ctx(), False
        self.answer_must_fit = answer_must_fit
        _guard_generate(llm)
        llm._token_budget = self

    def admit(self, prompt_tokens) -> None:
        """Refuse a chat whose formatted prompt leaves less than max_tokens of the context, where llama-cpp-python
        would shorten the answer silently; only the chat template knows the prompt's length, so it is checked here,
        as generation starts."""
        if self.answer_must_fit:
            _fit(len(prompt_tokens), self.max_tokens, self.n_ctx, what="conversation", param="messages")

    def over(self, input_ids, logits) -> bool:
        # input_ids holds the prompt and every sampled token: at n_ctx, one more could not be evaluated.
        self.hit = self.hit or len(self.sampled) > self.max_tokens or len(input_ids) >= self.n_ctx
        return self.hit

    def finished(self, result, stream: bool):
        """The answer (a dict, or a stream of chunks) with finish_reason "length" where the budget ended it."""
        return (self._relabel(chunk) for chunk in result) if stream else self._relabel(result)

    def _relabel(self, answer: dict) -> dict:
        if self.hit:
            for choice in answer.get("choices", ()):
                if choice.get("finish_reason") == "stop":
                    choice["finish_reason"] = "length"
        return answer


def _guard_generate(llm) -> None:
    """Put the current job's TokenBudget in front of every generation of `llm` (once per Llama)."""
    if "_token_budget" in llm.__dict__:
        return
    from llama_cpp import StoppingCriteriaList

    generate = llm.generate

    def guarded(tokens, *args, stopping_criteria=None, **kwargs):
        budget = llm._token_budget
        budget.admit(tokens)
        criteria = StoppingCriteriaList([budget.over, *(stopping_criteria or [])])
        yield from generate(tokens, *args, stopping_criteria=criteria, **kwargs)
        if budget.hit:
            yield llm.token_eos()

    llm.generate = guarded


def _sample_log(llm) -> list[int]:
    """The tokens `llm` samples from now on, for a stream's usage. llama-cpp-python reports no usage when it
    streams and keeps its token lists to itself; its generator calls llm.sample once per token, so a recorder
    put in front of it once (this process's Llama, jobs one at a time) sees every token, the last one too."""
    log = llm.__dict__.get("_sampled_tokens")
    if log is None:
        log, sample = [], llm.sample

        def recording_sample(*args, **kwargs):
            token = sample(*args, **kwargs)
            log.append(token)
            return token

        llm.sample, llm._sampled_tokens = recording_sample, log
    log.clear()
    return log


def _with_usage(chunks, llm, budget: TokenBudget):
    """The stream's chunks, then OpenAI's usage chunk (no choices, the same id). Counted as llama-cpp-python
    counts a whole answer: the tokens it kept (an end-of-generation token, or one past the budget, is sampled,
    never kept), and the prompt as the context's length less the kept tokens (the last sampled token is never
    evaluated)."""
    import llama_cpp

    last = None
    for last in chunks:
        yield last
    if last is None:
        return
    sampled = budget.sampled
    dropped = bool(sampled) and (budget.hit or llama_cpp.llama_vocab_is_eog(llm._model.vocab, sampled[-1]))
    kept = len(sampled) - dropped
    prompt = llm.n_tokens - max(len(sampled) - 1, 0)
    yield {"id": last["id"], "object": last["object"], "created": last["created"], "model": last["model"],
           "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": kept,
                                    "total_tokens": prompt + kept}}


def _peeked(iterator):
    first = next(iterator, None)
    return iter(()) if first is None else itertools.chain([first], iterator)


def pet_job(messages: list[dict], max_tokens: int) -> Callable:
    def job(llm):
        budget = TokenBudget(llm, max_tokens)
        out = budget.finished(llm.create_chat_completion(messages, grammar=decision_grammar(), temperature=0,
                                                         max_tokens=max_tokens), stream=False)
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
