"""Watched data sources: what changed in a folder or an S3 prefix since the last look.

The new-data sensor keeps, in its cursor, each file's content hash (sha256 for
a local file, the ETag for an S3 object) and the data versions it already
started a run for. `plan_new_data` compares that with what is there now:

- a new or changed file starts a run once the whole source has been quiet for
  `debounce_s` seconds (a burst of uploads makes one run, and a file still
  being written is never read half-done);
- the data version is a hash of the contents only (not names or times), so
  the same data seen again, renamed or re-uploaded, never starts a second run;
- deleted files are reported, and do not start a run on their own.

Only `*.jsonl` files directly inside the folder / prefix count: that is what
the raw_dataset asset reads from such a source. Pure: no dagster.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from llm_assets.core.errors import ConfigError, DataFormatError
from llm_assets.core.s3_settings import S3Settings

MAX_REMEMBERED_VERSIONS = 50


@dataclass(frozen=True)
class FileState:
    content_hash: str
    size: int
    modified: float  # seconds since the epoch
    mtime_ns: int | None = None  # local files: lets the next scan skip re-hashing an unchanged file

    def to_cursor(self) -> dict:
        return {"h": self.content_hash, "s": self.size, "m": self.modified, "n": self.mtime_ns}

    @classmethod
    def from_cursor(cls, raw: dict) -> FileState:
        return cls(raw["h"], raw["s"], raw["m"], raw.get("n"))


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, prefix ending in '/' or empty) of s3://bucket/prefix."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ConfigError("watch_s3_uri", uri, "expected s3://bucket/prefix")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scan_folder(folder: str | os.PathLike, known: dict[str, FileState] | None = None) -> dict[str, FileState]:
    """name -> state of each *.jsonl directly in `folder`; unchanged files (same size and mtime) are not re-hashed."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError("watch_dir", str(root), "no such folder to watch")
    known = known or {}
    states = {}
    for path in sorted(root.glob("*.jsonl")):
        try:
            stat = path.stat()
            if not path.is_file():
                continue
            old = known.get(path.name)
            if old is not None and old.mtime_ns == stat.st_mtime_ns and old.size == stat.st_size:
                states[path.name] = old
                continue
            states[path.name] = FileState(_sha256(path), stat.st_size, stat.st_mtime, stat.st_mtime_ns)
        except FileNotFoundError:  # deleted between listing and reading: the next scan reports it
            continue
    return states


def _s3_objects(client, uri: str) -> Iterable[dict]:
    bucket, prefix = split_s3_uri(uri)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".jsonl"):
                yield obj


def scan_s3(client, uri: str) -> dict[str, FileState]:
    """name -> state of each *.jsonl object directly under the prefix (ETag as content hash)."""
    return {obj["Key"].rsplit("/", 1)[-1]: FileState(str(obj["ETag"]).strip('"'), int(obj["Size"]),
                                                      obj["LastModified"].timestamp())
            for obj in _s3_objects(client, uri)}


def download_s3_jsonl(client, uri: str, dest: str | os.PathLike) -> Path:
    """Copy the *.jsonl objects directly under an S3 prefix into the folder `dest` (for the raw_dataset asset)."""
    bucket, _ = split_s3_uri(uri)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    for obj in _s3_objects(client, uri):
        client.download_file(bucket, obj["Key"], str(dest / obj["Key"].rsplit("/", 1)[-1]))
        count += 1
    if not count:
        raise DataFormatError(uri, None, "no *.jsonl objects under this S3 prefix")
    return dest


def data_version(states: dict[str, FileState]) -> str:
    """A hash of the distinct contents alone: renaming, copying or re-uploading the same bytes keeps the version."""
    return hashlib.sha256("\n".join(sorted({s.content_hash for s in states.values()})).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class NewDataCursor:
    files: dict[str, FileState] = field(default_factory=dict)
    started: tuple[str, ...] = ()  # data versions that already started a run, newest last

    def to_json(self) -> str:
        return json.dumps({"files": {k: v.to_cursor() for k, v in sorted(self.files.items())},
                           "started": list(self.started[-MAX_REMEMBERED_VERSIONS:])})

    @classmethod
    def from_json(cls, text: str | None) -> NewDataCursor:
        if not text:
            return cls()
        raw = json.loads(text)
        return cls({k: FileState.from_cursor(v) for k, v in raw.get("files", {}).items()},
                   tuple(raw.get("started", ())))


@dataclass(frozen=True)
class NewDataPlan:
    start_run: bool
    data_version: str | None
    new: list[str]
    changed: list[str]
    deleted: list[str]
    unsettled: list[str]
    cursor: NewDataCursor
    reason: str


def plan_new_data(previous: NewDataCursor, current: dict[str, FileState], now: float,
                  debounce_s: float, source: str) -> NewDataPlan:
    """Whether what is in `source` now should start a retraining run, and the next cursor."""
    old = previous.files
    new = sorted(set(current) - set(old))
    changed = sorted(k for k in set(current) & set(old) if current[k].content_hash != old[k].content_hash)
    deleted = sorted(set(old) - set(current))
    unsettled = sorted(k for k in new + changed if now - current[k].modified < debounce_s)
    version = data_version(current) if current else None
    gone = f"; deleted: {', '.join(deleted)}" if deleted else ""

    def plan(start: bool, cursor: NewDataCursor, reason: str) -> NewDataPlan:
        return NewDataPlan(start, version, new, changed, deleted, unsettled, cursor, reason + gone)

    settled = NewDataCursor(dict(current), previous.started)
    if not new and not changed:
        return plan(False, settled, f"no new or changed *.jsonl in {source}")
    if unsettled:
        # Keep the old states of the files still moving, so they stay "new" until they settle.
        waiting = {k: v for k, v in current.items() if k not in unsettled} | {
            k: old[k] for k in unsettled if k in old}
        return plan(False, NewDataCursor(waiting, previous.started),
                    f"waiting for {', '.join(unsettled)} in {source} to be unchanged for {debounce_s:g} s")
    if version in previous.started:
        return plan(False, settled, f"data version {version} of {source} already started a run")
    what = ", ".join([f"new {k}" for k in new] + [f"changed {k}" for k in changed])
    return plan(True, NewDataCursor(dict(current), previous.started + (version,)),
                f"{source}: {what} -> data version {version}")


def load_source_rows(source: str, s3: S3Settings | None = None) -> list[dict]:
    """raw_dataset's rows from a local file / folder, or from the *.jsonl objects under an s3:// prefix.

    S3 objects are read through a temporary local copy; rows and errors name the s3:// object, not the copy.
    `s3` says how to reach the server (None: boto3's chain).
    """
    import tempfile

    from llm_assets.core import dataset_io

    if not source.startswith("s3://"):
        return dataset_io.load_rows(source)
    from llm_assets.core.artifacts_s3 import S3ArtifactStore

    bucket, prefix = split_s3_uri(source)
    client = S3ArtifactStore(bucket, s3=s3).client
    with tempfile.TemporaryDirectory(prefix="raw-s3-") as tmp:
        local = download_s3_jsonl(client, source, tmp)

        def remote(text: str) -> str:
            return text.replace(f"{local}/", f"s3://{bucket}/{prefix}")

        try:
            rows = dataset_io.load_rows(local)
        except DataFormatError as exc:
            where = f"{exc.path}:{exc.line}" if exc.line is not None else exc.path
            raise DataFormatError(remote(exc.path), exc.line, str(exc)[len(where) + 2:]) from None
    for row in rows:
        row["source"] = remote(row["source"])
    return rows
