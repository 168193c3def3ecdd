"""The orchestrator's check of what a remote worker published, before any later stage trusts it.

A worker on a rented host reports a manifest (uri, sha256) through Pipes; the bytes it names live in the store,
where that host could write. So the orchestrator re-reads them and recomputes the hash: a file is streamed and
hashed; a folder's index must hash (folder_sha256 over its entries) to the reported sha256 and every file to
its entry. A mismatch is ArtifactIntegrityError (fatal): the output is not materialized, nothing downstream
reads it. Training checkpoints get the same check before a new machine resumes from one (`verified_checkpoint`).
Free of dagster.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Optional

from llm_assets.core.artifacts import FOLDER_INDEX_NAME, ArtifactStore, folder_sha256
from llm_assets.core.errors import ArtifactIntegrityError


def _stream_sha256(store, uri: str) -> str:
    """sha256 of one object, streamed (never the whole file in memory or on disk)."""
    client = getattr(store, "client", None)
    digest = hashlib.sha256()
    if client is not None and hasattr(store, "_split"):
        bucket, key = store._split(uri)
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        for chunk in iter(lambda: body.read(1 << 20), b""):
            digest.update(chunk)
        return digest.hexdigest()
    with tempfile.TemporaryDirectory() as tmp:  # the local store: its own verified read
        return hashlib.sha256(store.get_file(uri, Path(tmp) / "f").read_bytes()).hexdigest()


def _is_folder(store: ArtifactStore, uri: str) -> bool:
    return store.exists(f"{uri}/{FOLDER_INDEX_NAME}")


def verify_published(store: ArtifactStore, manifest: dict, what: str = "the worker's output") -> None:
    """Raise ArtifactIntegrityError unless the bytes at manifest['uri'] hash to manifest['sha256']."""
    uri, expected = manifest["uri"], manifest["sha256"]
    if _is_folder(store, uri):
        with tempfile.TemporaryDirectory() as tmp:
            index = json.loads(store.get_file(f"{uri}/{FOLDER_INDEX_NAME}", Path(tmp) / "i.json").read_text("utf-8"))
        files = index.get("files") or []
        claimed = folder_sha256((entry["path"], entry["sha256"]) for entry in files)
        if claimed != expected or index.get("sha256") != expected:
            raise ArtifactIntegrityError(f"{what} at {uri}: its folder index does not hash to the reported sha256 "
                                         f"{expected}")
        for entry in files:
            actual = _stream_sha256(store, f"{uri}/{entry['path']}")
            if actual != entry["sha256"]:
                raise ArtifactIntegrityError(f"{what} at {uri}: {entry['path']} hashes to {actual}, not the "
                                             f"{entry['sha256']} it was published with")
        return
    actual = _stream_sha256(store, uri)
    if actual != expected:
        raise ArtifactIntegrityError(f"{what} at {uri}: hashes to {actual}, not the reported {expected}")


def verified_checkpoint(store: ArtifactStore, prefix: str, log=print) -> Optional[dict]:
    """The newest checkpoint under `prefix` ({"name", "sha256"}) if its bytes hash to what was published with
    it; None (start fresh) when there is none, it names no hash, or it does not verify."""
    from llm_assets.compute.checkpoint_sync import latest_entry

    entry = latest_entry(store, prefix)
    if not entry or not entry.get("checkpoint"):
        return None
    if not entry.get("sha256"):
        log(f"checkpoint {entry['checkpoint']} under {prefix} carries no sha256; starting fresh")
        return None
    try:
        verify_published(store, {"uri": store.uri_for(f"{prefix}/{entry['checkpoint']}"), "sha256": entry["sha256"]},
                         what=f"checkpoint {entry['checkpoint']}")
    except (ArtifactIntegrityError, FileNotFoundError) as exc:
        log(f"{exc}; not resuming from it, starting fresh")
        return None
    return {"name": entry["checkpoint"], "sha256": entry["sha256"]}
