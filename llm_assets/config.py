"""Dagster Config classes: each stage's pydantic params, shown in the Launchpad, plus where it runs.

Built from the stage table (llm_assets.stages.STAGES): each class inherits its fields, descriptions and
bounds from llm_assets.core.hyperparameters, so the Launchpad, the YAML presets and the core can never
disagree, and adds `compute`. Invalid values fail before any compute starts.
"""

from typing import Collection, Optional

import dagster as dg
from pydantic import Field

from llm_assets.core.model_spec import ModelSpec, tightened_gate
from llm_assets.stages import STAGES, Stage

COMPUTE_FIELD_DESCRIPTION = (
    "Where this stage runs: 'in_process' (default: inside the Dagster step on this machine) or the name of a "
    "backend in the compute_backends resource: 'local' (a worker subprocess), 'detached' (a worker process that "
    "shares only the S3 store), 'kubernetes', 'runpod', 'vastai', 'kaggle' where configured. A name this "
    "deployment does not know fails the run's first step, listing the known ones.")


def _config_class(stage: Stage) -> type[dg.Config]:
    """The Launchpad config of a stage: its core params class as a dg.Config, plus `compute`."""
    name = stage.params.__name__.removesuffix("Params") + "Config"
    return type(name, (dg.Config, stage.params), {
        "__module__": __name__, "__doc__": stage.params.__doc__,
        "__annotations__": {"compute": str},
        "compute": Field(default="in_process", description=COMPUTE_FIELD_DESCRIPTION)})


# asset name -> its config class, one per entry of the stage table
CONFIG_BY_ASSET: dict[str, type[dg.Config]] = {asset: _config_class(stage) for asset, stage in STAGES.items()}


def validate_run_config(run_config: dict, compute_names: Optional[Collection[str]] = None,
                        model: Optional[ModelSpec] = None) -> None:
    """Check every asset's config of a run up front, so a typo fails before any compute.

    Dagster validates each step's config when the step starts; the first steps
    call this so that a bad learning rate fails the run in seconds, not after
    data preparation. With `compute_names` (the compute_backends resource's names in this deployment), every
    stage's `compute` must be one of them. With `model` (the partition's model file), eval_report's threshold may
    raise the model's gate, never lower it. Raises ConfigError naming ops.<asset>.config.<field>.
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
        if model is not None and asset == "eval_report":
            tightened_gate(model.gate, config.threshold, f"ops.{asset}.config.threshold")
