"""ModelCatalogResource: the declared models (models/*.yaml), read when used, one Dagster partition each."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from llm_assets.core.errors import ConfigError
from llm_assets.core.model_spec import ModelSpec, load_model_specs

MODELS_DIR_ENV = "LLM_ASSETS_MODELS_DIR"
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"  # the repository's own model files

# Every asset is partitioned by model; model_files_sensor adds a partition for each new model file, so a file
# reviewed into models/ appears in the Launchpad without a redeploy. Keys are never deleted by the sensor: a
# removed file keeps its history.
MODEL_PARTITIONS = dg.DynamicPartitionsDefinition(name="models")


class ModelCatalogResource(dg.ConfigurableResource):
    """Where the model files are; `get(name)` is the spec a partition's stages follow."""

    folder: Optional[str] = Field(
        default=None, description="Folder of model files (*.yaml, one per model). Unset: $LLM_ASSETS_MODELS_DIR, "
        "else the repository's models/ folder; read when used.")

    def folder_path(self) -> Path:
        return Path(self.folder or os.environ.get(MODELS_DIR_ENV) or DEFAULT_MODELS_DIR)

    def specs(self) -> dict[str, ModelSpec]:
        return load_model_specs(self.folder_path())

    def get(self, name: Optional[str]) -> ModelSpec:
        specs = self.specs()
        if name not in specs:
            raise ConfigError("model", name, f"no model file {name}.yaml in {self.folder_path()}; "
                              f"known models: {', '.join(specs)}")
        return specs[name]


def register_models(instance: dg.DagsterInstance, names) -> list[str]:
    """Add the partitions these model names lack; returns the ones added."""
    new = [n for n in names if not instance.has_dynamic_partition(MODEL_PARTITIONS.name, n)]
    if new:
        instance.add_dynamic_partitions(MODEL_PARTITIONS.name, new)
    return new
