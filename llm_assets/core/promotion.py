"""Champion / challenger: should a registered version replace production? Pure logic, no dagster."""

from __future__ import annotations

from dataclasses import dataclass

from typing import Callable

from llm_assets.core.registry import (
    NO_PRODUCTION, PRODUCTION, ModelRegistry, RegistryConflictError, RegistryError, RegistryNotFoundError,
    VersionRecord,
)

FIRST_PROMOTION_REASON = "make demo: first gated version, nothing in production"
# What a first promotion needs when the caller names no model gate: the bunny's. `make demo` passes the model
# file's gate threshold, the floor no run's config can lower.
FIRST_PROMOTION_MIN_ACCURACY: float = 0.95


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def gate_value(record: VersionRecord) -> float | None:
    """The version's gate metric (strict accuracy for the bunny), the figure promotion compares."""
    metrics = record.metrics or {}
    value = metrics.get(metrics.get("gate_metric", "strict_accuracy"))
    return float(value) if value is not None else None


def gate_metric_label(record: VersionRecord) -> str:
    """The name of the version's gate metric, as a message says it ("strict accuracy", "exact match")."""
    return (record.metrics or {}).get("gate_metric", "strict_accuracy").replace("_", " ")


def decide_promotion(challenger: VersionRecord, champion: VersionRecord | None,
                     min_improvement: float = 0.0) -> PromotionDecision:
    """Promote a gate-passing candidate that beats production on the same benchmark version."""
    if challenger.status != "candidate" or not challenger.gate_passed:
        return PromotionDecision(False, f"v{challenger.version} is {challenger.status}, gate "
                                        f"{'passed' if challenger.gate_passed else 'not passed'}")
    acc, label = gate_value(challenger), gate_metric_label(challenger)
    if champion is None:
        return PromotionDecision(True, f"v{challenger.version} passed the gate ({label} {acc}) and nothing "
                                       f"is in production")
    if champion.benchmark_version != challenger.benchmark_version:
        return PromotionDecision(False, f"v{challenger.version} was measured on {challenger.benchmark_version}, "
                                        f"production v{champion.version} on {champion.benchmark_version}: "
                                        f"not comparable")
    best = gate_value(champion) or 0.0
    if acc is None or acc < best + min_improvement:
        return PromotionDecision(False, f"v{challenger.version} {label} {acc} does not beat production "
                                        f"v{champion.version} {best} by {min_improvement}")
    return PromotionDecision(True, f"v{challenger.version} {label} {acc} >= production v{champion.version} "
                                   f"{best} + {min_improvement}")


@dataclass(frozen=True)
class FirstPromotion:
    """What promote_first_gated did: the version it promoted (None if none), the production version after it
    (None if none), why, and the one command a person runs next when it left the choice to them."""

    promoted: VersionRecord | None
    production: int | None
    message: str
    command: str | None = None


def promote_first_gated(registry: ModelRegistry, model: str, run_id: str, actor: str = "make demo",
                        verify: Callable[[str, str], bool] | None = None,
                        min_accuracy: float = FIRST_PROMOTION_MIN_ACCURACY) -> FirstPromotion:
    """Promote the version `run_id` registered if it passed the gate and nothing is in production yet.

    `make demo` runs without the daemon, so promotion_sensor never sees its model and a new user's server would
    have nothing to serve. This fills only an empty production slot: a version the gate rejected is never
    promoted, nor one below `min_accuracy` that passed only a gate its run's config lowered, and an existing
    production version is never replaced behind its owner's back (that choice is
    theirs, through `llm-assets registry promote`). The promotion itself is registry.promote, the call
    production_model makes, with `expected_current` so a sensor that promoted meanwhile wins.
    """
    try:
        mine = [v for v in registry.list_versions(model) if v.dagster_run_id == run_id]
    except RegistryNotFoundError:
        mine = []
    current = _production(registry, model)
    production = current.version if current else None
    if not mine:
        return FirstPromotion(None, production, f"run {run_id} registered no version of {model}; nothing promoted")
    version = max(mine, key=lambda v: v.version)
    gate = decide_promotion(version, None)  # no champion: passes exactly when the gate passed
    if not gate.promote:
        return FirstPromotion(None, production, f"{model} v{version.version} is not promotable ({gate.reason}: "
                              f"{version.gate_reason or 'no gate reason recorded'}); nothing promoted")
    accuracy = float(gate_value(version) or 0.0)
    if accuracy < min_accuracy:
        return FirstPromotion(None, production, f"{model} v{version.version} passed its run's gate, but its "
                              f"{gate_metric_label(version)} {accuracy:.3f} is below the {min_accuracy} a first "
                              "promotion needs (the run's threshold was lowered); nothing promoted")
    if current is None:
        try:
            promoted = registry.promote(model, version.version, actor=actor, reason=FIRST_PROMOTION_REASON,
                                        verify=verify, expected_current=NO_PRODUCTION)
            return FirstPromotion(promoted, promoted.version, f"promoted {model} v{version.version} to production "
                                                              f"({gate.reason})")
        except RegistryConflictError:
            current = _production(registry, model)  # someone else promoted meanwhile
            if current.version == version.version:
                return FirstPromotion(None, current.version, f"{model} v{version.version} was promoted to "
                                                             f"production meanwhile")
        except RegistryError as exc:  # e.g. its GGUF no longer matches the recorded sha256
            return FirstPromotion(None, None, f"{model} v{version.version} was not promoted: {exc}")
    return FirstPromotion(None, current.version, f"{model} v{version.version} passed the gate; production is "
                          f"already v{current.version}, left as it is. To replace it:",
                          f'llm-assets registry promote {model} {version.version} --reason "passed the gate in '
                          f'make demo"')


def _production(registry: ModelRegistry, model: str) -> VersionRecord | None:
    try:
        return registry.resolve(model, PRODUCTION)
    except RegistryNotFoundError:
        return None
