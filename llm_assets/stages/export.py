"""The export stage (gguf_model): merge the adapter, write GGUF files with a Modelfile and a model card beside each."""

from __future__ import annotations

import tempfile
from pathlib import Path

from llm_assets.core import gguf_export
from llm_assets.core.hyperparameters import ExportParams
from llm_assets.core.model_card import PET_EXAMPLE_PROMPT, render_model_card
from llm_assets.stages.io import StageContext, StageResult, code_version, describe, fetch, meta, publish

def run(inputs: dict, params: ExportParams, context: StageContext) -> StageResult:
    """A float GGUF and its llama.cpp quantizations of the merged model, each with a Modelfile and a card, named
    after the model; the quantizations are the run's, else the model file's."""
    name_prefix = context.model.name
    quantizations = context.model.quantizations if params.quantizations is None else params.quantizations
    lora_adapter, base_model, training_dataset = inputs["lora_adapter"], inputs["base_model"], inputs["training_dataset"]
    with tempfile.TemporaryDirectory(prefix="gguf_model-") as scratch:
        tmp = Path(scratch)
        base = fetch(context.store, base_model, tmp / "base")
        adapter = fetch(context.store, lora_adapter, tmp / "adapter")
        merged = gguf_export.merge_adapter(base, adapter, tmp / "merged")
        out = tmp / "gguf_model"
        provenance = {"model": name_prefix, "dataset_version": training_dataset["sha256"][:16],
                      "training_commit": code_version(), "dagster_run_id": context.run_id,
                      "adapter_sha256": lora_adapter["sha256"], "base_model": base_model.get("model_id")}
        variants = gguf_export.export_gguf_variants(merged, out, name_prefix, params.float_type, quantizations,
                                                    provenance=provenance)
        for name, variant in variants.items():
            gguf = out / f"{name_prefix}-{name}.gguf"
            gguf_export.write_modelfile(gguf, out / f"Modelfile.{name}")
            (out / f"MODEL_CARD.{name}.md").write_text(render_model_card({
                "name": f"{name_prefix}-{name}", "description": context.model.purpose,
                "base_model": {"id": base_model.get("model_id"), "revision": base_model.get("revision")},
                "data": {"version": training_dataset["sha256"][:16],
                         "rows": {"train": training_dataset["train_rows"],
                                  "validation": training_dataset["validation_rows"]}},
                "metrics": {"train_loss": lora_adapter.get("train_loss"), "eval_loss": lora_adapter.get("eval_loss")},
                "config": lora_adapter.get("config"),
                "variants": {name: variant},
                "lineage": {"dagster run": context.run_id, "adapter": lora_adapter["uri"]},
                "system_prompt": context.model.serving.system_prompt,
                "example_prompt": PET_EXAMPLE_PROMPT if context.model.scorer == "pet" else None,
            }), encoding="utf-8")
            variant["file"] = gguf.name
            del variant["path"]  # a scratch path; the file's place is the artifact uri + file
            context.log(f"gguf_model: {gguf.name} {variant['bytes']:,} bytes")
        value = describe(publish(context, "gguf_model", out), out, variants=variants,
                         lora_adapter_sha256=lora_adapter["sha256"])
    table = "| variant | file | bytes | sha256 |\n|---|---|---|---|\n" + "\n".join(
        f"| {n} | {v['file']} | {v['bytes']:,} | `{v['sha256'][:16]}` |" for n, v in variants.items())
    return StageResult(value, {"variants": meta(table, "md")})
