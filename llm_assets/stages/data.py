"""The data stages: raw examples, the fixed benchmark, and the validated train/validation split."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

from llm_assets.core import benchmarks, data_sources, dataset_io, dataset_stream, pet_benchmark, pet_task
from llm_assets.core.dataset_prep import with_system_prompt
from llm_assets.core.artifacts import sha256_file
from llm_assets.core.hyperparameters import BenchmarkParams, DatasetParams, RawDataParams
from llm_assets.core.model_spec import EMBEDDED_PET, HOLDOUT
from llm_assets.stages.io import StageContext, StageResult, describe, fetch, meta, publish

EMBEDDED_SOURCE = EMBEDDED_PET
DEFAULT_EMBEDDED_ROWS = 48000


def _row_format(row: dict) -> str:
    return "messages" if "messages" in row else "prompt_completion" if "prompt" in row else "unknown"


def raw_dataset(inputs: dict, params: RawDataParams, context: StageContext) -> StageResult:
    """Examples as they arrived, each row keeping `source` (file:line) so every later problem traces back.

    Each value the run's config leaves null comes from the model file's `data`. The model file's
    serving.system_prompt is put first in every row without a system message (with_system_prompt).
    """
    data = context.model.data
    source = params.source or data.source
    if source == EMBEDDED_SOURCE:
        num_examples = params.num_examples or data.num_examples or DEFAULT_EMBEDDED_ROWS
        seed = data.seed if params.seed is None else params.seed
        rows = pet_task.generate_training_rows(num_examples, seed)
        for i, row in enumerate(rows, 1):
            row["source"] = f"{EMBEDDED_SOURCE}?seed={seed}:{i}"
    else:  # a file, a folder or an s3:// prefix (read with the artifact store's S3 settings)
        rows = data_sources.load_source_rows(source, s3=context.s3)
    formats = dict(Counter(_row_format(r) for r in rows))
    rows = [with_system_prompt(r, context.model.serving.system_prompt) for r in rows]
    with tempfile.TemporaryDirectory(prefix="raw_dataset-") as scratch:
        path = Path(scratch) / "raw.jsonl"
        dataset_io.write_jsonl(rows, path)
        value = describe(publish(context, "raw_dataset", path), path, rows=len(rows), source=source,
                         formats=formats)
    context.log(f"raw_dataset: {len(rows)} rows from {source} for {context.model.name}")
    return StageResult(value, {"rows": meta(len(rows), "int"), "source": meta(source, "text"),
                               "formats": meta(formats, "json")})


def eval_benchmark(inputs: dict, params: BenchmarkParams, context: StageContext) -> StageResult:
    """What the model is scored on, as its model file's `benchmark` says: the bunny's generated benchmark, the
    user's own JSONL (a file, folder or s3:// prefix, fixed apart from the training data), or a hold-out carved
    from raw_dataset by hash that training_dataset leaves out. Versioned by content hash."""
    spec = context.model.benchmark
    with tempfile.TemporaryDirectory(prefix="eval_benchmark-") as scratch:
        tmp = Path(scratch)
        if spec.source == EMBEDDED_SOURCE:
            per_category = params.examples_per_category or spec.examples_per_category
            rows = pet_benchmark.generate_benchmark(per_category, spec.seed if params.seed is None else params.seed)
            label = pet_benchmark.BENCHMARK_VERSION
        elif spec.source == HOLDOUT:
            raw_path = fetch(context.store, inputs["raw_dataset"], tmp / "raw.jsonl")
            raw = [row for _, row in dataset_io.iter_jsonl(raw_path)]  # each keeps its own source (file:line)
            rows = benchmarks.holdout(benchmarks.benchmark_rows(raw, "raw_dataset"), spec.holdout_fraction)
            label = "holdout"
        else:
            system_prompt = context.model.serving.system_prompt
            rows = benchmarks.benchmark_rows([with_system_prompt(r, system_prompt) for r in
                                              data_sources.load_source_rows(spec.source, s3=context.s3)], spec.source)
            label = "file"
        categories = dict(Counter(r["category"] for r in rows if r.get("category")))
        path = tmp / "benchmark.jsonl"
        dataset_io.write_jsonl(rows, path)
        version = f"{context.model.name}-{label}-{sha256_file(path)[:12]}"
        value = describe(publish(context, "eval_benchmark", path), path, rows=len(rows), version=version,
                         categories=categories, source=spec.source)
    context.log(f"eval_benchmark: {len(rows)} rows ({spec.source}), version {version}")
    return StageResult(value, {"rows": meta(len(rows), "int"), "benchmark_version": meta(version, "text"),
                               "categories": meta(categories, "json")})


def training_dataset(inputs: dict, params: DatasetParams, context: StageContext) -> StageResult:
    """Normalized to the base model's chat frame, validated, deduplicated, split into train/validation; the
    validation report it keeps is what the blocking check `training_data_valid` reads."""
    from transformers import AutoTokenizer

    raw, base_model, benchmark = inputs["raw_dataset"], inputs["base_model"], inputs["eval_benchmark"]
    with tempfile.TemporaryDirectory(prefix="training_dataset-") as scratch:
        tmp = Path(scratch)
        raw_path = fetch(context.store, raw, tmp / "raw.jsonl")
        bench = [row["prompt"] for _, row in dataset_io.iter_jsonl(
            fetch(context.store, benchmark, tmp / "benchmark.jsonl"))]
        # A hold-out is left out of training; a fixed benchmark found in the data fails the blocking check.
        held_out = benchmark.get("source") == HOLDOUT
        tokenizer = AutoTokenizer.from_pretrained(fetch(context.store, base_model, tmp / "base"))
        out = tmp / "training_dataset"
        # Columns read in blocks, not a dict per row: the same report and files as dataset_prep's row
        # functions, for a million rows in about a minute and under 3 GB.
        prepared = dataset_stream.prepare_split(
            raw_path, tokenizer, out, params.max_tokens, [] if held_out else bench,
            params.max_duplicate_fraction, params.validation_fraction, params.split_seed,
            exclude_prompts=bench if held_out else ())
        report = prepared.report
        (out / "validation_report.json").write_text(json.dumps(report.to_dict(), indent=1))
        value = describe(publish(context, "training_dataset", out), out, train_rows=prepared.train_rows,
                         validation_rows=prepared.validation_rows, duplicates_removed=prepared.duplicates_removed,
                         raw_rows=prepared.raw_rows, held_out_for_benchmark=prepared.held_out,
                         validation_report=report.to_dict(),
                         raw_dataset_sha256=raw["sha256"], raw_source=raw.get("source"))
    context.log(f"training_dataset: {prepared.train_rows} train / {prepared.validation_rows} validation rows, "
                f"{prepared.duplicates_removed} duplicates removed, {prepared.held_out} held out for the benchmark, "
                f"validation {'passed' if report.passed else 'FAILED'}")
    return StageResult(value, {
        "train_rows": meta(prepared.train_rows, "int"), "validation_rows": meta(prepared.validation_rows, "int"),
        "duplicates_removed": meta(prepared.duplicates_removed, "int"),
        "schema_issues": meta(report.counts.get("schema_issues", 0), "int"),
        "format": meta(dict(raw.get("formats", {})), "json"),
        "token_stats": meta(report.token_stats or {}, "json"), "validation_passed": meta(report.passed, "bool"),
    })
