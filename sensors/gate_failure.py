"""gate_failure_sensor: a candidate that missed the accuracy gate is retrained with the next rung of the ladder.

It reads the registry's audit trail, not check results: registered_model registers every evaluated GGUF, a
rejected version when eval_report's gate failed, once per run and GGUF (a re-executed step adds none), so each
failed gate is seen exactly once.
"""

from __future__ import annotations

import copy
import json

import dagster as dg

from jobs import retrain_job, retraining_alert_job
from llm_assets.core.promotion import gate_value
from llm_assets.core.registry import RegistryNotFoundError, VersionRecord
from llm_assets.core.retrain_policy import Attempt, RetrainDecision
from resources.model_catalog import ModelCatalogResource
from resources.registry import ModelRegistryResource
from sensors.promotion import cursor_by_model
from resources.retraining import RetrainingResource

ACTOR = "sensor:gate_failure_sensor"


def _attempt_of(run: dg.DagsterRun | None) -> tuple[int, str | None]:
    if run is None:
        return 1, None
    return int(run.tags.get("llm_assets/attempt", "1")), run.tags.get("llm_assets/rung")


def _tried(instance: dg.DagsterInstance, versions: list[VersionRecord], data_version: str | None) -> list[Attempt]:
    tried = []
    for v in versions:
        if v.status == "rejected" and v.dataset_version == data_version:
            run = instance.get_run_by_id(v.dagster_run_id) if v.dagster_run_id else None
            number, rung = _attempt_of(run)
            tried.append(Attempt(number, v.version, rung, gate_value(v), v.gate_reason))
    return tried


def _request(record: VersionRecord, run: dg.DagsterRun, decision: RetrainDecision, model: str) -> dg.RunRequest:
    data = record.dataset_version
    if not decision.retrain:
        return dg.RunRequest(
            job_name=retraining_alert_job.name, run_key=f"retrain-alert-{model}-{data}",
            run_config={"ops": {"raise_retraining_alert": {"config": {
                "model": model, "data_version": str(data), "message": decision.message}}}},
            tags={"llm_assets/model": model, "llm_assets/data_version": str(data)})
    run_config = copy.deepcopy(dict(run.run_config or {}))
    ops = run_config.setdefault("ops", {})
    ops.setdefault("lora_adapter", {})["config"] = decision.training_config
    tags = {k: v for k, v in run.tags.items() if k.startswith("llm_assets/")}
    tags.update({"llm_assets/model": model, "llm_assets/data_version": str(data),
                 "llm_assets/attempt": str(decision.next_attempt), "llm_assets/rung": decision.rung.describe(),
                 "llm_assets/retrain_of": f"{model}-v{record.version}", "llm_assets/trigger": "gate_failure_sensor"})
    return dg.RunRequest(job_name=retrain_job.name, run_key=f"retrain-{model}-{data}-attempt{decision.next_attempt}",
                         run_config=run_config, tags=tags, partition_key=model)


def _model_requests(context, model: str, seen: int, registry, policy) -> tuple[list[dg.RunRequest], int]:
    """The retraining (or alert) requests for `model`'s rejected versions after `seen`, and the new cursor."""
    try:
        versions = registry.list_versions(model)
    except RegistryNotFoundError:
        return [], seen
    cursor = max([seen] + [v.version for v in versions])
    requests = []
    for record in (v for v in versions if v.version > seen and v.status == "rejected"):
        run = context.instance.get_run_by_id(record.dagster_run_id) if record.dagster_run_id else None
        if run is None:
            context.log.warning(f"{model} v{record.version} was rejected by a run this instance does not know "
                                f"({record.dagster_run_id}); not retraining it")
            continue
        attempt, _ = _attempt_of(run)
        training = dict((run.run_config or {}).get("ops", {}).get("lora_adapter", {}).get("config") or {})
        decision = policy.decide(attempt, training, _tried(context.instance, versions, record.dataset_version),
                                 model, record.dataset_version)
        context.log.info(decision.message)
        registry.note(model, record.version, decision.message.splitlines()[0], actor=ACTOR)
        requests.append(_request(record, run, decision, model))
    return requests, cursor


@dg.sensor(jobs=[retrain_job, retraining_alert_job], minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="For each model, each version registered_model recorded as rejected (its eval report missed "
                       "the model's gate) requests retrain_job for that model's partition with the failed run's "
                       "config adjusted by the next rung of the `retraining` resource's ladder, up to max_attempts "
                       "per data version; after the last it launches retraining_alert_job, which fails with what "
                       "was tried. Cursor = highest version considered, per model.")
def gate_failure_sensor(context: dg.SensorEvaluationContext, retraining: RetrainingResource,
                        model_registry: ModelRegistryResource, model_catalog: ModelCatalogResource):
    seen = cursor_by_model(context.cursor)
    policy, requests = retraining.policy(), []
    with model_registry.registry() as registry:
        for model in model_catalog.specs():
            found, seen[model] = _model_requests(context, model, seen.get(model, 0), registry, policy)
            requests += found
    cursor = json.dumps(seen, sort_keys=True)
    if not requests:
        return dg.SensorResult(skip_reason="no model has a new version that missed its gate", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
