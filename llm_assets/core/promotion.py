"""Champion / challenger: should a registered version replace production? Pure logic, no dagster."""

from __future__ import annotations

from dataclasses import dataclass

from llm_assets.core.registry import VersionRecord


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def strict_accuracy(record: VersionRecord) -> float | None:
    value = (record.metrics or {}).get("strict_accuracy")
    return float(value) if value is not None else None


def decide_promotion(challenger: VersionRecord, champion: VersionRecord | None,
                     min_improvement: float = 0.0) -> PromotionDecision:
    """Promote a gate-passing candidate that beats production on the same benchmark version."""
    if challenger.status != "candidate" or not challenger.gate_passed:
        return PromotionDecision(False, f"v{challenger.version} is {challenger.status}, gate "
                                        f"{'passed' if challenger.gate_passed else 'not passed'}")
    acc = strict_accuracy(challenger)
    if champion is None:
        return PromotionDecision(True, f"v{challenger.version} passed the gate (strict accuracy {acc}) and nothing "
                                       f"is in production")
    if champion.benchmark_version != challenger.benchmark_version:
        return PromotionDecision(False, f"v{challenger.version} was measured on {challenger.benchmark_version}, "
                                        f"production v{champion.version} on {champion.benchmark_version}: "
                                        f"not comparable")
    best = strict_accuracy(champion) or 0.0
    if acc is None or acc < best + min_improvement:
        return PromotionDecision(False, f"v{challenger.version} strict accuracy {acc} does not beat production "
                                        f"v{champion.version} {best} by {min_improvement}")
    return PromotionDecision(True, f"v{challenger.version} strict accuracy {acc} >= production v{champion.version} "
                                   f"{best} + {min_improvement}")
