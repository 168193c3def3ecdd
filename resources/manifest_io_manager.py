"""An IO manager for asset manifests: small JSON documents in the artifact store, one per run.

An asset's value is a manifest (URIs, sha256, sizes, key figures), never the model or the data itself,
so nothing large is pickled between steps and any worker that can reach the artifact store can read
its inputs.

Each output is written under its own run: manifests/<asset>/<run_id>.json (a partitioned asset adds
partition=<key>/ before the run id), and the materialization records that key as `manifest_key`
metadata. A step reads exactly the upstream output it was given, never "the latest file":
- an upstream produced in this run (or, in a re-execution, in the parent run that produced it): the
  manifest of the run Dagster names as the output's producer;
- an upstream asset outside this run: the manifest named by the materialization Dagster loads for it,
  the asset's latest materialization (for the partition) in this instance.
Two runs of the graph at the same time therefore never read each other's outputs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from urllib.parse import quote

import dagster as dg

from llm_assets.core.artifacts import ArtifactStore
from resources.artifact_store import ArtifactStoreResource

MANIFEST_KEY = "manifest_key"  # the materialization metadata entry naming the output's manifest


def manifest_key(asset_path: list[str] | tuple[str, ...] | str, run_id: str, partition: str | None = None) -> str:
    """Where the manifest that run `run_id` wrote for an asset (and partition) lives in the artifact store."""
    parts = [asset_path] if isinstance(asset_path, str) else list(asset_path)
    if partition is not None:  # quoted: a partition key may hold '/' or other characters a path cannot
        parts.append("partition=" + quote(partition, safe=""))
    return "/".join(["manifests", *parts, f"{run_id}.json"])


def read_manifest(store: ArtifactStore, key: str) -> dict:
    """The manifest stored at `key`; a missing one names the key (a run that never wrote it, another store)."""
    uri = store.uri_for(key)
    if not store.exists(uri):
        raise FileNotFoundError(f"no manifest at {uri}: the run it names did not write this output to this "
                                f"artifact store")
    local = store.local_path(uri)
    if local is not None:
        return json.loads(local.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(store.get_file(uri, Path(tmp) / "manifest.json").read_text(encoding="utf-8"))


def materialized_manifest_key(instance: dg.DagsterInstance, asset_key: dg.AssetKey,
                              partition: str | None = None) -> str:
    """The manifest of `asset_key`'s latest materialization (for `partition`) that `instance` recorded."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition] if partition is not None else None),
        limit=1).records
    name = asset_key.to_user_string() + (f" partition {partition}" if partition is not None else "")
    if not records:
        raise FileNotFoundError(f"{name} has no materialization in this Dagster instance; materialize it first")
    entry = records[0].event_log_entry
    recorded = entry.asset_materialization.metadata.get(MANIFEST_KEY)
    if recorded is None:  # e.g. a materialization from before manifests were kept per run
        raise FileNotFoundError(f"the latest materialization of {name} (run {entry.run_id}) names no manifest; "
                                f"materialize {name} again")
    return recorded.value


class ManifestIOManager(dg.ConfigurableIOManager):
    """Stores each output's manifest as JSON at manifests/<asset key>/<run id>.json in the artifact store,
    and loads an input from the run that produced it (see the module docstring)."""

    artifact_store: ArtifactStoreResource

    def handle_output(self, context: dg.OutputContext, obj: dict) -> None:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        key = manifest_key(context.asset_key.path, context.run_id, partition)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "manifest.json"
            path.write_text(json.dumps(obj, indent=1, sort_keys=True), encoding="utf-8")
            self.artifact_store.store().put_file(path, key)
        # Recorded on the materialization, so a later run that loads this asset from outside itself reads
        # exactly this output.
        context.add_output_metadata({MANIFEST_KEY: key})

    def load_input(self, context: dg.InputContext) -> dict:
        return read_manifest(self.artifact_store.store(), self.input_key(context))

    def input_key(self, context: dg.InputContext) -> str:
        """The manifest of the exact upstream output this input is (see the module docstring)."""
        partition = context.asset_partition_key if context.has_asset_partitions else None
        run_id = _producing_run(context)
        if run_id is not None:
            return manifest_key(context.asset_key.path, run_id, partition)
        return materialized_manifest_key(context.instance, context.asset_key, partition)


def _producing_run(context: dg.InputContext) -> str | None:
    """The run whose step produced this input: this run, or the parent run whose output a re-execution reuses.

    None for an asset outside this run's plan: Dagster then loads the asset's latest materialization, and the
    upstream context it builds carries a placeholder run id that names no run in the instance.
    """
    try:
        run_id = context.upstream_output.run_id
    except dg.DagsterInvariantViolationError:
        return None
    return run_id if context.instance.has_run(run_id) else None
