"""What a stage cost: hourly price x wall time, per training example, and the per-run budget cap.

Pure arithmetic on numbers the backend supplies (the provider's reported price where it has one,
otherwise the backend's configured `hourly_price_usd`); the clock is injectable so tests need no sleep.
`prior_cost_usd` is what the run's other launches (earlier attempts, other stages) spent already
(llm_assets.compute.run_budget), so the cap is one per run, not one per launch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from llm_assets.core.errors import PipelineError


class BudgetExceededError(PipelineError):
    """The run's cost passed its cap; the job was stopped. Fatal: a retry would spend again."""

    def __init__(self, cost_usd: float, cap_usd: float, backend: str):
        self.cost_usd, self.cap_usd = cost_usd, cap_usd
        super().__init__(f"{backend}: cost ${cost_usd:.4f} exceeded the budget cap max_cost_usd=${cap_usd:.4f}; "
                         f"the job was stopped (raise max_cost_usd or pick a cheaper machine)")


@dataclass
class CostMeter:
    """Started when the machine is asked for; `cost()` grows with wall time at the hourly price."""

    backend: str
    hourly_price_usd: float
    max_cost_usd: Optional[float] = None
    started_at: float = field(default_factory=time.time)
    clock: Callable[[], float] = time.time
    prior_cost_usd: float = 0.0  # the run's other launches

    def seconds(self) -> float:
        return max(0.0, self.clock() - self.started_at)

    def cost(self) -> float:
        """This launch's cost."""
        return self.hourly_price_usd * self.seconds() / 3600.0

    def run_cost(self) -> float:
        """The run's cost: this launch plus the others."""
        return self.prior_cost_usd + self.cost()

    def check_budget(self) -> None:
        """Raise BudgetExceededError once the run's cost is at or over the cap (no cap: never)."""
        if self.max_cost_usd is not None and self.run_cost() >= self.max_cost_usd:
            raise BudgetExceededError(self.run_cost(), self.max_cost_usd, self.backend)

    def fraction_used(self) -> Optional[float]:
        return None if not self.max_cost_usd else self.run_cost() / self.max_cost_usd

    def seconds_until_cap(self) -> Optional[float]:
        """Wall time left before the cap is reached (None: no cap, or a free machine)."""
        if self.max_cost_usd is None or self.hourly_price_usd <= 0:
            return None
        left = max(0.0, self.max_cost_usd - self.prior_cost_usd)
        return max(0.0, left / self.hourly_price_usd * 3600.0 - self.seconds())

    def report(self, training_examples: Optional[int] = None) -> dict:
        """The cost figures every run records as metadata."""
        cost = self.cost()
        figures = {"compute_backend": self.backend, "compute_seconds": round(self.seconds(), 2),
                   "hourly_price_usd": float(self.hourly_price_usd), "cost_usd": round(cost, 6)}
        if training_examples:
            figures["cost_per_training_example_usd"] = cost / training_examples
        if self.max_cost_usd is not None:
            figures["max_cost_usd"] = float(self.max_cost_usd)
            figures["run_cost_usd"] = round(self.run_cost(), 6)
        return figures
