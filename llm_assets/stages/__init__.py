"""The pipeline's stages: what each one does, in one table that everything else reads.

A stage is a plain function `run(inputs, params, context) -> StageResult` (no dagster): `inputs` are the
upstream assets' manifests by name, `params` its hyperparameters, `context` the artifact store, run id and
log and the model's spec (models/<name>.yaml, the partition being materialized). The table below is the only place a stage is described. The Dagster assets, the routing to a compute
backend, the worker (`python -m llm_assets.compute.worker ASSET`), run-config validation and the
automation sensor all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel

from llm_assets.core import hyperparameters as hp
from llm_assets.core.errors import ConfigError
from llm_assets.stages import base_model, data, evaluation, export, training
from llm_assets.stages.io import StageContext, StageResult


@dataclass(frozen=True)
class Stage:
    asset: str                          # the asset it materializes; also its name for the worker
    params: type[BaseModel]             # its hyperparameters (the Launchpad config adds `compute`)
    run: Callable[[dict, BaseModel, StageContext], StageResult]
    upstream: tuple[str, ...] = ()      # the assets whose manifests it reads, in `inputs`
    heavy: bool = False                 # takes every core of a machine for minutes: joins the compute pool
    follows: tuple[str, ...] = ()       # automation: runs again when one of these updated
    cost_per_example: bool = False      # report the cost per training example (training only)
    resumable: bool = False             # writes checkpoints to context.checkpoints; a remote worker mirrors them

    def params_from(self, config: dict) -> BaseModel:
        """The params from a stage's config (the Launchpad's, or the worker's extras), `compute` left out."""
        return self.params(**{k: v for k, v in config.items() if k != "compute"})


STAGES: dict[str, Stage] = {s.asset: s for s in (
    Stage("raw_dataset", hp.RawDataParams, data.raw_dataset),
    Stage("eval_benchmark", hp.BenchmarkParams, data.eval_benchmark, upstream=("raw_dataset",)),
    Stage("base_model", hp.BaseModelParams, base_model.run, heavy=True),
    Stage("training_dataset", hp.DatasetParams, data.training_dataset,
          upstream=("raw_dataset", "base_model", "eval_benchmark")),
    Stage("lora_adapter", hp.TrainingParams, training.run, upstream=("training_dataset", "base_model"),
          heavy=True, cost_per_example=True, resumable=True),
    Stage("gguf_model", hp.ExportParams, export.run, upstream=("lora_adapter", "base_model", "training_dataset"),
          heavy=True, follows=("lora_adapter",)),
    Stage("eval_report", hp.EvalParams, evaluation.run,
          upstream=("gguf_model", "eval_benchmark", "base_model", "lora_adapter", "training_dataset"),
          heavy=True, follows=("gguf_model",)),
)}


def get_stage(asset: str) -> Stage:
    if asset not in STAGES:
        raise ConfigError("stage", asset, f"expected one of {', '.join(STAGES)}")
    return STAGES[asset]


__all__ = ["STAGES", "Stage", "StageContext", "StageResult", "get_stage"]
