"""promotion_sensor: promotes a registered version that passed the gate and beats production."""

import dagster as dg

from llm_assets.core.promotion import decide_promotion
from llm_assets.core.registry import PRODUCTION, RegistryNotFoundError
from resources.registry import ModelRegistryResource


@dg.sensor(job_name="promote_job", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Champion / challenger: materializes production_model for a new version that passed the "
                       "accuracy gate and beats production on the same benchmark. The cursor is the highest version "
                       "considered; run keys make a promotion happen once even after a daemon restart.")
def promotion_sensor(context: dg.SensorEvaluationContext, model_registry: ModelRegistryResource):
    seen = int(context.cursor or 0)
    name = model_registry.model_name
    with model_registry.registry() as registry:
        try:
            new = [v for v in registry.list_versions(name) if v.version > seen]
        except RegistryNotFoundError:
            return dg.SkipReason(f"no model {name!r} registered yet")
        if not new:
            return dg.SkipReason(f"no {name} version after v{seen}")
        try:
            champion = registry.resolve(name, PRODUCTION)
        except RegistryNotFoundError:
            champion = None
    cursor = str(max(v.version for v in new))
    # The newest passing challenger wins; older ones in the same batch are superseded.
    for challenger in sorted(new, key=lambda v: v.version, reverse=True):
        decision = decide_promotion(challenger, champion, model_registry.min_improvement)
        context.log.info(decision.reason)
        if not decision.promote:
            continue
        if model_registry.promotion_mode == "manual":
            return dg.SensorResult(skip_reason=f"{decision.reason}; manual mode: run `llm-assets registry promote "
                                               f"{name} {challenger.version}`", cursor=cursor)
        return dg.SensorResult(cursor=cursor, run_requests=[dg.RunRequest(
            run_key=f"promote-{name}-v{challenger.version}",
            run_config={"ops": {"production_model": {"config": {"version": challenger.version,
                                                                "reason": decision.reason}}}},
            tags={"llm_assets/model": name, "llm_assets/version": str(challenger.version)})])
    return dg.SensorResult(skip_reason=f"no new version of {name} beats production", cursor=cursor)
