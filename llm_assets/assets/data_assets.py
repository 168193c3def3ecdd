"""Data stage: raw examples, the validated training split, and the fixed benchmark."""


import json
from collections import Counter
from pathlib import Path

import dagster as dg

from llm_assets.assets.automation import COMPUTE_RETRY_POLICY, fail_fast
from llm_assets.assets.common import fetch, manifest, output, publish, scratch
from llm_assets.config import BenchmarkConfig, RawDatasetConfig, TrainingDatasetConfig, validate_run_config
from llm_assets.core import data_sources, dataset_io, dataset_prep, pet_benchmark, pet_task
from llm_assets.core import dataset_stream
from llm_assets.core.artifacts import sha256_file
from resources.artifact_store import ArtifactStoreResource
from resources.compute import ComputeBackends

EMBEDDED_SOURCE = "embedded:pet"


def _row_format(row: dict) -> str:
    return "messages" if "messages" in row else "prompt_completion" if "prompt" in row else "unknown"


@dg.asset(group_name="data", kinds={"python", "jsonl"}, owners=["team:ml"],
          retry_policy=COMPUTE_RETRY_POLICY)
@fail_fast
def raw_dataset(context: dg.AssetExecutionContext, config: RawDatasetConfig,
                artifact_store: ArtifactStoreResource, compute_backends: dg.ResourceParam[ComputeBackends]) -> dg.Output:
    """Examples as they arrived: the embedded bunny task's generated data, or JSONL files.

    Each row keeps `source` (file:line) so every later problem can be traced back.
    """
    validate_run_config(context.run.run_config, compute_backends.names())  # before reading any data
    store = artifact_store.store()
    if config.source == EMBEDDED_SOURCE:
        rows = pet_task.generate_training_rows(config.num_examples, config.seed)
        for i, row in enumerate(rows, 1):
            row["source"] = f"{EMBEDDED_SOURCE}?seed={config.seed}:{i}"
    else:
        rows = data_sources.load_source_rows(  # a file, a folder or an s3:// prefix (the artifact store's S3)
            config.source, endpoint_url=artifact_store.s3_endpoint_url, region_name=artifact_store.aws_region,
            aws_access_key_id=artifact_store.aws_access_key_id,
            aws_secret_access_key=artifact_store.aws_secret_access_key)
    formats = Counter(_row_format(r) for r in rows)
    with scratch(context) as tmp:
        path = tmp / "raw.jsonl"
        dataset_io.write_jsonl(rows, path)
        artifact = publish(context, store, path)
        value = manifest(artifact, path, rows=len(rows), source=config.source, formats=dict(formats))
    context.log.info(f"raw_dataset: {len(rows)} rows from {config.source}")
    return output(value, {"rows": len(rows), "source": config.source, "formats": dict(formats)})


@dg.asset(group_name="data", kinds={"python", "jsonl"}, owners=["team:ml"])
def eval_benchmark(context: dg.AssetExecutionContext, config: BenchmarkConfig,
                   artifact_store: ArtifactStoreResource, compute_backends: dg.ResourceParam[ComputeBackends]) -> dg.Output:
    """The fixed yardstick: edge cases (boundaries, ties, no suitable object, terse phrasing) and random states.

    Versioned apart from the training data: retraining on new data never moves it.
    """
    rows = pet_benchmark.generate_benchmark(config.examples_per_category, config.seed)
    categories = dict(Counter(r["category"] for r in rows))
    with scratch(context, compute_backends) as tmp:
        path = tmp / "benchmark.jsonl"
        dataset_io.write_jsonl(rows, path)
        version = f"{pet_benchmark.BENCHMARK_VERSION}-{sha256_file(path)[:12]}"
        value = manifest(publish(context, artifact_store.store(), path), path,
                         rows=len(rows), version=version, categories=categories)
    return output(value, {"rows": len(rows), "benchmark_version": version,
                          "categories": dg.MetadataValue.json(categories)})


def read_jsonl(path: Path) -> list[dict]:
    return [record for _, record in dataset_io.iter_jsonl(path)]


@dg.asset(group_name="data", kinds={"python", "jsonl"}, owners=["team:ml"])
def training_dataset(context: dg.AssetExecutionContext, config: TrainingDatasetConfig,
                     artifact_store: ArtifactStoreResource, raw_dataset: dict, base_model: dict,
                     eval_benchmark: dict) -> dg.Output:
    """Normalized to the base model's chat frame, validated, deduplicated, split into train/validation.

    The blocking check `training_data_valid` reads the validation report kept here.
    """
    from transformers import AutoTokenizer

    store = artifact_store.store()
    with scratch(context) as tmp:
        raw_path = fetch(store, raw_dataset, tmp / "raw.jsonl")
        bench = read_jsonl(fetch(store, eval_benchmark, tmp / "benchmark.jsonl"))
        tokenizer = AutoTokenizer.from_pretrained(fetch(store, base_model, tmp / "base"))
        out = tmp / "training_dataset"
        # Columns read in blocks, not a dict per row: the same report and files as
        # dataset_prep's row functions, for a million rows in about a minute and under 3 GB.
        prepared = dataset_stream.prepare_split(
            raw_path, tokenizer, out, config.max_tokens, [b["prompt"] for b in bench],
            config.max_duplicate_fraction, config.validation_fraction, config.split_seed)
        report, removed = prepared.report, prepared.duplicates_removed
        n_train, n_validation = prepared.train_rows, prepared.validation_rows
        (out / "validation_report.json").write_text(json.dumps(report.to_dict(), indent=1))
        artifact = publish(context, store, out)
        value = manifest(artifact, out, train_rows=n_train, validation_rows=n_validation,
                         duplicates_removed=removed, raw_rows=prepared.raw_rows, validation_report=report.to_dict(),
                         raw_dataset_sha256=raw_dataset["sha256"], raw_source=raw_dataset.get("source"))
    stats = report.token_stats or {}
    context.log.info(f"training_dataset: {n_train} train / {n_validation} validation rows, "
                     f"{removed} duplicates removed, validation {'passed' if report.passed else 'FAILED'}")
    return output(value, {
        "train_rows": n_train, "validation_rows": n_validation, "duplicates_removed": removed,
        "schema_issues": report.counts.get("schema_issues", 0), "format": dict(raw_dataset.get("formats", {})),
        "token_stats": dg.MetadataValue.json(stats), "validation_passed": report.passed,
    })


@dg.asset_check(asset=training_dataset, blocking=True,
                description="Rows are well-formed and non-empty, duplicates under the threshold, none over-length, "
                            "none overlapping the benchmark.")
def training_data_valid(training_dataset: dict) -> dg.AssetCheckResult:
    report = training_dataset["validation_report"]
    problems = report["problems"]
    return dg.AssetCheckResult(
        passed=bool(report["passed"]),
        description=("; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")) if problems else "all rows valid",
        metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"),
                  "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in report["warnings"]) or "none"),
                  "counts": dg.MetadataValue.json(report["counts"])},
    )
