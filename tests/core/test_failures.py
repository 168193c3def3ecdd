"""Failure classification: which errors retry, which stop the run and say why."""

import socket

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from llm_assets.core import failures
from llm_assets.core.errors import ConfigError, DataFormatError, TrainingHealthError
from llm_assets.core.failures import FailureKind, classify


class _HttpError(Exception):
    def __init__(self, status_code):
        super().__init__(f"server said {status_code}")
        self.status_code = status_code


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which the classifier matches by name."""


@pytest.mark.parametrize("exc, reason", [
    (ConnectionResetError("peer reset"), "network"),
    (socket.timeout("read timed out"), "timeout"),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "network"),
    (_HttpError(503), "provider_unavailable"),
    (_HttpError(429), "provider_unavailable"),
    (ClientError({"Error": {"Code": "SlowDown", "Message": "reduce rate"}}, "PutObject"), "provider_unavailable"),
    (failures.ProviderQueueFullError("no H100 free"), "queue_full"),
    (failures.PreemptedError("spot instance reclaimed"), "preemption"),
    (failures.BootstrapError("image pull failed"), "bootstrap"),
    (failures.ComputeTimeoutError("no heartbeat for 600 s"), "timeout"),
])
def test_infrastructure_failures_are_retryable(exc, reason):
    verdict = classify(exc)
    assert verdict.kind is FailureKind.RETRYABLE and verdict.retryable
    assert verdict.reason == reason
    assert failures.REASONS[reason] == "retryable"


@pytest.mark.parametrize("exc, reason", [
    (DataFormatError("data.jsonl", 7, "not JSON"), "bad_data"),
    (ConfigError("learning_rate", -1.0, "must be > 0"), "config"),
    (TrainingHealthError("training loss is nan at step 20"), "training_health"),
    (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom"),
    (MemoryError(), "oom"),
    (_HttpError(401), "client_error"),
    (TypeError("unsupported operand"), "unclassified"),
])
def test_genuine_failures_are_fatal(exc, reason):
    verdict = classify(exc)
    assert verdict.kind is FailureKind.FATAL and not verdict.retryable
    assert verdict.reason == reason
    assert verdict.headline.startswith(f"FATAL ({reason}): {type(exc).__name__}")


def test_out_of_memory_retries_only_after_the_config_changed():
    exc = OutOfMemoryError("CUDA out of memory")
    assert not failures.is_retryable(exc)
    assert "lower batch_size" in classify(exc).message
    assert classify(exc, config_changed=True).reason == "oom_config_changed"
    assert failures.is_retryable(exc, config_changed=True)


def test_a_wrapped_network_error_is_still_retryable_and_names_the_outer_error():
    try:
        try:
            raise ConnectionRefusedError("connection refused")
        except ConnectionRefusedError as inner:
            raise RuntimeError("upload of checkpoint failed") from inner
    except RuntimeError as outer:
        verdict = classify(outer)
    assert verdict.reason == "network" and verdict.retryable
    assert "connection refused" in verdict.message


def test_every_reason_a_verdict_can_carry_is_declared():
    subclasses = [failures.TransientNetworkError, failures.ProviderUnavailableError,
                  failures.ProviderQueueFullError, failures.PreemptedError, failures.BootstrapError,
                  failures.ComputeTimeoutError]
    assert {cls.reason for cls in subclasses} <= set(failures.REASONS)
    assert all(issubclass(cls, failures.RetryableError) for cls in subclasses)
