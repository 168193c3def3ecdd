"""The training_dataset stage at scale: one JSONL file to a validated, deduplicated split, in columns.

`prepare_split` gives exactly what the row functions of dataset_prep give
(read_jsonl -> normalize_rows -> validate -> dedupe -> split_rows -> write_split):
the same report, byte-identical train/validation files, the same errors. It
never holds a dict per row: the file is read in blocks of lines, each block is
parsed by Arrow's JSON reader into columns, the per-row work is plain string
operations over those columns, and token counting runs in tokenizer threads
(Rust, the GIL released) while Python parses the next block. A block Arrow
cannot take as clean prompt/completion strings (chat `messages`, a missing or
non-string field, a line that is not JSON) goes through the row functions
instead, so every message stays the one a user would get from them.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .atomic import atomic_path
from .dataset_io import DEFAULT_MAX_LINE_BYTES, SPLIT_FIELDS, _parse_line, iter_jsonl
from .dataset_prep import (
    DEFAULT_MAX_LISTED, PromptRenderer, ValidationReport, assemble_report, fold, normalize_row, snippet,
    fast_backend, token_lengths, validation_mask,
)
from .errors import ConfigError

BLOCK_BYTES = 8 << 20  # ~25k rows of the embedded task per block: small enough to stream, big enough for Arrow
_ARROW_MIN_BLOCK = 4 << 20
# json.dumps(..., ensure_ascii=False) escapes strings with this C function; the
# writer uses it directly so a row costs one call per field, not a dict's encode.
_encode_str = json.encoder.encode_basestring


@dataclass
class PreparedSplit:
    """What prepare_split made: the validation report, row counts and the two files."""

    report: ValidationReport
    raw_rows: int
    train_rows: int
    validation_rows: int
    duplicates_removed: int
    train_path: str
    validation_path: str
    held_out: int = 0  # rows left out because they are the hold-out benchmark


class _Columns:
    """The valid rows so far, one list per field, plus what the checks found."""

    def __init__(self):
        self.prompts: list[str] = []
        self.completions: list[str] = []
        self.sources: list = []
        self.keys: list[str] = []
        self.issues: list[dict] = []
        self.overlap: list[tuple[str, str]] = []
        self.held_out = 0  # rows whose prompt is the model's hold-out benchmark: never trained on
        self.lengths: list[tuple[Future, Future]] = []
        self.raw_rows = 0


def _line_blocks(path: Path, max_line_bytes: int, block_bytes: int) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, lines without their newline) per block of the file."""
    with open(path, "rb") as handle:
        carry, lineno = b"", 1
        while True:
            chunk = handle.read(block_bytes)
            if not chunk:
                if carry:
                    _check_line_sizes(path, [carry], max_line_bytes)
                    yield lineno, [carry]
                return
            data = carry + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                _check_line_sizes(path, [carry], max_line_bytes)
                continue
            lines, carry = data[:cut].split(b"\n"), data[cut + 1:]
            _check_line_sizes(path, lines, max_line_bytes)
            yield lineno, lines
            lineno += len(lines)


def _check_line_sizes(path: Path, lines: list[bytes], max_line_bytes: int) -> None:
    if max(map(len, lines)) > max_line_bytes:
        # The row reader words the error (and finds any earlier bad line first).
        for _ in iter_jsonl(path, max_line_bytes):
            pass
        raise AssertionError(f"{path}: a line over {max_line_bytes} bytes that iter_jsonl accepted")


def _bodies(lineno: int, lines: list[bytes]) -> list[tuple[int, bytes]]:
    """(line number, text) of the non-blank lines, as iter_jsonl sees them."""
    out = []
    for i, raw in enumerate(lines):
        body = raw.rstrip(b"\r\n")
        if lineno + i == 1 and body.startswith(codecs.BOM_UTF8):
            body = body[len(codecs.BOM_UTF8):]
        if body.strip():
            out.append((lineno + i, body))
    return out


def _arrow_pairs(bodies: list[tuple[int, bytes]]):
    """(prompts, completions, sources) when every line is a plain prompt/completion object, else None."""
    import pyarrow as pa
    import pyarrow.json as pj

    longest = max(len(b) for _, b in bodies)
    schema = pa.schema([("prompt", pa.string()), ("completion", pa.string()), ("source", pa.string())])
    try:
        table = pj.read_json(
            pa.BufferReader(b"\n".join(b for _, b in bodies)),
            read_options=pj.ReadOptions(block_size=max(_ARROW_MIN_BLOCK, 2 * longest + 2)),
            parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
        )
    except (pa.ArrowException, UnicodeError):
        return None
    if table.num_rows != len(bodies) or "messages" in table.column_names:
        return None
    if table["prompt"].null_count or table["completion"].null_count:
        return None
    try:
        return table["prompt"].to_pylist(), table["completion"].to_pylist(), table["source"].to_pylist()
    except UnicodeError:
        return None


def _add_pairs(cols: _Columns, render: PromptRenderer, prompts, completions, sources, bench: set[str],
               exclude: set[str]) -> None:
    """normalize_row for rows known to be {prompt: str, completion: str, source: str | None}."""
    valid_prompts, start = [], cols.raw_rows
    for j, (prompt, completion, source) in enumerate(zip(prompts, completions, sources)):
        source = source or f"row {start + j + 1}"
        user_fold, completion_fold = fold(prompt), fold(completion)
        # fold() is empty exactly when str.strip() is: both split on str.isspace().
        if not user_fold:
            cols.issues.append({"source": source, "problem": f"empty prompt (user text is {snippet(prompt)})"})
            continue
        if not completion_fold:
            cols.issues.append({"source": source, "problem": f"empty completion: {snippet(completion)}"})
            continue
        if user_fold in exclude:
            cols.held_out += 1
            continue
        # dataset_prep.content_key of one user turn, without building the message list.
        text = f"user\x1f{user_fold}\x00{completion_fold}"
        cols.keys.append(hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest())
        if user_fold in bench:
            cols.overlap.append((source, prompt))
        valid_prompts.append(prompt)
        cols.completions.append(completion)
        cols.sources.append(source)
    cols.prompts += render.frame_user_texts(valid_prompts)


def _add_rows(cols: _Columns, render: PromptRenderer, path: Path, bodies, bench: set[str], exclude: set[str]) -> None:
    """The row functions, line by line: for blocks Arrow cannot take as plain pairs."""
    for k, (lineno, body) in enumerate(bodies):
        row, issue = normalize_row(_parse_line(path, lineno, body), cols.raw_rows + k, render)
        if issue is not None:
            cols.issues.append(issue)
            continue
        if fold(row["user_text"]) in exclude:
            cols.held_out += 1
            continue
        cols.prompts.append(row["prompt"])
        cols.completions.append(row["completion"])
        cols.sources.append(row["source"])
        cols.keys.append(row["content_key"])
        if fold(row["user_text"]) in bench:
            cols.overlap.append((row["source"], row["user_text"]))


def _first_occurrences(keys: Sequence[str], sources: Sequence) -> tuple[list[int], list[tuple]]:
    """(indices of each key's first row, (duplicate's source, first source) per repeat)."""
    first: dict[str, int] = {}
    unique, dups = [], []
    for i, key in enumerate(keys):
        j = first.setdefault(key, i)
        if j == i:
            unique.append(i)
        else:
            dups.append((sources[i], sources[j]))
    return unique, dups


def _write_rows(path: Path, cols: _Columns, indices: Sequence[int]) -> int:
    """SPLIT_FIELDS of the chosen rows, byte-identical to dataset_io.write_jsonl, atomically."""
    assert SPLIT_FIELDS == ("prompt", "completion", "source")
    prompts, completions, sources = cols.prompts, cols.completions, cols.sources
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as out:
            for i in indices:
                source = sources[i]
                source = _encode_str(source) if type(source) is str else json.dumps(source, ensure_ascii=False)
                out.write(f'{{"prompt": {_encode_str(prompts[i])}, "completion": '
                          f'{_encode_str(completions[i])}, "source": {source}}}\n')
    return len(indices)


def prepare_split(
    raw_path: str | os.PathLike,
    tokenizer,
    out_dir: str | os.PathLike,
    max_tokens: int | None,
    benchmark_prompts: Sequence[str] = (),
    max_duplicate_fraction: float = 0.0,
    validation_fraction: float = 0.05,
    split_seed: int = 0,
    max_listed: int = DEFAULT_MAX_LISTED,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    block_bytes: int = BLOCK_BYTES,
    exclude_prompts: Sequence[str] = (),
) -> PreparedSplit:
    """Normalize, validate, deduplicate and split the rows of one JSONL file into out_dir.

    Rows whose prompt is in `benchmark_prompts` fail the check (a fixed benchmark must never be trained on);
    rows whose prompt is in `exclude_prompts` (a hold-out carved from this data) are left out and counted.
    Raises DataFormatError on the first unreadable line (as iter_jsonl does) and
    ConfigError on a validation_fraction outside (0, 1), before reading anything.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ConfigError("validation_fraction", validation_fraction, "must be between 0 and 1 (exclusive)")
    path = Path(raw_path)
    if not path.is_file():
        list(iter_jsonl(path, max_line_bytes))  # words the error as the row reader does
    render = PromptRenderer(tokenizer)
    bench, exclude = {fold(p) for p in benchmark_prompts}, {fold(p) for p in exclude_prompts}
    cols = _Columns()
    # Two threads: prompts and completions of a block are counted while Python parses the next one.
    workers = 2 if fast_backend(tokenizer) is not None else 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="token-count") as pool:
        for lineno, lines in _line_blocks(path, max_line_bytes, block_bytes):
            bodies = _bodies(lineno, lines)
            if not bodies:
                continue
            before = len(cols.prompts)
            pairs = _arrow_pairs(bodies)
            if pairs is not None:
                _add_pairs(cols, render, *pairs, bench, exclude)
            else:
                _add_rows(cols, render, path, bodies, bench, exclude)
            cols.raw_rows += len(bodies)
            if tokenizer is not None:
                cols.lengths.append((pool.submit(_count, cols.prompts[before:], tokenizer),
                                     pool.submit(_count, cols.completions[before:], tokenizer)))
        lengths = _gather(cols.lengths) if tokenizer is not None else None

    long_rows = []
    if lengths is not None and max_tokens is not None:
        import numpy as np

        over = np.flatnonzero(lengths[0] + lengths[1] > max_tokens)
        long_rows = [(cols.sources[i], int(lengths[0][i]), int(lengths[1][i])) for i in over]
    unique, dups = _first_occurrences(cols.keys, cols.sources)
    cols.keys = []  # the largest column no later step needs
    report = assemble_report(len(cols.prompts), cols.issues, dups, lengths, long_rows, cols.overlap,
                             max_tokens, max_duplicate_fraction, max_listed)
    in_validation = validation_mask([cols.prompts[i] for i in unique], validation_fraction, split_seed)
    out_dir = Path(out_dir)
    train = [i for i, v in zip(unique, in_validation) if not v]
    validation = [i for i, v in zip(unique, in_validation) if v]
    return PreparedSplit(
        report=report, raw_rows=cols.raw_rows,
        train_rows=_write_rows(out_dir / "train.jsonl", cols, train),
        validation_rows=_write_rows(out_dir / "validation.jsonl", cols, validation),
        duplicates_removed=len(cols.prompts) - len(unique), held_out=cols.held_out,
        train_path=str(out_dir / "train.jsonl"), validation_path=str(out_dir / "validation.jsonl"),
    )


def _count(texts: list[str], tokenizer):
    import numpy as np

    return np.asarray(token_lengths(texts, tokenizer), dtype=np.int32)


def _gather(futures: list[tuple[Future, Future]]):
    import numpy as np

    if not futures:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    return (np.concatenate([p.result() for p, _ in futures]), np.concatenate([c.result() for _, c in futures]))
