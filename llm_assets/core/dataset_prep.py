"""Turn loaded rows into clean training pairs: normalize, dedupe, validate, split, measure.

Rows in either user format (chat `messages` or `prompt`/`completion`) become
{"prompt", "completion", "source", "user_text", "content_key"}: the prompt
framed by the tokenizer's chat template exactly as training and evaluation will
see it, `user_text` the raw user words (to catch benchmark prompts in the data)
and `content_key` a hash of the folded conversation (for dedupe).
Row-level problems are collected, never raised, so a user sees all of them at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

from .dataset_io import (  # noqa: F401  re-exported: one import for callers
    DEFAULT_MAX_LINE_BYTES, load_rows, read_split, snippet, write_jsonl, write_split,
)
from .errors import ConfigError

ROLES = ("system", "user", "assistant")
DEFAULT_MAX_LISTED = 50
TOKENIZE_BATCH = 4096
# Rendering a chat template costs ~100 us a row; for single-user prompts the
# frame is rendered once and reused after this many rows confirm it.
_FRAME_CHECKS = 8
_SENTINEL = "\ue000FRAME\ue001"


class _RowProblem(ValueError):
    pass


def fold(text: str) -> str:
    """Whitespace- and case-insensitive form of a text, for comparing contents."""
    return " ".join(text.split()).casefold()


def content_key(messages: Sequence[dict], completion: str) -> str:
    """Hash of a conversation's folded contents: equal for the same content in either format.

    Built from the messages, not the rendered prompt, because a template glues
    text to its markers (trailing spaces would then count) and because the key
    must not change with the tokenizer. 16-byte digests keep a million-row index small.
    """
    text = "\x1e".join(f"{m['role']}\x1f{fold(m['content'])}" for m in messages) + "\x00" + fold(completion)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _row_key(row: dict) -> str:
    # Rows read back from a split file have no key: treat the prompt as one user turn.
    key = row.get("content_key")
    return key or content_key([{"role": "user", "content": row["prompt"]}], row["completion"])


def _conversation(row: dict) -> tuple[list[dict], str, str]:
    """(prompt-side messages, completion, raw user text) of a row in either format."""
    has_chat = "messages" in row
    has_pair = "prompt" in row or "completion" in row
    if has_chat and has_pair:
        raise _RowProblem("has both 'messages' and 'prompt'/'completion': use one format per row")
    if has_pair:
        for key in ("prompt", "completion"):
            if key not in row:
                raise _RowProblem(f"missing {key!r} field")
            if not isinstance(row[key], str):
                raise _RowProblem(f"{key!r} must be a string, got {type(row[key]).__name__}: {snippet(row[key])}")
        return [{"role": "user", "content": row["prompt"]}], row["completion"], row["prompt"]
    if not has_chat:
        keys = sorted(k for k in row if k != "source")
        raise _RowProblem(f"neither format: expected 'messages' or 'prompt'+'completion', got keys {keys}")
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise _RowProblem(f"'messages' must be a non-empty list, got {snippet(messages)}")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _RowProblem(f"messages[{i}] must be an object, got {snippet(msg)}")
        if msg.get("role") not in ROLES:
            raise _RowProblem(f"unknown role {snippet(msg.get('role'))} in messages[{i}] (expected {', '.join(ROLES)})")
        if not isinstance(msg.get("content"), str):
            raise _RowProblem(f"messages[{i}].content must be a string, got {snippet(msg.get('content'))}")
    if messages[-1]["role"] != "assistant":
        raise _RowProblem(f"last message must be the assistant's answer, got role {messages[-1]['role']!r}")
    users = [m["content"] for m in messages[:-1] if m["role"] == "user"]
    if not users:
        raise _RowProblem("no user message before the assistant's answer")
    prompt_side = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    return prompt_side, messages[-1]["content"], users[-1]


class PromptRenderer:
    """Frames prompt-side messages with the tokenizer's chat template (or none)."""

    def __init__(self, tokenizer=None):
        has_template = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
        self.tokenizer = tokenizer if has_template else None
        self._frame: tuple[str, str] | None = None
        self._unconfirmed = _FRAME_CHECKS
        if self.tokenizer is not None:
            self._frame = self._probe_frame()

    def _template(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _probe_frame(self) -> tuple[str, str] | None:
        parts = self._template([{"role": "user", "content": _SENTINEL}]).split(_SENTINEL)
        if len(parts) != 2:
            return None
        # A template that trims or rewrites content breaks the frame; whitespace shows it.
        probe = "  x \n y  "
        if self._template([{"role": "user", "content": probe}]) != parts[0] + probe + parts[1]:
            return None
        return parts[0], parts[1]

    def __call__(self, messages: list[dict]) -> str:
        if self.tokenizer is None:
            return "\n\n".join(m["content"] for m in messages)
        if self._frame is not None and len(messages) == 1 and messages[0]["role"] == "user":
            framed = self._frame[0] + messages[0]["content"] + self._frame[1]
            if self._unconfirmed <= 0:
                return framed
            self._unconfirmed -= 1
            rendered = self._template(messages)
            if rendered != framed:
                self._frame = None
            return rendered
        return self._template(messages)

    def frame_user_texts(self, texts: Sequence[str]) -> list[str]:
        """Prompts of single-user-turn rows, in order: exactly `self([{"role": "user", ...}])` per text.

        Rows are rendered through the template until the frame is confirmed;
        after that the frame is glued on without a template call (~0.2 us a row).
        """
        if self.tokenizer is None:
            return list(texts)
        out: list[str] = []
        i = 0
        while i < len(texts) and (self._frame is None or self._unconfirmed > 0):
            out.append(self([{"role": "user", "content": texts[i]}]))
            i += 1
        if i < len(texts):
            head, tail = self._frame
            out += [head + text + tail for text in texts[i:]]
        return out


def with_system_prompt(row: dict, system_prompt: str | None) -> dict:
    """The row with `system_prompt` as its first message, unless it has a system message of its own.

    A model file's serving.system_prompt goes before every request the server gets; putting it into the rows
    (training and benchmark alike) makes the model learn and be scored on what it will be asked. A row that is
    in neither format is returned as it is, for the row checks to name its problem.
    """
    if not system_prompt:
        return row
    if "messages" in row and isinstance(row["messages"], list):
        first = row["messages"][0] if row["messages"] else {}
        if isinstance(first, dict) and first.get("role") == "system":
            return row
        return {**row, "messages": [{"role": "system", "content": system_prompt}, *row["messages"]]}
    if isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str) and "messages" not in row:
        rest = {k: v for k, v in row.items() if k not in ("prompt", "completion")}
        return {**rest, "messages": [{"role": "system", "content": system_prompt},
                                     {"role": "user", "content": row["prompt"]},
                                     {"role": "assistant", "content": row["completion"]}]}
    return row


def conversation(row: dict) -> tuple[list[dict], str, str]:
    """(prompt-side messages, completion, user text) of a row in either format; a ValueError says what is wrong."""
    return _conversation(row)


def normalize_row(row: dict, index: int, render: "PromptRenderer") -> tuple[dict | None, dict | None]:
    """(normalized row, None) or (None, issue) for one raw row; `index` is its 0-based position."""
    source = row.get("source") or f"row {index + 1}"
    try:
        messages, completion, user_text = _conversation(row)
        if not user_text.strip():
            raise _RowProblem(f"empty prompt (user text is {snippet(user_text)})")
        if not completion.strip():
            raise _RowProblem(f"empty completion: {snippet(completion)}")
    except _RowProblem as problem:
        return None, {"source": source, "problem": str(problem)}
    return {
        "prompt": render(messages), "completion": completion, "source": source,
        "user_text": user_text, "content_key": content_key(messages, completion),
    }, None


def normalize_rows(rows: Iterable[dict], tokenizer=None) -> tuple[list[dict], list[dict]]:
    """(normalized rows, issues): each issue is {"source", "problem"}; such rows are left out."""
    render = PromptRenderer(tokenizer)
    normalized, issues = [], []
    for index, row in enumerate(rows):
        ok, issue = normalize_row(row, index, render)
        if issue is not None:
            issues.append(issue)
        else:
            normalized.append(ok)
    return normalized, issues


def find_duplicates(rows: Iterable[dict]) -> list[tuple[str, str]]:
    """(duplicate's source, first occurrence's source) for repeated prompt+completion pairs."""
    first: dict[str, str] = {}
    dups = []
    for row in rows:
        key = _row_key(row)
        if key in first:
            dups.append((row["source"], first[key]))
        else:
            first[key] = row["source"]
    return dups


def dedupe(rows: Iterable[dict]) -> tuple[list[dict], int]:
    """(rows with only each pair's first occurrence, number removed)."""
    seen: set[str] = set()
    unique, removed = [], 0
    for row in rows:
        key = _row_key(row)
        if key in seen:
            removed += 1
        else:
            seen.add(key)
            unique.append(row)
    return unique, removed


def fast_backend(tokenizer):
    """The Rust tokenizer to count with directly, or None where transformers' call is needed.

    A tokenizer.json may carry truncation/padding settings that would cap the
    counts; transformers' own call clears them (so it also must not run in two
    threads at once).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and (backend.truncation is not None or backend.padding is not None):
        return None
    return backend


def token_lengths(texts: Sequence[str], tokenizer, batch_size: int = TOKENIZE_BATCH) -> list[int]:
    """Token count of each text (no special tokens added), encoded in batches."""
    backend = fast_backend(tokenizer)
    lengths: list[int] = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start: start + batch_size])
        if backend is not None:
            encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
            lengths.extend(len(enc) for enc in encode(batch, add_special_tokens=False))
        else:
            ids = tokenizer(batch, add_special_tokens=False, return_attention_mask=False)["input_ids"]
            lengths.extend(map(len, ids))
    return lengths


def _summary(values: Sequence[int]) -> dict:
    import numpy as np

    if not len(values):
        return {"min": None, "mean": None, "p50": None, "p95": None, "max": None}
    arr = np.asarray(values, dtype=np.int64)
    return {
        "min": int(arr.min()), "mean": round(float(arr.mean()), 2),
        "p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)), "max": int(arr.max()),
    }


def _stats(prompt_lens: Sequence[int], completion_lens: Sequence[int]) -> dict:
    import numpy as np

    totals = np.asarray(prompt_lens, dtype=np.int64) + np.asarray(completion_lens, dtype=np.int64)
    return {
        "rows": len(totals), "prompt": _summary(prompt_lens),
        "completion": _summary(completion_lens), "total": _summary(totals),
    }


def token_length_stats(rows: Sequence[dict], tokenizer) -> dict:
    """min, mean, p50, p95 (linear interpolation) and max of prompt, completion and total tokens."""
    return _stats(
        token_lengths([r["prompt"] for r in rows], tokenizer),
        token_lengths([r["completion"] for r in rows], tokenizer),
    )


@dataclass
class ValidationReport:
    """The verdict on a dataset: passed, the problems found (capped), and counts."""

    passed: bool
    problems: list[str]
    counts: dict
    warnings: list[str] = field(default_factory=list)
    token_stats: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class _Capped:
    """Keeps the first `limit` messages of one kind and counts the rest."""

    def __init__(self, limit: int):
        self.limit, self.items, self.total = limit, [], 0

    def add(self, text: str) -> None:
        self.total += 1
        if len(self.items) < self.limit:
            self.items.append(text)

    def listed(self) -> list[str]:
        hidden = self.total - len(self.items)
        return self.items + ([f"... and {hidden} more"] if hidden else [])


def validate(
    rows: Sequence[dict],
    issues: Sequence[dict],
    tokenizer,
    max_tokens: int | None,
    benchmark_prompts: Iterable[str] = (),
    max_duplicate_fraction: float = 0.0,
    max_listed: int = DEFAULT_MAX_LISTED,
) -> ValidationReport:
    """Check normalized rows: schema issues, duplicates, over-length rows, benchmark overlap.

    `max_listed` caps the messages listed per kind of problem; counts stay exact.
    Without a tokenizer (or max_tokens None) lengths are not checked.
    """
    lengths = None
    long_rows: list[tuple] = []
    if tokenizer is not None:
        lengths = (token_lengths([r["prompt"] for r in rows], tokenizer),
                   token_lengths([r["completion"] for r in rows], tokenizer))
        if max_tokens is not None:
            long_rows = [(row["source"], p, c) for row, p, c in zip(rows, *lengths) if p + c > max_tokens]
    bench = {fold(p) for p in benchmark_prompts}
    overlap = []
    if bench:
        texts = ((row["source"], row.get("user_text", row["prompt"])) for row in rows)
        overlap = [(source, text) for source, text in texts if fold(text) in bench]
    return assemble_report(len(rows), issues, find_duplicates(rows), lengths, long_rows, overlap,
                           max_tokens, max_duplicate_fraction, max_listed)


def assemble_report(
    n_rows: int,
    issues: Sequence[dict],
    dups: Sequence[tuple[str, str]],
    lengths: tuple[Sequence[int], Sequence[int]] | None,
    long_rows: Sequence[tuple],
    overlap: Sequence[tuple[str, str]],
    max_tokens: int | None,
    max_duplicate_fraction: float,
    max_listed: int = DEFAULT_MAX_LISTED,
) -> ValidationReport:
    """The report from what the checks found, in one wording for the row and the columnar paths.

    dups: (duplicate's source, first source); lengths: (prompt, completion) token
    counts of every valid row or None; long_rows: (source, prompt, completion
    tokens); overlap: (source, user text).
    """
    schema, dup_lines, long_listed, overlap_listed = (_Capped(max_listed) for _ in range(4))
    for issue in issues:
        schema.add(f"{issue['source']}: {issue['problem']}")
    dup_fraction = len(dups) / n_rows if n_rows else 0.0
    for dup, first in dups:
        dup_lines.add(f"{dup}: duplicate of {first}")
    too_many_dups = dup_fraction > max_duplicate_fraction
    for source, p, c in long_rows:
        long_listed.add(f"{source}: over-length: {p + c} tokens "
                        f"(prompt {p} + completion {c}) > max_tokens {max_tokens}")
    for source, text in overlap:
        overlap_listed.add(f"{source}: benchmark overlap: prompt equals a benchmark prompt: {snippet(text)}")

    problems = schema.listed()
    warnings: list[str] = []
    if dups:
        summary = (f"duplicate fraction {dup_fraction:.4f} ({len(dups)} of {n_rows} rows) "
                   f"{'>' if too_many_dups else '<='} max_duplicate_fraction {max_duplicate_fraction}")
        (problems if too_many_dups else warnings).extend([summary] + dup_lines.listed())
    problems += long_listed.listed() + overlap_listed.listed()
    counts = {
        "rows": n_rows + len(issues), "valid_rows": n_rows, "schema_issues": len(issues),
        "duplicates": len(dups), "duplicate_fraction": round(dup_fraction, 6),
        "over_length": long_listed.total, "benchmark_overlap": overlap_listed.total,
    }
    failed = bool(issues) or too_many_dups or long_listed.total > 0 or overlap_listed.total > 0
    return ValidationReport(passed=not failed, problems=problems, counts=counts, warnings=warnings,
                            token_stats=_stats(*lengths) if lengths is not None else None)


def _unit_hash(seed: int, prompt: str) -> float:
    digest = hashlib.blake2b(f"{seed}\x00{fold(prompt)}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_rows(rows: Sequence[dict], validation_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, validation), decided per row by a hash of its prompt.

    A row's side depends only on its own prompt and the seed, so adding rows
    never moves an existing one (rows with the same prompt stay together). With
    2+ rows neither side is left empty: the extreme-hash row is moved over.
    """
    in_validation = validation_mask([row["prompt"] for row in rows], validation_fraction, seed)
    train = [row for row, v in zip(rows, in_validation) if not v]
    validation = [row for row, v in zip(rows, in_validation) if v]
    return train, validation


def validation_mask(prompts: Sequence[str], validation_fraction: float, seed: int) -> list[bool]:
    """Per prompt: True where split_rows puts its row in validation."""
    if not 0.0 < validation_fraction < 1.0:
        raise ConfigError("validation_fraction", validation_fraction, "must be between 0 and 1 (exclusive)")
    scores = [_unit_hash(seed, prompt) for prompt in prompts]
    in_validation = [s < validation_fraction for s in scores]
    if len(prompts) >= 2:
        if not any(in_validation):
            in_validation[min(range(len(prompts)), key=scores.__getitem__)] = True
        elif all(in_validation):
            in_validation[max(range(len(prompts)), key=scores.__getitem__)] = False
    return in_validation
