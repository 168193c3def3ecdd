"""ModelSlot: one loaded GGUF, living in its own model process (model_process.py).

Requests go to the process over a pipe and run there one at a time, first come first served. A request
enters the slot (in_flight + 1) before it is sent and leaves when its answer is complete; a replaced slot
closes its process only once in_flight is back to 0, so every request finishes on the model it started on.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import multiprocessing
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

from llm_assets.core.isolated import exit_description
from llm_assets.serving.schemas import ApiError
from llm_assets.serving.model_process import serve_model

log = logging.getLogger("llm_assets.serving")
# Not fork: the server has threads (event loop, follower) that a forked child would inherit half-way. A fork
# server is one clean process that has imported llama_cpp once; each model process forks from it, so a swap
# does not pay (on the cores that are serving) for a fresh interpreter and its imports.
_MP = multiprocessing.get_context("forkserver")
_MP.set_forkserver_preload(["llm_assets.serving.model_process", "llm_assets.serving.smoke", "llama_cpp"])


@dataclass(frozen=True)
class ModelInfo:
    """Which registry version a slot holds."""

    model: str
    version: int
    sha256: str
    path: str
    bytes: int
    uri: str | None = None
    recorded_accuracy: float | None = None
    scorer: str = "pet"  # the registry's scorer of the version: the bunny's smoke items fit only a 'pet' model
    serving: dict | None = None  # the version's serving defaults (system_prompt, json_schema, max_tokens)


class SlotError(RuntimeError):
    """The model process could not load the file, or died."""


class ModelSlot:
    def __init__(self, info: ModelInfo, n_ctx: int, n_threads: int | None, load_timeout_s: float = 600,
                 llama_repack: str = "auto", on_death: Callable[[], None] | None = None):
        self.info = info
        self._on_death = on_death  # told at once when the model process dies, so it is restarted without a poll
        self._conn, child = _MP.Pipe()
        self._process = _MP.Process(target=serve_model, args=(child, info.path, n_ctx, n_threads, llama_repack),
                                    daemon=True,
                                    name=f"model-{info.model}-v{info.version}")
        self._process.start()
        child.close()
        if not self._conn.poll(load_timeout_s):
            self._process.kill()
            raise SlotError(f"loading took longer than {load_timeout_s:g}s")
        try:
            _, kind, payload = self._conn.recv()
        except EOFError:
            self._process.join(5)
            raise SlotError(f"the model process loading {info.path} {exit_description(self._process.exitcode)} "
                            "(`llm-assets doctor` checks this machine's llama.cpp)") from None
        if kind != "ready":
            self._process.join(5)
            raise SlotError(payload["message"])
        self.n_ctx = payload["n_ctx"]
        self.llama_settings = payload["llama_settings"]  # what llama.cpp was asked for, for /health
        self.loaded_at = time.time()
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[concurrent.futures.Future, Callable | None]] = {}
        self._lock = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self._alive = True
        # Sends go through a queue and a thread of their own: a full pipe (the model process reads between
        # jobs) must never block the event loop, nor the reader that drains the other direction.
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send, name=f"sender-v{info.version}", daemon=True)
        self._reader = threading.Thread(target=self._read, name=f"reader-v{info.version}", daemon=True)
        self._sender.start()
        self._reader.start()

    def __repr__(self) -> str:
        return f"ModelSlot({self.info.model} v{self.info.version}, in_flight={self._in_flight})"

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def alive(self) -> bool:
        return self._alive

    def enter(self) -> None:
        with self._lock:
            if self._closed:
                raise SlotError(f"{self.info.model} v{self.info.version} is closed")
            self._in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._lock.notify_all()

    def submit(self, kind: str, params: dict, on_chunk: Callable | None = None) -> concurrent.futures.Future:
        """Run a job (model_process.JOBS, or "smoke") in the model process. The future holds the answer (None for
        a stream, whose chunks go to on_chunk on the reader thread) or the error."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if not self._alive:
                future.set_exception(SlotError(f"the process of {self.info.model} v{self.info.version} is gone"))
                return future
            request_id = next(self._ids)
            self._pending[request_id] = (future, on_chunk)
            self._outbox.put((request_id, kind, params))
        future.request_id = request_id
        return future

    def cancel(self, future: concurrent.futures.Future) -> None:
        """Stop a stream whose client went away (its future still completes)."""
        with self._lock:
            if self._alive and getattr(future, "request_id", None) in self._pending:
                self._outbox.put((future.request_id, "cancel", None))

    def _send(self) -> None:
        while (message := self._outbox.get()) is not None:
            try:
                self._conn.send(message)
            except Exception as exc:  # the process is gone (OSError), or a message cannot be pickled
                if not isinstance(exc, OSError) and message[0] is not None:
                    self._fail(message[0], SlotError(f"could not send the request: {type(exc).__name__}: {exc}"))
                    continue
                break

    def _fail(self, request_id: int, exc: Exception) -> None:
        with self._lock:
            future, _ = self._pending.pop(request_id, (None, None))
        if future is not None and not future.done():
            future.set_exception(exc)

    def _read(self) -> None:
        # Guarded: whatever goes wrong here, every pending request is failed below, never left hanging.
        try:
            self._read_messages()
        except Exception:
            log.exception("the reader of %s v%s failed", self.info.model, self.info.version)
            if self._process.is_alive():
                self._process.kill()
        with self._lock:  # the process ended: fail whatever it still owed
            self._alive = False
            pending, self._pending = self._pending, {}
        if not self._closed:
            log.error("the model process of %s v%s died (exit code %s)", self.info.model, self.info.version,
                      self._process.exitcode)
            if self._on_death is not None:
                self._on_death()
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(SlotError(f"the model process of {self.info.model} v{self.info.version} "
                                               "died"))

    def _read_messages(self) -> None:
        while True:
            try:
                request_id, kind, payload = self._conn.recv()
            except (EOFError, OSError):
                return
            with self._lock:
                future, on_chunk = self._pending.get(request_id, (None, None))
                if kind != "chunk":
                    self._pending.pop(request_id, None)
            if future is None:
                continue
            if kind == "chunk":
                try:
                    on_chunk(payload)
                except Exception:  # a consumer's error must not stop the reader: the request fails alone
                    log.exception("stream consumer failed")
                    self._fail(request_id, SlotError("the stream could not be delivered"))
            elif future.done():
                continue
            elif kind == "done":
                future.set_result(payload)
            else:
                future.set_exception(_error(payload))

    def close_when_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until no request is in flight, then end the model process. False on timeout (closed anyway:
        the caller decided it must go)."""
        with self._lock:
            idle = self._lock.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)
            self._closed = True
        self._outbox.put((None, "close", None))
        self._outbox.put(None)
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._sender.join(10)
        self._reader.join(10)
        self._conn.close()
        log.info("unloaded %s v%s", self.info.model, self.info.version)
        return idle


def _error(payload: dict) -> Exception:
    if payload.get("type") == "server_error" and payload.get("detail"):
        log.error("model process error: %s", payload["detail"])
    return ApiError(payload["status"], payload["message"], param=payload.get("param"), code=payload.get("code"),
                    type=payload.get("type", "server_error"))
