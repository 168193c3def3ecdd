"""Evaluation stage: the shipped GGUF files and the untuned baseline on the benchmark, and the accuracy gate."""


import json

import dagster as dg

from llm_assets.assets.automation import COMPUTE_RETRY_POLICY, fail_fast, follows
from llm_assets.assets.common import fetch, manifest, output, publish, scratch
from llm_assets.assets.data_assets import read_jsonl
from llm_assets.config import EvalConfig
from llm_assets.core import gguf_export, pet_task, plots
from llm_assets.core.evaluation import evaluate_variants
from llm_assets.core.gate import evaluate_gate
from llm_assets.core.model_card import render_model_card
from llm_assets.assets.registry_assets import record_rejection
from resources.artifact_store import ArtifactStoreResource
from resources.registry import ModelRegistryResource

FIELDS = ("action", "target", "hunger", "energy", "happiness", "hygiene")


def _format_prompts(tokenizer_dir, texts: list[str]) -> list[str]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if not tok.chat_template:
        return texts
    return [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
            for t in texts]


def _metrics_table(report: dict) -> str:
    rows = dict(report["variants"]) | ({"baseline": report["baseline"]} if report.get("baseline") else {})
    head = "| model | strict acc | exact match | invalid | ROUGE-L | BLEU | ms/example | bytes |\n|---|---|---|---|---|---|---|---|\n"
    return head + "\n".join(
        f"| {name} | {e['scores']['strict_accuracy']:.3f} | {e['scores']['exact_match']:.3f} | "
        f"{e['scores']['invalid_rate']:.3f} | {e['scores']['rouge_l']:.3f} | {e['scores']['bleu']:.1f} | "
        f"{1000 * e['latency']['mean_s']:.1f} | {e.get('file_size_bytes', 0):,} |" for name, e in rows.items())


def _lineage(gguf_model: dict, base_model: dict, lora_adapter: dict, training_dataset: dict) -> dict:
    """What produced the evaluated files, so the registry can record a candidate from this report alone."""
    return {
        "gguf_uri": gguf_model["uri"], "gguf_variants": gguf_model["variants"], "adapter_uri": lora_adapter["uri"],
        "base_model_id": base_model.get("model_id"), "base_model_revision": base_model.get("revision"),
        "dataset_version": training_dataset["sha256"][:16],
        "dataset_uris": [training_dataset["uri"]] + [s for s in [training_dataset.get("raw_source")] if s],
        "dataset_rows": training_dataset["train_rows"], "config": lora_adapter.get("config"),
    }


PLOT_TITLES = {"loss_curve": "Loss curve", "per_field_accuracy": "Accuracy per field",
               "action_confusion": "Action confusion matrix"}


def _model_card(report: dict, gguf_model: dict, base_model: dict, lora_adapter: dict, training_dataset: dict) -> str:
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


@dg.asset(group_name="evaluation", kinds={"llamacpp", "json"}, owners=["team:ml"],
          retry_policy=COMPUTE_RETRY_POLICY, automation_condition=follows("gguf_model"))
@fail_fast
def eval_report(context: dg.AssetExecutionContext, config: EvalConfig, artifact_store: ArtifactStoreResource,
                gguf_model: dict, eval_benchmark: dict, base_model: dict, lora_adapter: dict,
                training_dataset: dict) -> dg.Output:
    """Every GGUF variant, and the untuned base model as baseline, answering the benchmark through llama.cpp."""
    store = artifact_store.store()
    with scratch(context) as tmp:
        bench = read_jsonl(fetch(store, eval_benchmark, tmp / "benchmark.jsonl"))
        if config.max_examples:
            bench = bench[: config.max_examples]
        base = fetch(store, base_model, tmp / "base")
        ggufs = fetch(store, gguf_model, tmp / "gguf")
        variants = {name: ggufs / v["file"] for name, v in gguf_model["variants"].items()}
        baseline = gguf_export.convert_to_gguf(base, tmp / "baseline-f16.gguf", "f16") \
            if config.evaluate_baseline else None
        prompts = _format_prompts(base, [b["prompt"] for b in bench])
        last_logged: dict[str, int] = {}

        def on_progress(name: str, done: int, total: int) -> None:
            if done == total or done - last_logged.get(name, 0) >= max(total // 4, 1):
                last_logged[name] = done
                context.log.info(f"eval_report: {name} {done}/{total} examples")

        report = evaluate_variants(variants, baseline, prompts, [b["completion"] for b in bench],
                                   [b["category"] for b in bench], config.max_new_tokens, config.deployable,
                                   config.threshold, on_progress)
        report["benchmark_version"] = eval_benchmark.get("version")
        deployable = report["gate"]["variant"]
        pngs = {
            "loss_curve": plots.loss_curve_png(json.loads((fetch(store, lora_adapter, tmp / "adapter")
                                                           / "training_history.json").read_text())),
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
        artifact = publish(context, store, out)
        value = manifest(artifact, out, gate=report["gate"], threshold=config.threshold,
                         deployable=config.deployable, benchmark_version=report["benchmark_version"],
                         variants={n: {"strict_accuracy": e["scores"]["strict_accuracy"],
                                       "file_size_bytes": e["file_size_bytes"]}
                                   for n, e in report["variants"].items()},
                         baseline_strict_accuracy=report["gate"]["baseline_strict_accuracy"],
                         gguf_model_sha256=gguf_model["sha256"],
                         lineage=_lineage(gguf_model, base_model, lora_adapter, training_dataset))
    gate = report["gate"]
    context.log.info(f"eval_report: gate {'PASSED' if gate['passed'] else 'FAILED'}: {gate['reason']}")
    return output(value, {
        "strict_accuracy": float(gate["strict_accuracy"] or 0.0),
        "deployable_variant": str(gate["variant"]),
        "gate_passed": bool(gate["passed"]),
        "metrics": dg.MetadataValue.md(_metrics_table(report)),
        "plots": dg.MetadataValue.md("\n\n".join(f"**{PLOT_TITLES[n]}**\n\n{plots.markdown_image(p, PLOT_TITLES[n])}"
                                                  for n, p in pngs.items())),
        "model_card": dg.MetadataValue.md(_model_card(report, gguf_model, base_model, lora_adapter, training_dataset)),
    })


@dg.asset_check(asset=eval_report, blocking=True,
                description="The deployable variant reaches the strict-accuracy threshold and beats the baseline.")
def accuracy_gate(context: dg.AssetCheckExecutionContext, eval_report: dict,
                  model_registry: ModelRegistryResource) -> dg.AssetCheckResult:
    gate = evaluate_gate({"variants": {n: {"scores": {"strict_accuracy": v["strict_accuracy"]},
                                           "file_size_bytes": v["file_size_bytes"]}
                                       for n, v in eval_report["variants"].items()},
                          "baseline": ({"scores": {"strict_accuracy": eval_report["baseline_strict_accuracy"]}}
                                       if eval_report.get("baseline_strict_accuracy") is not None else None)},
                         eval_report["threshold"], eval_report["deployable"])
    metadata = {}
    if not gate.passed:  # the audit trail keeps rejected candidates too, with their report
        rejected = record_rejection(context, model_registry, eval_report)
        metadata["registered_as"] = f"{rejected.model} v{rejected.version} (rejected)"
    return dg.AssetCheckResult(
        passed=gate.passed, description=gate.reason,
        metadata={**metadata, "variant": str(gate.variant), "strict_accuracy": float(gate.strict_accuracy or 0.0),
                  "threshold": gate.threshold,
                  "baseline_strict_accuracy": float(gate.baseline_strict_accuracy or 0.0)},
    )
