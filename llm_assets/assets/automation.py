"""How compute-heavy assets fail, retry and follow each other.

- `COMPUTE_RETRY_POLICY`: retryable failures (network, provider 5xx or queue
  full, preemption, bootstrap, timeouts: see llm_assets.core.failures) retry
  with exponential backoff and jitter; training resumes from its latest
  complete checkpoint because the checkpoint folder is keyed by inputs and
  config, which a retry keeps.
- `fail_fast`: Dagster's RetryPolicy retries on any exception, so genuine
  failures (bad data, non-finite loss, config errors, out of memory with the
  same config, anything unclassified) are re-raised as `dg.Failure(
  allow_retries=False)` whose first line is the classified cause; the run's
  log and its failure message start with it. An interrupt (Ctrl-C, SIGTERM,
  a terminated run) stops the step too, where Dagster would retry it.
- `stage_options(asset)`: the @dg.asset options the stage table decides (pool, retries, automation).
- `follows(parent)`: declarative automation for the stages after training:
  export follows a new adapter, evaluation a new GGUF, registration a new
  report, each once the upstream blocking checks passed. A run that already
  includes the child (every job here does) does not trigger it again.
"""

from __future__ import annotations

import functools

import dagster as dg

from llm_assets.compute.backends import raise_with_verdict
from llm_assets.stages import get_stage
from resources.model_catalog import MODEL_PARTITIONS

# The steps that take every core of a machine for minutes (pretraining, fine-tuning, GGUF export, llama.cpp
# evaluation) share this Dagster concurrency pool, so runs can take turns; the limit lives in the instance
# (deploy/dagster.yaml, `dagster instance concurrency set llm_compute N`). Data and registry steps stay out.
COMPUTE_POOL = "llm_compute"
COMPUTE_RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=20, backoff=dg.Backoff.EXPONENTIAL,
                                      jitter=dg.Jitter.PLUS_MINUS)


def fail_fast(fn):
    """Wrap an asset body: fatal errors and interrupts stop at once with the cause first; retryable errors go to the
    RetryPolicy."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except dg.Failure:
            raise
        except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError) as exc:
            # Dagster retries an interrupted step under its RetryPolicy, so Ctrl-C or SIGTERM on `make demo`
            # (or a terminated run's worker) would start the step again after a delay instead of stopping.
            raise dg.Failure("interrupted (SIGINT or SIGTERM): the step stopped and is not retried; "
                             "materialize it again to rerun", allow_retries=False) from exc
        except Exception as exc:
            context = args[0] if args else kwargs.get("context")
            raise_with_verdict(exc, getattr(context, "log", None))

    return wrapper


def follows(*parents: str) -> dg.AutomationCondition:
    """Materialize when one of `parents` has updated, once nothing upstream is missing, running or failing a check."""
    updated = dg.AutomationCondition.any_deps_updated().allow(dg.AssetSelection.assets(*parents))
    return (
        dg.AutomationCondition.in_latest_time_window()
        & updated.since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label(f"follows {', '.join(parents)}")


def stage_options(asset: str) -> dict:
    """The @dg.asset options of a stage, from the stage table: every stage is partitioned by model and retries
    retryable failures; heavy ones share the compute pool; those that follow another asset get their automation
    condition."""
    stage = get_stage(asset)
    options: dict = {"retry_policy": COMPUTE_RETRY_POLICY, "partitions_def": MODEL_PARTITIONS}
    if stage.heavy:
        options["pool"] = COMPUTE_POOL
    if stage.follows:
        options["automation_condition"] = follows(*stage.follows)
    return options
