"""`llm-assets registry ...` against a real SQLite registry filled through the API."""

from __future__ import annotations

import json

import pytest

from llm_assets.cli import build_parser, main
from llm_assets.core.registry import ModelRegistry


@pytest.fixture
def db(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with ModelRegistry(url) as reg:
        reg.register("bunny", gate_passed=True, gate_reason="q8_0 strict accuracy 0.970 >= 0.95",
                     gguf_uri="s3://models/bunny/v1.gguf", gguf_sha256="1" * 64, gguf_bytes=1_600_000,
                     quantization="q8_0", metrics={"strict_accuracy": 0.97}, base_model_id="embedded:tiny-llama",
                     base_model_revision="rev-1", dataset_version="data-abc", dataset_rows=2000,
                     benchmark_version="bench-1", dagster_run_id="run-1")
        reg.register("bunny", gate_passed=True, gguf_uri="s3://models/bunny/v2.gguf", gguf_sha256="2" * 64,
                     metrics={"strict_accuracy": 0.98}, dagster_run_id="run-2")
        reg.register("bunny", gate_passed=False, gate_reason="q4_k_m strict accuracy 0.912 < 0.95")
        reg.register("cat")
        reg.promote("bunny", 1, actor="sensor:promotion_sensor", reason="gate passed")
    return url


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_prints_an_aligned_table_and_json(db, capsys):
    code, out, _ = run(capsys, "registry", "list", "--db", db)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["MODEL", "VERSIONS", "LATEST", "ALIASES", "CREATED"]
    assert lines[1].split()[:4] == ["bunny", "3", "v3", "production=v1"]
    assert lines[0].index("VERSIONS") == lines[1].index("3") == lines[2].index("1")  # columns line up
    code, out, _ = run(capsys, "registry", "--db", db, "--json", "list")  # options before the action work too
    assert code == 0 and [m["name"] for m in json.loads(out)] == ["bunny", "cat"]


def test_show_a_model_and_one_version(db, capsys):
    code, out, _ = run(capsys, "registry", "show", "bunny", "--db", db)
    assert code == 0
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [r[:4] for r in rows] == [["v1", "promoted", "production", "passed"], ["v2", "candidate", "-", "passed"],
                                     ["v3", "candidate", "-", "failed"]]
    code, out, _ = run(capsys, "registry", "show", "bunny@production", "--db", db)
    assert code == 0 and "gguf_uri             s3://models/bunny/v1.gguf" in out
    code, out, _ = run(capsys, "registry", "show", "bunny@2", "--db", db, "--json")
    assert code == 0 and json.loads(out)["gguf_sha256"] == "2" * 64


def test_lineage_follows_the_chain(db, capsys):
    code, out, _ = run(capsys, "registry", "lineage", "bunny@production", "--db", db)
    assert code == 0 and out.startswith("bunny@production -> v1 (promoted)")
    assert "base_model  id=embedded:tiny-llama, revision=rev-1" in out
    assert "dataset     version=data-abc, rows=2000" in out
    code, out, _ = run(capsys, "registry", "lineage", "bunny", "--db", db, "--json")  # production by default
    lineage = json.loads(out)
    assert lineage["version"] == 1 and lineage["dagster_run_id"] == "run-1"
    assert [s["kind"] for s in lineage["chain"]][:3] == ["alias", "version", "gguf"]


def test_promote_rollback_and_history(db, capsys):
    code, out, _ = run(capsys, "registry", "promote", "bunny", "2", "--reason", "better on ties", "--db", db)
    assert code == 0 and out.strip() == "bunny: production v1 -> v2 (previous: v1)"
    code, out, _ = run(capsys, "registry", "promote", "bunny", "@production", "--db", db)
    assert code == 0 and "already production" in out
    code, out, _ = run(capsys, "registry", "rollback", "bunny", "--reason", "regression", "--db", db)
    assert code == 0 and out.strip() == "bunny: rolled back production v2 -> v1 (previous: v2)"
    code, out, _ = run(capsys, "registry", "history", "bunny", "--db", db)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["#", "AT", "EVENT", "ALIAS", "FROM", "TO", "ACTOR", "REASON"]
    assert len(lines) == 6 and lines[2].split()[3:8] == ["promote", "production", "v1", "v2", "cli"]
    assert lines[2].endswith("better on ties") and lines[4].split()[3:7] == ["rollback", "production", "v2", "v1"]
    code, out, _ = run(capsys, "registry", "history", "bunny", "--db", db, "--json")
    events = json.loads(out)
    assert [(e["event"], e["alias"], e["actor"]) for e in events][0] == (
        "promote", "production", "sensor:promotion_sensor")


def test_refused_promotions_exit_1_with_the_reason(db, capsys):
    code, out, err = run(capsys, "registry", "promote", "bunny", "3", "--db", db)
    assert code == 1 and out == "" and "accuracy gate did not pass (q4_k_m strict accuracy 0.912 < 0.95)" in err
    code, _, err = run(capsys, "registry", "promote", "bunny", "2", "--expect-current", "2", "--db", db)
    assert code == 1 and "production is v1, not the expected v2" in err
    code, _, err = run(capsys, "registry", "rollback", "bunny", "--db", db)
    assert code == 1 and "no previous production version" in err


@pytest.mark.parametrize("argv, message", [
    (["show", "dog"], "unknown model 'dog' (known: bunny, cat)"),
    (["show", "bunny@staging"], "model 'bunny' has no alias 'staging' (aliases: production)"),
    (["show", "bunny@9"], "model 'bunny' has no version 9 (versions: v1..v3)"),
    (["lineage", "cat@production"], "model 'cat' has no alias 'production' (aliases: none)"),
    (["history", "dog"], "unknown model 'dog'"),
    (["promote", "dog", "1"], "unknown model 'dog'"),
    (["show", "bunny@"], "want MODEL, MODEL@VERSION or MODEL@ALIAS"),
])
def test_unknown_names_exit_2_with_a_message(db, capsys, argv, message):
    code, out, err = run(capsys, "registry", *argv, "--db", db)
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_parser_is_open_for_more_subcommands():
    parser = build_parser()
    assert parser.prog == "llm-assets"
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["registry"])  # an action is required
    assert exit_.value.code == 2
