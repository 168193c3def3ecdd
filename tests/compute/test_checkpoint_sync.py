"""Checkpoint mirroring against the trainer's rotation: an upload that started finishes, a half-deleted
checkpoint is never mirrored, on a real local store."""

from __future__ import annotations

import shutil
from pathlib import Path

from llm_assets.compute.checkpoint_sync import CheckpointUploader, latest_entry
from llm_assets.core.artifacts import FOLDER_INDEX_NAME, LocalArtifactStore
from llm_assets.core.training import COMPLETE_MARKER, write_complete_marker

PREFIX = "pipeline/checkpoints/job"


def make_checkpoint(root: Path, step: int) -> Path:
    ckpt = root / f"checkpoint-{step}"
    (ckpt / "nested").mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(bytes([step % 256]) * 4096)
    (ckpt / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    (ckpt / "nested" / "optimizer.pt").write_bytes(b"o" * 1000)
    write_complete_marker(ckpt, step)
    return ckpt


class RotatingStore(LocalArtifactStore):
    """A store whose upload is overtaken by the trainer deleting the checkpoint being uploaded."""

    def __init__(self, root, checkpoints: Path):
        super().__init__(root)
        self.checkpoints = checkpoints

    def put_dir(self, local_dir, key):
        for ckpt in self.checkpoints.glob("checkpoint-*"):
            shutil.rmtree(ckpt)
        return super().put_dir(local_dir, key)


def test_a_checkpoint_rotated_away_mid_upload_is_still_mirrored_whole(tmp_path):
    local = tmp_path / "run"
    make_checkpoint(local, 5)
    expected = {p.relative_to(local / "checkpoint-5").as_posix(): p.read_bytes()
                for p in (local / "checkpoint-5").rglob("*") if p.is_file()}
    store = RotatingStore(tmp_path / "store", local)

    uploader = CheckpointUploader(store, PREFIX, local)
    uploader.sync()

    assert not (local / "checkpoint-5").exists()  # the trainer did delete it while we uploaded
    entry = latest_entry(store, PREFIX)
    assert entry["checkpoint"] == "checkpoint-5" and uploader.uploaded == "checkpoint-5"
    restored = store.get_dir(store.uri_for(f"{PREFIX}/checkpoint-5"), tmp_path / "restored",
                             expected_sha256=entry["sha256"])
    got = {p.relative_to(restored).as_posix(): p.read_bytes() for p in restored.rglob("*")
           if p.is_file() and p.name != FOLDER_INDEX_NAME}
    assert got == expected
    assert [p.name for p in local.iterdir()] == []  # no snapshot left behind


def test_a_half_deleted_checkpoint_is_never_mirrored_and_the_next_one_is(tmp_path):
    local = tmp_path / "run"
    store = LocalArtifactStore(tmp_path / "store")
    half = make_checkpoint(local, 5)
    (half / "nested" / "optimizer.pt").unlink()  # rotation had begun when we looked

    uploader = CheckpointUploader(store, PREFIX, local)
    uploader.sync()
    assert latest_entry(store, PREFIX) is None and uploader.uploaded is None

    make_checkpoint(local, 10)
    uploader.sync()
    assert latest_entry(store, PREFIX)["checkpoint"] == "checkpoint-10"


def test_a_restored_checkpoint_is_not_uploaded_again_and_an_older_trainers_marker_still_uploads(tmp_path):
    local = tmp_path / "run"
    store = LocalArtifactStore(tmp_path / "store")
    restored = make_checkpoint(local, 5)
    (restored / COMPLETE_MARKER).write_text("5")  # the marker before it listed files: the step alone

    uploader = CheckpointUploader(store, PREFIX, local, restored="checkpoint-5")
    uploader.sync()
    assert latest_entry(store, PREFIX) is None  # it came from the store; nothing to do

    uploader = CheckpointUploader(store, PREFIX, local)
    uploader.sync()
    entry = latest_entry(store, PREFIX)
    assert entry["checkpoint"] == "checkpoint-5"
    got = store.get_dir(store.uri_for(f"{PREFIX}/checkpoint-5"), tmp_path / "restored", entry["sha256"])
    assert (got / "nested" / "optimizer.pt").read_bytes() == b"o" * 1000
    assert (got / COMPLETE_MARKER).read_text() == "5"
