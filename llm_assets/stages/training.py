"""The training stage (lora_adapter): fine-tune the base model on the training split, resumable."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from llm_assets.core import dataset_io, training
from llm_assets.core.hyperparameters import TrainingParams
from llm_assets.core.plots import loss_curve_png, markdown_image
from llm_assets.stages.io import LogFn, StageContext, StageResult, checkpoint_dir, describe, fetch, meta, publish


def progress_logger(log: LogFn) -> Callable[[dict], None]:
    """Step, loss and ETA as log lines: what a user watches in the run's log while it trains."""
    def on_progress(entry: dict) -> None:
        if "loss" in entry or "eval_loss" in entry:
            log(f"lora_adapter step {entry['step']}/{entry['total_steps']} epoch {entry['epoch']} "
                + " ".join(f"{k} {entry[k]:.4f}" for k in ("loss", "eval_loss", "grad_norm", "learning_rate")
                           if isinstance(entry.get(k), float))
                + f" eta {entry['eta_seconds']:.0f}s")
    return on_progress


def run(inputs: dict, params: TrainingParams, context: StageContext) -> StageResult:
    """A LoRA (or full) fine-tune that resumes from its latest complete checkpoint, with its loss curve."""
    training_dataset, base_model = inputs["training_dataset"], inputs["base_model"]
    ckpt = context.checkpoints or checkpoint_dir(training_dataset["sha256"], base_model["sha256"],
                                                 params.model_dump_json())
    with tempfile.TemporaryDirectory(prefix="lora_adapter-") as scratch:
        tmp = Path(scratch)
        data = fetch(context.store, training_dataset, tmp / "data")
        base = fetch(context.store, base_model, tmp / "base")
        out = tmp / "lora_adapter"
        result = training.train_sft(base, dataset_io.read_split(data / "train.jsonl"),
                                    dataset_io.read_split(data / "validation.jsonl"), out, ckpt, params,
                                    on_progress=progress_logger(context.log))
        if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 alone publishes the result
            return StageResult({}, {})
        png = loss_curve_png(result["history"])
        (out / "loss_curve.png").write_bytes(png)
        summary = {k: v for k, v in result.items() if k != "history"}
        value = describe(publish(context, "lora_adapter", out), out, **summary, config=params.model_dump(),
                         training_dataset_sha256=training_dataset["sha256"], base_model_sha256=base_model["sha256"])
    training.clear_checkpoints(ckpt)
    return StageResult(value, {
        "train_loss": meta(result["train_loss"], "float"),
        "eval_loss": meta(result["eval_loss"] if result["eval_loss"] is not None else float("nan"), "float"),
        "steps": meta(result["global_steps"], "int"), "seconds": meta(result["seconds"], "float"),
        "resumed_from": meta(str(result["resumed_from"]), "text"),
        "config": meta(params.model_dump(), "json"),
        "loss_curve": meta(markdown_image(png, "loss curve"), "md"),
    })
