"""stage_automation_sensor: evaluates the AutomationConditions of the stages after training.

Its targets come from the stage table (llm_assets.stages.STAGES: every stage that `follows` another) plus
registered_model, which follows eval_report; never AssetSelection.all(). Training itself is started by
new_data_sensor and gate_failure_sensor, not by a condition.
"""

import dagster as dg

from llm_assets.stages import STAGES

AUTOMATED_ASSETS = [*(asset for asset, stage in STAGES.items() if stage.follows), "registered_model"]

stage_automation_sensor = dg.AutomationConditionSensorDefinition(
    "stage_automation_sensor",
    target=dg.AssetSelection.assets(*AUTOMATED_ASSETS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    emit_backfills=False,
    description="Export follows a new adapter, evaluation a new GGUF, registration a new eval report, each once the "
                "upstream blocking check (training_data_valid) passed. Registration follows every report, passed or "
                "not: a failed gate is registered as rejected, which gate_failure_sensor retrains from.",
)
