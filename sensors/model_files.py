"""model_files_sensor: every model file under models/ becomes a partition of the graph, without a redeploy."""

import dagster as dg

from resources.model_catalog import MODEL_PARTITIONS, ModelCatalogResource


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Adds a `models` partition for each new model file (models/<name>.yaml, or "
                       "$LLM_ASSETS_MODELS_DIR), so the Launchpad and the asset pages offer it. A file that fails "
                       "validation fails the tick with the file and field named; a removed file keeps its partition "
                       "and history.")
def model_files_sensor(context: dg.SensorEvaluationContext, model_catalog: ModelCatalogResource):
    names = list(model_catalog.specs())
    new = [n for n in names if not context.instance.has_dynamic_partition(MODEL_PARTITIONS.name, n)]
    if not new:
        return dg.SkipReason(f"every model file is a partition: {', '.join(names)}")
    context.log.info(f"new models: {', '.join(new)}")
    return dg.SensorResult(dynamic_partitions_requests=[MODEL_PARTITIONS.build_add_request(new)])
