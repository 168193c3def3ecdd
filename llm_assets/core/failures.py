"""Failure classification: should a failed step be retried, or stop and say why?

Public API (stable; compute backends map provider errors onto it):

- ``classify(exc, *, config_changed=False) -> Classification``: ``kind`` is
  ``RETRYABLE`` or ``FATAL``, ``reason`` a short category (see ``REASONS``),
  ``message`` one line naming the cause, ``headline`` the line to put at the top
  of a run's log.
- ``is_retryable(exc) -> bool``: shorthand for ``classify(exc).retryable``.
- ``exit_status(verdict)`` / ``error_from_exit(code, who)``: a worker's verdict as
  its exit status (75 retryable, 1 fatal) and back, the one mapping every
  backend uses where it sees an exit status instead of a Pipes message.
- Exception classes to raise (or to wrap a provider's errors in) when the cause
  is known. Retryable: ``TransientNetworkError``, ``ProviderUnavailableError``
  (5xx, throttling), ``ProviderQueueFullError`` (no capacity / queue full),
  ``PreemptedError`` (spot instance reclaimed), ``BootstrapError`` (the worker
  never came up), ``ComputeTimeoutError``. All derive from ``RetryableError``.
  Fatal: ``OutOfMemoryError`` (fatal unless the config changed since it
  happened), ``MaxRuntimeExceededError``, ``TerminationUnconfirmedError`` (a machine that may still be
  billing), ``DuplicateJobError``, plus the pipeline's own ``ConfigError``, ``DataFormatError``,
  ``TrainingHealthError`` ... in ``llm_assets.core.errors``.

Rules, in order:
1. An exception raised as one of the classes above classifies as its class.
2. The pipeline's own errors (``ConfigError``, ``DataFormatError``,
   ``TrainingHealthError`` = non-finite loss / divergence, artifact integrity,
   unsupported architecture) are fatal: retrying the same inputs repeats them.
3. Out-of-memory (``MemoryError``, torch's ``OutOfMemoryError``, "CUDA out of
   memory" text) is fatal with an unchanged config, retryable when
   ``config_changed`` (a smaller batch or rank may fit).
4. Network and timeout errors (``ConnectionError``, ``TimeoutError``,
   ``socket.timeout``, botocore's endpoint/connect/read-timeout errors,
   requests/urllib3/httpx connection errors) are retryable.
5. HTTP statuses found on the exception (``status_code``, ``status``,
   ``response.status_code`` or botocore's ``ResponseMetadata.HTTPStatusCode``):
   408/429/5xx retryable, other 4xx fatal (credentials, bad request).
   botocore error codes such as ``SlowDown``/``ServiceUnavailable`` are retryable.
6. The chain (``__cause__``/``__context__``) is followed, so a wrapped network
   error is still retryable.
7. Anything else is fatal with reason ``unclassified``: a programming error
   should not burn GPU hours three times. Map a transient provider error onto a
   ``RetryableError`` subclass to have it retried.

Never imports dagster or torch; classes are matched by name where a library
would otherwise have to be imported.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass

from llm_assets.core.errors import (
    ArtifactIntegrityError, ConfigError, DataFormatError, PipelineError, TrainingHealthError,
    UnsupportedArchitectureError,
)

REASONS = {
    "network": "retryable", "provider_unavailable": "retryable", "queue_full": "retryable",
    "preemption": "retryable", "bootstrap": "retryable", "timeout": "retryable",
    "oom_config_changed": "retryable",
    "bad_data": "fatal", "config": "fatal", "training_health": "fatal", "oom": "fatal",
    "artifact_integrity": "fatal", "client_error": "fatal", "unclassified": "fatal",
    "max_runtime": "fatal", "termination_unconfirmed": "fatal", "duplicate_job": "fatal",
}


class FailureKind(str, enum.Enum):
    RETRYABLE = "retryable"
    FATAL = "fatal"


@dataclass(frozen=True)
class Classification:
    """The verdict on one failure."""

    kind: FailureKind
    reason: str
    message: str

    @property
    def retryable(self) -> bool:
        return self.kind is FailureKind.RETRYABLE

    @property
    def headline(self) -> str:
        return f"{self.kind.value.upper()} ({self.reason}): {self.message}"


class RetryableError(PipelineError):
    """An infrastructure failure worth retrying; ``reason`` is its category in ``REASONS``."""

    reason = "network"


class TransientNetworkError(RetryableError):
    reason = "network"


class ProviderUnavailableError(RetryableError):
    """The compute provider answered 5xx or throttled us."""

    reason = "provider_unavailable"


class ProviderQueueFullError(RetryableError):
    """No capacity right now: the provider's queue is full or no GPU of the kind is free."""

    reason = "queue_full"


class PreemptedError(RetryableError):
    """The instance was reclaimed (spot / interruptible); training resumes from the last checkpoint."""

    reason = "preemption"


class BootstrapError(RetryableError):
    """The remote worker never started (image pull, SSH, pod scheduling)."""

    reason = "bootstrap"


class ComputeTimeoutError(RetryableError):
    reason = "timeout"


class MaxRuntimeExceededError(PipelineError):
    """A stage ran past its max_runtime: the machine was stopped. Fatal: the same work would run as long again."""


class TerminationUnconfirmedError(PipelineError):
    """A machine could not be confirmed terminated: it may still be billing. Fatal, and the message names it."""


class DuplicateJobError(PipelineError):
    """The same work is running under another live run: launching it again would pay twice."""


class OutOfMemoryError(PipelineError):
    """Ran out of memory; the same config would again, so it is fatal unless the config changed."""


_FATAL_OWN = (
    (DataFormatError, "bad_data"), (ConfigError, "config"), (UnsupportedArchitectureError, "config"),
    (TrainingHealthError, "training_health"), (ArtifactIntegrityError, "artifact_integrity"),
    (MaxRuntimeExceededError, "max_runtime"), (TerminationUnconfirmedError, "termination_unconfirmed"),
    (DuplicateJobError, "duplicate_job"),
)
_NETWORK_NAMES = {
    "ConnectionError", "ConnectionResetError", "ConnectionRefusedError", "ConnectionAbortedError",
    "BrokenPipeError", "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
    "ConnectTimeout", "ReadTimeout", "ProtocolError", "NewConnectionError", "RemoteDisconnected",
    "IncompleteRead", "ConnectError", "NetworkError", "ChunkedEncodingError",
}
_TIMEOUT_NAMES = {"TimeoutError", "timeout", "Timeout", "TimeoutException", "DeadlineExceeded"}
_OOM_NAMES = {"MemoryError", "OutOfMemoryError"}
_RETRYABLE_AWS_CODES = {
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
}


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _http_status(exc: BaseException) -> int | None:
    for candidate in (getattr(exc, "status_code", None), getattr(exc, "status", None),
                      getattr(getattr(exc, "response", None), "status_code", None)):
        if isinstance(candidate, int) and 100 <= candidate <= 599:
            return candidate
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(code, int):
            return code
    return None


def _aws_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"


def _classify_one(exc: BaseException, config_changed: bool) -> Classification | None:
    message = _one_line(exc)
    if isinstance(exc, RetryableError):
        return Classification(FailureKind.RETRYABLE, exc.reason, message)
    for cls, reason in _FATAL_OWN:
        if isinstance(exc, cls):
            return Classification(FailureKind.FATAL, reason, message)
    names = _names(exc)
    if names & _OOM_NAMES or "out of memory" in str(exc).lower():
        if config_changed:
            return Classification(FailureKind.RETRYABLE, "oom_config_changed", message)
        return Classification(FailureKind.FATAL, "oom",
                              f"{message} (same config would run out of memory again: lower batch_size, "
                              f"max_length or lora_r)")
    if names & _TIMEOUT_NAMES:
        return Classification(FailureKind.RETRYABLE, "timeout", message)
    if names & _NETWORK_NAMES:
        return Classification(FailureKind.RETRYABLE, "network", message)
    if _aws_code(exc) in _RETRYABLE_AWS_CODES:
        return Classification(FailureKind.RETRYABLE, "provider_unavailable", message)
    status = _http_status(exc)
    if status is not None:
        if status in (408, 429) or status >= 500:
            return Classification(FailureKind.RETRYABLE, "provider_unavailable", f"{message} (HTTP {status})")
        if 400 <= status < 500:
            return Classification(FailureKind.FATAL, "client_error", f"{message} (HTTP {status})")
    return None


def classify(exc: BaseException, *, config_changed: bool = False) -> Classification:
    """Retryable or fatal, with a category and a one-line message naming the cause.

    Walks ``__cause__``/``__context__`` (outermost first) and returns the first
    verdict; an exception nothing recognises is fatal (``unclassified``).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        verdict = _classify_one(current, config_changed)
        if verdict is not None:
            return verdict
        current = current.__cause__ or current.__context__
    return Classification(FailureKind.FATAL, "unclassified", _one_line(exc))


def is_retryable(exc: BaseException, *, config_changed: bool = False) -> bool:
    return classify(exc, config_changed=config_changed).retryable


# The worker's exit status carries its verdict where a backend sees no Pipes message (75 = EX_TEMPFAIL).
EXIT_RETRYABLE = 75
EXIT_FATAL = 1


def exit_status(verdict: Classification) -> int:
    """The exit status a worker ends with after a failure: what error_from_exit reads back."""
    return EXIT_RETRYABLE if verdict.retryable else EXIT_FATAL


def error_from_exit(code: int | None, who: str, detail: str = "") -> BaseException | None:
    """A worker's exit status as a classifiable error (None for 0): killed by a signal (the OOM killer, a
    lost machine) and EXIT_RETRYABLE are retryable, any other status fatal."""
    if code == 0:
        return None
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return PreemptedError(f"{who} was killed by {name}{detail}")
    if code == EXIT_RETRYABLE:
        return RetryableError(f"{who} exited {code}, a retryable failure{detail}")
    return PipelineError(f"{who} exited {code if code is not None else 'without an exit status'}{detail}")
