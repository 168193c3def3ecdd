"""Artifact stores: a local folder, and S3 against a real moto server on loopback."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from llm_assets.core import artifacts
from llm_assets.core.artifacts import (
    FOLDER_INDEX_NAME, Artifact, ArtifactNotFoundError, LocalArtifactStore, S3ArtifactStore,
    cas_key, folder_sha256, run_key, sha256_file, store_from_uri, validate_key,
)
from llm_assets.core.errors import ArtifactIntegrityError, ConfigError, DataFormatError
from llm_assets.core.s3_settings import S3Settings

SECRET = "s3cr3t-value-never-shown-9f8e7d"


def make_tree(root: Path) -> dict[str, bytes]:
    files = {"config.json": b'{"a": 1}', "weights/part-0.bin": os.urandom(3000),
             "weights/deep/part-1.bin": b"\x00" * 10, "empty.txt": b""}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def expected_folder_hash(files: dict[str, bytes]) -> str:
    return folder_sha256((rel, hashlib.sha256(data).hexdigest()) for rel, data in files.items())


@pytest.fixture
def store(tmp_path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "store")


# -- pure helpers -----------------------------------------------------------------

def test_sha256_file_streams_large_files(tmp_path):
    data = os.urandom(artifacts.CHUNK_SIZE * 2 + 123)
    (tmp_path / "big").write_bytes(data)
    assert sha256_file(tmp_path / "big") == hashlib.sha256(data).hexdigest()


def test_folder_hash_is_order_independent_and_path_sensitive():
    pairs = [("a.txt", "1" * 64), ("b/c.txt", "2" * 64)]
    assert folder_sha256(pairs) == folder_sha256(reversed(pairs))
    assert folder_sha256(pairs) != folder_sha256([("a.txt", "1" * 64), ("b/d.txt", "2" * 64)])


def test_artifact_dict_round_trip():
    art = Artifact("file:///x/y", "ab" * 32, 12)
    assert Artifact.from_dict(json.loads(json.dumps(art.to_dict()))) == art
    with pytest.raises(ConfigError, match="sha256"):
        Artifact.from_dict({"uri": "file:///x", "size": 1})


def test_keys():
    assert run_key("r1", "gguf_model", "model.gguf") == "runs/r1/gguf_model/model.gguf"
    sha = "ab" + "c" * 62
    assert cas_key(sha, "model.gguf") == f"cas/ab/{sha}/model.gguf"
    for bad in ["", "/abs", "../up", "a/../b", "a//b", "a\\b", "a/./b"]:
        with pytest.raises(ConfigError):
            validate_key(bad)
    with pytest.raises(ConfigError):
        cas_key("not-a-hash", "x")


def test_store_from_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = store_from_uri("rel/artifacts", s3=S3Settings(endpoint_url="http://ignored-for-a-folder:1"))
    assert isinstance(local, LocalArtifactStore) and local.root == tmp_path / "rel" / "artifacts"
    assert store_from_uri((tmp_path / "x").as_uri()).root == tmp_path / "x"
    s3 = store_from_uri("s3://bucket/some/prefix/", s3=S3Settings(endpoint_url="http://127.0.0.1:1"))
    assert isinstance(s3, S3ArtifactStore)
    assert s3.uri_for("a/b.txt") == "s3://bucket/some/prefix/a/b.txt"
    with pytest.raises(ConfigError, match="gs://b"):
        store_from_uri("gs://b/p")


# -- local store ------------------------------------------------------------------

def test_local_file_round_trip(store, tmp_path):
    data = os.urandom(5000)
    (tmp_path / "in.bin").write_bytes(data)
    art = store.put_file(tmp_path / "in.bin", "runs/r1/raw_dataset/data.bin")
    assert art.uri == (store.root / "runs/r1/raw_dataset/data.bin").as_uri()
    assert (art.sha256, art.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert store.exists(art.uri) and not store.exists(store.uri_for("runs/r1/other"))
    assert store.local_path(art.uri, expected_sha256=art.sha256).read_bytes() == data
    out = store.get_file(art.uri, tmp_path / "out" / "copy.bin", expected_sha256=art.sha256)
    assert out.read_bytes() == data
    (tmp_path / "dir").mkdir()
    assert store.get_file(art.uri, tmp_path / "dir") == tmp_path / "dir" / "data.bin"
    odd = store.put_file(tmp_path / "in.bin", "runs/r 1/a#b?c%20.bin")  # URI quoting round-trips
    assert store.local_path(odd.uri) == store.root / "runs/r 1/a#b?c%20.bin"


def test_local_put_in_place_does_not_copy(store):
    dest = store.root / "runs/r1/gguf_model/model.gguf"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"gguf bytes")
    inode = dest.stat().st_ino
    art = store.put_file(dest, "runs/r1/gguf_model/model.gguf")
    assert dest.stat().st_ino == inode and art.sha256 == hashlib.sha256(b"gguf bytes").hexdigest()

    folder = store.root / "runs/r1/lora_adapter"
    files = make_tree(folder)
    inode = (folder / "config.json").stat().st_ino
    art = store.put_dir(folder, "runs/r1/lora_adapter")
    assert (folder / "config.json").stat().st_ino == inode
    assert art.sha256 == expected_folder_hash(files) and store.exists(art.uri)
    assert store.put_dir(folder, "runs/r1/lora_adapter") == art  # again: its own folder index is not content


def test_local_folder_round_trip_and_replace(store, tmp_path):
    files = make_tree(tmp_path / "model")
    art = store.put_dir(tmp_path / "model", "runs/r1/lora_adapter/adapter")
    assert art.sha256 == expected_folder_hash(files) and art.size == sum(map(len, files.values()))
    manifest = json.loads((store.local_path(art.uri) / FOLDER_INDEX_NAME).read_text())
    assert sorted(e["path"] for e in manifest["files"]) == sorted(files)
    got = store.get_dir(art.uri, tmp_path / "got", expected_sha256=art.sha256)
    assert read_tree(got) == files
    assert store.get_dir(art.uri, store.local_path(art.uri)) == store.local_path(art.uri)
    assert store.exists(art.uri)  # getting a folder onto itself keeps it intact

    # Replacing the folder leaves no stale files from the old version.
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "only.txt").write_text("v2")
    art2 = store.put_dir(tmp_path / "v2", "runs/r1/lora_adapter/adapter")
    assert set(read_tree(store.local_path(art2.uri))) == {"only.txt", FOLDER_INDEX_NAME}
    assert read_tree(store.get_dir(art2.uri, tmp_path / "got")) == {"only.txt": b"v2"}


def test_local_put_file_failure_leaves_nothing(store, tmp_path, monkeypatch):
    (tmp_path / "in.bin").write_bytes(os.urandom(10_000))

    def copy_then_crash(src, dst):
        dst.write(src.read(100))
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "_copy_hashing", copy_then_crash)
    with pytest.raises(OSError, match="disk full"):
        store.put_file(tmp_path / "in.bin", "runs/r1/raw_dataset/data.bin")
    assert not store.exists(store.uri_for("runs/r1/raw_dataset/data.bin"))
    assert list((store.root / "runs/r1/raw_dataset").iterdir()) == []  # no .partial left either


def test_local_put_dir_failure_leaves_nothing(store, tmp_path, monkeypatch):
    make_tree(tmp_path / "model")
    real_copy, calls = artifacts._copy_hashing, []

    def crash_on_third_file(src, dst):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("connection lost")
        return real_copy(src, dst)

    monkeypatch.setattr(artifacts, "_copy_hashing", crash_on_third_file)
    with pytest.raises(OSError, match="connection lost"):
        store.put_dir(tmp_path / "model", "runs/r1/lora_adapter")
    assert not store.exists(store.uri_for("runs/r1/lora_adapter"))
    assert list((store.root / "runs/r1").iterdir()) == []


def test_local_folder_without_its_index_is_not_trusted(store, tmp_path):
    make_tree(tmp_path / "model")
    art = store.put_dir(tmp_path / "model", "runs/r1/lora_adapter")
    (store.local_path(art.uri) / FOLDER_INDEX_NAME).unlink()
    assert not store.exists(art.uri)
    with pytest.raises(ArtifactNotFoundError, match=FOLDER_INDEX_NAME) as err:
        store.get_dir(art.uri, tmp_path / "got")
    assert art.uri in str(err.value) and not (tmp_path / "got").exists()
    with pytest.raises(ArtifactNotFoundError):
        store.local_path(art.uri)


def test_local_tampered_file_raises_naming_uri_and_hashes(store, tmp_path):
    (tmp_path / "in.txt").write_text("original")
    art = store.put_file(tmp_path / "in.txt", "runs/r1/eval_report/report.json")
    store.local_path(art.uri).write_text("tampered")
    actual = hashlib.sha256(b"tampered").hexdigest()
    with pytest.raises(ArtifactIntegrityError) as err:
        store.get_file(art.uri, tmp_path / "out.txt", expected_sha256=art.sha256)
    assert all(s in str(err.value) for s in (art.uri, art.sha256, actual))
    assert not (tmp_path / "out.txt").exists()
    with pytest.raises(ArtifactIntegrityError, match=actual):
        store.local_path(art.uri, expected_sha256=art.sha256)


def test_local_tampered_folder_raises_naming_the_file(store, tmp_path):
    make_tree(tmp_path / "model")
    art = store.put_dir(tmp_path / "model", "runs/r1/lora_adapter")
    (store.local_path(art.uri) / "weights/part-0.bin").write_bytes(b"evil")
    with pytest.raises(ArtifactIntegrityError, match=hashlib.sha256(b"evil").hexdigest()) as err:
        store.get_dir(art.uri, tmp_path / "got", expected_sha256=art.sha256)
    assert f"{art.uri}/weights/part-0.bin" in str(err.value) and not (tmp_path / "got").exists()
    with pytest.raises(ArtifactIntegrityError):
        store.local_path(art.uri, expected_sha256=art.sha256)
    # A folder hash that is not the one recorded fails before any copy.
    with pytest.raises(ArtifactIntegrityError, match="f" * 64):
        store.get_dir(art.uri, tmp_path / "got", expected_sha256="f" * 64)


def test_local_bad_folder_indexes_are_rejected(store, tmp_path):
    make_tree(tmp_path / "model")
    art = store.put_dir(tmp_path / "model", "runs/r1/lora_adapter")
    manifest_path = store.local_path(art.uri) / FOLDER_INDEX_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][0]["sha256"] = "0" * 64  # edited entry no longer matches the recorded folder hash
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactIntegrityError, match=FOLDER_INDEX_NAME):
        store.get_dir(art.uri, tmp_path / "got")

    evil = artifacts.build_folder_index([{"path": "../escaped.txt", "sha256": "0" * 64, "size": 1}])
    manifest_path.write_text(json.dumps(evil))
    with pytest.raises(DataFormatError, match="escaped"):
        store.get_dir(art.uri, tmp_path / "got")
    assert not (tmp_path / "escaped.txt").exists()


def test_local_missing_and_reserved(store, tmp_path):
    uri = store.uri_for("runs/r1/nothing.bin")
    with pytest.raises(ArtifactNotFoundError, match="nothing.bin") as err:
        store.get_file(uri, tmp_path / "x")
    assert isinstance(err.value, FileNotFoundError) and uri in str(err.value)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / FOLDER_INDEX_NAME).write_text("{}")
    with pytest.raises(DataFormatError, match="reserved"):
        store.put_dir(tmp_path / "model", "runs/r1/m")


def test_content_addressed_put_skips_known_content(store, tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"weights")
    art = store.put_content_addressed(tmp_path / "model.gguf")
    assert art.uri.endswith(cas_key(hashlib.sha256(b"weights").hexdigest(), "model.gguf"))
    inode = store.local_path(art.uri).stat().st_ino
    assert store.put_content_addressed(tmp_path / "model.gguf") == art
    assert store.local_path(art.uri).stat().st_ino == inode

    files = make_tree(tmp_path / "adapter")
    art = store.put_content_addressed(tmp_path / "adapter", name="adapter")
    assert art.sha256 == expected_folder_hash(files) and f"/{art.sha256}/adapter" in art.uri
    assert read_tree(store.get_dir(art.uri, tmp_path / "got", expected_sha256=art.sha256)) == files


# -- S3 store against a real moto server ------------------------------------------

@pytest.fixture
def s3_store(s3_endpoint, request) -> S3ArtifactStore:
    import boto3

    bucket = "test-" + hashlib.sha1(request.node.name.encode()).hexdigest()[:12]
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key=SECRET)
    client.create_bucket(Bucket=bucket)
    return S3ArtifactStore(bucket, prefix="llm", s3=S3Settings(endpoint_url=s3_endpoint, region="us-east-1",
                                                               access_key_id="testing", secret_access_key=SECRET))


def test_s3_file_round_trip(s3_store, tmp_path):
    data = os.urandom(9 * 1024 * 1024)  # over boto3's 8 MiB multipart threshold
    (tmp_path / "model.gguf").write_bytes(data)
    art = s3_store.put_file(tmp_path / "model.gguf", "runs/r1/gguf_model/model.gguf")
    assert art.uri == f"s3://{s3_store.bucket}/llm/runs/r1/gguf_model/model.gguf"
    assert (art.sha256, art.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert s3_store.exists(art.uri) and not s3_store.exists(s3_store.uri_for("runs/r1/gguf_model"))
    assert s3_store.local_path(art.uri) is None
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key="llm/runs/r1/gguf_model/model.gguf")
    assert head["Metadata"]["sha256"] == art.sha256
    out = s3_store.get_file(art.uri, tmp_path / "out.gguf", expected_sha256=art.sha256)
    assert out.read_bytes() == data
    (tmp_path / "small").write_bytes(b"small")
    odd = s3_store.put_file(tmp_path / "small", "runs/r 1/a#b?c.gguf")
    assert s3_store.exists(odd.uri) and s3_store.get_file(odd.uri, tmp_path).name == "a#b?c.gguf"


def test_s3_folder_round_trip_and_manifest_gate(s3_store, tmp_path):
    files = make_tree(tmp_path / "model")
    art = s3_store.put_dir(tmp_path / "model", "runs/r1/lora_adapter")
    assert art.sha256 == expected_folder_hash(files) and s3_store.exists(art.uri)
    got = s3_store.get_dir(art.uri, tmp_path / "got", expected_sha256=art.sha256)
    assert read_tree(got) == files

    s3_store.client.delete_object(Bucket=s3_store.bucket, Key=f"llm/runs/r1/lora_adapter/{FOLDER_INDEX_NAME}")
    assert not s3_store.exists(art.uri)
    with pytest.raises(ArtifactNotFoundError, match=FOLDER_INDEX_NAME) as err:
        s3_store.get_dir(art.uri, tmp_path / "got2")
    assert art.uri in str(err.value) and not (tmp_path / "got2").exists()


def test_s3_integrity_errors(s3_store, tmp_path):
    (tmp_path / "report.json").write_text('{"accuracy": 0.9}')
    art = s3_store.put_file(tmp_path / "report.json", "runs/r1/eval_report/report.json")
    key = "llm/runs/r1/eval_report/report.json"
    # Overwritten with other bytes but the old recorded hash: caught even without expected_sha256.
    s3_store.client.put_object(Bucket=s3_store.bucket, Key=key, Body=b"forged",
                               Metadata={"sha256": art.sha256})
    actual = hashlib.sha256(b"forged").hexdigest()
    for expected in (art.sha256, None):
        with pytest.raises(ArtifactIntegrityError) as err:
            s3_store.get_file(art.uri, tmp_path / "out.json", expected_sha256=expected)
        assert all(s in str(err.value) for s in (art.uri, art.sha256, actual))
        assert not (tmp_path / "out.json").exists()

    make_tree(tmp_path / "model")
    art = s3_store.put_dir(tmp_path / "model", "runs/r1/lora_adapter")
    s3_store.client.put_object(Bucket=s3_store.bucket, Key="llm/runs/r1/lora_adapter/config.json", Body=b"{}")
    with pytest.raises(ArtifactIntegrityError, match=f"{art.uri}/config.json"):
        s3_store.get_dir(art.uri, tmp_path / "got", expected_sha256=art.sha256)
    assert not (tmp_path / "got").exists()


def test_s3_missing_objects_name_the_uri_and_hide_secrets(s3_store, tmp_path):
    uri = s3_store.uri_for("runs/r1/missing.bin")
    with pytest.raises(ArtifactNotFoundError) as err:
        s3_store.get_file(uri, tmp_path / "x")
    assert uri in str(err.value) and SECRET not in str(err.value)
    assert not s3_store.exists(uri)
    other = f"s3://no-such-bucket-{s3_store.bucket}/x.bin"
    with pytest.raises(ArtifactNotFoundError, match=other):
        s3_store.get_file(other, tmp_path / "x")
    assert SECRET not in repr(s3_store) and SECRET not in str(s3_store)


def test_s3_content_addressed(s3_store, tmp_path):
    (tmp_path / "data.jsonl").write_text('{"x": 1}\n')
    art = s3_store.put_content_addressed(tmp_path / "data.jsonl")
    sha = hashlib.sha256(b'{"x": 1}\n').hexdigest()
    assert art == Artifact(f"s3://{s3_store.bucket}/llm/{cas_key(sha, 'data.jsonl')}", sha, 9)
    assert s3_store.put_content_addressed(tmp_path / "data.jsonl") == art
