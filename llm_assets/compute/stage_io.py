"""What every stage body does alike: fetch inputs from the artifact store, publish outputs, describe them.

Plain functions with no dagster import, shared by the stage bodies (which run in the step's process or
in a worker anywhere) and by the assets that run in the step's process only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from llm_assets.core.artifacts import Artifact, ArtifactStore, run_key

LogFn = Callable[[str], None]


@dataclass
class StageOutput:
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


def publish(store: ArtifactStore, run_id: str, asset_name: str, local: Path) -> Artifact:
    """Put a file or folder into the store under a run-scoped key."""
    key = run_key(run_id, asset_name, local.name)
    return store.put_dir(local, key) if local.is_dir() else store.put_file(local, key)


def manifest(artifact: Artifact, local: Path, **figures) -> dict:
    return {**artifact.to_dict(), "kind": "dir" if local.is_dir() else "file", **figures}
