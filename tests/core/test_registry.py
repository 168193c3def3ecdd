"""The model registry on a real SQLite file and a real PostgreSQL server.

PostgreSQL comes from LLM_ASSETS_TEST_POSTGRES_URL (`eval "$(.ci/start-postgres.sh)"`); each test gets its own
schema. Without that variable the PostgreSQL cases skip, except under CI where they fail.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from llm_assets.core.errors import PipelineError
from llm_assets.core.registry import (
    NO_PRODUCTION, ModelRegistry, RegistryConflictError, RegistryError, RegistryNotFoundError,
)
from llm_assets.core.registry.engine import create_registry_engine

PG_ENV = "LLM_ASSETS_TEST_POSTGRES_URL"


class Backend:
    def __init__(self, name: str, url: str):
        self.name, self.url, self._opened = name, url, []

    def open(self, **kwargs) -> ModelRegistry:
        registry = ModelRegistry(self.url, **kwargs)
        self._opened.append(registry)
        return registry

    def close_all(self) -> None:
        for registry in self._opened:
            registry.close()


def _postgres_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide PostgreSQL: {PG_ENV} is unset (eval \"$(.ci/start-postgres.sh)\")")
        pytest.skip(f"no PostgreSQL: set {PG_ENV} (eval \"$(.ci/start-postgres.sh)\") to run these cases")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        b = Backend("sqlite", f"sqlite:///{tmp_path / 'registry.db'}")
        yield b
        b.close_all()
        return
    base = _postgres_url()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_registry_engine(base, timeout_s=10)
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    b = Backend("postgresql", url.render_as_string(hide_password=False))
    yield b
    b.close_all()
    with admin.begin() as connection:
        connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()


def _passing(**fields) -> dict:
    return {"gate_passed": True, "gate_reason": "q8_0 strict accuracy 0.970 >= 0.95", **fields}


def test_register_numbers_versions_per_model(backend):
    reg = backend.open()
    a1 = reg.register("bunny", gguf_uri="s3://b/a.gguf", gguf_sha256="ab" * 32, gguf_bytes=5_000_000_000,
                      dataset_uris=["s3://b/train.jsonl"], metrics={"strict_accuracy": 0.97}, config={"lr": 2e-4})
    a2 = reg.register("bunny", **_passing())
    b1 = reg.register("cat", status="rejected")
    assert (a1.version, a2.version, b1.version) == (1, 2, 1)
    assert (a1.status, b1.status) == ("candidate", "rejected")
    got = reg.get("bunny", 1)
    assert got.gguf_bytes == 5_000_000_000 and got.dataset_uris == ["s3://b/train.jsonl"]
    assert got.metrics == {"strict_accuracy": 0.97} and got.config == {"lr": 2e-4} and got.created_at
    assert got.to_dict() == a1.to_dict()
    assert [m.name for m in reg.list_models()] == ["bunny", "cat"]
    assert [v.version for v in reg.list_versions("bunny")] == [1, 2]
    with pytest.raises(RegistryError, match="unknown field.*colour"):
        reg.register("bunny", colour="brown")
    with pytest.raises(RegistryError, match="'candidate' or 'rejected'"):
        reg.register("bunny", status="promoted")
    with pytest.raises(RegistryError, match="no '@'"):
        reg.register("bunny@2")
    assert issubclass(RegistryError, PipelineError)


def test_resolve_by_version_alias_and_latest(backend):
    reg = backend.open()
    for _ in range(3):
        reg.register("bunny", **_passing())
    reg.promote("bunny", 2, actor="test")
    assert reg.resolve("bunny", 2).version == 2 and reg.resolve("bunny", "3").version == 3
    assert reg.resolve("bunny", "production").version == 2
    assert reg.resolve("bunny", "@production").aliases == ["production"]
    assert reg.resolve("bunny", "latest").version == 3
    with pytest.raises(RegistryNotFoundError, match=r"no alias 'staging' \(aliases: production\)"):
        reg.resolve("bunny", "staging")
    with pytest.raises(RegistryNotFoundError, match=r"no version 9 \(versions: v1..v3\)"):
        reg.resolve("bunny", 9)
    with pytest.raises(RegistryNotFoundError, match=r"unknown model 'dog' \(known: bunny\)"):
        reg.resolve("dog", "production")


def test_promote_rollback_history_and_lineage(backend):
    reg = backend.open()
    reg.register("bunny", **_passing(gguf_uri="file:///a/v1.gguf", gguf_sha256="1" * 64))
    reg.register("bunny", **_passing(
        gguf_uri="s3://b/v2.gguf", gguf_sha256="2" * 64, gguf_bytes=1234, quantization="q8_0",
        adapter_uri="s3://b/adapter", base_model_id="embedded:tiny-llama", base_model_revision="abc123",
        dataset_version="d" * 16, dataset_rows=2000, dataset_uris=["s3://b/raw.jsonl"], benchmark_version="bench-1",
        metrics={"strict_accuracy": 0.97}, dagster_run_id="run-42", code_version="git:deadbeef",
        lineage=[{"kind": "raw_dataset", "uri": "s3://b/raw.jsonl"}]))
    assert reg.promote("bunny", 1, actor="cli", reason="first").status == "promoted"
    v2 = reg.promote("bunny", 2, actor="sensor:promotion_sensor", reason="gate passed")
    assert v2.aliases == ["production"] and v2.status == "promoted"
    v1 = reg.get("bunny", 1)
    assert v1.aliases == ["previous"] and v1.status == "retired"
    assert reg.promote("bunny", 2, actor="cli").version == 2  # already production: a no-op
    assert len(reg.history("bunny")) == 3

    back = reg.rollback("bunny", actor="cli", reason="bad answers")
    assert back.version == 1 and back.status == "promoted" and reg.get("bunny", 2).status == "retired"
    assert reg.resolve("bunny", "previous").version == 2
    note = reg.note("bunny", 2, "server could not load v2: out of memory", actor="server")
    assert note.event == "note" and note.to_version == 2

    rows = [(e.event, e.alias, e.from_version, e.to_version, e.actor, e.reason) for e in reg.history("bunny")]
    assert rows == [
        ("promote", "production", None, 1, "cli", "first"),
        ("promote", "production", 1, 2, "sensor:promotion_sensor", "gate passed"),
        ("promote", "previous", None, 1, "sensor:promotion_sensor", "gate passed"),
        ("rollback", "production", 2, 1, "cli", "bad answers"),
        ("rollback", "previous", 1, 2, "cli", "bad answers"),
        ("note", None, None, 2, "server", "server could not load v2: out of memory"),
    ]

    lineage = reg.lineage("bunny", "previous")
    chain = {step["kind"]: step for step in lineage["chain"]}
    assert [s["kind"] for s in lineage["chain"]] == ["alias", "version", "gguf", "evaluation", "adapter",
                                                     "base_model", "dataset", "benchmark", "raw_dataset"]
    assert lineage["version"] == 2 and lineage["dagster_run_id"] == "run-42"
    assert chain["gguf"] == {"kind": "gguf", "uri": "s3://b/v2.gguf", "sha256": "2" * 64, "bytes": 1234,
                             "quantization": "q8_0"}
    assert chain["evaluation"]["gate_passed"] is True and chain["evaluation"]["metrics"]["strict_accuracy"] == 0.97
    assert chain["base_model"] == {"kind": "base_model", "id": "embedded:tiny-llama", "revision": "abc123"}
    assert chain["dataset"]["rows"] == 2000 and chain["benchmark"]["version"] == "bench-1"
    reg.register("solo", **_passing())
    reg.promote("solo", 1, actor="test")
    with pytest.raises(RegistryError, match="cannot roll back solo: there is no previous production version"):
        reg.rollback("solo", actor="test")


def test_rejected_and_gate_failed_versions_are_refused(backend):
    reg = backend.open()
    reg.register("bunny", **_passing())
    reg.register("bunny", gate_passed=False, gate_reason="q4_k_m strict accuracy 0.912 < 0.95")
    reg.register("bunny")  # no gate result at all
    reg.register("bunny", **_passing(status="rejected"))
    reg.register("bunny", **_passing())
    reg.promote("bunny", 1, actor="test")
    with pytest.raises(RegistryError, match=r"v2: its accuracy gate did not pass \(q4_k_m strict accuracy 0.912"):
        reg.promote("bunny", 2, actor="test")
    with pytest.raises(RegistryError, match="v3: its accuracy gate did not pass .no gate result recorded"):
        reg.promote("bunny", 3, actor="test")
    with pytest.raises(RegistryError, match="v4: it is rejected"):
        reg.promote("bunny", 4, actor="test")
    reg.set_status("bunny", 5, "rejected", actor="cli", reason="toxic answers")
    with pytest.raises(RegistryError, match="v5: it is rejected"):
        reg.promote("bunny", 5, actor="test")
    with pytest.raises(RegistryError, match="is production"):
        reg.set_status("bunny", 1, "retired", actor="cli")
    assert reg.resolve("bunny", "production").version == 1
    assert [e.event for e in reg.history("bunny")] == ["promote", "status"]


def _sha256_matches(uri: str, sha256: str) -> bool:
    """A storage-side verifier, as the caller supplies it: hash the file behind a local path."""
    with open(uri, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest() == sha256


def test_promotion_verifies_the_artifact_sha256(backend, tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF v2 weights")
    reg = backend.open()
    reg.register("bunny", **_passing())
    reg.register("bunny", **_passing(gguf_uri=str(gguf), gguf_sha256=hashlib.sha256(gguf.read_bytes()).hexdigest()))
    reg.promote("bunny", 1, actor="test")
    gguf.write_bytes(b"GGUF v2 weights, overwritten by accident")
    with pytest.raises(RegistryError, match="no longer matches its recorded sha256"):
        reg.promote("bunny", 2, actor="test", verify=_sha256_matches)
    gguf.unlink()
    with pytest.raises(RegistryError, match="could not verify .*FileNotFoundError"):
        reg.promote("bunny", 2, actor="test", verify=_sha256_matches)
    with pytest.raises(RegistryError, match="no GGUF uri and sha256"):
        reg.promote("bunny", 1, actor="test", verify=_sha256_matches)
    assert reg.resolve("bunny", "production").version == 1
    gguf.write_bytes(b"GGUF v2 weights")
    assert reg.promote("bunny", 2, actor="test", verify=_sha256_matches).aliases == ["production"]


def test_compare_and_set_refuses_when_production_moved(backend):
    reg = backend.open()
    for _ in range(3):
        reg.register("bunny", **_passing())
    with pytest.raises(RegistryConflictError, match="production is unset, not the expected v1"):
        reg.promote("bunny", 1, actor="test", expected_current=1)
    reg.promote("bunny", 1, actor="test", expected_current=NO_PRODUCTION)
    reg.promote("bunny", 2, actor="cli", expected_current=1)
    with pytest.raises(RegistryConflictError, match="production is v2, not the expected v1"):
        reg.promote("bunny", 3, actor="sensor", expected_current=1)
    assert reg.resolve("bunny", "production").version == 2 and reg.get("bunny", 3).status == "candidate"


def _run_threads(count: int, work) -> list[BaseException]:
    barrier, errors = threading.Barrier(count), []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            work(i)
        except BaseException as exc:  # collected: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    return errors


def test_racing_promotions_leave_one_production_and_a_consistent_history(backend):
    reg = backend.open()
    reg.register("bunny", **_passing())
    reg.register("bunny", **_passing())
    writers = [backend.open() for _ in range(8)]  # separate engines, like separate processes

    def promote(i: int) -> None:
        for k in range(3):
            writers[i].promote("bunny", 1 + (i + k) % 2, actor=f"thread-{i}", reason="race")

    assert _run_threads(8, promote) == []
    production = reg.resolve("bunny", "production")
    statuses = {v.version: v.status for v in reg.list_versions("bunny")}
    assert sorted(statuses.values()) == ["promoted", "retired"] and statuses[production.version] == "promoted"
    history = reg.history("bunny")
    moves = [e for e in history if e.alias == "production"]
    # One transaction per move: production then previous, each starting where the last one ended.
    assert [e.alias for e in history] == ["production"] + ["production", "previous"] * (len(moves) - 1)
    assert moves[0].from_version is None and moves[-1].to_version == production.version
    for before, after in zip(moves, moves[1:]):
        assert after.from_version == before.to_version != after.to_version
    assert reg.resolve("bunny", "previous").version == moves[-1].from_version


def test_concurrent_first_opens_and_registrations_number_uniquely(backend):
    versions = []

    def register(i: int) -> None:
        versions.append(backend.open().register("fresh", dagster_run_id=f"run-{i}").version)

    assert _run_threads(8, register) == []  # 8 migrations of one empty database at once, then 8 new versions
    assert sorted(versions) == list(range(1, 9))
    assert len({v.dagster_run_id for v in backend.open().list_versions("fresh")}) == 8


def test_migrations_are_idempotent_data_survives_reopen_and_schema_matches_models(backend):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from llm_assets.core.registry.models import Base

    reg = backend.open()
    reg.register("bunny", **_passing(metrics={"strict_accuracy": 0.96}))
    reg.promote("bunny", 1, actor="test")
    reg.close()
    backend.open()
    again = backend.open()
    assert again.resolve("bunny", "production").metrics == {"strict_accuracy": 0.96}
    engine = create_registry_engine(backend.url, timeout_s=10)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": "llm_assets_registry_version"})
            assert context.get_current_heads() == ("0002_serving_defaults",)
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_a_registry_written_by_the_first_schema_upgrades_in_place_keeping_its_versions(backend):
    """A deployed registry at 0001 (no serving column) opened by this version: migrated to head, its versions and
    production alias intact, their serving defaults empty; a new version records its own."""
    from alembic import command
    from alembic.config import Config

    from llm_assets.core.registry.engine import MIGRATIONS_DIR

    engine = create_registry_engine(backend.url, timeout_s=10)
    try:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0001_initial")
            connection.exec_driver_sql("INSERT INTO models (name, created_at) VALUES ('bunny', CURRENT_TIMESTAMP)")
            connection.exec_driver_sql(
                "INSERT INTO model_versions (model_id, version, status, gguf_sha256, created_at) "
                "SELECT id, 1, 'production', 'ab', CURRENT_TIMESTAMP FROM models")
            connection.exec_driver_sql(
                "INSERT INTO aliases (model_id, name, version_id, updated_at) "
                "SELECT model_id, 'production', id, CURRENT_TIMESTAMP FROM model_versions")
            assert "serving" not in {c["name"] for c in sa.inspect(connection).get_columns("model_versions")}
    finally:
        engine.dispose()
    reg = backend.open()
    old = reg.resolve("bunny", "production")
    assert (old.version, old.gguf_sha256, old.serving) == (1, "ab", None)
    new = reg.register("bunny", **_passing(serving={"system_prompt": "Be brief.", "max_tokens": 32}))
    assert reg.get("bunny", new.version).serving == {"system_prompt": "Be brief.", "max_tokens": 32}


def test_error_messages_and_repr_mask_the_password(backend):
    if backend.name == "postgresql":
        good = sa.make_url(backend.url)
        password = good.password
        assert password and password not in repr(backend.open()) and "***" in repr(backend.open())
        bad = good.set(password="Wr0ng-s3cret").render_as_string(hide_password=False)
    else:
        password = "Wr0ng-s3cret"
        bad = f"postgresql://llm:{password}@127.0.0.1:1/nowhere"  # nothing listens on port 1
    with pytest.raises(RegistryError) as caught:
        ModelRegistry(bad, timeout_s=2)
    message = str(caught.value)
    assert "Wr0ng-s3cret" not in message and password not in message and "***" in message
    assert "open failed" in message


def test_a_locked_database_fails_within_the_timeout(backend):
    reg = backend.open(timeout_s=0.5)
    reg.register("bunny", **_passing())
    if backend.name == "sqlite":
        holder = sqlite3.connect(sa.make_url(backend.url).database, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        match = "database is locked"
    else:
        engine = create_registry_engine(backend.url, timeout_s=10)
        holder = engine.connect()
        holder.exec_driver_sql("SELECT id FROM models WHERE name = 'bunny' FOR UPDATE")
        match = "lock timeout"
    try:
        start = time.monotonic()
        with pytest.raises(RegistryError, match=match):
            reg.promote("bunny", 1, actor="test")
        assert time.monotonic() - start < 5
    finally:
        holder.rollback() if backend.name == "sqlite" else (holder.close(), engine.dispose())
    assert reg.promote("bunny", 1, actor="test").aliases == ["production"]  # the lock is gone, all is well


def test_staging_points_at_passing_candidates_only(tmp_path):
    from llm_assets.core.registry import ModelRegistry, RegistryError

    with ModelRegistry(f"sqlite:///{tmp_path}/s.db") as registry:
        registry.register("m", gate_passed=True, benchmark_version="b")
        registry.register("m", status="rejected", gate_passed=False)
        assert registry.stage("m", 1, actor="test").aliases == ["staging"]
        with pytest.raises(RegistryError, match="cannot stage m v2: it is rejected"):
            registry.stage("m", 2, actor="test")
        [event] = [e for e in registry.history("m") if e.event == "stage"]
        assert (event.alias, event.to_version, event.actor) == ("staging", 1, "test")
