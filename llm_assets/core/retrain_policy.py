"""The hyperparameter ladder a model climbs when it misses the accuracy gate.

A ladder is a declared list of rungs. Each rung adjusts the training config of
the attempt that just failed (rungs are cumulative: attempt 3 has the changes
of rungs 1 and 2): ``scale`` multiplies numeric fields, ``set`` replaces
fields. Attempt 1 is the run as launched; after attempt k fails, rung k makes
attempt k+1, up to ``max_attempts`` per data version; then the policy stops
and says what was tried.

Pure: no dagster; the gate-failure sensor applies it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from llm_assets.core.errors import ConfigError
from llm_assets.core.hyperparameters import TrainingParams


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: a name for the audit, and the changes it makes."""

    name: str
    scale: dict[str, float] = field(default_factory=dict)
    set: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: dict, where: str) -> Rung:
        """A rung from its declared form ({"name", "scale", "set"}), naming `where` on error."""
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise ConfigError(f"{where}.name", raw, "each rung needs a non-empty 'name'")
        unknown = set(raw) - {"name", "scale", "set"}
        if unknown:
            raise ConfigError(where, raw, f"unknown keys {sorted(unknown)}; a rung has name, scale and set")
        rung = cls(raw["name"], dict(raw.get("scale") or {}), dict(raw.get("set") or {}))
        fields = TrainingParams.model_fields
        for kind, changes in (("scale", rung.scale), ("set", rung.set)):
            for key, value in changes.items():
                if key not in fields:
                    raise ConfigError(f"{where}.{kind}.{key}", value, "not a training parameter (lora_adapter config)")
        for key, factor in rung.scale.items():
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
                raise ConfigError(f"{where}.scale.{key}", factor, "a scale factor must be a positive number")
            if fields[key].annotation not in (int, float):
                raise ConfigError(f"{where}.scale.{key}", factor, "only numeric parameters can be scaled")
        if not rung.scale and not rung.set:
            raise ConfigError(where, raw, "a rung must change something (scale or set)")
        return rung

    def describe(self) -> str:
        parts = [f"{k} x{v:g}" for k, v in self.scale.items()] + [f"{k}={v!r}" for k, v in self.set.items()]
        return f"{self.name} ({', '.join(parts)})"


DEFAULT_LADDER: tuple[Rung, ...] = (
    Rung("more_epochs", scale={"epochs": 2.0}),
    Rung("lower_learning_rate", scale={"learning_rate": 0.5}),
    Rung("higher_lora_rank", scale={"lora_r": 2.0, "lora_alpha": 2.0}),
)


def ladder_from_json(text: str) -> tuple[Rung, ...]:
    """A ladder declared as JSON (a list of rungs), as the retraining resource holds it."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("ladder", text, f"not JSON: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise ConfigError("ladder", raw, "expected a non-empty JSON list of rungs")
    return tuple(Rung.parse(r, f"ladder[{i}]") for i, r in enumerate(raw))


def ladder_to_json(ladder: Sequence[Rung]) -> str:
    return json.dumps([{"name": r.name, "scale": r.scale, "set": r.set} for r in ladder])


def apply_rung(training_config: dict, rung: Rung) -> dict:
    """The next attempt's lora_adapter config: the given one with the rung's changes.

    Only fields the caller gave or the rung changes are returned, so the run
    config stays as short as the user wrote it. Scaling `epochs` also scales a
    positive `max_steps`, which would otherwise cap the longer run at the old
    length. The result is validated; a rung that produces an invalid value
    raises ConfigError naming the field.
    """
    effective = TrainingParams(**training_config).model_dump()
    changed = dict(training_config)
    fields = TrainingParams.model_fields
    for key, factor in rung.scale.items():
        value = effective[key] * factor
        changed[key] = max(1, round(value)) if fields[key].annotation is int else value
    if "epochs" in rung.scale and effective["max_steps"] > 0 and "max_steps" not in rung.scale:
        changed["max_steps"] = max(1, round(effective["max_steps"] * rung.scale["epochs"]))
    changed.update(rung.set)
    try:
        TrainingParams(**changed)
    except ValueError as exc:
        raise ConfigError(f"rung {rung.name}", changed, f"makes an invalid training config: {exc}") from None
    return changed


@dataclass(frozen=True)
class Attempt:
    """One finished attempt, as the registry's audit records it."""

    number: int
    version: int | None
    rung: str | None
    strict_accuracy: float | None
    gate_reason: str | None


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    next_attempt: int
    rung: Rung | None
    training_config: dict | None
    message: str


@dataclass(frozen=True)
class RetrainPolicy:
    ladder: tuple[Rung, ...] = DEFAULT_LADDER
    max_attempts: int = 3

    def __post_init__(self):
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigError("max_attempts", self.max_attempts, "must be a whole number >= 1")
        if self.max_attempts - 1 > len(self.ladder):
            raise ConfigError("max_attempts", self.max_attempts,
                              f"needs {self.max_attempts - 1} rungs after the first attempt; the ladder has "
                              f"{len(self.ladder)}")

    def decide(self, failed_attempt: int, training_config: dict, tried: Sequence[Attempt],
               model: str, data_version: str | None) -> RetrainDecision:
        """After attempt `failed_attempt` missed the gate: the next rung, or stop and say what was tried."""
        if failed_attempt < self.max_attempts:
            rung = self.ladder[failed_attempt - 1]
            config = apply_rung(training_config, rung)
            return RetrainDecision(True, failed_attempt + 1, rung, config,
                                   f"{model}: attempt {failed_attempt}/{self.max_attempts} on data {data_version} "
                                   f"missed the gate; retraining with rung {rung.describe()}")
        return RetrainDecision(False, failed_attempt, None, None, give_up_message(
            model, data_version, self.max_attempts, tried))


def give_up_message(model: str, data_version: str | None, max_attempts: int, tried: Sequence[Attempt]) -> str:
    lines = [f"{model}: data version {data_version} missed the accuracy gate in all {max_attempts} attempts; "
             f"not retraining again. Tried:"]
    for a in sorted(tried, key=lambda a: a.number):
        acc = "n/a" if a.strict_accuracy is None else f"{a.strict_accuracy:.3f}"
        lines.append(f"  attempt {a.number}: {a.rung or 'as launched'} -> v{a.version} rejected, strict accuracy "
                     f"{acc} ({a.gate_reason})")
    lines.append("Next: read the eval reports of those versions, add data, extend the ladder or change the base "
                 "model; `llm-assets registry history " + model + "` shows the audit.")
    return "\n".join(lines)
