"""What every stage does alike: its context, its result, fetching inputs and publishing outputs.

Plain functions with no dagster import: a stage runs the same in a Dagster step, in a worker subprocess
or on a rented GPU.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from llm_assets.core.artifacts import Artifact, ArtifactStore, run_key
from llm_assets.core.model_spec import ModelSpec

LogFn = Callable[[str], None]


@dataclass
class StageContext:
    """Where a stage reads and writes, and how it reports: the same fields wherever it runs."""

    store: ArtifactStore
    run_id: str
    model: ModelSpec                    # the model being trained: its data, benchmark, scorer, gate, name
    log: LogFn = print
    # Settings for s3:// data sources (the artifact store's endpoint and credentials); None: boto3's chain.
    s3: Optional[object] = None
    # Training: the local checkpoint folder; None picks one keyed by inputs and config (see checkpoint_dir).
    checkpoints: Optional[Path] = None


@dataclass
class StageResult:
    """A stage's output: `value` is the asset's manifest, `metadata` is in Pipes' external form
    ({"raw_value": ..., "type": ...}), which the worker sends as is and the in-process path converts."""

    value: dict
    metadata: dict = field(default_factory=dict)


def meta(value, kind: str) -> dict:
    """One metadata entry in Pipes' external form."""
    return {"raw_value": value, "type": kind}


def fetch(store: ArtifactStore, artifact: dict, dest: Path) -> Path:
    """A local path for an upstream artifact: in place for the local store, else a verified download."""
    uri, sha = artifact["uri"], artifact["sha256"]
    local = store.local_path(uri, expected_sha256=sha)
    if local is not None:
        return local
    is_dir = artifact.get("kind") == "dir"
    return store.get_dir(uri, dest, sha) if is_dir else store.get_file(uri, dest, sha)


def publish(context: StageContext, asset_name: str, local: Path) -> Artifact:
    """Put a file or folder into the store under a run-scoped key: a run never overwrites another's output."""
    key = run_key(context.run_id, asset_name, local.name)
    return context.store.put_dir(local, key) if local.is_dir() else context.store.put_file(local, key)


def describe(artifact: Artifact, local: Path, **figures) -> dict:
    """An asset's value: where its files are, their content hash, and its key figures."""
    return {**artifact.to_dict(), "kind": "dir" if local.is_dir() else "file", **figures}


def checkpoint_dir(*parts: str) -> Path:
    """Where training keeps its checkpoints on this machine: the same inputs and config find the same folder,
    so a retried step resumes."""
    root = Path(os.environ.get("LLM_ASSETS_CHECKPOINT_DIR", Path.cwd() / "artifacts" / "checkpoints"))
    return root / hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def code_version() -> str | None:
    """The git commit of the code that produced an artifact, when the code is a git checkout."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              check=True, cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
