"""The worker: `python -m llm_assets.worker STAGE` runs one stage anywhere, talking to Dagster through Pipes.

It reads its context (stage config, upstream manifests, artifact root) from Dagster Pipes: a temp
file or environment for a local subprocess, an S3 object for a remote machine (picked from what the
context parameters name). It runs the stage's plain function from llm_assets.compute.stages, writes
artifacts (and, on a remote store, training checkpoints) to the artifact store, logs progress lines
through Pipes and reports the materialization with the manifest as metadata.

On failure it logs the verdict of llm_assets.core.failures, sends it as a custom message
({"kind": "stage_failure", ...}) and exits 75 (retryable) or 1 (fatal).
Under torchrun only rank 0 talks to Dagster and publishes; the other ranks train alongside it.

Environment: DAGSTER_PIPES_CONTEXT, DAGSTER_PIPES_MESSAGES (from Dagster), LLM_ASSETS_S3_ENDPOINT_URL,
AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (remote store), LLM_ASSETS_PIPES_FLUSH_SECONDS
(upload interval of message chunks, default 5), LLM_ASSETS_CHECKPOINT_DIR (local checkpoint scratch),
RANK (torchrun).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from llm_assets.compute import checkpoint_sync, stages
from llm_assets.compute.launch import (
    ENV_FLUSH_SECONDS, ENV_S3_ENDPOINT, STAGES, checkpoint_prefix, check_stage, job_key,
)
from llm_assets.core.artifacts import LocalArtifactStore, store_from_uri
from llm_assets.core.failures import classify, exit_status


def _s3_client():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get(ENV_S3_ENDPOINT) or None,
                        region_name=os.environ.get("AWS_REGION") or None)


def pipes_io():
    """The context loader and message writer matching how Dagster injected the context."""
    from dagster_pipes import (
        PipesDefaultContextLoader, PipesDefaultMessageWriter, PipesEnvVarParamsLoader, PipesS3ContextLoader,
        PipesS3MessageWriter,
    )

    params = PipesEnvVarParamsLoader()
    if params.is_dagster_pipes_process() and "bucket" in params.load_context_params():
        client = _s3_client()
        return PipesS3ContextLoader(client), PipesS3MessageWriter(
            client, interval=float(os.environ.get(ENV_FLUSH_SECONDS, "5")))
    return PipesDefaultContextLoader(), PipesDefaultMessageWriter()


def run_stage(stage: str, extras: dict, log) -> stages.StageOutput:
    """Run one stage from its Pipes extras; training on a remote store mirrors checkpoints there."""
    check_stage(stage)
    if stage not in stages.STAGE_FUNCTIONS:
        from llm_assets.core.errors import ConfigError

        raise ConfigError("stage", stage, f"the worker runs {sorted(stages.STAGE_FUNCTIONS)}")
    fn, params_cls, _ = stages.STAGE_FUNCTIONS[stage]
    params = params_cls(**extras["config"])
    store = store_from_uri(extras["artifact_root"], endpoint_url=extras.get("s3_endpoint_url")
                           or os.environ.get(ENV_S3_ENDPOINT), region_name=extras.get("aws_region"))
    inputs, run_id = extras["inputs"], extras["run_id"]
    if stage != "training" or isinstance(store, LocalArtifactStore):
        return fn(store, inputs, params, run_id, log)
    # A remote machine keeps nothing between attempts: checkpoints live in the store.
    prefix = checkpoint_prefix(extras.get("job_key") or job_key(stage, inputs, extras["config"]))
    local = Path(os.environ.get("LLM_ASSETS_CHECKPOINT_DIR") or tempfile.mkdtemp(prefix="checkpoints-")) / "job"
    restored = checkpoint_sync.restore_latest(store, prefix, local)
    if restored:
        log(f"lora_adapter: restored {restored} from the artifact store; resuming")
    with checkpoint_sync.CheckpointUploader(store, prefix, local,
                                            on_upload=lambda name: log(f"lora_adapter: {name} saved to the store")):
        output = fn(store, inputs, params, run_id, log, checkpoints=local)
    checkpoint_sync.mark_finished(store, prefix)
    return output


USAGE = "usage: python -m llm_assets.worker {" + "|".join(STAGES) + "}"


def usage() -> str:
    """--help: what the worker is and what it reads (the module docstring), and the stages from launch.STAGES,
    the table the backends start it with, so the list cannot drift from what it accepts."""
    stages_text = "\n".join(f"  {stage:<11} materializes {asset}" for stage, asset in STAGES.items())
    return f"{USAGE}\n\n{__doc__.strip()}\n\nStages:\n{stages_text}\n"


def main(argv: list[str]) -> int:
    # --help is answered before anything else: a person exploring the command has no Pipes context.
    if "-h" in argv or "--help" in argv:
        print(usage(), end="")
        return 0
    if len(argv) != 1:
        print(f"{USAGE}\n(--help says more)", file=sys.stderr)
        return 2
    stage = argv[0]
    if stage not in STAGES:
        print(f"llm_assets.worker: unknown stage {stage!r}; expected one of {', '.join(STAGES)}\n{USAGE}",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        print("llm_assets.worker: DAGSTER_PIPES_CONTEXT is not set; a compute backend starts the worker "
              "(pick one with the stage's `compute` config); `python -m llm_assets.worker --help` says more",
              file=sys.stderr)
        return 2
    loader, writer = pipes_io()
    if os.environ.get("RANK", "0") != "0":  # torchrun: the other ranks train, rank 0 reports
        with loader.load_context(PipesEnvVarParamsLoader().load_context_params()) as data:
            extras = data["extras"]
        run_stage(stage, extras, logging.getLogger("llm_assets.worker").info)
        return 0
    verdict = None
    with open_dagster_pipes(context_loader=loader, message_writer=writer) as pipes:
        try:
            output = run_stage(stage, dict(pipes.extras), pipes.log.info)
        except Exception as exc:
            verdict = classify(exc)
            pipes.log.error(verdict.headline)
            pipes.report_custom_message({"kind": "stage_failure", "error_class": type(exc).__name__,
                                         "message": str(exc)[:2000], "retryable": verdict.retryable,
                                         "reason": verdict.reason})
            raise
        pipes.report_asset_materialization(
            metadata={**output.metadata, "manifest": stages.meta(output.value, "json")},
            data_version=output.value["sha256"][:16])
    return 0


def entry(argv: list[str]) -> int:
    try:
        return main(argv)
    except Exception as exc:
        verdict = classify(exc)
        print(verdict.headline, file=sys.stderr)
        return exit_status(verdict)
