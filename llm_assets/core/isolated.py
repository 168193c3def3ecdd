"""Run a function in a child process, so native code that crashes (llama.cpp) takes down only the child.

A segfault in a C library ends the whole process that loaded it: inside a Dagster step or a pytest
worker that is an opaque signal with no word about what was running. `call_isolated` runs the
function in a fresh interpreter (`python -m llm_assets.core.isolated`), relays its progress, returns
its result or re-raises its exception, and turns a death by signal into `ChildCrashedError` with the
caller's description.

Not multiprocessing: its spawn and forkserver children re-import the caller's `__main__`, which costs
1.4-1.7 s a call in a Dagster step (measured) and breaks scripts without an `if __name__` guard; a plain
interpreter that imports only the function's module starts in about 0.2 s.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import subprocess
import sys
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


def call_isolated(fn: Callable[..., Any], kwargs: dict, describe: str,
                  on_progress: Callable[..., None] | None = None) -> Any:
    """fn(on_progress=..., **kwargs) in a child interpreter; its result, its exception, or ChildCrashedError.

    fn must be importable by name (a module-level function outside `__main__`) and kwargs picklable.
    `describe` says what ran, for the crash message (for example the GGUF, the variant and the settings).
    The child's stderr is this process's, so its messages land in the same log.
    """
    if fn.__module__ == "__main__" or "<locals>" in fn.__qualname__:
        raise ValueError(f"{fn.__qualname__} must be a module-level function of an importable module")
    answers, child_end = os.pipe()
    try:
        child = subprocess.Popen([sys.executable, "-m", __name__, str(child_end)], stdin=subprocess.PIPE,
                                 pass_fds=(child_end,))
    finally:
        os.close(child_end)  # the child holds its own copy; EOF here once it exits
    try:
        with child.stdin:  # the function's module path comes first, so the call can be unpickled there
            pickle.dump(list(sys.path), child.stdin)
            pickle.dump((f"{fn.__module__}:{fn.__qualname__}", kwargs), child.stdin)
    except BrokenPipeError:  # it died before reading: the exit status below says how
        pass
    try:
        with os.fdopen(answers, "rb") as inbox:
            while True:
                try:
                    kind, payload = pickle.load(inbox)
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
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    raise ChildCrashedError(f"{describe}: the process running it {exit_description(child.returncode)}",
                            child.returncode)


def _child_main(answer_fd: int) -> None:
    sys.path[:] = pickle.load(sys.stdin.buffer)
    with os.fdopen(answer_fd, "wb") as outbox:
        def send(kind: str, payload) -> None:
            pickle.dump((kind, payload), outbox)
            outbox.flush()

        try:
            target, kwargs = pickle.load(sys.stdin.buffer)
            module, _, qualname = target.partition(":")
            fn = importlib.import_module(module)
            for part in qualname.split("."):
                fn = getattr(fn, part)
            result = fn(on_progress=lambda *args: send("progress", args), **kwargs)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
            if not isinstance(exc, PipelineError):  # an unexpected one: its traceback goes to the log
                traceback.print_exc()
            try:
                pickle.loads(pickle.dumps(exc))  # it must also unpickle there, or the parent's load fails
            except Exception:  # send its text instead
                exc = PipelineError(f"{type(exc).__name__}: {exc}")
            send("error", exc)
            return
        send("result", result)


if __name__ == "__main__":
    _child_main(int(sys.argv[1]))
