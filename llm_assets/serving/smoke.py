"""The smoke evaluation a new model passes before it is swapped in: a few benchmark items, decoded the way
/v1/pet/decide decodes them, checked against the rules.

A handful of items cannot re-measure a model; they catch the file that loads but is not the model the
registry evaluated (a wrong or damaged file, a runtime that reads it differently): its accuracy falls far
below what the registry recorded for the version.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from llm_assets.core.pet_benchmark import CATEGORIES, generate_benchmark
from llm_assets.serving.pet import decision_grammar, validate_decision

GENERIC_PROMPT = "hello"


@dataclass
class SmokeResult:
    passed: bool
    items: int
    correct: int
    accuracy: float | None
    required: float
    seconds: float
    reason: str
    failures: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def smoke_rows(n: int) -> list[dict]:
    """n benchmark items, taken round-robin over the categories so each kind of item is probed."""
    if n <= 0:
        return []
    per_category = -(-n // len(CATEGORIES))
    by_category: dict[str, list[dict]] = {}
    for row in generate_benchmark(n_per_category=per_category):
        by_category.setdefault(row["category"], []).append(row)
    interleaved = [rows[i] for i in range(per_category) for rows in by_category.values() if i < len(rows)]
    return interleaved[:n]


def required_accuracy(min_accuracy: float, recorded: float | None, tolerance: float) -> float:
    return max(min_accuracy, (recorded - tolerance) if recorded is not None else 0.0, 0.0)


def run_smoke(llm, rows: list[dict], required: float, max_tokens: int) -> SmokeResult:
    """Answer `rows` on `llm` (call on the thread that owns it); passes when accuracy >= required."""
    started = time.perf_counter()
    if not rows:
        # A model of another task: only check that it loads and generates.
        out = llm.create_completion(GENERIC_PROMPT, max_tokens=4, temperature=0)
        ok = isinstance(out["choices"][0]["text"], str)
        return SmokeResult(ok, 0, 0, None, 0.0, time.perf_counter() - started,
                           "generates" if ok else "produced no text")
    grammar, correct, failures = decision_grammar(), 0, []
    for row in rows:
        out = llm.create_chat_completion([{"role": "user", "content": row["prompt"]}], grammar=grammar,
                                         temperature=0, max_tokens=max_tokens)
        text = out["choices"][0]["message"]["content"] or ""
        try:
            good = validate_decision(text) == json.loads(row["completion"])
            why = "wrong decision"
        except ValueError as exc:
            good, why = False, str(exc)
        correct += good
        if not good and len(failures) < 3:
            failures.append({"id": row["id"], "answer": text[:200], "expected": row["completion"], "why": why})
    accuracy = correct / len(rows)
    passed = accuracy >= required
    reason = (f"strict accuracy {accuracy:.2f} on {len(rows)} benchmark items "
              f"{'>=' if passed else '<'} required {required:.2f}")
    return SmokeResult(passed, len(rows), correct, accuracy, required, time.perf_counter() - started, reason, failures)
