"""Supervised fine-tuning with TRL's SFTTrainer and PEFT LoRA.

Completion-only loss on prompt/completion rows, fixed seeds, resumable
checkpoints (only checkpoints marked complete are trusted), a loss history
for the plots, and health guards that stop a run that is going wrong instead
of shipping garbage.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from llm_assets.core.atomic import atomic_dir, write_text
from llm_assets.core.attention import attention_implementation, unpadded_attention
from llm_assets.core.errors import TrainingHealthError
from llm_assets.core.hyperparameters import TrainingParams

log = logging.getLogger(__name__)
COMPLETE_MARKER = "CHECKPOINT_COMPLETE"
ProgressFn = Callable[[dict], None]


def write_complete_marker(checkpoint: Path, step: int) -> None:
    """Mark `checkpoint` complete, listing its files and sizes so a copy can prove it holds all of them."""
    files = {p.relative_to(checkpoint).as_posix(): p.stat().st_size
             for p in sorted(checkpoint.rglob("*")) if p.is_file()}
    write_text(checkpoint / COMPLETE_MARKER, json.dumps({"step": step, "files": files}))


def latest_complete_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest checkpoint whose save finished; half-written ones are ignored."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    done = [p for p in root.glob("checkpoint-*") if (p / COMPLETE_MARKER).exists()]
    return max(done, key=lambda p: int(re.sub(r"\D", "", p.name) or 0), default=None)


# A loss that climbed back by less than this share of its first logged value is noise, not divergence:
# near the end of a good run the loss is ~0.002, and a 4x wobble to 0.008 is harmless (measured: the
# plain ratio test stopped a healthy demo run at step 3,850 of 5,224).
DIVERGENCE_FLOOR = 0.1


def diverged(loss: float, best: float, first: float, factor: float) -> bool:
    """Has the loss risen well above its best: `factor` times it, and by a real share of where it started?"""
    return loss > factor * best and loss - best > DIVERGENCE_FLOOR * first


def _callbacks(params: TrainingParams, on_progress: ProgressFn | None, history: list[dict]):
    from transformers import TrainerCallback

    class HealthAndProgress(TrainerCallback):
        """Logs step, loss and ETA; stops on non-finite loss, divergence or exploding gradients."""

        def __init__(self):
            self.best = self.first = math.inf
            self.started = time.perf_counter()
            self.first_step = 0

        def on_train_begin(self, args, state, control, **kw):
            # A resumed run starts past step 0: the ETA counts only this run's steps.
            self.started, self.first_step = time.perf_counter(), state.global_step

        def on_log(self, args, state, control, logs=None, **kw):
            logs = dict(logs or {})
            step, total = state.global_step, max(state.max_steps, 1)
            entry = {**logs, "step": step, "epoch": round(state.epoch or 0, 3)}
            history.append(entry)
            loss, grad = logs.get("loss"), logs.get("grad_norm")
            if loss is not None:
                if not math.isfinite(loss):
                    raise TrainingHealthError(f"training loss is {loss} at step {step}: stopping (lower the "
                                              f"learning_rate, now {params.learning_rate})")
                self.first = loss if self.first == math.inf else self.first
                self.best = min(self.best, loss)
                if step > 2 * params.logging_steps and diverged(loss, self.best, self.first,
                                                                params.divergence_factor):
                    raise TrainingHealthError(
                        f"training diverged at step {step}: loss {loss:.4f} > {params.divergence_factor} x best "
                        f"{self.best:.4f} (first {self.first:.4f}; lower learning_rate={params.learning_rate})")
            if grad is not None and (not math.isfinite(grad) or grad > params.max_grad_norm_alert):
                raise TrainingHealthError(f"gradient norm {grad} at step {step} exceeds max_grad_norm_alert="
                                          f"{params.max_grad_norm_alert}: stopping")
            elapsed = time.perf_counter() - self.started
            done = max(step - self.first_step, 1)
            entry["eta_seconds"] = round(elapsed / done * (total - step), 1)
            entry["total_steps"] = total
            if on_progress:
                on_progress(entry)

        def on_save(self, args, state, control, **kw):
            # Written after the Trainer finished writing the folder: a marker that
            # exists means every file of the checkpoint is complete.
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                write_complete_marker(ckpt, state.global_step)

    return [HealthAndProgress()]


def _sft_config(params: TrainingParams, output_dir: Path, has_eval: bool):
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=params.epochs,
        max_steps=params.max_steps,
        per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=max(params.batch_size, 32),
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        learning_rate=params.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=params.warmup_ratio,  # a float in [0, 1) is a ratio
        weight_decay=params.weight_decay,
        max_grad_norm=params.max_grad_norm,
        logging_steps=params.logging_steps,
        save_strategy="steps",
        save_steps=params.save_steps,
        save_total_limit=2,
        eval_strategy="epoch" if has_eval else "no",
        seed=params.seed,
        data_seed=params.seed,
        # train_sft hands over rows tokenized, labelled and cut to max_length (tokenize_rows): TRL's own
        # row-by-row preparation would only redo it (and refuses a max_length with padding-free batches).
        max_length=None,
        dataset_kwargs={"skip_prepare_dataset": True},
        padding_free=params.padding_free,
        completion_only_loss=True,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        # TRL turns activation checkpointing on by default; models that fit in
        # memory train about a third faster without recomputing activations.
        gradient_checkpointing=False,
        use_cpu=not _cuda_available(),
        bf16=use_bf16(params.precision),
        # Similar lengths in a batch: on the embedded task about a fifth of a
        # randomly drawn batch is padding, computed and thrown away (opt-in).
        train_sampling_strategy="group_by_length" if params.group_by_length else "random",
    )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """AMX or AVX512-BF16 in the CPU flags: bf16 matrix products run natively, not emulated."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no way to tell, so the safe fp32
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def use_bf16(precision: str) -> bool:
    """Whether training runs under bf16 autocast for a TrainingParams.precision."""
    if precision != "auto":
        return precision == "bf16"
    if _cuda_available():
        import torch

        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def tokenize_rows(tokenizer, rows: Sequence[dict], max_length: int | None):
    """The rows as SFTTrainer would prepare them (input_ids and completion-only labels), in one batched pass.

    TRL tokenizes a split row by row through Dataset.map on every run (about 3,000 rows/s); the fast
    tokenizer takes the whole split in one call. The result is exactly TRL's: the prompt and the
    prompt+completion+EOS tokenized apart, the completion starting where they diverge, kept from the
    start up to max_length, and rows left without a completion token dropped.
    """
    from datasets import Dataset

    eos = tokenizer.eos_token
    prompts = [r["prompt"] for r in rows]
    texts = [r["prompt"] + (r["completion"] if r["completion"].endswith(eos) else r["completion"] + eos)
             for r in rows]
    prompt_ids = tokenizer(prompts)["input_ids"] if rows else []
    full_ids = tokenizer(texts)["input_ids"] if rows else []
    input_ids, labels = [], []
    for p, ids in zip(prompt_ids, full_ids):
        start = len(p) if ids[:len(p)] == p else _common_prefix(p, ids)
        ids = ids[:max_length] if max_length else ids
        if len(ids) > start:  # TRL drops a row whose completion was cut off entirely
            input_ids.append(ids)
            labels.append([-100] * start + ids[start:])
    return Dataset.from_dict({"input_ids": input_ids, "labels": labels})


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def train_sft(
    base_model_dir: str | Path,
    train_rows: Sequence[dict],
    validation_rows: Sequence[dict],
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    params: TrainingParams,
    max_length: int = 256,
    on_progress: ProgressFn | None = None,
    extra_callbacks: Sequence = (),
) -> dict:
    """Fine-tune the model in `base_model_dir`; write the adapter (or full model) to `out_dir`.

    Rows are {"prompt", "completion"} with the prompt already in the chat frame.
    `extra_callbacks`: Trainer callbacks run beside the health and progress ones (a benchmark's probe).
    Resumes from the newest complete checkpoint in `checkpoint_dir`.
    Returns a summary: losses, steps, tokens, seconds, resumed_from.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_assets.core.completion_loss import sft_trainer_class
    from llm_assets.core.fused_ops import fuse_rms_norms, fuse_rotary_embeddings

    started = time.perf_counter()
    if params.threads:
        torch.set_num_threads(params.threads)
    torch.manual_seed(params.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    attention = attention_implementation(params.attention)
    if params.padding_free:
        attention = unpadded_attention(attention)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, torch_dtype=torch.float32,
                                                 **({"attn_implementation": attention} if attention else {}))
    fuse_rms_norms(model)  # a hand-written backward: eight operations where autograd records about fifteen
    fuse_rotary_embeddings(model)  # six operations each way instead of fourteen, and about thirty backwards
    peft_config = None
    if params.method == "lora":
        from peft import LoraConfig

        targets = params.lora_target_modules
        peft_config = LoraConfig(
            r=params.lora_r, lora_alpha=params.lora_alpha, lora_dropout=params.lora_dropout,
            target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
            modules_to_save=["embed_tokens", "lm_head"] if params.lora_train_embeddings else None,
            task_type="CAUSAL_LM",
        )
    train_ds = tokenize_rows(tokenizer, train_rows, max_length)
    eval_ds = tokenize_rows(tokenizer, validation_rows, max_length) if validation_rows else None
    checkpoint_dir = Path(checkpoint_dir)
    history: list[dict] = []
    trainer = sft_trainer_class()(
        model=model, args=_sft_config(params, checkpoint_dir, eval_ds is not None),
        train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
        peft_config=peft_config, callbacks=_callbacks(params, on_progress, history) + list(extra_callbacks),
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # progress goes through on_progress, not raw dicts on stdout
    resume = latest_complete_checkpoint(checkpoint_dir)
    if resume:
        log.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    # The last epoch's evaluation already scored the final weights: do not pay for it twice.
    last_eval = [h for h in history if "eval_loss" in h and h["step"] == result.global_step]
    metrics = last_eval[-1] if last_eval else trainer.evaluate() if eval_ds is not None else {}
    with atomic_dir(out_dir) as tmp:
        trainer.model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_text(tmp / "training_history.json", json.dumps(history, indent=1))
        write_text(tmp / "training_params.json", params.model_dump_json(indent=2))
    n_tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
    return {
        "method": params.method,
        "train_loss": round(float(result.training_loss), 5),
        "eval_loss": round(float(metrics["eval_loss"]), 5) if "eval_loss" in metrics else None,
        "global_steps": int(result.global_step),
        "train_rows": len(train_rows),
        "train_tokens_per_epoch": int(n_tokens),
        "seconds": round(time.perf_counter() - started, 2),
        "resumed_from": resume.name if resume else None,
        "history": history,
    }


def clear_checkpoints(checkpoint_dir: str | Path) -> None:
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
