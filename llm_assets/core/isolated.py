"""Run a function in a child process, so native code that crashes (llama.cpp) takes down only the child.

A segfault in a C library ends the whole process that loaded it: inside a Dagster step or a pytest
worker that is an opaque signal with no word about what was running. `call_isolated` runs the
function in a child of a clean fork server, relays its progress, returns its result or re-raises its
exception, and turns a death by signal into `ChildCrashedError` with the caller's description.
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
import traceback
from typing import Any, Callable

from llm_assets.core.errors import PipelineError


class ChildCrashedError(PipelineError):
    """The child process died without an answer (a signal such as SIGSEGV, or a hard exit)."""

    def __init__(self, message: str, exitcode: int | None):
        self.exitcode = exitcode
        super().__init__(message)


def exit_description(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode} without a result"


def _child_main(conn, fn: Callable, kwargs: dict) -> None:
    def on_progress(*args) -> None:
        conn.send(("progress", args))

    try:
        result = fn(on_progress=on_progress, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        try:
            pickle.loads(pickle.dumps(exc))  # it must also unpickle there, or the parent's recv fails
        except Exception:  # send its text instead
            exc = PipelineError(f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
        conn.send(("error", exc))
        return
    conn.send(("result", result))


def call_isolated(fn: Callable[..., Any], kwargs: dict, describe: str,
                  on_progress: Callable[..., None] | None = None) -> Any:
    """fn(on_progress=..., **kwargs) in a spawned child; its result, its exception, or ChildCrashedError.

    fn must be importable by name (a module-level function) and kwargs picklable. `describe` says what
    ran, for the crash message (for example the GGUF, the variant and the llama.cpp settings).
    """
    ctx = multiprocessing.get_context("forkserver")
    # The fork server is one clean interpreter (never a fork of this process, whose threads and OpenMP pools
    # a fork would copy half-way) that imports the caller's __main__ and fn's module once; each call forks
    # from it, where a spawned child re-imports __main__ every time. Measured under load, with dagster in
    # __main__ as in a Dagster step: 0.6-0.9 s a call here vs 1.4-1.7 s spawned; 0.01-0.03 s with a light
    # __main__. A preload also hands the server this process's sys.path.
    ctx.set_forkserver_preload(["__main__", fn.__module__, __name__])
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_main, args=(sender, fn, kwargs), daemon=True)
    child.start()
    sender.close()  # so the receiver sees EOF when the child dies
    try:
        while True:
            try:
                kind, payload = receiver.recv()
            except EOFError:
                break
            if kind == "progress":
                if on_progress:
                    on_progress(*payload)
            elif kind == "error":
                raise payload
            else:
                return payload
    finally:
        receiver.close()
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
            child.join()
    raise ChildCrashedError(f"{describe}: the process running it {exit_description(child.exitcode)}",
                            child.exitcode)
