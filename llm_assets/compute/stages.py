"""The stage bodies as plain functions, so the asset (in process) and the worker (anywhere) run the same code.

Each takes the artifact store, the upstream manifests by asset name, the stage's parameters and the
run id, writes its artifacts to the store and returns a `StageOutput`: the manifest (the asset's
value) and metadata in Dagster Pipes' external form ({"raw_value": ..., "type": ...}), which the
worker sends as is and the in-process path turns into MetadataValues.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional

from llm_assets.compute.evaluation_stage import evaluate
from llm_assets.compute.stage_io import LogFn, StageOutput, fetch, manifest, meta, publish
from llm_assets.core import dataset_io, gguf_export, training
from llm_assets.core.artifacts import ArtifactStore
from llm_assets.core.hyperparameters import EvalParams, ExportParams, TrainingParams
from llm_assets.core.model_card import render_model_card
from llm_assets.core.plots import loss_curve_png, markdown_image


def checkpoint_dir(*parts: str) -> Path:
    """Where a run keeps its checkpoints on this machine: the same inputs and config find the same folder."""
    root = Path(os.environ.get("LLM_ASSETS_CHECKPOINT_DIR", Path.cwd() / "artifacts" / "checkpoints"))
    return root / hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def progress_logger(log: LogFn) -> Callable[[dict], None]:
    def on_progress(entry: dict) -> None:
        if "loss" in entry or "eval_loss" in entry:
            log(f"lora_adapter step {entry['step']}/{entry['total_steps']} epoch {entry['epoch']} "
                + " ".join(f"{k} {entry[k]:.4f}" for k in ("loss", "eval_loss", "grad_norm", "learning_rate")
                           if isinstance(entry.get(k), float))
                + f" eta {entry['eta_seconds']:.0f}s")
    return on_progress


def train(store: ArtifactStore, inputs: dict, params: TrainingParams, run_id: str, log: LogFn,
          checkpoints: Optional[Path] = None, on_progress: Optional[Callable[[dict], None]] = None) -> StageOutput:
    """lora_adapter: fine-tune the base model on the training split; resumes from complete checkpoints."""
    training_dataset, base_model = inputs["training_dataset"], inputs["base_model"]
    ckpt = checkpoints or checkpoint_dir(training_dataset["sha256"], base_model["sha256"], params.model_dump_json())
    with tempfile.TemporaryDirectory(prefix="lora_adapter-") as scratch:
        tmp = Path(scratch)
        data = fetch(store, training_dataset, tmp / "data")
        base = fetch(store, base_model, tmp / "base")
        train_rows = dataset_io.read_split(data / "train.jsonl")
        validation_rows = dataset_io.read_split(data / "validation.jsonl")
        out = tmp / "lora_adapter"
        result = training.train_sft(base, train_rows, validation_rows, out, ckpt, params,
                                    on_progress=on_progress or progress_logger(log))
        if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 alone publishes the result
            return StageOutput({}, {})
        png = loss_curve_png(result["history"])
        (out / "loss_curve.png").write_bytes(png)
        artifact = publish(store, run_id, "lora_adapter", out)
        summary = {k: v for k, v in result.items() if k != "history"}
        value = manifest(artifact, out, **summary, config=params.model_dump(),
                         training_dataset_sha256=training_dataset["sha256"], base_model_sha256=base_model["sha256"])
    training.clear_checkpoints(ckpt)
    return StageOutput(value, {
        "train_loss": meta(result["train_loss"], "float"),
        "eval_loss": meta(result["eval_loss"] if result["eval_loss"] is not None else float("nan"), "float"),
        "steps": meta(result["global_steps"], "int"), "seconds": meta(result["seconds"], "float"),
        "resumed_from": meta(str(result["resumed_from"]), "text"),
        "config": meta(params.model_dump(), "json"),
        "loss_curve": meta(markdown_image(png, "loss curve"), "md"),
    })


MODEL_NAME = "pet-brain"


def export(store: ArtifactStore, inputs: dict, params: ExportParams, run_id: str, log: LogFn) -> StageOutput:
    """gguf_model: merge the adapter, write GGUF files with a Modelfile and a model card beside each."""
    lora_adapter, base_model, training_dataset = inputs["lora_adapter"], inputs["base_model"], inputs["training_dataset"]
    with tempfile.TemporaryDirectory(prefix="gguf_model-") as scratch:
        tmp = Path(scratch)
        base = fetch(store, base_model, tmp / "base")
        adapter = fetch(store, lora_adapter, tmp / "adapter")
        merged = gguf_export.merge_adapter(base, adapter, tmp / "merged")
        out = tmp / "gguf_model"
        variants = gguf_export.export_gguf_variants(merged, out, MODEL_NAME, params.float_type, params.quantizations)
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
                "lineage": {"dagster run": run_id, "adapter": lora_adapter["uri"]},
            }), encoding="utf-8")
            variant["file"] = gguf.name
            del variant["path"]  # a scratch path; the file's place is the artifact uri + file
            log(f"gguf_model: {gguf.name} {variant['bytes']:,} bytes")
        artifact = publish(store, run_id, "gguf_model", out)
        value = manifest(artifact, out, variants=variants, lora_adapter_sha256=lora_adapter["sha256"])
    table = "| variant | file | bytes | sha256 |\n|---|---|---|---|\n" + "\n".join(
        f"| {n} | {v['file']} | {v['bytes']:,} | `{v['sha256'][:16]}` |" for n, v in variants.items())
    return StageOutput(value, {"variants": meta(table, "md")})


# stage name -> (function, parameter class, upstream assets it reads)
STAGE_FUNCTIONS = {
    "training": (train, TrainingParams, ("training_dataset", "base_model")),
    "export": (export, ExportParams, ("lora_adapter", "base_model", "training_dataset")),
    "evaluation": (evaluate, EvalParams,
                   ("gguf_model", "eval_benchmark", "base_model", "lora_adapter", "training_dataset")),
}

__all__ = ["STAGE_FUNCTIONS", "StageOutput", "fetch", "manifest", "meta", "publish"]
