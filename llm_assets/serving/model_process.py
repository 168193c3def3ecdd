"""The model process: one per loaded GGUF, started by ModelSlot.

llama.cpp runs here, away from the HTTP event loop: its per-token Python (sampling, detokenizing) would
otherwise hold the server's GIL and starve the loop that parses the next requests, and a file that crashes
llama.cpp takes down this process, never the server. Requests arrive over a pipe and run one at a time (a
Llama is not thread-safe); answers, stream chunks and errors go back as (request id, kind, payload).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import threading
import time
import traceback

from llm_assets.serving.generation import chat_job, completion_job, pet_job
from llm_assets.serving.schemas import ApiError

JOBS = {"completion": completion_job, "chat": chat_job, "pet": pet_job}


def load_llama(path: str, n_ctx: int, n_threads: int | None, repack: str = "auto"):
    """(Llama, llama.cpp settings) for serving: context clamped to the model's training context."""
    from llm_assets.core import llama_runtime
    from llm_assets.core.evaluation import default_threads

    threads = n_threads or default_threads(path)
    n_ctx = min(n_ctx, trained_context(path) or n_ctx)  # positions past the training context are noise
    return llama_runtime.load_llama(path, repack, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                    n_batch=min(512, n_ctx))


def trained_context(path: str) -> int | None:
    """The GGUF's `<architecture>.context_length`; None when it cannot be read (llama.cpp then says why)."""
    from gguf import GGUFReader

    try:
        fields = GGUFReader(path).fields
        arch_field = fields["general.architecture"]
        arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
        ctx_field = fields[f"{arch}.context_length"]
        return int(ctx_field.parts[ctx_field.data[0]][0])
    except Exception:  # a damaged or unusual file: loading it reports the real problem
        return None


def error_payload(exc: BaseException) -> dict:
    if isinstance(exc, ApiError):
        return {"status": exc.status, "message": exc.message, "param": exc.param, "code": exc.code,
                "type": exc.type}
    return {"status": 500, "message": f"{type(exc).__name__}: {exc}", "type": "server_error",
            "detail": traceback.format_exc(limit=5)}


BACKGROUND_NICE = 10  # a swap's load and smoke test get about a tenth of a busy core's share
DRAIN_INTERVAL_S = 0.01  # how soon a running request notices its cancellation

CANCELLED = {"status": 499, "message": "cancelled: the client went away or its deadline passed",
             "type": "cancelled"}


class Cancelled(Exception):
    pass


@contextlib.contextmanager
def _stops_when_cancelled(llm, request_id: int, cancelled: set, drain_pipe):
    """Stop a non-streamed answer between two tokens once its request is cancelled (its deadline passed or its
    client went away: nobody will read the rest).

    llama-cpp-python checks `stopping_criteria` in Python after each token, where an exception propagates (a
    logits processor runs inside a C callback that swallows it). Chat completions reach create_completion
    through the chat handler, which takes no criteria of ours, so the check is added to every create_completion
    call made inside this block (one request at a time in this process).
    """
    from llama_cpp import StoppingCriteriaList

    def check(input_ids, logits) -> bool:
        drain_pipe()  # called once per token: drain_pipe keeps itself cheap
        if request_id in cancelled:
            raise Cancelled()
        return False

    original = llm.create_completion

    def create_completion(*args, **kwargs):
        kwargs["stopping_criteria"] = StoppingCriteriaList([*(kwargs.get("stopping_criteria") or []), check])
        return original(*args, **kwargs)

    llm.create_completion = create_completion
    try:
        yield
    finally:
        del llm.create_completion  # the method again


def in_background(fn, *args, **kwargs):
    """fn's result (or its exception), computed in a thread at nice +BACKGROUND_NICE: a model loading or being
    smoke-tested for a swap yields the cores to the models serving live requests. Linux nice values are per
    thread, so the process's main thread (and the threads llama.cpp starts from it) keep serving at the normal
    priority afterwards; an unprivileged process could never lower its nice value again."""
    outcome: dict = {}

    def run() -> None:
        with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed: full priority then
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0)
                           + BACKGROUND_NICE)
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="background")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def serve_model(conn, path: str, n_ctx: int, n_threads: int | None, repack: str = "auto") -> None:
    """The process's main loop (the target of ModelSlot's process)."""
    logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL + 1)
    try:
        llm, settings = in_background(load_llama, path, n_ctx, n_threads, repack)
    except Exception as exc:  # reported to the parent, which keeps serving the old model
        conn.send((None, "error", {"status": 500, "message": str(exc), "type": "load_error"}))
        return
    conn.send((None, "ready", {"n_ctx": llm.n_ctx(), "llama_settings": settings.to_dict()}))
    backlog: collections.deque = collections.deque()
    cancelled: set = set()
    # Connection.poll builds a selector on every call (~20 us); once per token that cost a tiny model 9% of its
    # tokens/s. One poll object, asked at most every DRAIN_INTERVAL_S, costs nothing measurable.
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    next_drain = 0.0

    def receive():
        return backlog.popleft() if backlog else conn.recv()

    def drain_pipe(force: bool = False):
        # Between tokens: note cancellations, keep new requests for later (first come, first served).
        nonlocal next_drain
        now = time.monotonic()
        if not force and now < next_drain:
            return
        next_drain = now + DRAIN_INTERVAL_S
        while poller.poll(0):
            message = conn.recv()
            if message[1] == "cancel":
                cancelled.add(message[0])
            else:
                backlog.append(message)

    try:
        while True:
            try:
                request_id, kind, params = receive()
            except EOFError:  # the server is gone
                break
            if kind == "close":
                break
            if kind == "cancel":
                continue  # for a request already answered
            drain_pipe(force=True)  # a cancel sent while this request queued is in the pipe behind it
            if request_id in cancelled:
                cancelled.discard(request_id)
                conn.send((request_id, "error", CANCELLED))  # answered, so its slot counts it out
                continue
            try:
                if kind == "smoke":
                    from llm_assets.serving.smoke import run_smoke

                    conn.send((request_id, "done", in_background(run_smoke, llm, **params).to_dict()))
                    continue
                if params.get("stream"):
                    result = JOBS[kind](**params)(llm)
                else:
                    with _stops_when_cancelled(llm, request_id, cancelled, drain_pipe):
                        result = JOBS[kind](**params)(llm)
                if params.get("stream"):
                    for chunk in result:
                        drain_pipe()
                        if request_id in cancelled:  # the client went away: stop generating
                            break
                        conn.send((request_id, "chunk", chunk))
                    cancelled.discard(request_id)
                    conn.send((request_id, "done", None))
                else:
                    conn.send((request_id, "done", result))
            except Cancelled:
                cancelled.discard(request_id)
                conn.send((request_id, "error", CANCELLED))
            except Exception as exc:  # the request's error goes to its client; the model keeps serving
                conn.send((request_id, "error", error_payload(exc)))
    finally:
        llm.close()
