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


def run_smoke(llm, rows: list[dict], required: float, max_tokens: int, serving: dict | None = None) -> SmokeResult:
    """Answer `rows` on `llm` (call on the thread that owns it); passes when accuracy >= required. Without rows
    (a model of another task than the bunny's) one chat answer with the version's serving defaults is checked."""
    started = time.perf_counter()
    if not rows:
        ok, reason = _answers_as_served(llm, serving or {})
        return SmokeResult(ok, 0, 0, None, 0.0, time.perf_counter() - started, reason)
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


def _answers_as_served(llm, serving: dict) -> tuple[bool, str]:
    """(passed, reason): a chat answer decoded as the server will decode it, and when the version declares a
    JSON schema, an answer that parses and validates against it (a file whose grammar llama.cpp cannot build, or
    a model that cannot end its object, fails here instead of in front of clients)."""
    import jsonschema
    from llama_cpp import LlamaGrammar

    messages = [{"role": "user", "content": GENERIC_PROMPT}]
    if serving.get("system_prompt"):
        messages.insert(0, {"role": "system", "content": serving["system_prompt"]})
    from llm_assets.serving.grammar import compile_in_process
    from llm_assets.serving.schemas import ApiError

    schema = serving.get("json_schema")
    try:  # the checked converter the server decodes with: a schema it refuses fails the swap, never the process
        text = compile_in_process({"type": "json_schema", "json_schema": {"schema": schema}}) if schema else None
    except ApiError as exc:
        return False, f"the version's json_schema cannot be served: {exc.message}"
    grammar = LlamaGrammar.from_string(text, verbose=False) if text else None
    limit = serving.get("max_tokens") or 16
    out = llm.create_chat_completion(messages, grammar=grammar, temperature=0, max_tokens=limit)
    choice = out["choices"][0]
    text = choice["message"]["content"]
    if not isinstance(text, str):
        return False, "produced no text"
    if schema is None:
        return True, "generates"
    if choice.get("finish_reason") == "length":
        return True, f"generates JSON (the answer reached max_tokens={limit} before its end; not validated)"
    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError) as exc:
        return False, f"the answer does not match the version's json_schema: {str(exc).splitlines()[0]}: {text[:200]!r}"
    return True, "answers JSON that matches the version's json_schema"
