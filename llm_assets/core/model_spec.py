"""A model is a declared thing: one YAML file per model under models/, reviewed in git.

The file names what the model is for, where its data and benchmark come from, its base model and
training preset, how its answers are scored, the gate it must pass to ship, and how it is served.
Each file becomes one partition of the Dagster graph, so every asset, check, registry name and
`production` alias is per model. Pure: pydantic and PyYAML, no dagster.

Every field is validated; an error names the file and the field (`models/cli-helper.yaml: gate.threshold`).
The gate in the file is the floor: a run's config may tighten it, never loosen it (`tightened_gate`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llm_assets.core.errors import ConfigError
from llm_assets.core.hyperparameters import BaseModelParams
from llm_assets.core.scorers import SCORERS

NAME_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"
HOLDOUT = "holdout"
EMBEDDED_PET = "embedded:pet"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not a silent default


class DataSpec(_Strict):
    source: str = Field(description="Training rows: a JSONL file, a folder of *.jsonl, an s3:// prefix (chat "
                        "'messages' or 'prompt'/'completion' rows), or 'embedded:pet' for the bunny's generator.")
    num_examples: Optional[int] = Field(default=None, ge=1, description="'embedded:pet' only: rows to generate.")
    seed: int = Field(default=0, description="'embedded:pet' only: the generator's seed.")


class BenchmarkSpec(_Strict):
    source: str = Field(default=HOLDOUT, description="'holdout' (a deterministic share of the data, carved by "
                        "hash and never trained on), a JSONL file / folder / s3:// prefix fixed apart from the "
                        "training data, or 'embedded:pet' for the bunny's benchmark.")
    holdout_fraction: float = Field(default=0.1, gt=0, lt=1, description="'holdout' only: share of rows held out.")
    examples_per_category: int = Field(default=50, ge=1, description="'embedded:pet' only: items per category.")
    seed: int = Field(default=20261122, description="'embedded:pet' only: the benchmark's seed.")


class GateSpec(_Strict):
    metric: str = Field(default="strict_accuracy", description="The scorer's metric the gate reads.")
    threshold: float = Field(ge=0, le=1, description="The deployable variant needs metric >= threshold.")
    beats_base_by: Optional[float] = Field(
        default=0.0, ge=0, le=1, description="The variant must beat the untuned base model on `metric` by more "
        "than this margin (0: just beat it). null: do not compare with the base model.")
    beats_production: bool = Field(default=True, description="A candidate must beat the production version on "
                                   "`metric` before the promotion sensor ships it.")


class ServingSpec(_Strict):
    system_prompt: Optional[str] = Field(default=None, description="System message of every conversation that has "
                                         "none: put into the training and benchmark rows, and by the server before "
                                         "each chat request.")
    json_schema: Optional[dict] = Field(default=None, description="JSON schema of the answers, when they are JSON: "
                                        "the server decodes a chat request without a response_format with it.")
    max_tokens: int = Field(default=128, ge=1, description="Longest answer the server generates when a request "
                            "sets no max_tokens (capped at the server's max_tokens_limit).")


class ModelSpec(_Strict):
    name: str = Field(description="The model's name: registry name, partition key, file name; a-z, 0-9, '-'.")
    purpose: str = Field(min_length=1, description="One line: what the model is for.")
    data: DataSpec = Field(description="Where the training rows come from.")
    benchmark: BenchmarkSpec = Field(default_factory=BenchmarkSpec, description="What the model is scored on.")
    base_model: BaseModelParams = Field(default_factory=BaseModelParams, description="The causal LM to fine-tune.")
    preset: str = Field(default="cpu_tiny", description="Training hyperparameters: a preset's name under configs/ "
                        "(cpu_tiny) or a run-config YAML file. Its training_dataset, lora_adapter, gguf_model and "
                        "eval_report config is this model's default for those stages; a run's config overrides it.")
    scorer: str = Field(description="How answers are scored: exact, json, label, text, or pet "
                        "(llm_assets/core/scorers/).")
    scorer_options: dict = Field(default_factory=dict, description="Options of the scorer, e.g. "
                                 "{numeric_tolerance: 0.01} for json.")
    gate: GateSpec = Field(description="What a variant must reach to be registered as a candidate.")
    quantizations: list[str] = Field(default_factory=lambda: ["q8_0", "q4_k_m"],
                                     description="Quantized GGUF variants to make with llama.cpp.")
    serving: ServingSpec = Field(default_factory=ServingSpec, description="Defaults of the model server.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(NAME_PATTERN, value):
            raise ValueError(f"must match {NAME_PATTERN} (lowercase letters, digits, '-')")
        return value

    @field_validator("scorer")
    @classmethod
    def _scorer(cls, value: str) -> str:
        if value not in SCORERS:
            raise ValueError(f"unknown scorer; known: {', '.join(sorted(SCORERS))}")
        return value

    @model_validator(mode="after")
    def _embedded_pairs(self) -> "ModelSpec":
        if self.benchmark.source == EMBEDDED_PET and self.scorer != "pet":
            raise ValueError("benchmark 'embedded:pet' is scored by the 'pet' scorer")
        return self


def _error(path: Path, exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(file)"
    return ConfigError(f"{path}: {field}", err.get("input"), err["msg"])


def load_model_spec(path: str | Path) -> ModelSpec:
    """One model file, validated; the file's stem must be the model's name."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), None, f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), raw, "expected a mapping of fields (name, purpose, data, scorer, gate, ...)")
    try:
        spec = ModelSpec(**raw)
    except ValidationError as exc:
        raise _error(path, exc) from None
    if spec.name != path.stem:
        raise ConfigError(f"{path}: name", spec.name, f"must equal the file's name, {path.stem!r}")
    return _resolved(spec, path)


def _is_local(source: str) -> bool:
    return not (source in (HOLDOUT, EMBEDDED_PET) or "://" in source or source.startswith("embedded:"))


def _resolved(spec: ModelSpec, path: Path) -> ModelSpec:
    """Relative paths in a model file name files beside it (like docker-compose), whatever the process's working
    directory: `data: {source: data/my-task}` in models/my-task.yaml is models/data/my-task. A preset file must
    exist; a preset name (no suffix) is looked up under configs/ when used."""
    folder = path.resolve().parent

    def local(value: str) -> str:
        return str(folder / value) if _is_local(value) and not Path(value).is_absolute() else value

    data = spec.data.model_copy(update={"source": local(spec.data.source)})
    benchmark = spec.benchmark.model_copy(update={"source": local(spec.benchmark.source)})
    base = spec.base_model
    if (base.model_id or "").startswith(("./", "../")):  # a hub id (org/name) is never rewritten
        base = base.model_copy(update={"model_id": str(folder / base.model_id)})
    preset = spec.preset
    if Path(preset).suffix:
        preset = local(preset)
        if not Path(preset).is_file():
            raise ConfigError(f"{path}: preset", spec.preset, f"no such file ({preset}); give a preset's name "
                              "under configs/ or a run-config YAML file, relative to the model file")
    return spec.model_copy(update={"data": data, "benchmark": benchmark, "base_model": base, "preset": preset})


def load_model_specs(folder: str | Path) -> dict[str, ModelSpec]:
    """Every models/*.yaml, by name, in name order."""
    folder = Path(folder)
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise ConfigError("models", str(folder), "no model files (*.yaml) found")
    return {spec.name: spec for spec in map(load_model_spec, files)}


def tightened_gate(gate: GateSpec, threshold: Optional[float], field: str) -> GateSpec:
    """The model's gate, with a run's threshold applied only if it is stricter.

    A lower threshold is refused (ConfigError naming `field`), never silently ignored: someone asked for it.
    """
    if threshold is None or threshold == gate.threshold:
        return gate
    if threshold < gate.threshold:
        raise ConfigError(field, threshold, f"below the model's gate ({gate.metric} >= {gate.threshold:g}); a run "
                          "may tighten a model's gate, never loosen it")
    return gate.model_copy(update={"threshold": threshold})
