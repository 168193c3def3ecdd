"""Asset jobs over explicit selections: the whole pipeline, once per config preset.

Each YAML file under configs/ becomes `train_<preset>_job`, whose default run
config is that preset, so the Launchpad opens with it filled in.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

from jobs.retraining import retrain_job_for, retraining_alert_job

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
# Training ends at registered_model; production_model moves only through promote_job (sensor or UI).
PIPELINE = dg.AssetSelection.groups("data", "training", "export", "evaluation") | dg.AssetSelection.assets(
    "registered_model")


def load_preset(name_or_path: str) -> dict:
    """A preset's run config, by name (configs/<name>.yaml) or by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIGS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"no preset {name_or_path!r} ({path}); known presets: {known}")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


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
