"""The worker: `python -m llm_assets.compute.worker ASSET` runs one stage anywhere, talking to Dagster through Pipes.

It reads its context (stage config, upstream manifests, artifact root) from Dagster Pipes: a temp
file or environment for a local subprocess, an S3 object for a remote machine (picked from what the
context parameters name). It runs the stage from the table in llm_assets.stages, writes
artifacts (and, on a remote store, training checkpoints) to the artifact store, logs progress lines
through Pipes and reports the materialization with the manifest as metadata.

On failure it logs the verdict of llm_assets.core.failures, sends it as a custom message
({"kind": "stage_failure", ...}) and exits 75 (retryable) or 1 (fatal).
Under torchrun only rank 0 talks to Dagster and publishes; the other ranks train alongside it.

Environment: DAGSTER_PIPES_CONTEXT, DAGSTER_PIPES_MESSAGES (from Dagster), LLM_ASSETS_S3_ENDPOINT_URL,
AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (remote store), LLM_ASSETS_PIPES_FLUSH_SECONDS
(upload interval of message chunks, default 5), LLM_ASSETS_HEARTBEAT_SECONDS (a remote backend sets it: a
Pipes heartbeat that often, so the orchestrator can tell a hung machine from a slow step),
LLM_ASSETS_CHECKPOINT_DIR (local checkpoint scratch), RANK (torchrun).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path

from llm_assets.compute import checkpoint_sync
from llm_assets.compute.launch import ENV_FLUSH_SECONDS, ENV_HEARTBEAT_SECONDS, checkpoint_prefix, job_key
from llm_assets.core.artifacts import LocalArtifactStore, store_from_uri
from llm_assets.core.failures import classify, exit_status
from llm_assets.core.model_spec import ModelSpec
from llm_assets.core.s3_settings import S3Settings
from llm_assets.stages import STAGES, StageContext, StageResult, get_stage
from llm_assets.stages.io import meta


@contextlib.contextmanager
def heartbeat(pipes):
    """A custom Pipes message every LLM_ASSETS_HEARTBEAT_SECONDS while the stage runs (unset: none)."""
    interval = float(os.environ.get(ENV_HEARTBEAT_SECONDS) or 0)
    stop = threading.Event()

    def beat():
        while not stop.wait(interval):
            try:
                pipes.report_custom_message({"kind": "heartbeat"})
            except Exception:  # noqa: BLE001 - a missed beat is what the orchestrator's deadline is for
                pass

    thread = threading.Thread(target=beat, name="pipes-heartbeat", daemon=True) if interval > 0 else None
    if thread is not None:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=5)


def _s3_client():
    return S3Settings.from_env().client()


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


def run_stage(asset: str, extras: dict, log) -> StageResult:
    """Run one stage from its Pipes extras; training on a remote store mirrors checkpoints there."""
    stage = get_stage(asset)
    params = stage.params_from(extras["config"])
    # The endpoint and region come with the extras; the credentials only ever from this machine's environment.
    s3 = S3Settings(**extras.get("s3", {})).or_else(S3Settings.from_env())
    store = store_from_uri(extras["artifact_root"], s3=s3)
    context = StageContext(store=store, run_id=extras["run_id"], model=ModelSpec(**extras["model"]), log=log, s3=s3)
    inputs = extras["inputs"]
    if not stage.resumable or isinstance(store, LocalArtifactStore):
        return stage.run(inputs, params, context)
    # A remote machine keeps nothing between attempts: checkpoints live in the store.
    prefix = checkpoint_prefix(extras.get("job_key") or job_key(asset, inputs, extras["config"]))
    context.checkpoints = Path(os.environ.get("LLM_ASSETS_CHECKPOINT_DIR")
                               or tempfile.mkdtemp(prefix="checkpoints-")) / "job"
    if "checkpoint" in extras:  # what the orchestrator verified (None: start fresh), never LATEST.json unchecked
        chosen = extras["checkpoint"]
        restored = checkpoint_sync.restore(store, prefix, context.checkpoints, chosen) if chosen else None
    else:
        restored = checkpoint_sync.restore_latest(store, prefix, context.checkpoints)
    if restored:
        log(f"{asset}: restored {restored} from the artifact store; resuming")
    with checkpoint_sync.CheckpointUploader(store, prefix, context.checkpoints,
                                            on_upload=lambda name: log(f"{asset}: {name} saved to the store"),
                                            restored=restored):
        result = stage.run(inputs, params, context)
    checkpoint_sync.mark_finished(store, prefix)
    return result


USAGE = "usage: python -m llm_assets.compute.worker {" + "|".join(STAGES) + "}"


def usage() -> str:
    """--help: what the worker is and what it reads (the module docstring), and the stages from the one stage
    table, so the list cannot drift from what it accepts."""
    stages_text = "\n".join(f"  {asset:<17} reads {', '.join(stage.upstream) or 'no upstream asset'}"
                             for asset, stage in STAGES.items())
    return f"{USAGE}\n\n{__doc__.strip()}\n\nStages (each named by the asset it materializes):\n{stages_text}\n"


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
        print(f"llm_assets.compute.worker: unknown stage {stage!r}; expected one of {', '.join(STAGES)}\n{USAGE}",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        print("llm_assets.compute.worker: DAGSTER_PIPES_CONTEXT is not set; a compute backend starts the worker "
              "(pick one with the stage's `compute` config); `python -m llm_assets.compute.worker --help` says more",
              file=sys.stderr)
        return 2
    loader, writer = pipes_io()
    if os.environ.get("RANK", "0") != "0":  # torchrun: the other ranks train, rank 0 reports
        with loader.load_context(PipesEnvVarParamsLoader().load_context_params()) as data:
            extras = data["extras"]
        run_stage(stage, extras, logging.getLogger("llm_assets.compute.worker").info)
        return 0
    verdict = None
    with open_dagster_pipes(context_loader=loader, message_writer=writer) as pipes:
        try:
            with heartbeat(pipes):
                output = run_stage(stage, dict(pipes.extras), pipes.log.info)
        except Exception as exc:
            verdict = classify(exc)
            pipes.log.error(verdict.headline)
            pipes.report_custom_message({"kind": "stage_failure", "error_class": type(exc).__name__,
                                         "message": str(exc)[:2000], "retryable": verdict.retryable,
                                         "reason": verdict.reason})
            raise
        pipes.report_asset_materialization(
            metadata={**output.metadata, "manifest": meta(output.value, "json")},
            data_version=output.value["sha256"][:16])
    return 0


def entry(argv: list[str]) -> int:
    try:
        return main(argv)
    except Exception as exc:
        verdict = classify(exc)
        print(verdict.headline, file=sys.stderr)
        return exit_status(verdict)


if __name__ == "__main__":
    sys.exit(entry(sys.argv[1:]))
