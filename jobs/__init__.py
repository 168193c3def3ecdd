"""Asset jobs over explicit selections: the whole pipeline, once per config preset.

Each YAML file under configs/ becomes `train_<preset>_job`, whose default run
config is that preset, so the Launchpad opens with it filled in.
"""

from __future__ import annotations

import dagster as dg

from jobs.retraining import retrain_job_for, retraining_alert_job
from llm_assets.presets import load_preset, preset_names

# Training ends at registered_model; production_model moves only through promote_job (sensor or UI).
PIPELINE = dg.AssetSelection.groups("data", "training", "export", "evaluation") | dg.AssetSelection.assets(
    "registered_model")


pet_model_job = dg.define_asset_job(
    "pet_model_job", selection=PIPELINE,
    description="The whole graph, data to gated GGUF, with each asset's default config (the embedded demo).")

preset_jobs = [
    dg.define_asset_job(f"train_{name}_job", selection=PIPELINE, config=load_preset(name),
                        description=f"The whole graph with the configs/{name}.yaml preset.")
    for name in preset_names()
]

promote_job = dg.define_asset_job(
    "promote_job", selection=dg.AssetSelection.assets("production_model"),
    description="Promote a registered version (config: version) and materialize production_model.")

# New data and gate failures retrain the same graph as pet_model_job, under their own job name and tag.
retrain_job = retrain_job_for(PIPELINE)

all_jobs = [pet_model_job, promote_job, retrain_job, retraining_alert_job, *preset_jobs]
