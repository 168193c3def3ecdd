"""The accuracy gate: may a GGUF variant of the fine-tuned model be deployed?

A variant passes when its strict accuracy on the benchmark reaches the
threshold AND beats the untuned baseline (a task the base model already solves
needs no fine-tune, and a fine-tune that does no better is not worth serving).
Pure: it reads an evaluation report (see evaluation.evaluate_variants) and
returns a verdict with a reason a person can act on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from llm_assets.core.errors import ConfigError

SMALLEST_PASSING = "smallest_passing"


@dataclass(frozen=True)
class GateResult:
    passed: bool
    variant: str | None  # the deployable variant, or the one judged / the best one when failing
    strict_accuracy: float | None
    baseline_strict_accuracy: float | None
    threshold: float
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def validate_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ConfigError("threshold", threshold, "must be a number between 0 and 1 (a strict accuracy)")
    return float(threshold)


def _failure(name: str, acc: float, threshold: float, baseline: float | None) -> str | None:
    """Why one variant fails, or None when it passes."""
    if acc < threshold:
        return f"{name} strict accuracy {acc:.3f} < {threshold:g}"
    if baseline is not None and acc <= baseline:
        return f"{name} strict accuracy {acc:.3f} does not beat baseline {baseline:.3f}"
    return None


def evaluate_gate(report: dict, threshold: float = 0.95, deployable: str = SMALLEST_PASSING) -> GateResult:
    """Judge `report["variants"]` against the threshold and `report["baseline"]`.

    deployable="smallest_passing" picks the smallest file among passing
    variants; a variant name judges that variant alone.
    """
    threshold = validate_threshold(threshold)
    variants: dict[str, dict] = report.get("variants") or {}
    base = report.get("baseline")
    baseline = base["scores"]["strict_accuracy"] if base else None
    accuracy = {name: v["scores"]["strict_accuracy"] for name, v in variants.items()}

    def result(passed: bool, name: str | None, reason: str) -> GateResult:
        return GateResult(passed, name, accuracy.get(name), baseline, threshold, reason)

    if not isinstance(deployable, str) or not deployable:
        raise ConfigError("deployable", deployable, f"must be {SMALLEST_PASSING!r} or a variant name")
    if deployable != SMALLEST_PASSING:
        if deployable not in variants:
            raise ConfigError("deployable", deployable,
                              f"not an evaluated variant; evaluated: {', '.join(variants) or 'none'}")
        why = _failure(deployable, accuracy[deployable], threshold, baseline)
        return result(why is None, deployable, why or _pass_reason(deployable, accuracy[deployable], threshold,
                                                                    baseline))
    if not variants:
        return result(False, None, "no variant was evaluated")

    passing = [n for n in variants if _failure(n, accuracy[n], threshold, baseline) is None]
    if passing:
        # Smallest file wins; equal sizes go to the more accurate, then the name, so the pick is stable.
        name = min(passing, key=lambda n: (variants[n]["file_size_bytes"], -accuracy[n], n))
        return result(True, name, _pass_reason(name, accuracy[name], threshold, baseline)
                      + f"; smallest of {len(passing)} passing")
    best = max(variants, key=lambda n: (accuracy[n], -variants[n]["file_size_bytes"]))
    listing = ", ".join(f"{n} {a:.3f}" for n, a in accuracy.items())
    against = f"threshold {threshold:g}" + (f", baseline {baseline:.3f}" if baseline is not None else "")
    return result(False, best, f"no variant passes ({against}): {listing}")


def _pass_reason(name: str, acc: float, threshold: float, baseline: float | None) -> str:
    beats = f" and beats baseline {baseline:.3f}" if baseline is not None else " (no baseline evaluated)"
    return f"{name} strict accuracy {acc:.3f} >= {threshold:g}{beats}"
