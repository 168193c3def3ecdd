"""Artifact store: large files and folders addressed by URI, checked by sha256.

Assets never pickle models or datasets; they put files here and record the
returned Artifact (uri, sha256, size) in their metadata. Two stores share one
interface: LocalArtifactStore (a folder, file:// URIs) and S3ArtifactStore
(any S3-compatible server, s3:// URIs).

A folder artifact is its files plus its folder index (relative paths, hashes,
sizes), written LAST: a folder without its index is never trusted, so a
crash mid-upload leaves nothing a reader accepts. (An asset's *manifest* is
something else: the small JSON value an asset returns, see resources/manifest_io_manager.py.)
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import unquote, urlparse

from llm_assets.core.atomic import atomic_dir, atomic_path, write_text
from llm_assets.core.errors import ArtifactIntegrityError, ConfigError, DataFormatError, PipelineError
from llm_assets.core.s3_settings import S3Settings

FOLDER_INDEX_NAME = "_manifest.json"  # the file's name in stores already written; renaming it would orphan them
FOLDER_INDEX_FORMAT = "llm_assets.folder/1"
CHUNK_SIZE = 1 << 20


class ArtifactNotFoundError(PipelineError, FileNotFoundError):
    """No complete artifact at this URI (absent, or a folder without its index)."""

    def __init__(self, uri: str, why: str = "no such artifact"):
        self.uri = uri
        super().__init__(f"{uri}: {why}")


@dataclass(frozen=True)
class Artifact:
    """Where an artifact lives and what its bytes hash to (folder: see folder_sha256)."""

    uri: str
    sha256: str
    size: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Artifact":
        missing = {"uri", "sha256", "size"} - set(data)
        if missing:
            raise ConfigError("artifact", data, f"missing keys {sorted(missing)}")
        return cls(uri=str(data["uri"]), sha256=str(data["sha256"]), size=int(data["size"]))


# -- hashing -----------------------------------------------------------------

def sha256_file(path: str | os.PathLike) -> str:
    """Streaming sha256 of a file (1 MiB chunks; never loads it whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def folder_sha256(entries: Iterable[tuple[str, str]]) -> str:
    """Stable hash of a folder from its (relative posix path, file sha256) pairs."""
    digest = hashlib.sha256()
    for rel, sha in sorted(entries):
        digest.update(f"{rel}\0{sha}\n".encode("utf-8"))
    return digest.hexdigest()


def _copy_hashing(src, dst) -> tuple[str, int]:
    """Copy an open binary stream into another, returning (sha256, size) of what passed."""
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(CHUNK_SIZE):
        digest.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _copy_file(src: Path, dest: Path) -> tuple[str, int]:
    """Copy one file, hashing the bytes as they pass (one read, not two)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        return _copy_hashing(fin, fout)


def check_sha256(uri: str, expected: str | None, actual: str) -> None:
    if expected is not None and expected != actual:
        raise ArtifactIntegrityError(f"{uri}: sha256 mismatch: expected {expected}, got {actual}")


# -- keys ----------------------------------------------------------------------

def validate_key(key: str) -> str:
    """A store key is a relative posix path with no '.', '..' or empty segments."""
    parts = str(key).split("/")
    if not key or "\\" in key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ConfigError("key", key, "expected a relative path like 'runs/<run_id>/<asset>/file'")
    return key


def run_key(run_id: str, asset_name: str, *parts: str) -> str:
    """Run-scoped key: runs/<run_id>/<asset_name>/<parts...>."""
    return validate_key("/".join(["runs", run_id, asset_name, *parts]))


def cas_key(sha256: str, name: str) -> str:
    """Content-addressed key: cas/<sha256[:2]>/<sha256>/<name>."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ConfigError("sha256", sha256, "expected 64 lowercase hex digits")
    return validate_key(f"cas/{sha256[:2]}/{sha256}/{name}")


def scan_dir(local_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    """Sorted (relative posix path, absolute path) of every file under a folder."""
    root = Path(local_dir)
    if not root.is_dir():
        raise ArtifactNotFoundError(str(root), "not a folder")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            files.append((path.relative_to(root).as_posix(), path))
    files.sort()
    return files


def _reject_reserved(local_dir: Path, files: list[tuple[str, Path]]) -> None:
    if any(rel == FOLDER_INDEX_NAME for rel, _ in files):
        raise DataFormatError(local_dir / FOLDER_INDEX_NAME, None,
                              f"'{FOLDER_INDEX_NAME}' is reserved for the store's folder index; rename it")


def build_folder_index(entries: list[dict]) -> dict:
    pairs = [(e["path"], e["sha256"]) for e in entries]
    return {"format": FOLDER_INDEX_FORMAT, "sha256": folder_sha256(pairs),
            "size": sum(e["size"] for e in entries), "files": entries}


def parse_folder_index(index_uri: str, text: str) -> dict:
    """Validate a folder index; an index whose hash disagrees with its entries is rejected."""
    try:
        data = json.loads(text)
        entries = [{"path": validate_key(e["path"]), "sha256": str(e["sha256"]), "size": int(e["size"])}
                   for e in data["files"]]
        recorded = data["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(index_uri, None, f"not a valid folder index: {exc}") from exc
    index = build_folder_index(entries)
    check_sha256(index_uri, recorded, index["sha256"])
    return index


# -- stores --------------------------------------------------------------------

class ArtifactStore(abc.ABC):
    """Put and get files and folders by key/URI; every get can verify a sha256."""

    @abc.abstractmethod
    def uri_for(self, key: str) -> str: ...

    @abc.abstractmethod
    def put_file(self, local_path: str | os.PathLike, key: str) -> Artifact: ...

    @abc.abstractmethod
    def put_dir(self, local_dir: str | os.PathLike, key: str) -> Artifact: ...

    @abc.abstractmethod
    def get_file(self, uri: str, dest: str | os.PathLike, expected_sha256: str | None = None) -> Path:
        """Copy the file at `uri` to `dest` (a file path, or an existing folder to put it in)."""

    @abc.abstractmethod
    def get_dir(self, uri: str, dest: str | os.PathLike, expected_sha256: str | None = None) -> Path:
        """Copy the folder at `uri` to `dest` (replaced atomically); every file is verified."""

    @abc.abstractmethod
    def exists(self, uri: str) -> bool:
        """True for a file, or a folder whose index is present."""

    def local_path(self, uri: str, expected_sha256: str | None = None) -> Path | None:
        """A readable local path for `uri` without copying, or None when the store is remote."""
        return None

    def put_content_addressed(self, local_path: str | os.PathLike, name: str | None = None) -> Artifact:
        """Put a file or folder under cas/<sha>/<name>; skipped when that content is already stored."""
        local_path = Path(local_path)
        if local_path.is_dir():
            files = scan_dir(local_path)
            _reject_reserved(local_path, files)
            sha = folder_sha256((rel, sha256_file(p)) for rel, p in files)
            size, put = sum(p.stat().st_size for _, p in files), self.put_dir
        else:
            sha, size, put = sha256_file(local_path), local_path.stat().st_size, self.put_file
        key = cas_key(sha, name or local_path.name)
        if self.exists(self.uri_for(key)):
            return Artifact(self.uri_for(key), sha, size)
        return put(local_path, key)


def _file_uri_to_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise ConfigError("uri", uri, "expected a file:///absolute/path URI")
    return Path(unquote(parsed.path))


class LocalArtifactStore(ArtifactStore):
    """Artifacts as files under a local folder; URIs are file:///abs/path."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalArtifactStore(root={str(self.root)!r})"

    def _path_for(self, key: str) -> Path:
        return self.root / validate_key(key)

    def uri_for(self, key: str) -> str:
        return self._path_for(key).as_uri()

    def put_file(self, local_path, key) -> Artifact:
        src, dest = Path(local_path), self._path_for(key)
        if not src.is_file():
            raise ArtifactNotFoundError(str(src), "no such file to put")
        if src.resolve() == dest.resolve():  # already in place: hash, don't copy onto itself
            return Artifact(dest.as_uri(), sha256_file(dest), dest.stat().st_size)
        with atomic_path(dest) as tmp:
            sha, size = _copy_file(src, tmp)
        return Artifact(dest.as_uri(), sha, size)

    def put_dir(self, local_dir, key) -> Artifact:
        src, dest = Path(local_dir), self._path_for(key)
        in_place = src.resolve() == dest.resolve()
        # List before writing: a destination inside the source must not see its own temp folder.
        files = [(rel, p) for rel, p in scan_dir(src) if not (in_place and rel == FOLDER_INDEX_NAME)]
        _reject_reserved(src, files)
        if in_place:
            (dest / FOLDER_INDEX_NAME).unlink(missing_ok=True)  # untrusted while re-hashing
            entries = [{"path": rel, "sha256": sha256_file(p), "size": p.stat().st_size} for rel, p in files]
            index = build_folder_index(entries)
            write_text(dest / FOLDER_INDEX_NAME, json.dumps(index, indent=1))
            return Artifact(dest.as_uri(), index["sha256"], index["size"])
        with atomic_dir(dest) as tmp:
            entries = []
            for rel, path in files:
                sha, size = _copy_file(path, tmp / rel)
                entries.append({"path": rel, "sha256": sha, "size": size})
            index = build_folder_index(entries)
            (tmp / FOLDER_INDEX_NAME).write_text(json.dumps(index, indent=1), encoding="utf-8")
        return Artifact(dest.as_uri(), index["sha256"], index["size"])

    def _folder_index(self, uri: str) -> dict:
        index_path = _file_uri_to_path(uri) / FOLDER_INDEX_NAME
        if not index_path.is_file():
            raise ArtifactNotFoundError(uri, f"no complete folder artifact (missing {FOLDER_INDEX_NAME})")
        return parse_folder_index(index_path.as_uri(), index_path.read_text(encoding="utf-8"))

    def get_file(self, uri, dest, expected_sha256=None) -> Path:
        src, dest = _file_uri_to_path(uri), Path(dest)
        if not src.is_file():
            raise ArtifactNotFoundError(uri, "no such file")
        if dest.is_dir():
            dest = dest / src.name
        if src.resolve() == dest.resolve():
            check_sha256(uri, expected_sha256, sha256_file(src))
            return dest
        with atomic_path(dest) as tmp:
            check_sha256(uri, expected_sha256, _copy_file(src, tmp)[0])  # raising here leaves dest untouched
        return dest

    def get_dir(self, uri, dest, expected_sha256=None) -> Path:
        index, src, dest = self._folder_index(uri), _file_uri_to_path(uri), Path(dest)
        check_sha256(uri, expected_sha256, index["sha256"])
        if src.resolve() == dest.resolve():  # replacing the folder with itself would drop its index
            return self.local_path(uri, expected_sha256)
        with atomic_dir(dest) as tmp:
            for entry in index["files"]:
                file_uri = f"{uri}/{entry['path']}"
                if not (src / entry["path"]).is_file():
                    raise ArtifactNotFoundError(file_uri, "listed in the folder index but missing")
                check_sha256(file_uri, entry["sha256"], _copy_file(src / entry["path"], tmp / entry["path"])[0])
        return dest

    def exists(self, uri: str) -> bool:
        path = _file_uri_to_path(uri)
        return path.is_file() or (path / FOLDER_INDEX_NAME).is_file()

    def local_path(self, uri: str, expected_sha256: str | None = None) -> Path:
        """The artifact's own path (no copy); verified against `expected_sha256` when given."""
        path = _file_uri_to_path(uri)
        if path.is_file():
            if expected_sha256 is not None:
                check_sha256(uri, expected_sha256, sha256_file(path))
            return path
        index = self._folder_index(uri)
        if expected_sha256 is not None:
            check_sha256(uri, expected_sha256, index["sha256"])
            for entry in index["files"]:
                check_sha256(f"{uri}/{entry['path']}", entry["sha256"], sha256_file(path / entry["path"]))
        return path


def store_from_uri(root_uri: str | os.PathLike, s3: S3Settings | None = None) -> ArtifactStore:
    """'s3://bucket/prefix' -> S3ArtifactStore reached with `s3`; 'file:///x' or a path -> LocalArtifactStore.

    Relative paths resolve against the current directory now, at call time.
    """
    root = str(root_uri)
    scheme = urlparse(root).scheme
    if scheme == "s3":
        bucket, _, prefix = root.removeprefix("s3://").partition("/")
        from llm_assets.core.artifacts_s3 import S3ArtifactStore

        return S3ArtifactStore(bucket, prefix, s3)
    if scheme == "file":
        return LocalArtifactStore(_file_uri_to_path(root))
    if scheme and len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise ConfigError("artifact_root", root, "expected s3://bucket/prefix, file:///path or a local path")
    return LocalArtifactStore(root)


def __getattr__(name: str):
    # S3ArtifactStore lives in its own module; importing it here lazily keeps
    # `from llm_assets.core.artifacts import S3ArtifactStore` working without a cycle.
    if name == "S3ArtifactStore":
        from llm_assets.core.artifacts_s3 import S3ArtifactStore

        return S3ArtifactStore
    raise AttributeError(name)
