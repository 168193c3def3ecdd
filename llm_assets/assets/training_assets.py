"""Training stage: the base model and the fine-tuned adapter."""


import hashlib
import os
from pathlib import Path

import dagster as dg

from llm_assets.assets.common import fetch, manifest, output, publish, scratch
from llm_assets.config import BaseModelConfig, TrainingConfig
from llm_assets.core import dataset_io, training
from llm_assets.core.base_models import prepare_base_model
from llm_assets.core.plots import loss_curve_png, markdown_image
from resources.artifact_store import ArtifactStoreResource


@dg.asset(group_name="training", kinds={"pytorch", "huggingface"}, owners=["team:ml"])
def base_model(context: dg.AssetExecutionContext, config: BaseModelConfig,
               artifact_store: ArtifactStoreResource) -> dg.Output:
    """The causal LM to fine-tune: a hub id or local folder (revision recorded), or the embedded tiny Llama."""
    def on_step(step: int, total: int, loss: float) -> None:
        if step % 25 == 0 or step == total:
            context.log.info(f"base_model pretraining step {step}/{total} loss {loss:.4f}")

    with scratch(context) as tmp:
        out = tmp / "base_model"
        info = prepare_base_model(config, out, on_step)
        artifact = publish(context, artifact_store.store(), out)
        value = manifest(artifact, out, **{k: v for k, v in info.items() if k != "spec"})
    return output(value, {"model_id": info["model_id"], "revision": str(info.get("revision")),
                          "parameters": info["parameters"]})


def checkpoint_dir(*parts: str) -> Path:
    """Where a run keeps its checkpoints: the same inputs and config find the same folder on retry."""
    root = Path(os.environ.get("LLM_ASSETS_CHECKPOINT_DIR", Path.cwd() / "artifacts" / "checkpoints"))
    return root / hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


@dg.asset(group_name="training", kinds={"pytorch", "peft"}, owners=["team:ml"])
def lora_adapter(context: dg.AssetExecutionContext, config: TrainingConfig,
                 artifact_store: ArtifactStoreResource, training_dataset: dict, base_model: dict) -> dg.Output:
    """LoRA (or full) fine-tune with TRL's SFTTrainer: completion-only loss, resumable checkpoints, loss curve."""
    store = artifact_store.store()
    ckpt = checkpoint_dir(training_dataset["sha256"], base_model["sha256"], config.model_dump_json())

    def on_progress(entry: dict) -> None:
        if "loss" in entry or "eval_loss" in entry:
            context.log.info(
                f"lora_adapter step {entry['step']}/{entry['total_steps']} epoch {entry['epoch']} "
                + " ".join(f"{k} {entry[k]:.4f}" for k in ("loss", "eval_loss", "grad_norm", "learning_rate")
                           if isinstance(entry.get(k), float))
                + f" eta {entry['eta_seconds']:.0f}s")

    with scratch(context) as tmp:
        data = fetch(store, training_dataset, tmp / "data")
        base = fetch(store, base_model, tmp / "base")
        train_rows = dataset_io.read_split(data / "train.jsonl")
        validation_rows = dataset_io.read_split(data / "validation.jsonl")
        out = tmp / "lora_adapter"
        result = training.train_sft(base, train_rows, validation_rows, out, ckpt, config, on_progress=on_progress)
        png = loss_curve_png(result["history"])
        (out / "loss_curve.png").write_bytes(png)
        artifact = publish(context, store, out)
        summary = {k: v for k, v in result.items() if k != "history"}
        value = manifest(artifact, out, **summary, config=config.model_dump(),
                         training_dataset_sha256=training_dataset["sha256"], base_model_sha256=base_model["sha256"])
    training.clear_checkpoints(ckpt)
    return output(value, {
        "train_loss": result["train_loss"], "eval_loss": result["eval_loss"] or float("nan"),
        "steps": result["global_steps"], "seconds": result["seconds"],
        "resumed_from": str(result["resumed_from"]),
        "config": dg.MetadataValue.json(config.model_dump()),
        "loss_curve": dg.MetadataValue.md(markdown_image(png, "loss curve")),
    })
