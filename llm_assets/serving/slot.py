"""ModelSlot: one loaded GGUF and the one thread that may touch it.

A llama_cpp.Llama is not thread-safe, so each slot owns a worker thread that runs its jobs one at a time,
first come first served. A request enters the slot (in_flight + 1) before it queues a job and leaves when it
is done; a retired slot closes its model only once in_flight is back to 0, so every request finishes on the
model it started on.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


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


def load_llama(path: str | Path, n_ctx: int, n_threads: int | None):
    """A Llama for serving: context clamped to the model's training context, quiet logs."""
    from llama_cpp import Llama

    from llm_assets.core.evaluation import _quiet_llama_log, default_threads

    threads = n_threads or default_threads(path)
    with _quiet_llama_log():
        probe = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                      n_batch=min(512, n_ctx), verbose=False)
        trained = probe._model.n_ctx_train() or n_ctx
        if trained >= n_ctx:
            return probe
        # Positions past the training context are noise: reopen with the model's own window.
        probe.close()
        return Llama(model_path=str(path), n_ctx=trained, n_threads=threads, n_threads_batch=threads,
                     n_batch=min(512, trained), verbose=False)


class SlotClosedError(RuntimeError):
    """A job was submitted to a slot whose model is already closed (a bug in the caller's accounting)."""


class ModelSlot:
    def __init__(self, info: ModelInfo, llm):
        self.info = info
        self.llm = llm
        self.n_ctx = llm.n_ctx()
        self.loaded_at = time.time()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._state = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self._worker = threading.Thread(target=self._run, name=f"model-{info.model}-v{info.version}", daemon=True)
        self._worker.start()

    def __repr__(self) -> str:
        return f"ModelSlot({self.info.model} v{self.info.version}, in_flight={self._in_flight})"

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def closed(self) -> bool:
        return self._closed

    def enter(self) -> None:
        with self._state:
            if self._closed:
                raise SlotClosedError(f"{self.info.model} v{self.info.version} is closed")
            self._in_flight += 1

    def leave(self) -> None:
        with self._state:
            self._in_flight -= 1
            self._state.notify_all()

    def submit(self, job: Callable[[Any], Any]) -> concurrent.futures.Future:
        """Run job(llm) on this slot's worker; the future holds its result or exception."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self._closed:
            future.set_exception(SlotClosedError(f"{self.info.model} v{self.info.version} is closed"))
            return future
        self._jobs.put((job, future))
        return future

    def close_when_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until no request is in flight, then close the model on its worker. False on timeout
        (the model is closed anyway: the caller decided it must go)."""
        with self._state:
            idle = self._state.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)
            self._closed = True
        self._jobs.put(None)
        self._worker.join()
        return idle

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                break
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job(self.llm))
            except BaseException as exc:  # handed to the waiting request, which answers with an error
                future.set_exception(exc)
        try:
            self.llm.close()
        except Exception:  # closing is best effort; the process keeps serving the other model
            log.exception("closing %s v%s failed", self.info.model, self.info.version)
        log.info("unloaded %s v%s", self.info.model, self.info.version)
