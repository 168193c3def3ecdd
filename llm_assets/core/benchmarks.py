"""Benchmarks of users' own tasks: a fixed JSONL set of their own, or a hold-out carved from their data.

A benchmark row is {prompt, completion, category, source}: the user text a model answers, the reference
answer, an optional category for the per-category breakdown, and where it came from (file:line). Rows in
either training format (chat `messages` or `prompt`/`completion`) become benchmark rows the same way the
training data is read, so a system message travels along as `system`.

The hold-out is decided per row by a hash of its prompt with its own salt, so it never moves when rows are
added, and it is independent of the train/validation split.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

from llm_assets.core.dataset_prep import conversation, fold
from llm_assets.core.errors import DataFormatError

HOLDOUT_SALT = "llm_assets.benchmark.holdout/1"


def benchmark_rows(rows: Iterable[dict], origin: str) -> list[dict]:
    """Benchmark rows from data rows; a row that cannot be read names its source, not a silent skip."""
    out = []
    for i, row in enumerate(rows, 1):
        source = row.get("source") or f"{origin}:{i}"
        try:
            messages, completion, user_text = conversation(row)
        except ValueError as exc:
            raise DataFormatError(source, None, f"benchmark row: {exc}") from None
        system = next((m["content"] for m in messages if m.get("role") == "system"), None)
        out.append({"prompt": user_text, "completion": completion, "category": row.get("category"),
                    "source": source, **({"system": system} if system else {})})
    if not out:
        raise DataFormatError(origin, None, "the benchmark has no rows")
    return out


def _unit_hash(prompt: str) -> float:
    digest = hashlib.blake2b(f"{HOLDOUT_SALT}\x00{fold(prompt)}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def in_holdout(prompt: str, fraction: float) -> bool:
    return _unit_hash(prompt) < fraction


def holdout(rows: Sequence[dict], fraction: float) -> list[dict]:
    """The benchmark rows whose prompt falls in the hold-out; with 2+ distinct prompts never empty."""
    chosen = [r for r in rows if in_holdout(r["prompt"], fraction)]
    if not chosen and len({fold(r["prompt"]) for r in rows}) >= 2:
        chosen = [min(rows, key=lambda r: _unit_hash(r["prompt"]))]
    return chosen
