"""Orchestration overhead: the asset graph against the same stage functions called directly.

Graph: `train_cpu_tiny_job` from llm_assets.definitions, executed in process as
`make demo` does (Dagster's event log, the artifact store, manifests, checks,
plots, model cards and the registry's rejection record included), on a small
run config. Direct: the core functions those assets call, in order, in one
process, with the same parameters: generate the rows and the benchmark, build
the base model, prepare the split, train, export the GGUF variants, evaluate
them and the baseline. Each side is a fresh interpreter timed from start to
exit, so imports count on both sides; runs alternate and medians are reported.

    python bench/orchestration_overhead.py --rows 2000 --steps 60 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402

MODEL, GATE_THRESHOLD = "pet-brain", 0.95  # models/pet-brain.yaml: what the graph trains, and its gate


def run_config(rows: int, steps: int, examples: int, pretrain_steps: int) -> dict:
    base = {"pretrain_steps": pretrain_steps}  # over models/pet-brain.yaml's base model (the embedded one)
    return {"ops": {
        "raw_dataset": {"config": {"source": "embedded:pet", "num_examples": rows, "seed": 0}},
        "eval_benchmark": {"config": {"examples_per_category": max(1, -(-examples // 5))}},
        "base_model": {"config": base},
        "lora_adapter": {"config": {"epochs": 1.0, "max_steps": steps, "batch_size": 16}},
        "gguf_model": {"config": {"float_type": "f16", "quantizations": ["q8_0", "q4_k_m"]}},
        "eval_report": {"config": {"max_examples": examples}},
    }}


def graph(config: dict, work: Path) -> dict:
    os.environ.update({"LLM_ASSETS_ARTIFACT_ROOT": str(work / "artifacts"), "DAGSTER_HOME": str(work),
                       "LLM_ASSETS_REGISTRY_URL": f"sqlite:///{work}/registry.db",
                       "LLM_ASSETS_CHECKPOINT_DIR": str(work / "checkpoints")})
    import dagster as dg

    from jobs import DEFAULT_TRAINING_JOB
    from llm_assets.definitions import defs

    from resources.model_catalog import register_models

    instance = dg.DagsterInstance.ephemeral()
    register_models(instance, [MODEL])
    result = defs.resolve_job_def(DEFAULT_TRAINING_JOB).execute_in_process(
        run_config=config, instance=instance, raise_on_error=False, partition_key=MODEL)
    done = sorted(m.asset_key.to_user_string() for m in result.get_asset_materialization_events())
    if "eval_report" not in done:
        failures = [e.message for e in result.all_events if e.is_failure]
        raise RuntimeError(f"the graph did not reach eval_report: {failures[:3]}")
    starts, steps = {}, {}
    for entry in instance.all_logs(result.run_id):  # each step's own wall time, from the event log
        event = entry.dagster_event
        if event is not None and event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event is not None and event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            steps[event.step_key] = round(entry.timestamp - starts.get(event.step_key, entry.timestamp), 2)
    return {"materialized": done, "steps": steps}


def direct(config: dict, work: Path) -> dict:
    """The stage functions the assets call, in one process, no Dagster and no artifact store."""
    from transformers import AutoTokenizer

    from llm_assets.core import dataset_io, dataset_stream, pet_benchmark, pet_task, training
    from llm_assets.core.base_models import prepare_base_model
    from llm_assets.core.dataset_prep import PromptRenderer
    from llm_assets.core.evaluation import evaluate_variants
    from llm_assets.core.gguf_convert import convert_to_gguf
    from llm_assets.core.gguf_export import export_gguf_variants
    from llm_assets.core.tiny_model import EMBEDDED_MODEL_ID
    from llm_assets.core.hyperparameters import (BaseModelParams, BenchmarkParams, DatasetParams, EvalParams,
                                                 ExportParams, RawDataParams, TrainingParams)

    ops = {name: op["config"] for name, op in config["ops"].items()}
    steps: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(stage: str) -> None:
        now = time.perf_counter()
        steps[stage], clock[0] = round(now - clock[0], 2), now

    raw, bench_p = RawDataParams(**ops["raw_dataset"]), BenchmarkParams(**ops["eval_benchmark"])
    rows = pet_task.generate_training_rows(raw.num_examples, raw.seed)
    for i, row in enumerate(rows, 1):
        row["source"] = f"{raw.source}?seed={raw.seed}:{i}"
    dataset_io.write_jsonl(rows, work / "raw.jsonl")
    lap("raw_dataset")
    bench = pet_benchmark.generate_benchmark(bench_p.examples_per_category, bench_p.seed)
    lap("eval_benchmark")
    prepare_base_model(BaseModelParams(**{"model_id": EMBEDDED_MODEL_ID, **ops["base_model"]}), work / "base")
    lap("base_model")
    tokenizer = AutoTokenizer.from_pretrained(work / "base")
    data = DatasetParams()
    dataset_stream.prepare_split(work / "raw.jsonl", tokenizer, work / "data", data.max_tokens,
                                 [b["prompt"] for b in bench], data.max_duplicate_fraction,
                                 data.validation_fraction, data.split_seed)
    lap("training_dataset")
    result = training.train_sft(work / "base", dataset_io.read_split(work / "data" / "train.jsonl"),
                                dataset_io.read_split(work / "data" / "validation.jsonl"), work / "model",
                                work / "ckpt", TrainingParams(**ops["lora_adapter"]))
    lap("lora_adapter")
    export = ExportParams(**ops["gguf_model"])
    variants = export_gguf_variants(work / "model", work / "gguf", "pet-brain", export.float_type,
                                    export.quantizations)
    lap("gguf_model")
    ev = EvalParams(**ops["eval_report"])
    bench = bench[:ev.max_examples] if ev.max_examples else bench
    prompts = PromptRenderer(tokenizer).frame_user_texts([b["prompt"] for b in bench])
    report = evaluate_variants({n: v["path"] for n, v in variants.items()},
                               convert_to_gguf(work / "base", work / "baseline-f16.gguf", "f16"), prompts,
                               [b["completion"] for b in bench], [b["category"] for b in bench],
                               ev.max_new_tokens, ev.deployable, ev.threshold or GATE_THRESHOLD)
    lap("eval_report")
    return {"train_steps": result["global_steps"], "strict_accuracy": report["gate"]["value"],
            "steps": steps}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="generated rows")
    parser.add_argument("--steps", type=int, default=60, help="training steps")
    parser.add_argument("--examples", type=int, default=50, help="benchmark examples evaluated")
    parser.add_argument("--pretrain-steps", type=int, default=30, help="pretraining of the embedded base model")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side (alternating); medians reported")
    parser.add_argument("--worker", choices=["graph", "direct"], help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        with tempfile.TemporaryDirectory(prefix=f"bench-{args.worker}-") as tmp:
            out = (graph if args.worker == "graph" else direct)(json.loads(args.config), Path(tmp))
        benchlib.report(out)
        return {}

    print(benchlib.load_line("at start"), flush=True)
    config = json.dumps(run_config(args.rows, args.steps, args.examples, args.pretrain_steps))
    seconds: dict[str, list[float]] = {"graph": [], "direct": []}
    stages: dict[str, list[dict]] = {"graph": [], "direct": []}
    for rep in range(args.repeats):
        for who in (("graph", "direct") if rep % 2 == 0 else ("direct", "graph")):
            started = time.perf_counter()
            result = benchlib.run_worker(__file__, [who, "--config", config])
            seconds[who].append(time.perf_counter() - started)
            stages[who].append(result["steps"])
            print(f"  run {rep + 1}/{args.repeats} {who}: {seconds[who][-1]:.1f}s, peak RSS "
                  f"{result['peak_rss_gb']:.2f} GB", flush=True)
    g, d = benchlib.median(seconds["graph"]), benchlib.median(seconds["direct"])
    benchlib.print_table(
        f"orchestration: {args.rows} rows, {args.steps} training steps, {args.examples} benchmark examples, "
        f"medians of {args.repeats} (process start to exit)",
        ["", "seconds", "vs direct"],
        [["asset graph (train_cpu_tiny_job, in process)", g, g / d], ["stage functions called directly", d, 1.0]])
    names = list(stages["direct"][0])
    in_steps = {who: sum(benchlib.median([r.get(n, 0.0) for r in stages[who]]) for n in names) for who in stages}
    benchlib.print_table(
        "where the time goes: each stage's own seconds (graph: the event log's step start to success; medians)",
        ["stage", "graph step", "direct", "graph / direct"],
        [[n, benchlib.median([r.get(n, float("nan")) for r in stages["graph"]]),
          benchlib.median([r[n] for r in stages["direct"]]),
          benchlib.ratio(benchlib.median([r.get(n, float("nan")) for r in stages["graph"]]),
                         benchlib.median([r[n] for r in stages["direct"]]))] for n in names]
        + [["checks and registry steps", sum(benchlib.median([r[k] for r in stages["graph"]])
                                             for k in stages["graph"][0] if k not in names), 0.0, "-"],
           ["outside the stages (imports, instance, event log)", g - in_steps["graph"], d - in_steps["direct"], "-"]])
    print(benchlib.load_line("at end"))
    return {"orchestration_overhead": round(g / d, 3), "graph_seconds": round(g, 1), "direct_seconds": round(d, 1)}


if __name__ == "__main__":
    print(json.dumps(main()))
