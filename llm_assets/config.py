"""Dagster Config classes: the core's pydantic hyperparameters, shown in the Launchpad.

Each class inherits its fields, descriptions and bounds from
llm_assets.core.hyperparameters, so the Launchpad, the YAML presets and the
core can never disagree. Invalid values fail before any compute starts.
"""

from typing import Collection, Optional

import dagster as dg
from pydantic import Field

from llm_assets.core import hyperparameters as hp

COMPUTE_FIELD_DESCRIPTION = (
    "Where this stage runs: 'in_process' (default: inside the Dagster step on this machine) or the name of a "
    "backend in the compute_backends resource: 'local' (a worker subprocess), 'detached' (a worker process that "
    "shares only the S3 store), 'kubernetes', 'runpod', 'vastai', 'kaggle' where configured. A name this "
    "deployment does not know fails the run's first step, listing the known ones.")


class RawDatasetConfig(dg.Config, hp.RawDataParams):
    """Where the raw examples come from."""


class TrainingDatasetConfig(dg.Config, hp.DatasetParams):
    """How raw examples become a validated train/validation split."""


class BenchmarkConfig(dg.Config, hp.BenchmarkParams):
    """The fixed benchmark; versioned apart from the training data."""


class BaseModelConfig(dg.Config, hp.BaseModelParams):
    """The base model to fine-tune."""


class TrainingConfig(dg.Config, hp.TrainingParams):
    """Fine-tuning hyperparameters."""

    compute: str = Field(default="in_process", description=COMPUTE_FIELD_DESCRIPTION)


class ExportConfig(dg.Config, hp.ExportParams):
    """Which GGUF files to write."""

    compute: str = Field(default="in_process", description=COMPUTE_FIELD_DESCRIPTION)


class EvalConfig(dg.Config, hp.EvalParams):
    """Benchmark evaluation and the accuracy gate."""

    compute: str = Field(default="in_process", description=COMPUTE_FIELD_DESCRIPTION)


CONFIG_BY_ASSET: dict[str, type[dg.Config]] = {
    "raw_dataset": RawDatasetConfig,
    "training_dataset": TrainingDatasetConfig,
    "eval_benchmark": BenchmarkConfig,
    "base_model": BaseModelConfig,
    "lora_adapter": TrainingConfig,
    "gguf_model": ExportConfig,
    "eval_report": EvalConfig,
}


def validate_run_config(run_config: dict, compute_names: Optional[Collection[str]] = None) -> None:
    """Check every asset's config of a run up front, so a typo fails before any compute.

    Dagster validates each step's config when the step starts; the first steps
    call this so that a bad learning rate fails the run in seconds, not after
    data preparation. With `compute_names` (the compute_backends resource's names in this deployment), every
    stage's `compute` must be one of them. Raises ConfigError naming ops.<asset>.config.<field>.
    """
    import pydantic

    from llm_assets.core.errors import ConfigError

    for asset, section in ((run_config or {}).get("ops") or {}).items():
        cls = CONFIG_BY_ASSET.get(asset)
        if cls is None or not isinstance(section, dict):
            continue
        try:
            config = cls(**(section.get("config") or {}))
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"ops.{asset}.config.{field}", err.get("input"), err["msg"]) from None
        compute = getattr(config, "compute", None)
        if compute_names is not None and compute is not None and compute not in compute_names:
            raise ConfigError(f"ops.{asset}.config.compute", compute,
                              f"no such compute backend in this deployment; known: {', '.join(compute_names)}")
