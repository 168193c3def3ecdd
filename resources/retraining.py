"""What automatic retraining watches and how it adjusts: read by the new-data and gate-failure sensors."""

from __future__ import annotations

import copy
import os
from typing import Optional

import dagster as dg
from pydantic import Field

from llm_assets.core.retrain_policy import DEFAULT_LADDER, RetrainPolicy, ladder_from_json, ladder_to_json
from llm_assets.presets import load_preset

WATCH_DIR_ENV, WATCH_S3_URI_ENV = "LLM_ASSETS_WATCH_DIR", "LLM_ASSETS_WATCH_S3_URI"


class RetrainingResource(dg.ConfigurableResource):
    """Data sources to watch, the run config of a retraining run, and the gate-failure ladder."""

    watch_dir: Optional[str] = Field(
        default=None, description="Local folder whose *.jsonl files are the training data; a new or changed file "
        "starts a retraining run with raw_dataset.source set to this folder. Unset: $LLM_ASSETS_WATCH_DIR, read "
        "at each sensor tick, else not watched.")
    watch_s3_uri: Optional[str] = Field(
        default=None, description="s3://bucket/prefix whose *.jsonl objects are the training data (listed through "
        "the `watched_s3` dagster-aws resource); a new or changed object starts a retraining run reading that "
        "prefix. Unset: $LLM_ASSETS_WATCH_S3_URI, read at each sensor tick, else not watched.")
    model: str = Field(
        default="pet-brain", description="The model (models/<name>.yaml) that watch_dir / watch_s3_uri retrain. A "
        "model file whose data.source is itself a folder or an s3:// prefix is watched for that model anyway.")
    debounce_s: float = Field(
        default=60.0, ge=0, description="A run starts only once every new or changed file has been unchanged for "
        "this many seconds, so a burst of uploads makes one run and no file is read half-written.")
    preset: str = Field(
        default="cpu_tiny", description="Run config of a retraining run from watch_dir / watch_s3_uri: a preset "
        "name under configs/ or a path to a YAML file; the watched source replaces its raw_dataset.source. A model "
        "file's own watched source uses the model file's preset.")
    max_attempts: int = Field(
        default=3, ge=1, description="Trainings per data version before the gate-failure sensor stops and raises "
        "an alert: the first run plus one per ladder rung.")
    ladder: str = Field(
        default=ladder_to_json(DEFAULT_LADDER),
        description="JSON list of rungs applied in turn after a gate failure, each changing the failed attempt's "
        "lora_adapter config: {\"name\": ..., \"scale\": {field: factor}, \"set\": {field: value}}. Default: "
        "epochs x2, then learning_rate x0.5, then lora_r and lora_alpha x2.")

    def sources(self) -> list[str]:
        """What is watched: each unset field read from its variable now, so nothing is read at import."""
        return [source for source in (self.watch_dir or os.environ.get(WATCH_DIR_ENV),
                                      self.watch_s3_uri or os.environ.get(WATCH_S3_URI_ENV)) if source]

    def policy(self) -> RetrainPolicy:
        return RetrainPolicy(ladder_from_json(self.ladder), self.max_attempts)

    def run_config_for(self, source: str, preset: Optional[str] = None) -> dict:
        """The preset's run config (this resource's unless named), reading its raw data from `source`."""
        config = copy.deepcopy(load_preset(preset or self.preset))
        ops = config.setdefault("ops", {})
        ops.setdefault("raw_dataset", {}).setdefault("config", {})["source"] = source
        return config
