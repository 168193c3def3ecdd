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
from llm_assets.stages.io import LogFn, StageContext, StageResult, describe, fetch, meta, publish

PLOT_TITLES = {"loss_curve": "Loss curve", "per_field_accuracy": "Accuracy per field",
               "action_confusion": "Action confusion matrix"}


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
        prompts = format_prompts(base, [b["prompt"] for b in bench])
        report = evaluate_variants(variants, baseline, prompts, [b["completion"] for b in bench],
                                   [b["category"] for b in bench], params.max_new_tokens, params.deployable,
                                   params.threshold, _progress_logger(log), repack=params.llama_repack)
        report["benchmark_version"] = eval_benchmark.get("version")
        deployable = report["gate"]["variant"]
        history = json.loads((fetch(store, lora_adapter, tmp / "adapter") / "training_history.json").read_text())
        pngs = {
            "loss_curve": plots.loss_curve_png(history),
            "per_field_accuracy": plots.per_field_accuracy_png(report),
            "action_confusion": plots.confusion_matrix_png(
                report["variants"][deployable or next(iter(variants))]["scores"]["confusion"],
                list(pet_task.ACTIONS) + ["invalid"]),
        }
        out = tmp / "eval_report"
        out.mkdir()
        (out / "eval_report.json").write_text(json.dumps(report, indent=1, default=str))
        for name, png in pngs.items():
            (out / f"{name}.png").write_bytes(png)
        value = describe(publish(context, "eval_report", out), out, gate=report["gate"], threshold=params.threshold,
                         deployable=params.deployable, benchmark_version=report["benchmark_version"],
                         variants={n: {"strict_accuracy": e["scores"]["strict_accuracy"],
                                       "file_size_bytes": e["file_size_bytes"]}
                                   for n, e in report["variants"].items()},
                         baseline_strict_accuracy=report["gate"]["baseline_strict_accuracy"],
                         gguf_model_sha256=gguf_model["sha256"])
    gate = report["gate"]
    log(f"eval_report: gate {'PASSED' if gate['passed'] else 'FAILED'}: {gate['reason']}")
    plots_md = "\n\n".join(f"**{PLOT_TITLES[n]}**\n\n{plots.markdown_image(p, PLOT_TITLES[n])}"
                           for n, p in pngs.items())
    return StageResult(value, {
        "strict_accuracy": meta(float(gate["strict_accuracy"] or 0.0), "float"),
        "deployable_variant": meta(str(gate["variant"]), "text"),
        "llama_settings": meta(llama_settings_text(report), "text"),
        "gate_passed": meta(bool(gate["passed"]), "bool"),
        "metrics": meta(metrics_table(report), "md"),
        "plots": meta(plots_md, "md"),
        "model_card": meta(model_card_markdown(report, gguf_model, base_model, lora_adapter, training_dataset), "md"),
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


def format_prompts(tokenizer_dir, texts: list[str]) -> list[str]:
    """The benchmark questions in the base model's chat template, as the fine-tune saw them."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if not tok.chat_template:
        return texts
    return [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
            for t in texts]


def metrics_table(report: dict) -> str:
    rows = dict(report["variants"]) | ({"baseline": report["baseline"]} if report.get("baseline") else {})
    head = ("| model | strict acc | exact match | invalid | ROUGE-L | BLEU | ms/example | bytes |\n"
            "|---|---|---|---|---|---|---|---|\n")
    return head + "\n".join(
        f"| {name} | {e['scores']['strict_accuracy']:.3f} | {e['scores']['exact_match']:.3f} | "
        f"{e['scores']['invalid_rate']:.3f} | {e['scores']['rouge_l']:.3f} | {e['scores']['bleu']:.1f} | "
        f"{1000 * e['latency']['mean_s']:.1f} | {e.get('file_size_bytes', 0):,} |" for name, e in rows.items())


def model_card_markdown(report: dict, gguf_model: dict, base_model: dict, lora_adapter: dict,
                        training_dataset: dict) -> str:
    """The deployable variant's model card, now with its benchmark scores (export wrote it before evaluation)."""
    gate = report["gate"]
    name = gate["variant"] or next(iter(report["variants"]))
    scores = report["variants"][name]["scores"]
    variant = gguf_model["variants"][name]
    card = render_model_card({
        "name": variant["file"].removesuffix(".gguf"),
        "base_model": {"id": base_model.get("model_id"), "revision": base_model.get("revision")},
        "data": {"version": training_dataset["sha256"][:16],
                 "rows": {"train": training_dataset["train_rows"], "validation": training_dataset["validation_rows"]}},
        "metrics": {"strict_accuracy": scores["strict_accuracy"], "per_field_accuracy": scores["per_field_accuracy"],
                    "gate": gate["reason"], "benchmark": report.get("benchmark_version")},
        "config": lora_adapter.get("config"),
        "variants": {name: {**variant, "path": variant["file"]}},
        "lineage": {"GGUF": f"{gguf_model['uri']}/{variant['file']}", "adapter": lora_adapter["uri"]},
    })
    # The YAML front matter is for the Hugging Face Hub; in the UI it would render as stray text.
    return card.split("---\n", 2)[2].lstrip() if card.startswith("---\n") else card
