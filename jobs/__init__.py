"""Asset jobs over explicit selections: the whole pipeline, once per config preset.

Each YAML file under configs/ becomes `train_<preset>_job`, whose default run
config is that preset, so the Launchpad opens with it filled in; the preset's
leading comment is the job's description. configs/cpu_tiny.yaml writes out each
asset's default config, so `train_cpu_tiny_job` is also the graph as the defaults
run it (`make demo`, the benchmarks; tests/test_definitions.py keeps the two equal).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from jobs.retraining import retrain_job_for, retraining_alert_job
from llm_assets.presets import load_preset, preset_names, preset_summary

# Training ends at registered_model; production_model moves only through promote_job (sensor or UI).
PIPELINE = dg.AssetSelection.groups("data", "training", "export", "evaluation") | dg.AssetSelection.assets(
    "registered_model")

# The graph with each asset's default config: what `make demo` and the benchmarks run.
DEFAULT_TRAINING_JOB = "train_cpu_tiny_job"


def preset_job(preset: str | Path, tags: dict | None = None) -> dg.UnresolvedAssetJobDefinition:
    """`train_<name>_job`: the whole graph, data to gated GGUF, for the model partition a run picks, with a preset
    (a name under configs/ or a path to a YAML file) as its default run config."""
    name = Path(preset).stem
    return dg.define_asset_job(
        f"train_{name}_job", selection=PIPELINE, config=load_preset(preset), tags=tags,
        description=f"The whole graph, data to gated GGUF, with the {name} preset: {preset_summary(preset)}")


preset_jobs = [preset_job(name) for name in preset_names()]

promote_job = dg.define_asset_job(
    "promote_job", selection=dg.AssetSelection.assets("production_model"),
    description="Promote a registered version (config: version) and materialize production_model.")

# New data and gate failures retrain the same graph as the preset jobs, under their own job name and tag.
retrain_job = retrain_job_for(PIPELINE)

all_jobs = [*preset_jobs, promote_job, retrain_job, retraining_alert_job]
