"""new_data_sensor: new or changed training data in a watched folder or S3 prefix retrains its model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource

from llm_assets.core.data_sources import NewDataCursor, plan_new_data, scan_folder, scan_s3
from resources.model_catalog import ModelCatalogResource
from resources.retraining import RetrainingResource


def watched(retraining: RetrainingResource, specs: dict) -> list[tuple[str, str, str]]:
    """(model, source, preset) per watched source: each model file's own folder or s3:// prefix, and the
    `retraining` resource's watch_dir / watch_s3_uri for its `model`."""
    pairs = [(name, spec.data.source, spec.preset) for name, spec in specs.items()
             if spec.data.source.startswith("s3://") or Path(spec.data.source).is_dir()]
    pairs += [(retraining.model, source, retraining.preset) for source in retraining.sources()]
    return list(dict.fromkeys(pairs))


@dg.sensor(job_name="retrain_job", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Watches each model file's data folder or s3:// prefix, and the `retraining` resource's "
                       "watch_dir / watch_s3_uri (for its `model`). A new or changed *.jsonl starts one retrain_job "
                       "run of that model's partition once every new file has been unchanged for debounce_s; the "
                       "cursor keeps each file's hash (sha256 / ETag) and the data versions already run, so the same "
                       "data never starts two runs. Deleted files are reported, not retrained on.")
def new_data_sensor(context: dg.SensorEvaluationContext, retraining: RetrainingResource, watched_s3: S3Resource,
                    model_catalog: ModelCatalogResource):
    sources = watched(retraining, model_catalog.specs())
    if not sources:
        return dg.SkipReason("no data source is watched: give a model file a folder or s3:// prefix as data.source, "
                             "or set watch_dir / watch_s3_uri on the `retraining` resource (LLM_ASSETS_WATCH_DIR / "
                             "LLM_ASSETS_WATCH_S3_URI)")
    cursors = json.loads(context.cursor) if context.cursor else {}
    requests, reasons, now = [], [], time.time()
    for model, source, preset in sources:
        key = f"{model} {source}"
        previous = NewDataCursor.from_json(cursors.get(key))
        if source.startswith("s3://"):
            current = scan_s3(watched_s3.get_client(), source)
        else:
            current = scan_folder(source, previous.files)
        plan = plan_new_data(previous, current, now, retraining.debounce_s, source)
        cursors[key] = plan.cursor.to_json()
        reasons.append(f"{model}: {plan.reason}")
        if plan.deleted:
            context.log.warning(f"new_data_sensor: deleted from {source}: {', '.join(plan.deleted)} (reported only: "
                                f"{model}'s current version is kept until new data arrives)")
        context.log.info(f"new_data_sensor: {model}: {plan.reason}")
        if plan.start_run:
            requests.append(dg.RunRequest(
                run_key=f"new-data-{model}-{plan.data_version}", partition_key=model,
                run_config=retraining.run_config_for(source, preset),
                tags={"llm_assets/model": model, "llm_assets/data_source": source,
                      "llm_assets/source_version": plan.data_version, "llm_assets/attempt": "1",
                      "llm_assets/trigger": "new_data_sensor"}))
    cursor = json.dumps(cursors, sort_keys=True)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    return dg.SensorResult(skip_reason="; ".join(reasons), cursor=cursor)
