"""Export stage: merge the adapter and write GGUF files with a Modelfile and a model card beside each."""


import dagster as dg

from llm_assets.assets.common import fetch, manifest, output, publish, scratch
from llm_assets.config import ExportConfig
from llm_assets.core import gguf_export
from llm_assets.core.model_card import render_model_card
from resources.artifact_store import ArtifactStoreResource

MODEL_NAME = "pet-brain"


@dg.asset(group_name="export", kinds={"gguf", "llamacpp"}, owners=["team:ml"])
def gguf_model(context: dg.AssetExecutionContext, config: ExportConfig, artifact_store: ArtifactStoreResource,
               lora_adapter: dict, base_model: dict, training_dataset: dict) -> dg.Output:
    """The merged model as GGUF: a float file and its llama.cpp quantizations, each with a Modelfile and a card."""
    store = artifact_store.store()
    with scratch(context) as tmp:
        base = fetch(store, base_model, tmp / "base")
        adapter = fetch(store, lora_adapter, tmp / "adapter")
        merged = gguf_export.merge_adapter(base, adapter, tmp / "merged")
        out = tmp / "gguf_model"
        variants = gguf_export.export_gguf_variants(merged, out, MODEL_NAME, config.float_type, config.quantizations)
        for name, variant in variants.items():
            gguf = out / f"{MODEL_NAME}-{name}.gguf"
            gguf_export.write_modelfile(gguf, out / f"Modelfile.{name}")
            (out / f"MODEL_CARD.{name}.md").write_text(render_model_card({
                "name": f"{MODEL_NAME}-{name}",
                "base_model": {"id": base_model.get("model_id"), "revision": base_model.get("revision")},
                "data": {"version": training_dataset["sha256"][:16],
                         "rows": {"train": training_dataset["train_rows"],
                                  "validation": training_dataset["validation_rows"]}},
                "metrics": {"train_loss": lora_adapter.get("train_loss"), "eval_loss": lora_adapter.get("eval_loss")},
                "config": lora_adapter.get("config"),
                "variants": {name: variant},
                "lineage": {"dagster run": context.run.run_id, "adapter": lora_adapter["uri"]},
            }), encoding="utf-8")
            variant["file"] = gguf.name
            del variant["path"]  # a scratch path; the file's place is the artifact uri + file
            context.log.info(f"gguf_model: {gguf.name} {variant['bytes']:,} bytes")
        artifact = publish(context, store, out)
        value = manifest(artifact, out, variants=variants, lora_adapter_sha256=lora_adapter["sha256"])
    table = "| variant | file | bytes | sha256 |\n|---|---|---|---|\n" + "\n".join(
        f"| {n} | {v['file']} | {v['bytes']:,} | `{v['sha256'][:16]}` |" for n, v in variants.items())
    return output(value, {"variants": dg.MetadataValue.md(table)})
