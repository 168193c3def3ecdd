"""Plain, JSON-serializable records the registry hands out (never live ORM rows)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone


def iso(dt: datetime | None) -> str | None:
    """UTC ISO-8601; SQLite gives naive datetimes back, and they were written as UTC."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).isoformat()


@dataclass
class VersionRecord:
    model: str
    version: int
    status: str
    aliases: list[str] = field(default_factory=list)
    created_at: str | None = None
    gguf_uri: str | None = None
    gguf_sha256: str | None = None
    gguf_bytes: int | None = None
    quantization: str | None = None
    adapter_uri: str | None = None
    base_model_id: str | None = None
    base_model_revision: str | None = None
    dataset_version: str | None = None
    dataset_uris: list | None = None
    dataset_rows: int | None = None
    benchmark_version: str | None = None
    metrics: dict | None = None
    gate_passed: bool | None = None
    gate_reason: str | None = None
    config: dict | None = None
    dagster_run_id: str | None = None
    materialization_ids: dict | list | None = None
    code_version: str | None = None
    lineage: list | dict | None = None
    serving: dict | None = None  # system_prompt, json_schema, max_tokens from the model file, for the server

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HistoryEvent:
    """One row of the append-only history: an alias move (promote / rollback), a status change or a note."""

    id: int
    model: str
    event: str
    alias: str | None
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str | None
    at: str | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelSummary:
    name: str
    versions: int
    latest_version: int | None
    aliases: dict[str, int]
    created_at: str | None

    def to_dict(self) -> dict:
        return asdict(self)
