"""The S3 artifact store: any S3-compatible server (AWS, MinIO, moto), s3:// URIs.

boto3 is imported when a store is first used, so importing the core stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

from llm_assets.core.artifacts import (
    FOLDER_INDEX_NAME, Artifact, ArtifactNotFoundError, ArtifactStore, _reject_reserved, build_folder_index, check_sha256,
    parse_folder_index, scan_dir, sha256_file, validate_key,
)
from llm_assets.core.atomic import atomic_dir, atomic_path
from llm_assets.core.errors import ConfigError
from llm_assets.core.s3_settings import S3Settings


class S3ArtifactStore(ArtifactStore):
    """Artifacts as objects in an S3 bucket (AWS, MinIO, moto...); URIs are s3://bucket/prefix/key.

    `s3` says how to reach the server; unset credentials default to boto3's chain (environment, profile,
    instance role). They are kept out of repr and error messages.
    """

    def __init__(self, bucket: str, prefix: str = "", s3: S3Settings | None = None, *,
                 connect_timeout: float = 10, read_timeout: float = 60, max_attempts: int = 5):
        if not bucket or "/" in bucket:
            raise ConfigError("bucket", bucket, "expected a bare S3 bucket name")
        self.s3 = s3 if s3 is not None else S3Settings()
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._timeouts = (connect_timeout, read_timeout, max_attempts)
        self._client = self._session = None

    def __repr__(self) -> str:
        return f"S3ArtifactStore(bucket={self.bucket!r}, prefix={self.prefix!r}, s3={self.s3!r})"

    @property
    def client(self):
        if self._client is None:
            from botocore.config import Config

            connect, read, attempts = self._timeouts
            self._session = self.s3.session()
            self._client = self.s3.client("s3", session=self._session, config=Config(
                connect_timeout=connect, read_timeout=read,
                retries={"max_attempts": attempts, "mode": "standard"}))
        return self._client

    def resolved_s3_settings(self) -> S3Settings:
        """This store's settings with the credentials boto3's chain resolved for it filled in.

        What a worker on another machine needs to reach the same store; holds secrets, so never log it.
        """
        self.client  # noqa: B018 - makes the session
        return self.s3.with_resolved_credentials(self._session)

    def _object_key(self, key: str) -> str:
        key = validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        # Not urlparse: an S3 key may hold '#' or '?', which it would cut off.
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not uri.startswith("s3://") or not bucket or not key:
            raise ConfigError("uri", uri, "expected s3://bucket/key")
        return bucket, key

    @staticmethod
    def _is_missing(exc) -> bool:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")

    def _head(self, bucket: str, key: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if self._is_missing(exc):
                return None
            raise

    def _upload(self, path: Path, bucket: str, key: str) -> tuple[str, int]:
        # Hash first so the object carries its sha256; multipart objects only appear once complete.
        sha = sha256_file(path)
        self.client.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {"sha256": sha}})
        return sha, path.stat().st_size

    def put_file(self, local_path, key) -> Artifact:
        src = Path(local_path)
        if not src.is_file():
            raise ArtifactNotFoundError(str(src), "no such file to put")
        bucket, obj = self._split(self.uri_for(key))
        sha, size = self._upload(src, bucket, obj)
        return Artifact(self.uri_for(key), sha, size)

    def put_dir(self, local_dir, key) -> Artifact:
        src, uri = Path(local_dir), self.uri_for(key)
        files = scan_dir(src)
        _reject_reserved(src, files)
        bucket, base = self._split(uri)
        # An old index must not vouch for a half-replaced folder: drop it before uploading.
        self.client.delete_object(Bucket=bucket, Key=f"{base}/{FOLDER_INDEX_NAME}")
        entries = []
        for rel, path in files:
            sha, size = self._upload(path, bucket, f"{base}/{rel}")
            entries.append({"path": rel, "sha256": sha, "size": size})
        index = build_folder_index(entries)
        self.client.put_object(Bucket=bucket, Key=f"{base}/{FOLDER_INDEX_NAME}",
                               Body=json.dumps(index, indent=1).encode("utf-8"),
                               ContentType="application/json")
        return Artifact(uri, index["sha256"], index["size"])

    def _download(self, uri: str, dest: Path, expected_sha256: str | None) -> None:
        bucket, key = self._split(uri)
        head = self._head(bucket, key)
        if head is None:
            raise ArtifactNotFoundError(uri, "no such object")
        recorded = head.get("Metadata", {}).get("sha256")
        with atomic_path(dest) as tmp:
            self.client.download_file(bucket, key, str(tmp))
            actual = sha256_file(tmp)
            check_sha256(uri, expected_sha256, actual)
            check_sha256(uri, recorded, actual)  # the hash stored at upload catches silent corruption

    def get_file(self, uri, dest, expected_sha256=None) -> Path:
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / self._split(uri)[1].rsplit("/", 1)[-1]
        self._download(uri, dest, expected_sha256)
        return dest

    def _folder_index(self, uri: str) -> dict:
        from botocore.exceptions import ClientError

        bucket, base = self._split(uri)
        try:
            body = self.client.get_object(Bucket=bucket, Key=f"{base}/{FOLDER_INDEX_NAME}")["Body"].read()
        except ClientError as exc:
            if self._is_missing(exc):
                raise ArtifactNotFoundError(
                    uri, f"no complete folder artifact (missing {FOLDER_INDEX_NAME})") from None
            raise
        return parse_folder_index(f"{uri}/{FOLDER_INDEX_NAME}", body.decode("utf-8"))

    def get_dir(self, uri, dest, expected_sha256=None) -> Path:
        index, dest = self._folder_index(uri), Path(dest)
        check_sha256(uri, expected_sha256, index["sha256"])
        with atomic_dir(dest) as tmp:
            for entry in index["files"]:
                self._download(f"{uri}/{entry['path']}", tmp / entry["path"], entry["sha256"])
        return dest

    def exists(self, uri: str) -> bool:
        bucket, key = self._split(uri)
        return self._head(bucket, key) is not None or self._head(bucket, f"{key}/{FOLDER_INDEX_NAME}") is not None
