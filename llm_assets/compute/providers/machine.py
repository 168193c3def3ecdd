"""What every provider client shares: a provider-neutral machine state, and never a secret in a message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

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
