"""What every provider client shares: a provider-neutral machine state, and never a secret in a message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from llm_assets.core.errors import ConfigError, PipelineError

# ended: the machine finished on its own (the worker's own result travels through Pipes);
# failed: the provider says why (preempted, container never started); gone: no longer exists.
PENDING, RUNNING, ENDED, FAILED, GONE = "pending", "running", "ended", "failed", "gone"


@dataclass(frozen=True)
class MachineState:
    """What the provider says about one machine, in provider-neutral words."""

    status: str                  # pending | running | ended | failed | gone
    message: str = ""            # the provider's own words (status_msg, lastStatusChange, failureMessage)
    price_per_hour: Optional[float] = None  # as the provider reports it, when it does
    error: Optional[BaseException] = None   # for `failed`: the cause, as a llm_assets.core.failures class

    @property
    def phase(self) -> str:
        """The phase RemoteComputeBackend's loop understands."""
        return {PENDING: "pending", RUNNING: "running", ENDED: "succeeded", FAILED: "failed", GONE: "gone"}[
            self.status]


def scrub(text: str, secrets: Iterable[Optional[str]]) -> str:
    """`text` with every secret value replaced, for error messages built from provider answers."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class ProviderConfigError(ConfigError):
    """The provider refused what we asked (key, GPU type, image, quota): fatal, a retry asks the same.

    A ConfigError, so `llm_assets.core.failures` classifies it fatal (config); the message is built
    by our code from the provider's answer with secrets scrubbed, never from the request.
    """

    def __init__(self, message: str):
        self.field, self.value = "compute", None
        PipelineError.__init__(self, message)
