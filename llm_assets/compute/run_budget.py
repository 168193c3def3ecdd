"""One budget per run, across every launch of it (retries, re-attaches, other stages), kept in the store.

Why in the store: a step retry is a new process (and a crashed orchestrator's successor is another one), so
a meter in memory restarts at $0 on every launch and 3 retries could spend about 4x the cap. Each launch of a
run writes one small object, `compute/runs/<run_id>/<job_id>.json` (start, end, price); the run's cost is the
sum over them. One object per launch, never a shared file, so concurrent stages of a run never race.
A launch whose end is unknown (its orchestrator died) counts until now: the safe side for a budget.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from llm_assets.core.artifacts import ArtifactStore

WARN_FRACTION = 0.8  # the run's log warns once its cost passes this share of the cap


@dataclass
class LaunchCost:
    job_id: str
    backend: str
    started_at: float
    hourly_price_usd: float
    ended_at: Optional[float] = None

    def cost(self, now: float) -> float:
        end = self.ended_at if self.ended_at is not None else now
        return max(0.0, end - self.started_at) * self.hourly_price_usd / 3600.0


def list_keys(store: ArtifactStore, prefix: str) -> list[str]:
    """Keys under `prefix` (relative to the store's root), on the S3 and the local store alike."""
    prefix = prefix.strip("/") + "/"
    client = getattr(store, "client", None)
    if client is not None and hasattr(store, "bucket"):
        root = f"{store.prefix}/" if store.prefix else ""
        keys, token = [], None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = client.list_objects_v2(Bucket=store.bucket, Prefix=root + prefix, **extra)
            keys += [item["Key"][len(root):] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            token = page.get("NextContinuationToken")
    folder = Path(store.root) / prefix
    return [str(p.relative_to(store.root)) for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []


def _read_json(store: ArtifactStore, key: str) -> Optional[dict]:
    from llm_assets.compute.launch import read_json  # retries a read that straddles a rewrite

    return read_json(store, key)


def _write_json(store: ArtifactStore, key: str, data: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.json"
        path.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
        store.put_file(path, key)


class RunBudget:
    """The launches of one run and what they cost so far, against one cap."""

    def __init__(self, store: ArtifactStore, run_id: str, cap_usd: Optional[float], clock=time.time):
        self.store, self.run_id, self.cap_usd, self.clock = store, run_id, cap_usd, clock

    def _key(self, job_id: str) -> str:
        return f"compute/runs/{self.run_id}/{job_id}.json"

    def launches(self) -> list[LaunchCost]:
        found = []
        for key in list_keys(self.store, f"compute/runs/{self.run_id}"):
            data = _read_json(self.store, key) if key.endswith(".json") else None
            if data:
                found.append(LaunchCost(**{k: data[k] for k in LaunchCost.__dataclass_fields__ if k in data}))
        return found

    def open(self, job_id: str, backend: str, started_at: float, hourly_price_usd: float) -> None:
        """Record a launch (idempotent: an adopted machine keeps the start it was recorded with)."""
        if any(entry.job_id == job_id for entry in self.launches()):
            return
        _write_json(self.store, self._key(job_id), asdict(LaunchCost(job_id, backend, started_at, hourly_price_usd)))

    def close(self, job_id: str, ended_at: Optional[float] = None) -> None:
        for entry in self.launches():
            if entry.job_id == job_id and entry.ended_at is None:
                entry.ended_at = self.clock() if ended_at is None else ended_at
                _write_json(self.store, self._key(job_id), asdict(entry))

    def spent(self, exclude: Optional[str] = None) -> float:
        """The run's cost so far (every launch, retries included), `exclude` left out."""
        now = self.clock()
        return sum(entry.cost(now) for entry in self.launches() if entry.job_id != exclude)

    def warned(self) -> bool:
        return self.store.exists(self.store.uri_for(f"compute/runs/{self.run_id}/_warned"))

    def mark_warned(self) -> None:
        _write_json(self.store, f"compute/runs/{self.run_id}/_warned", {"at": self.clock()})
