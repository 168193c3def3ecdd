"""Jobs the retraining sensors launch: a retraining run, and the alert when the ladder is exhausted."""

import dagster as dg
from pydantic import Field


def retrain_job_for(selection: dg.AssetSelection):
    return dg.define_asset_job(
        "retrain_job", selection=selection, tags={"llm_assets/trigger": "automatic"},
        description="Retraining, data to registered candidate, launched by new_data_sensor (new data) or "
                    "gate_failure_sensor (the next rung of the hyperparameter ladder); run config from the sensor.")


class RetrainingAlertConfig(dg.Config):
    """What the gate-failure sensor tried before giving up."""

    model: str = Field(description="Registered model name.")
    data_version: str = Field(description="Training data version that missed the gate in every attempt.")
    message: str = Field(description="What was tried, attempt by attempt, and what to do next.")


@dg.op(description="Fails on purpose with the message of what was tried, so the alert is a failed run that "
                   "run-failure notifications and the UI's Runs page surface.")
def raise_retraining_alert(context: dg.OpExecutionContext, config: RetrainingAlertConfig) -> None:
    context.log.error(config.message)
    raise dg.Failure(description=config.message, allow_retries=False,
                     metadata={"model": config.model, "data_version": config.data_version})


@dg.job(description="The alert gate_failure_sensor raises after the last allowed attempt for a data version: a run "
                    "that fails with what was tried.", tags={"llm_assets/alert": "retraining_exhausted"})
def retraining_alert_job():
    raise_retraining_alert()
