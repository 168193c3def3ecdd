"""promotion_sensor: for each model, promotes a registered version that passed its gate and beats production."""

import json

import dagster as dg

from llm_assets.core.promotion import decide_promotion
from llm_assets.core.registry import PRODUCTION, RegistryNotFoundError
from resources.model_catalog import ModelCatalogResource
from resources.registry import ModelRegistryResource


def cursor_by_model(cursor: str | None) -> dict[str, int]:
    """{model: highest version considered}; an older plain-number cursor starts every model afresh."""
    return {k: int(v) for k, v in json.loads(cursor).items()} if cursor and cursor.startswith("{") else {}


def _request(context, name: str, seen: int, registry, model_registry: ModelRegistryResource):
    """(run request or None, new cursor value, why) for one model."""
    try:
        new = [v for v in registry.list_versions(name) if v.version > seen]
    except RegistryNotFoundError:
        return None, seen, f"no {name} version registered yet"
    if not new:
        return None, seen, f"no {name} version after v{seen}"
    try:
        champion = registry.resolve(name, PRODUCTION)
    except RegistryNotFoundError:
        champion = None
    cursor = max(v.version for v in new)
    # The newest passing challenger wins; older ones in the same batch are superseded.
    for challenger in sorted(new, key=lambda v: v.version, reverse=True):
        decision = decide_promotion(challenger, champion, model_registry.min_improvement)
        context.log.info(f"{name}: {decision.reason}")
        if not decision.promote:
            continue
        if model_registry.promotion_mode == "manual":
            return None, cursor, (f"{decision.reason}; manual mode: run `llm-assets registry promote {name} "
                                  f"{challenger.version}`")
        return dg.RunRequest(
            run_key=f"promote-{name}-v{challenger.version}", partition_key=name,
            run_config={"ops": {"production_model": {"config": {"version": challenger.version,
                                                                "reason": decision.reason}}}},
            tags={"llm_assets/model": name, "llm_assets/version": str(challenger.version)}), cursor, decision.reason
    return None, cursor, f"no new version of {name} beats production"


@dg.sensor(job_name="promote_job", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Champion / challenger, per model: materializes production_model (the model's partition) for "
                       "a new version that passed its gate and beats that model's production on the same benchmark. "
                       "The cursor is the highest version considered per model; run keys make a promotion happen "
                       "once even after a daemon restart.")
def promotion_sensor(context: dg.SensorEvaluationContext, model_registry: ModelRegistryResource,
                     model_catalog: ModelCatalogResource):
    seen = cursor_by_model(context.cursor)
    requests, reasons = [], []
    with model_registry.registry() as registry:
        for name in model_catalog.specs():
            request, seen[name], reason = _request(context, name, seen.get(name, 0), registry, model_registry)
            reasons.append(reason)
            if request is not None:
                requests.append(request)
    cursor = json.dumps(seen, sort_keys=True)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    return dg.SensorResult(skip_reason="; ".join(reasons), cursor=cursor)
