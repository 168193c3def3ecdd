"""new_data_sensor: new or changed training data in the watched folder or S3 prefix starts one retraining run."""

from __future__ import annotations

import json
import time

import dagster as dg
from dagster_aws.s3 import S3Resource

from llm_assets.core.data_sources import NewDataCursor, plan_new_data, scan_folder, scan_s3
from resources.registry import ModelRegistryResource
from resources.retraining import RetrainingResource


@dg.sensor(job_name="retrain_job", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Watches the `retraining` resource's watch_dir and watch_s3_uri. A new or changed *.jsonl "
                       "starts one retrain_job run on that source once every new file has been unchanged for "
                       "debounce_s; the cursor keeps each file's hash (sha256 / ETag) and the data versions already "
                       "run, so the same data never starts two runs. Deleted files are reported, not retrained on.")
def new_data_sensor(context: dg.SensorEvaluationContext, retraining: RetrainingResource, watched_s3: S3Resource,
                    model_registry: ModelRegistryResource):
    sources = retraining.sources()
    if not sources:
        return dg.SkipReason("no data source is watched: set watch_dir or watch_s3_uri on the `retraining` resource "
                             "(LLM_ASSETS_WATCH_DIR / LLM_ASSETS_WATCH_S3_URI)")
    cursors = json.loads(context.cursor) if context.cursor else {}
    requests, reasons, now = [], [], time.time()
    for source in sources:
        previous = NewDataCursor.from_json(cursors.get(source))
        if source.startswith("s3://"):
            current = scan_s3(watched_s3.get_client(), source)
        else:
            current = scan_folder(source, previous.files)
        plan = plan_new_data(previous, current, now, retraining.debounce_s, source)
        cursors[source] = plan.cursor.to_json()
        reasons.append(plan.reason)
        if plan.deleted:
            context.log.warning(f"new_data_sensor: deleted from {source}: {', '.join(plan.deleted)} (reported only: "
                                f"the current model is kept until new data arrives)")
        context.log.info(f"new_data_sensor: {plan.reason}")
        if plan.start_run:
            model = model_registry.model_name
            requests.append(dg.RunRequest(
                run_key=f"new-data-{model}-{plan.data_version}",
                run_config=retraining.run_config_for(source),
                tags={"llm_assets/model": model, "llm_assets/data_source": source,
                      "llm_assets/source_version": plan.data_version, "llm_assets/attempt": "1",
                      "llm_assets/trigger": "new_data_sensor"}))
    cursor = json.dumps(cursors, sort_keys=True)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    return dg.SensorResult(skip_reason="; ".join(reasons), cursor=cursor)
