"""What every asset does alike: a scratch folder, publishing to the store, metadata."""


import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import dagster as dg

from llm_assets.compute.stage_io import fetch, manifest  # noqa: F401  (the assets use them too)
from llm_assets.config import validate_run_config
from llm_assets.core.artifacts import Artifact, ArtifactStore, run_key


@contextlib.contextmanager
def scratch(context: dg.AssetExecutionContext, compute_backends=None) -> Iterator[Path]:
    """A private folder for one step's work, removed afterwards.

    Entering it first checks the whole run's config (with `compute_backends`, every stage's `compute` too),
    so a bad value anywhere fails the first step instead of a late one.
    """
    validate_run_config(context.run.run_config, compute_backends.names() if compute_backends else None)
    path = Path(tempfile.mkdtemp(prefix=f"{context.asset_key.to_user_string()}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish(context: dg.AssetExecutionContext, store: ArtifactStore, local: Path) -> Artifact:
    """Put a file or folder into the store under a run-scoped key."""
    key = run_key(context.run.run_id, context.asset_key.to_user_string(), local.name)
    return store.put_dir(local, key) if local.is_dir() else store.put_file(local, key)


def output(value: dict, metadata: dict | None = None) -> dg.Output:
    """The asset's value with its content hash as data version and its location as metadata."""
    meta = {
        "uri": dg.MetadataValue.path(value["uri"]),
        "sha256": value["sha256"],
        "size_bytes": dg.MetadataValue.int(value["size"]),
        **(metadata or {}),
    }
    return dg.Output(value, data_version=dg.DataVersion(value["sha256"][:16]), metadata=meta)
