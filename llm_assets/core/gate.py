"""The accuracy gate: may a GGUF variant of the fine-tuned model be deployed?

A variant passes when its gate metric (the model file's gate.metric, strict accuracy for the bunny) on the
benchmark reaches the threshold AND beats the untuned baseline by the model's margin (a task the base model
already solves needs no fine-tune, and a fine-tune that does no better is not worth serving).
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
    metric: str  # the scorer's metric the gate reads (the model file's gate.metric)
    value: float | None  # the variant's metric
    baseline_value: float | None  # the untuned base model's, when it was evaluated and compared
    threshold: float
    margin: float | None  # how much the variant must beat the baseline by; None: not compared
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def validate_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ConfigError("threshold", threshold, "must be a number between 0 and 1 (a score such as accuracy)")
    return float(threshold)


def _failure(name: str, metric: str, value: float, threshold: float, baseline: float | None,
             margin: float | None) -> str | None:
    """Why one variant fails, or None when it passes."""
    if value < threshold:
        return f"{name} {_words(metric)} {value:.3f} < {threshold:g}"
    if baseline is not None and margin is not None and value <= baseline + margin:
        by = f" by more than {margin:g}" if margin else ""
        return f"{name} {_words(metric)} {value:.3f} does not beat baseline {baseline:.3f}{by}"
    return None


def metric_of(scores: dict, metric: str, who: str) -> float:
    if metric not in scores or not isinstance(scores[metric], (int, float)):
        known = sorted(k for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise ConfigError("gate.metric", metric, f"{who}'s scores have no such metric; known: {', '.join(known)}")
    return float(scores[metric])


def evaluate_gate(report: dict, threshold: float = 0.95, deployable: str = SMALLEST_PASSING,
                  metric: str = "strict_accuracy", margin: float | None = 0.0) -> GateResult:
    """Judge `report["variants"]` on `metric` against the threshold and, unless `margin` is None, against
    `report["baseline"]` (a variant must beat it by more than `margin`).

    deployable="smallest_passing" picks the smallest file among passing
    variants; a variant name judges that variant alone.
    """
    threshold = validate_threshold(threshold)
    variants: dict[str, dict] = report.get("variants") or {}
    base = report.get("baseline")
    baseline = metric_of(base["scores"], metric, "baseline") if base and margin is not None else None
    accuracy = {name: metric_of(v["scores"], metric, name) for name, v in variants.items()}

    def result(passed: bool, name: str | None, reason: str) -> GateResult:
        return GateResult(passed, name, metric, accuracy.get(name), baseline, threshold, margin, reason)
    if not isinstance(deployable, str) or not deployable:
        raise ConfigError("deployable", deployable, f"must be {SMALLEST_PASSING!r} or a variant name")
    if deployable != SMALLEST_PASSING:
        if deployable not in variants:
            raise ConfigError("deployable", deployable,
                              f"not an evaluated variant; evaluated: {', '.join(variants) or 'none'}")
        why = _failure(deployable, metric, accuracy[deployable], threshold, baseline, margin)
        return result(why is None, deployable, why or _pass_reason(deployable, metric, accuracy[deployable],
                                                                    threshold, baseline))
    if not variants:
        return result(False, None, "no variant was evaluated")

    passing = [n for n in variants if _failure(n, metric, accuracy[n], threshold, baseline, margin) is None]
    if passing:
        # Smallest file wins; equal sizes go to the more accurate, then the name, so the pick is stable.
        name = min(passing, key=lambda n: (variants[n]["file_size_bytes"], -accuracy[n], n))
        return result(True, name, _pass_reason(name, metric, accuracy[name], threshold, baseline)
                      + f"; smallest of {len(passing)} passing")
    best = max(variants, key=lambda n: (accuracy[n], -variants[n]["file_size_bytes"]))
    listing = ", ".join(f"{n} {a:.3f}" for n, a in accuracy.items())
    against = f"threshold {threshold:g}" + (f", baseline {baseline:.3f}" if baseline is not None else "")
    return result(False, best, f"no variant passes ({against}): {listing}")


def _pass_reason(name: str, metric: str, value: float, threshold: float, baseline: float | None) -> str:
    beats = f" and beats baseline {baseline:.3f}" if baseline is not None else " (no baseline compared)"
    return f"{name} {_words(metric)} {value:.3f} >= {threshold:g}{beats}"


def _words(metric: str) -> str:
    return metric.replace("_", " ")
