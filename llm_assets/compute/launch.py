"""How a backend starts the worker, and how a restarted orchestrator finds the job it started.

- `worker_command(stage, gpus)`: `python -m llm_assets.compute.worker ASSET`, or through `torchrun
  --standalone --nproc_per_node=N` when the machine has N > 1 GPUs (DDP; rank 0 alone talks to Dagster).
- `job_key(stage, inputs, config)`: the identity of a piece of work (same stage, same upstream
  artifacts, same config => same key). A `JobRecord` stored at `compute/jobs/<key>.json` in the
  artifact store is written *before* the provider is asked for a machine (state `launching`, with the
  machine's deterministic name), then names the provider's job id while it runs (`running`), so after a
  lost create response or an orchestrator crash the backend finds the machine by name and adopts it
  instead of paying for a second one (llm_assets.compute.lifecycle).
- `machine_name(stage, key)`: that deterministic name (pod name, instance label), which the orphan
  sweeper also lists machines by.
- `worker_environment(...)`: every variable the worker needs besides Dagster Pipes' two.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from llm_assets.core.artifacts import ArtifactNotFoundError, ArtifactStore
from llm_assets.core.errors import ArtifactIntegrityError
from llm_assets.core.s3_settings import S3Settings
from llm_assets.stages import get_stage

# Variables the worker reads (besides DAGSTER_PIPES_CONTEXT / DAGSTER_PIPES_MESSAGES).
ENV_FLUSH_SECONDS = "LLM_ASSETS_PIPES_FLUSH_SECONDS"  # how often the worker uploads message chunks
ENV_CHECKPOINT_DIR = "LLM_ASSETS_CHECKPOINT_DIR"  # local scratch for checkpoints on the machine
ENV_HEARTBEAT_SECONDS = "LLM_ASSETS_HEARTBEAT_SECONDS"  # how often the worker sends a Pipes heartbeat
# launching: intent written, the machine may or may not exist (look it up by name); running: job_id names it;
# finished: confirmed terminated (or never made).
JOB_STATES = ("launching", "running", "finished")
LIVE_STATES = ("launching", "running")
# Every machine this project makes is named with this prefix: what the orphan sweeper lists.
MACHINE_NAME_PREFIX = "llm-assets"


def machine_name(stage: str, key: str) -> str:
    """The deterministic name of the machine for one piece of work: lowercase letters, digits and hyphens,
    which every provider accepts as a pod name, instance label or kernel slug."""
    return f"{MACHINE_NAME_PREFIX}-{stage.replace('_', '-')}-{key[:12]}".lower()


def worker_command(stage: str, gpus: int = 0, python: str = "python") -> list[str]:
    """The command line a machine runs; torchrun spreads training over more than one GPU."""
    get_stage(stage)
    if gpus > 1:
        return ["torchrun", "--standalone", "--nnodes=1", f"--nproc_per_node={gpus}",
                "-m", "llm_assets.compute.worker", stage]
    return [python, "-m", "llm_assets.compute.worker", stage]


def job_key(stage: str, inputs: dict, config: dict) -> str:
    """Same stage, upstream artifacts and config => same key (and the same checkpoints). The config counts with
    its defaults filled in, so a value written out and the same value left to its default are one job."""
    upstream = {name: manifest.get("sha256") for name, manifest in sorted(inputs.items())}
    resolved = get_stage(stage).params_from(config).model_dump(mode="json")
    payload = json.dumps({"stage": stage, "inputs": upstream, "config": resolved}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def checkpoint_prefix(key: str) -> str:
    """Where a job's training checkpoints live in the artifact store."""
    return f"checkpoints/{key}"


@dataclass
class JobRecord:
    """A launched remote job, as recorded in the artifact store while it runs."""

    backend: str
    job_id: str
    job_key: str
    stage: str
    run_id: str
    messages_key_prefix: str
    started_at: float = field(default_factory=time.time)
    hourly_price_usd: float = 0.0
    state: str = "running"
    details: dict = field(default_factory=dict)
    machine_name: str = ""        # the deterministic name/label the machine is created with
    heartbeat_at: float = field(default_factory=time.time)  # refreshed by the orchestrator that drives it
    ended_at: Optional[float] = None
    note: str = ""                # why it ended, or why termination is unconfirmed
    @staticmethod
    def store_key(key: str) -> str:
        return f"compute/jobs/{key}.json"

    def save(self, store: ArtifactStore) -> None:
        """One small object written whole (local: atomic rename; S3: one PUT)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "job.json"
            path.write_text(json.dumps(asdict(self), indent=1, sort_keys=True), encoding="utf-8")
            store.put_file(path, self.store_key(self.job_key))

    @classmethod
    def load(cls, store: ArtifactStore, key: str) -> Optional["JobRecord"]:
        """The recorded job for this key, or None when nothing was ever launched for it."""
        data = read_json(store, cls.store_key(key))
        if data is None:
            return None
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def finished(self, store: ArtifactStore, note: str = "") -> None:
        """Mark the job over (its machine confirmed terminated, or never made): nothing to re-attach to."""
        self.state = "finished"
        self.ended_at = time.time()
        self.note = note or self.note
        self.save(store)


def read_json(store: ArtifactStore, key: str, attempts: int = 4) -> Optional[dict]:
    """A small JSON object another process may be rewriting right now, or None when there is none.

    The S3 store reads an object's recorded sha256 (HEAD) and its body (GET) in two requests, so a read that
    straddles a rewrite sees a mismatch: read again rather than fail on a record that is merely being updated.
    """
    uri = store.uri_for(key)
    for attempt in range(attempts):
        if not store.exists(uri):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                return json.loads(store.get_file(uri, Path(tmp) / "x.json").read_text(encoding="utf-8"))
            except ArtifactNotFoundError:
                return None
            except ArtifactIntegrityError:
                if attempt + 1 == attempts:
                    raise
                time.sleep(0.2 * (attempt + 1))
    return None


def new_messages_prefix(root_prefix: str, key: str) -> str:
    """A fresh place for one launch's Pipes messages, so a new attempt never replays an old one's."""
    return "/".join(p for p in (root_prefix.strip("/"), "compute", "pipes", key, uuid.uuid4().hex[:12]) if p)


def worker_environment(s3: S3Settings, *, flush_seconds: float, extra: Optional[dict] = None) -> dict[str, str]:
    """What a remote machine needs besides the Pipes variables: the store's endpoint, region and credentials.

    The result holds secrets: hand it to the provider's secret/env mechanism, never log it.
    """
    return {ENV_FLUSH_SECONDS: str(flush_seconds), "PYTHONUNBUFFERED": "1", **s3.to_env(),
            **{k: str(v) for k, v in (extra or {}).items()}}
