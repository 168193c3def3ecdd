"""Training checkpoints mirrored to the artifact store, so a new machine resumes where a lost one stopped.

The trainer writes checkpoints to a local folder and marks each one complete after its last file
(llm_assets.core.training). A background thread uploads every newly completed checkpoint as a folder
artifact (its folder index is written last, so a half upload is never trusted) and then points
`<prefix>/LATEST.json` at it, with the checkpoint's sha256. A worker starting on a fresh machine downloads
the checkpoint the orchestrator verified against that sha256 (llm_assets.compute.verify, passed in the Pipes
extras as `checkpoint`), checking every file's hash as it downloads. After the stage succeeds LATEST points at
nothing, so the same work later starts from scratch.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Optional

from llm_assets.core.artifacts import ArtifactStore
from llm_assets.core.training import COMPLETE_MARKER, latest_complete_checkpoint

log = logging.getLogger(__name__)


def _write_latest(store: ArtifactStore, prefix: str, checkpoint: Optional[str], sha256: Optional[str] = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "LATEST.json"
        path.write_text(json.dumps({"checkpoint": checkpoint, "sha256": sha256}), encoding="utf-8")
        store.put_file(path, f"{prefix}/LATEST.json")


def latest_entry(store: ArtifactStore, prefix: str) -> Optional[dict]:
    """LATEST.json as written ({"checkpoint", "sha256"}), or None."""
    uri = store.uri_for(f"{prefix}/LATEST.json")
    if not store.exists(uri):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(store.get_file(uri, Path(tmp) / "LATEST.json").read_text(encoding="utf-8"))


def latest_in_store(store: ArtifactStore, prefix: str) -> Optional[str]:
    entry = latest_entry(store, prefix)
    return entry.get("checkpoint") if entry else None


def restore(store: ArtifactStore, prefix: str, local_dir: Path, checkpoint: dict) -> str:
    """Download the checkpoint {"name", "sha256"} the orchestrator verified; every file is checked as it lands."""
    name = checkpoint["name"]
    store.get_dir(store.uri_for(f"{prefix}/{name}"), Path(local_dir) / name, expected_sha256=checkpoint["sha256"])
    return name


def restore_latest(store: ArtifactStore, prefix: str, local_dir: Path) -> Optional[str]:
    """Download the newest complete checkpoint in the store into `local_dir`; its name, or None."""
    name = latest_in_store(store, prefix)
    if name is None:
        return None
    store.get_dir(store.uri_for(f"{prefix}/{name}"), Path(local_dir) / name)
    return name


def mark_finished(store: ArtifactStore, prefix: str) -> None:
    _write_latest(store, prefix, None)


class CheckpointUploader:
    """Uploads each newly completed local checkpoint while training runs (a daemon thread)."""

    def __init__(self, store: ArtifactStore, prefix: str, local_dir: Path, interval: float = 1.0,
                 on_upload=None, restored: Optional[str] = None):
        self.store, self.prefix, self.local_dir, self.interval = store, prefix, Path(local_dir), interval
        self.on_upload = on_upload
        self.uploaded: Optional[str] = restored  # came from the store: nothing to upload until a newer one
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="checkpoint-uploader", daemon=True)

    def __enter__(self) -> "CheckpointUploader":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self.sync()  # the last checkpoint too (the stage still may fail after training)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except Exception:  # a failed upload must not end the mirroring: the next pass retries
                log.exception("checkpoint upload failed; retrying on the next pass")

    def sync(self) -> None:
        latest = latest_complete_checkpoint(self.local_dir)
        if latest is None or latest.name == self.uploaded:
            return
        # The trainer keeps two checkpoints and deletes older ones while we upload; when saves come faster than
        # uploads, uploading in place would lose every race and never mirror one. A snapshot of hard links
        # (files are never rewritten after the complete marker) keeps the one being uploaded alive.
        with tempfile.TemporaryDirectory(dir=self.local_dir, prefix=".uploading-") as tmp:
            try:
                snapshot = _snapshot(latest, Path(tmp) / latest.name)
            except OSError as exc:  # rotated away before we could link it: a newer one exists
                log.info("checkpoint %s not uploaded (%s); a newer one will be", latest.name, exc)
                return
            artifact = self.store.put_dir(snapshot, f"{self.prefix}/{latest.name}")
        _write_latest(self.store, self.prefix, latest.name, artifact.sha256)
        self.uploaded = latest.name
        if self.on_upload:
            self.on_upload(latest.name)


def _snapshot(checkpoint: Path, dest: Path) -> Path:
    """`checkpoint` as hard links under `dest` (copies where the filesystem has none), checked against the file
    list in its complete marker: a folder the trainer was deleting while we listed it raises, never half-uploads."""
    marker = json.loads((checkpoint / COMPLETE_MARKER).read_text(encoding="utf-8"))
    if not isinstance(marker, dict):  # an older trainer's marker (the step alone): trust the folder as listed
        marker = {"files": {p.relative_to(checkpoint).as_posix(): p.stat().st_size
                            for p in checkpoint.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER}}
    listed = marker["files"]
    for rel in listed:
        src, target = checkpoint / rel, dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, target)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise  # vanished: rotated away, not a filesystem without hard links
            shutil.copy2(src, target)
        if target.stat().st_size != listed[rel]:
            raise OSError(f"{src} is {target.stat().st_size} bytes, its marker says {listed[rel]}")
    shutil.copy2(checkpoint / COMPLETE_MARKER, dest / COMPLETE_MARKER)
    return dest
