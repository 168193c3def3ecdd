"""ModelHolder: which slot answers new requests, swapped atomically.

A request takes the current slot (entering it) under a short lock; a swap replaces the reference under the
same lock, so every request lands on exactly one model and keeps it to the end. When two models do not fit
in memory, a swap pauses the holder instead: new requests wait (a short, bounded queue) while the old model
drains and the new one loads, and are released the moment the new one is installed.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from llm_assets.serving.slot import ModelSlot


class NoModelError(RuntimeError):
    """No model is loaded (none in production yet, or every load failed)."""


class BusyError(RuntimeError):
    """The waiting queue is full, or a request waited longer than allowed."""


class ModelHolder:
    def __init__(self, max_waiting: int = 256, wait_timeout_s: float = 120.0):
        self.max_waiting, self.wait_timeout_s = max_waiting, wait_timeout_s
        self._lock = threading.Condition()
        self._current: ModelSlot | None = None
        self._retiring: set[ModelSlot] = set()
        self._paused = False
        self._waiting = 0

    @property
    def current(self) -> ModelSlot | None:
        return self._current

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def paused(self) -> bool:
        return self._paused

    def loaded_bytes(self) -> int:
        """GGUF bytes of every model still open: the current one and those draining."""
        with self._lock:
            slots = ([self._current] if self._current else []) + list(self._retiring)
            return sum(s.info.bytes for s in slots if not s.closed)

    def try_acquire(self) -> ModelSlot | None:
        """The current slot, entered; None while a paused swap runs. NoModelError when there is none."""
        with self._lock:
            if self._paused:
                return None
            if self._current is None:
                raise NoModelError("no model is loaded: the registry has no loadable production version yet")
            self._current.enter()
            return self._current

    def acquire(self, timeout_s: float | None = None) -> ModelSlot:
        """Like try_acquire, but waits out a paused swap (up to `timeout_s`, default wait_timeout_s)."""
        deadline = time.monotonic() + (self.wait_timeout_s if timeout_s is None else timeout_s)
        with self._lock:
            if self._paused:
                if self._waiting >= self.max_waiting:
                    raise BusyError(f"{self._waiting} requests already wait for a model swap; retry shortly")
                self._waiting += 1
                try:
                    if not self._lock.wait_for(lambda: not self._paused, timeout=deadline - time.monotonic()):
                        raise BusyError("the model swap took longer than this request may wait; retry shortly")
                finally:
                    self._waiting -= 1
            if self._current is None:
                raise NoModelError("no model is loaded: the registry has no loadable production version yet")
            self._current.enter()
            return self._current

    def evict_if_idle(self) -> ModelSlot | None:
        """Forget the current slot if nothing runs on it, nothing waits for it and no swap holds it; the caller
        closes it. Checked and done under the lock requests enter by, so no request can slip onto it."""
        with self._lock:
            slot = self._current
            if slot is None or slot.in_flight or self._waiting or self._paused:
                return None
            self._current = None
            return slot

    def install(self, slot: ModelSlot) -> ModelSlot | None:
        """Make `slot` current; returns the old one, now retiring (the caller closes it when idle)."""
        with self._lock:
            old, self._current = self._current, slot
            if old is not None:
                self._retiring.add(old)
            return old

    def discard(self, dead: ModelSlot) -> None:
        """Forget a slot whose model process died (requests get 503 until a model is loaded again)."""
        with self._lock:
            if self._current is dead:
                self._current = None
        threading.Thread(target=dead.close_when_idle, args=(1,), daemon=True).start()

    def retire(self, old: ModelSlot, timeout_s: float | None = None) -> None:
        """Close a replaced slot once its in-flight requests are done (blocks until then)."""
        old.close_when_idle(timeout_s)
        with self._lock:
            self._retiring.discard(old)

    def wait_retired(self, timeout_s: float) -> bool:
        """Wait for every draining slot to close (before loading a model that only fits without them)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._retiring:
                    return True
            time.sleep(0.01)
        return False

    @contextmanager
    def paused_swap(self):
        """Hold new requests while the body swaps models; yields the current slot (None if none).

        The body unloads it when idle and installs the replacement (or the old model reloaded); waiting
        requests are released on exit either way.
        """
        with self._lock:
            self._paused = True
            old = self._current
        try:
            yield old
        finally:
            with self._lock:
                self._paused = False
                self._lock.notify_all()

    def take_current(self) -> ModelSlot | None:
        """Inside paused_swap: forget the current slot (it is being unloaded)."""
        with self._lock:
            old, self._current = self._current, None
            return old

    def close(self) -> None:
        with self._lock:
            slots = ([self._current] if self._current else []) + list(self._retiring)
            self._current = None
        for slot in slots:
            slot.close_when_idle(timeout_s=10)
