"""The evaluation stage (eval_report): the shipped GGUF files and the untuned baseline answer the benchmark
through llama.cpp, and the accuracy gate is decided, once, here.

It writes eval_report.json and the plots to the store and returns the manifest `accuracy_gate` and
`registered_model` read; a GPU cloud machine can evaluate a big model's GGUF files where they were made.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from llm_assets.core import gguf_export, pet_task, plots
from llm_assets.core.dataset_io import iter_jsonl
from llm_assets.core.evaluation import evaluate_variants
from llm_assets.core.hyperparameters import EvalParams
from llm_assets.core.llama_runtime import LlamaSettings
from llm_assets.core.model_card import render_model_card
from llm_assets.core.model_spec import ModelSpec, tightened_gate
from llm_assets.stages.io import LogFn, StageContext, StageResult, describe, fetch, meta, publish

PLOT_TITLES = {"loss_curve": "Loss curve", "per_field_accuracy": "Accuracy per field",
               "confusion": "Confusion matrix"}


def run(inputs: dict, params: EvalParams, context: StageContext) -> StageResult:
    """eval_report: every GGUF variant and the untuned base model scored, compared and gated."""
    store, log = context.store, context.log
    gguf_model, eval_benchmark = inputs["gguf_model"], inputs["eval_benchmark"]
    base_model, lora_adapter, training_dataset = inputs["base_model"], inputs["lora_adapter"], inputs["training_dataset"]
    with tempfile.TemporaryDirectory(prefix="eval_report-") as scratch:
        tmp = Path(scratch)
        bench = [row for _, row in iter_jsonl(fetch(store, eval_benchmark, tmp / "benchmark.jsonl"))]
        if params.max_examples:
            bench = bench[: params.max_examples]
        base = fetch(store, base_model, tmp / "base")
        ggufs = fetch(store, gguf_model, tmp / "gguf")
        variants = {name: ggufs / v["file"] for name, v in gguf_model["variants"].items()}
        baseline = gguf_export.convert_to_gguf(base, tmp / "baseline-f16.gguf", "f16") \
            if params.evaluate_baseline else None
        prompts = format_prompts(base, [b["prompt"] for b in bench], [b.get("system") for b in bench])
        gate_spec = tightened_gate(context.model.gate, params.threshold, "threshold")
        threshold = gate_spec.threshold
        report = evaluate_variants(variants, baseline, prompts, [b["completion"] for b in bench],
                                   [b.get("category") for b in bench], params.max_new_tokens,
                                   params.deployable, threshold, _progress_logger(log), repack=params.llama_repack,
                                   scorer=context.model.scorer, scorer_options=context.model.scorer_options,
                                   metric=gate_spec.metric, margin=gate_spec.beats_base_by)
        report["benchmark_version"] = eval_benchmark.get("version")
        deployable = report["gate"]["variant"]
        history = json.loads((fetch(store, lora_adapter, tmp / "adapter") / "training_history.json").read_text())
        pngs = report_plots(report, history, deployable or next(iter(variants)))
        out = tmp / "eval_report"
        out.mkdir()
        (out / "eval_report.json").write_text(json.dumps(report, indent=1, default=str))
        for name, png in pngs.items():
            (out / f"{name}.png").write_bytes(png)
        value = describe(publish(context, "eval_report", out), out, gate=report["gate"], threshold=threshold,
                         deployable=params.deployable, benchmark_version=report["benchmark_version"],
                         variants={n: {gate_spec.metric: e["scores"][gate_spec.metric],
                                       "file_size_bytes": e["file_size_bytes"]}
                                   for n, e in report["variants"].items()},
                         baseline_value=report["gate"]["baseline_value"], scorer=report["scorer"],
                         serving=context.model.serving.model_dump(mode="json"),
                         gguf_model_sha256=gguf_model["sha256"])
    gate = report["gate"]
    log(f"eval_report: gate {'PASSED' if gate['passed'] else 'FAILED'}: {gate['reason']}")
    plots_md = "\n\n".join(f"**{PLOT_TITLES[n]}**\n\n{plots.markdown_image(p, PLOT_TITLES[n])}"
                           for n, p in pngs.items())
    return StageResult(value, {
        gate["metric"]: meta(float(gate["value"] or 0.0), "float"),
        "deployable_variant": meta(str(gate["variant"]), "text"),
        "llama_settings": meta(llama_settings_text(report), "text"),
        "gate_passed": meta(bool(gate["passed"]), "bool"),
        "metrics": meta(metrics_table(report), "md"),
        "plots": meta(plots_md, "md"),
        "model_card": meta(model_card_markdown(report, gguf_model, base_model, lora_adapter, training_dataset,
                                               context.model, bench[0]), "md"),
    })


def _progress_logger(log: LogFn):
    last_logged: dict[str, int] = {}

    def on_progress(name: str, done: int, total: int) -> None:
        if done == total or done - last_logged.get(name, 0) >= max(total // 4, 1):
            last_logged[name] = done
            log(f"eval_report: {name} {done}/{total} examples")
    return on_progress


def llama_settings_text(report: dict) -> str:
    """The llama.cpp settings every evaluated file was loaded with (one line; they agree unless a load differed)."""
    entries = [*report["variants"].values(), *([report["baseline"]] if report["baseline"] else [])]
    seen = {LlamaSettings(**e["llama_settings"]).describe() for e in entries}
    return "; ".join(sorted(seen))


def format_prompts(tokenizer_dir, texts: list[str], systems: list[str | None] | None = None) -> list[str]:
    """The benchmark questions in the base model's chat template, as the fine-tune saw them (a row's system
    message, when its data had one, first)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if not tok.chat_template:
        return texts
    systems = systems or [None] * len(texts)
    return [tok.apply_chat_template([*([{"role": "system", "content": s}] if s else []), {"role": "user", "content": t}],
                                    tokenize=False, add_generation_prompt=True) for t, s in zip(texts, systems)]


# The table's columns, in this order, for whichever of them the scorer reports.
TABLE_METRICS = ("strict_accuracy", "accuracy", "macro_f1", "exact_match", "invalid_rate", "rouge_1", "rouge_2",
                 "rouge_l", "bleu", "jaccard")


def metrics_table(report: dict) -> str:
    """One row per model (variants and baseline), one column per metric the scorer reported, then speed and size."""
    rows = dict(report["variants"]) | ({"baseline": report["baseline"]} if report.get("baseline") else {})
    first = next(iter(rows.values()))["scores"]
    columns = [m for m in TABLE_METRICS if isinstance(first.get(m), (int, float))]
    head = ("| model | " + " | ".join(c.replace("_", " ") for c in columns) + " | ms/example | bytes |\n"
            + "|---" * (len(columns) + 3) + "|\n")
    return head + "\n".join(
        f"| {name} | " + " | ".join(f"{e['scores'][c]:.3f}" for c in columns)
        + f" | {1000 * e['latency']['mean_s']:.1f} | {e.get('file_size_bytes', 0):,} |" for name, e in rows.items())


def report_plots(report: dict, history: list, shown: str) -> dict[str, bytes]:
    """The loss curve, and the plots the scorer has data for: per-field accuracy (json, pet) and the confusion
    matrix of the shown variant (label, pet)."""
    pngs = {"loss_curve": plots.loss_curve_png(history)}
    scores = report["variants"][shown]["scores"]
    if scores.get("per_field_accuracy"):
        pngs["per_field_accuracy"] = plots.per_field_accuracy_png(report)
    if scores.get("confusion"):
        labels = scores.get("confusion_labels") or (list(pet_task.ACTIONS) + ["invalid"])
        pngs["confusion"] = plots.confusion_matrix_png(scores["confusion"], labels)
    return pngs


def model_card_markdown(report: dict, gguf_model: dict, base_model: dict, lora_adapter: dict,
                        training_dataset: dict, model: ModelSpec, example: dict) -> str:
    """The deployable variant's model card, now with its benchmark scores (export wrote it before evaluation),
    its usage shown with a question from the model's own benchmark."""
    gate = report["gate"]
    name = gate["variant"] or next(iter(report["variants"]))
    scores = report["variants"][name]["scores"]
    variant = gguf_model["variants"][name]
    card = render_model_card({
        "name": variant["file"].removesuffix(".gguf"),
        "base_model": {"id": base_model.get("model_id"), "revision": base_model.get("revision")},
        "data": {"version": training_dataset["sha256"][:16],
                 "rows": {"train": training_dataset["train_rows"], "validation": training_dataset["validation_rows"]}},
        "metrics": {gate["metric"]: scores[gate["metric"]],
                    **({"per_field_accuracy": scores["per_field_accuracy"]} if scores.get("per_field_accuracy")
                       else {}),
                    "gate": gate["reason"], "benchmark": report.get("benchmark_version")},
        "config": lora_adapter.get("config"),
        "variants": {name: {**variant, "path": variant["file"]}},
        "lineage": {"GGUF": f"{gguf_model['uri']}/{variant['file']}", "adapter": lora_adapter["uri"]},
        "description": model.purpose, "example_prompt": example["prompt"],
        "system_prompt": example.get("system") or model.serving.system_prompt,
    })
    # The YAML front matter is for the Hugging Face Hub; in the UI it would render as stray text.
    return card.split("---\n", 2)[2].lstrip() if card.startswith("---\n") else card
