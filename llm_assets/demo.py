"""`make demo`: materialize the whole graph for one model (default: the bunny, models/pet-brain.yaml) and print
a summary.

A version that passed the gate is promoted to production when nothing is there yet (never over an existing
production version), and the lines before the last say what was promoted and how to serve it. The last line
printed is one JSON object: {"strict_accuracy", "gate_passed", "gguf", "gguf_bytes", "seconds"}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path


def summarize(result, store, seconds: float, model: str) -> dict:
    """The demo's last line, from the eval report and GGUF manifests the run just wrote for `model`."""
    report = _read_manifest(store, "eval_report", result.run_id, model)
    gguf = _read_manifest(store, "gguf_model", result.run_id, model)
    gate = report["gate"]
    variant = gate["variant"] or next(iter(gguf["variants"]))
    folder = store.local_path(gguf["uri"])
    path = (folder / gguf["variants"][variant]["file"]) if folder else f"{gguf['uri']}/{gguf['variants'][variant]['file']}"
    check = next((e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                  and e.asset_check_evaluation_data.check_name == "accuracy_gate"), None)
    return {
        gate["metric"]: round(float(gate["value"] or 0.0), 4),
        "gate_passed": bool(check.asset_check_evaluation_data.passed) if check else False,
        "gguf": str(path),
        "gguf_bytes": int(gguf["variants"][variant]["bytes"]),
        "seconds": round(seconds, 1),
    }


def _read_manifest(store, asset: str, run_id: str, model: str) -> dict:
    """What this run wrote for `asset` and `model` (manifests are kept per run, never as "the latest")."""
    from resources.manifest_io_manager import manifest_key, read_manifest

    return read_manifest(store, manifest_key(asset, run_id, model))


def promote_for_serving(defs, instance, run_id: str, model: str, min_accuracy: float) -> list[str]:
    """The demo runs without the daemon, so promotion_sensor never promotes its model and `llm-assets serve`
    would have nothing to answer with: fill an empty production slot (promote_first_gated), then materialize
    production_model through promote_job, as the sensor's promotion does, so the UI shows it with its lineage."""
    from llm_assets.assets.registry_assets import artifact_verifier
    from llm_assets.core.promotion import promote_first_gated

    resource = defs.resources["model_registry"]
    with resource.registry() as registry:
        outcome = promote_first_gated(registry, model, run_id, min_accuracy=min_accuracy,
                                      verify=artifact_verifier(defs.resources["artifact_store"].store()))
        url = registry.url
    lines = [f"registry: {outcome.message}"] + ([f"  .venv/bin/{outcome.command}"] if outcome.command else [])
    if outcome.promoted is not None:
        keep = {"ops": {"production_model": {"config": {"version": 0}}}}  # 0: record production, move nothing
        done = defs.resolve_job_def("promote_job").execute_in_process(
            run_config=keep, instance=instance, raise_on_error=False, partition_key=model,
            tags={"llm_assets/source": "make demo"})
        if not done.success:
            lines.append("registry: production_model was not materialized (the registry is promoted anyway): "
                         + "; ".join(str(e.message) for e in done.all_events if e.is_failure)[:500])
    if outcome.production is None:
        return lines + ["nothing is in production yet, so `llm-assets serve` has nothing to serve"]
    return lines + [f"serve {model} v{outcome.production} with:", f"  {serve_command(url, model)}"]


def serve_command(registry_url: str, model: str = "pet-brain") -> str:
    """The README's serve command; it names the registry only where serve, started from this folder without
    make's DAGSTER_HOME, would not find it by itself."""
    import shlex

    from llm_assets.core.registry.engine import normalize_url

    command = ".venv/bin/llm-assets serve --port 8000" + ("" if model == "pet-brain" else f" --model {model}")
    here = normalize_url(str(Path(".dagster_home") / "registry.db"))
    if os.environ.get("LLM_ASSETS_REGISTRY_URL") or registry_url == here or not registry_url.startswith("sqlite"):
        return command
    return f"{command} --registry-url {shlex.quote(registry_url)}"


def job_name(preset: str, jobs: set[str]) -> str:
    """A preset named under configs/ runs as its own job, train_<name>_job; a YAML file given by path runs as
    train_cpu_tiny_job, whose default config is each asset's default, so what the file leaves out is the default."""
    from jobs import DEFAULT_TRAINING_JOB

    own = f"train_{preset}_job"
    return own if not Path(preset).suffix and own in jobs else DEFAULT_TRAINING_JOB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=None,
                        help="a preset's name under configs/ or the path of a run-config YAML file (default: the "
                        "model file's preset, cpu_tiny unless it names another)")
    parser.add_argument("--model", default="pet-brain",
                        help="the model to train: a models/<name>.yaml (or $LLM_ASSETS_MODELS_DIR) file's name")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import dagster as dg

    from llm_assets.core.errors import ConfigError
    from llm_assets.presets import load_preset
    from llm_assets.core.registry import RegistryError
    from llm_assets.definitions import defs
    from resources.model_catalog import register_models

    logging.getLogger("dagster").setLevel(logging.INFO)
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    try:  # a missing or invalid model file is named before any work
        spec = defs.resources["model_catalog"].get(args.model)
    except ConfigError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    preset = args.preset or spec.preset  # the model's own hyperparameters unless the command names others
    job = defs.resolve_job_def(job_name(preset, {j.name for j in defs.resolve_all_job_defs()}))
    register_models(instance, [args.model])
    started = time.perf_counter()
    result = job.execute_in_process(run_config=load_preset(preset), instance=instance, raise_on_error=False,
                                    partition_key=args.model)
    seconds = time.perf_counter() - started
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        print("demo: the run failed:\n  " + "\n  ".join(failures[:5]), file=sys.stderr)
    store = defs.resources["artifact_store"].store()
    try:
        summary = summarize(result, store, seconds, args.model)
    except (FileNotFoundError, KeyError, AttributeError) as exc:
        print(f"demo: no evaluation to summarize ({exc})", file=sys.stderr)
        return 1
    print(f"run {result.run_id}: {'success' if result.success else 'FAILED'} in {seconds:.0f}s; "
          f"deployable GGUF {Path(summary['gguf']).name}; open the Dagster UI with `make dev` to see it.")
    try:
        lines = promote_for_serving(defs, instance, result.run_id, args.model, spec.gate.threshold)
    except RegistryError as exc:  # an unreachable registry must not hide the summary below
        lines = [f"registry: nothing promoted: {exc}"]
    print("\n".join(lines))
    print(json.dumps(summary))
    return 0 if result.success and summary["gate_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
