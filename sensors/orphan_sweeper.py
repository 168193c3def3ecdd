"""orphan_sweeper_sensor: terminates rented machines that no live run drives (llm_assets/compute/sweeper.py)."""

import dagster as dg

from llm_assets.compute.backends import ComputeBackends
from llm_assets.compute.sweeper import sweep
from resources.artifact_store import ArtifactStoreResource

RUN_NOTE = "orphan sweeper"


def _run_is_live(instance, run_id: str) -> bool:
    # A run this instance does not know counts as live: only a stale job record then lets the sweeper act.
    run = instance.get_run_by_id(run_id) if run_id else None
    return run is None or not run.is_finished


@dg.sensor(minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every 5 minutes, for each remote compute backend whose credentials are set: terminates the "
                       "provider's machines named llm-assets-* that no live run drives (no job record, a closed one, "
                       "or one whose run ended or stopped refreshing it), and closes job records whose run ended, "
                       "terminating their machine first. Each is a warning in the sensor's log and a note in the "
                       "run's event log. Idle when no remote backend is configured.")
def orphan_sweeper_sensor(context: dg.SensorEvaluationContext, compute_backends: dg.ResourceParam[ComputeBackends],
                          artifact_store: ArtifactStoreResource):
    from llm_assets.core.artifacts_s3 import S3ArtifactStore

    backends = [b for b in compute_backends.remote_backends().values() if b.configured()]
    store = artifact_store.store()
    if not backends:
        return dg.SkipReason("no remote compute backend has credentials set: nothing to sweep")
    if not isinstance(store, S3ArtifactStore):  # remote machines only ever run against an s3:// store
        return dg.SkipReason("the artifact store is not on S3: no remote job can have run")
    swept = sweep(backends, store, lambda run_id: _run_is_live(context.instance, run_id), log=context.log.warning)
    for entry in swept:
        run = context.instance.get_run_by_id(entry.run_id) if entry.run_id else None
        if run is not None:
            context.instance.report_engine_event(f"{RUN_NOTE}: {entry.line}", run)
    names = ", ".join(f"{s.backend}:{s.machine}" for s in swept)
    return dg.SkipReason(f"swept {len(swept)} machine(s): {names}" if swept else
                         f"no orphan among {', '.join(b.backend_name for b in backends)}' machines")
