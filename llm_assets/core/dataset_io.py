"""JSONL dataset files in and out: every unreadable line is named by file and line.

A source is a .jsonl file or a folder of them (read in sorted name order). Rows
come back as the raw JSON objects plus `source` = "path:line", so every later
problem can point at the line a user has to fix.
"""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from .atomic import atomic_path
from .errors import DataFormatError

DEFAULT_MAX_LINE_BYTES = 1_000_000
SPLIT_FIELDS = ("prompt", "completion", "source")
_SNIPPET_CHARS = 80
# Huge lines are measured in chunks of this size so they are never held whole.
_SKIP_CHUNK = 1 << 20


def snippet(value, limit: int = _SNIPPET_CHARS) -> str:
    """A short repr of a value for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def source_files(source: str | os.PathLike) -> list[Path]:
    """The .jsonl files a source names: the file itself, or a folder's *.jsonl sorted."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.jsonl") if p.is_file())
        if not files:
            raise DataFormatError(path, None, "folder holds no *.jsonl files")
        return files
    if not path.exists():
        raise DataFormatError(path, None, "file not found")
    if not path.is_file():
        raise DataFormatError(path, None, "not a regular file")
    return [path]


def iter_jsonl(path: str | os.PathLike, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; raises DataFormatError on the first bad line."""
    path = Path(path)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise DataFormatError(path, None, "file not found") from None
    with handle:
        lineno = 0
        while True:
            # readline with a limit: a 2 GB line must not be read into memory just to reject it.
            raw = handle.readline(max_line_bytes + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                size = len(raw) + _rest_of_line_size(handle)
                raise DataFormatError(
                    path, lineno, f"huge row: {size:,} bytes > max_line_bytes {max_line_bytes:,} (not parsed)"
                )
            body = raw.rstrip(b"\r\n")
            if lineno == 1 and body.startswith(codecs.BOM_UTF8):
                body = body[len(codecs.BOM_UTF8):]
            if not body.strip():
                continue
            yield lineno, _parse_line(path, lineno, body)


def _rest_of_line_size(handle) -> int:
    size = 0
    while True:
        chunk = handle.readline(_SKIP_CHUNK)
        if not chunk:
            return size
        if chunk.endswith(b"\n"):
            return size + len(chunk.rstrip(b"\r\n"))
        size += len(chunk)


def _parse_line(path: Path, lineno: int, body: bytes) -> dict:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = body[err.start: err.start + 4]
        raise DataFormatError(
            path, lineno, f"bytes that are not valid UTF-8 at byte {err.start}: {bad!r} ({err.reason})"
        ) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(
            path, lineno, f"not valid JSON: {err.msg} at column {err.colno}: {snippet(text)}"
        ) from None
    if not isinstance(value, dict):
        raise DataFormatError(
            path, lineno, f"expected a JSON object per line, got {type(value).__name__}: {snippet(value)}"
        )
    return value


def load_rows(source: str | os.PathLike, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> list[dict]:
    """Every row of a file or folder: the raw object plus `source` = "path:line"."""
    rows: list[dict] = []
    for path in source_files(source):
        before = len(rows)
        for lineno, record in iter_jsonl(path, max_line_bytes):
            record["source"] = f"{path}:{lineno}"
            rows.append(record)
        if len(rows) == before:
            raise DataFormatError(path, None, "empty file: no rows")
    return rows


def write_jsonl(rows: Iterable[dict], path: str | os.PathLike, fields: Sequence[str] | None = None) -> int:
    """Write rows (optionally only `fields`) as JSONL atomically; returns the row count."""
    count = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as out:
            for row in rows:
                if fields is not None:
                    row = {key: row[key] for key in fields if key in row}
                out.write(json.dumps(row, ensure_ascii=False))
                out.write("\n")
                count += 1
    return count


def write_split(train: Sequence[dict], validation: Sequence[dict], out_dir: str | os.PathLike) -> dict:
    """train.jsonl and validation.jsonl (prompt, completion, source) under out_dir; counts and paths."""
    out_dir = Path(out_dir)
    result: dict = {}
    for name, rows in (("train", train), ("validation", validation)):
        path = out_dir / f"{name}.jsonl"
        result[f"{name}_rows"] = write_jsonl(rows, path, SPLIT_FIELDS)
        result[f"{name}_path"] = str(path)
    return result


def read_split(path: str | os.PathLike) -> list[dict]:
    """Rows of a split file written by write_split; an empty split is allowed."""
    path = Path(path)
    rows = []
    for lineno, record in iter_jsonl(path):
        for key in ("prompt", "completion"):
            if not isinstance(record.get(key), str):
                raise DataFormatError(path, lineno, f"split row needs a string {key!r}, got {snippet(record.get(key))}")
        rows.append({
            "prompt": record["prompt"],
            "completion": record["completion"],
            "source": record.get("source") or f"{path}:{lineno}",
        })
    return rows
