"""The worker processes grammar.py compiles in: a small pool of long-lived `python -m` processes, each with a memory
cap, one job at a time; a job past its time limit has its worker killed and replaced. A cache of compiled grammars
and of refusals sits in front of them, so a schema sent again costs nothing."""

from __future__ import annotations

import atexit
import collections
import hashlib
import importlib
import json
import os
import queue
import subprocess
import sys
import threading

from llm_assets.serving.grammar import GrammarRejected, Job, api_error, build_grammar

WORKER_MEMORY_BYTES = 1 << 30  # on top of what a worker maps after importing llama.cpp


def _worker_main(read_fd: int, write_fd: int, memory_bytes: int) -> None:
    """A worker's loop: (job, max_grammar_bytes) in, ("ok", text) or ("rejected", code, message, fatal) out."""
    from multiprocessing.connection import Connection

    importlib.import_module("llama_cpp.llama_grammar")  # before "ready": a job's time is its compile alone
    _cap_memory(memory_bytes)  # after: what llama.cpp's library maps (GBs in some GPU builds) is not the job's

    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    outbox.send(("ready",))
    while True:
        try:
            message = inbox.recv()
        except EOFError:  # the server is gone
            return
        if message is None:
            return
        job, max_grammar_bytes = message
        try:
            outbox.send(("ok", build_grammar(Job(*job), max_grammar_bytes)))
        except GrammarRejected as exc:
            outbox.send(("rejected", exc.code, exc.message, False))
        except MemoryError:  # the heap may be left in pieces: a fresh worker takes this one's place
            outbox.send(("rejected", "grammar_too_large", f"{job[2]}: compiling its grammar needs more than "
                         f"{memory_bytes >> 20} MiB", True))
            return


def _cap_memory(memory_bytes: int) -> None:
    import resource

    try:
        mapped = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
                      if line.startswith("VmSize:"))
    except (OSError, StopIteration):
        return  # not Linux: the time limit still bounds a runaway compile
    resource.setrlimit(resource.RLIMIT_AS, (mapped + memory_bytes, resource.RLIM_INFINITY))


class _Worker:
    """One worker: a plain `python -m llm_assets.serving.grammar_pool` with two pipes. Not multiprocessing's spawn (it
    re-imports the server's main module in every child) nor the model processes' fork server (its preloads are
    another module's business); forking the threaded server itself would be unsafe."""

    def __init__(self, memory_bytes: int):
        from multiprocessing.connection import Connection

        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(to_child), str(from_child), str(memory_bytes)],
            pass_fds=(to_child, from_child), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self.outbox = Connection(from_parent, readable=False)
        self.inbox = Connection(to_parent, writable=False)
        self.ready = False

    def wait_ready(self, timeout_s: float) -> None:
        if not self.ready:
            if not self.inbox.poll(timeout_s):
                raise TimeoutError(f"a grammar worker did not start within {timeout_s:g}s")
            self.inbox.recv()
            self.ready = True

    def stop(self, kill: bool) -> None:
        if not kill:
            try:
                self.outbox.send(None)
            except OSError:
                kill = True
        if kill:
            self.process.kill()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.outbox.close()
        self.inbox.close()


class _Lru:
    """Compiled grammars and rejections by job hash, least recently used dropped first, bounded in bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self.entries: collections.OrderedDict = collections.OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str):
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        return None

    def put(self, key: str, value: tuple) -> None:
        size = sum(len(v) for v in value if isinstance(v, str)) + len(key)
        if size > self.max_bytes:
            return
        with self.lock:
            if key in self.entries:
                return
            self.entries[key] = value
            self.bytes += size
            while self.bytes > self.max_bytes:
                old_key, old = self.entries.popitem(last=False)
                self.bytes -= sum(len(v) for v in old if isinstance(v, str)) + len(old_key)


class GrammarPool:
    """Long-lived worker processes compiling grammars one job each at a time, and the cache in front of them."""

    def __init__(self, workers: int = 2, memory_bytes: int = WORKER_MEMORY_BYTES, cache_bytes: int = 16 << 20,
                 start_timeout_s: float = 120.0):
        self.workers, self.memory_bytes, self.start_timeout_s = workers, memory_bytes, start_timeout_s
        self.cache = _Lru(cache_bytes)
        self.stats = collections.Counter()
        self._idle: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        for _ in range(workers):
            self._idle.put(_Worker(memory_bytes))

    def compile(self, job: Job, max_grammar_bytes: int, timeout_s: float) -> str:
        """The grammar text of a checked job; ApiError(400) for a schema refused (cached), 503 when every
        worker stays busy for timeout_s."""
        key = hashlib.sha256(json.dumps([*job, max_grammar_bytes]).encode()).hexdigest()
        hit = self.cache.get(key)
        if hit is None:
            self._count("compiled")
            hit = self._run(job, max_grammar_bytes, timeout_s)
            self.cache.put(key, hit)  # a refusal too: the same bomb sent again costs nothing
        else:
            self._count("cache_hits")
        if hit[0] == "ok":
            return hit[1]
        self._count("rejected")
        raise api_error(400, hit[2], hit[1])

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def _run(self, job: Job, max_grammar_bytes: int, timeout_s: float) -> tuple:
        try:
            worker = self._idle.get(timeout=timeout_s)  # the wait for a worker is bounded too
        except queue.Empty:
            raise api_error(503, f"all {self.workers} grammar workers are busy; retry shortly", "busy",
                             type="server_error", headers={"Retry-After": "1"}) from None
        healthy = False
        try:
            try:
                worker.wait_ready(self.start_timeout_s)
                worker.outbox.send((tuple(job), max_grammar_bytes))
            except (TimeoutError, OSError, EOFError) as exc:  # the worker, not the schema: nothing to cache
                raise api_error(503, f"no grammar worker could take the schema ({exc or type(exc).__name__}); "
                                 "retry shortly", "busy", type="server_error", headers={"Retry-After": "1"}) from None
            if not worker.inbox.poll(timeout_s):
                self._count("timeouts")
                return ("rejected", "grammar_timeout", f"{job[2]}: its grammar took longer than {timeout_s:g}s "
                        "to compile")
            try:
                reply = worker.inbox.recv()
            except EOFError:
                return ("rejected", "invalid_schema", f"{job[2]}: compiling its grammar ended the grammar worker "
                        f"(exit code {worker.process.wait(5)})")
            healthy = not (reply[0] == "rejected" and reply[3])
            return tuple(reply[:3])
        finally:
            self._give_back(worker, healthy)

    def _give_back(self, worker: _Worker, healthy: bool) -> None:
        with self._lock:
            closed = self._closed
            if healthy and not closed:
                self._idle.put(worker)
                return
            if not closed:  # the replacement starts now and loads while the caller answers its client
                self.stats["replaced"] += 1  # under the lock already
                self._idle.put(_Worker(self.memory_bytes))
        worker.stop(kill=not healthy)

    def pids(self) -> list[int]:
        """The idle workers' process ids (for tests and health output)."""
        with self._idle.mutex:
            return [w.process.pid for w in self._idle.queue]

    def close(self) -> None:
        with self._lock:
            self._closed = True
        while True:
            try:
                self._idle.get_nowait().stop(kill=False)
            except queue.Empty:
                return


_shared: GrammarPool | None = None
_shared_lock = threading.Lock()


def shared_pool(workers: int = 2) -> GrammarPool:
    """The process's default pool, started on first use and closed at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = GrammarPool(workers)
            atexit.register(_shared.close)
        return _shared


if __name__ == "__main__":  # a worker started by _Worker: its pipes' descriptors and memory cap
    _worker_main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
