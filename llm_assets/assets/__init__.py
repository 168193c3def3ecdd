"""Thin Dagster wrappers around llm_assets.core, one module per pipeline stage."""

from llm_assets.assets.data_assets import eval_benchmark, raw_dataset, training_data_valid, training_dataset
from llm_assets.assets.eval_assets import accuracy_gate, eval_report
from llm_assets.assets.export_assets import gguf_model
from llm_assets.assets.registry_assets import production_model, registered_model
from llm_assets.assets.training_assets import base_model, lora_adapter

PIPELINE_ASSETS = [raw_dataset, eval_benchmark, base_model, training_dataset, lora_adapter, gguf_model, eval_report,
                   registered_model, production_model]
PIPELINE_CHECKS = [training_data_valid, accuracy_gate]
