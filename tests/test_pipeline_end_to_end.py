"""The whole graph, materialized for real on a tiny config: data to gated GGUF."""

import json

import dagster as dg
import pytest

from llm_assets.assets import PIPELINE_ASSETS, PIPELINE_CHECKS
from llm_assets.core import pet_task
from llm_assets.core.artifacts import LocalArtifactStore, sha256_file
from resources.manifest_io_manager import manifest_key, read_manifest
from tests.pipeline_configs import REPO_MODELS_DIR, materialize, resources_for, tiny_run_config

ASSETS = ["raw_dataset", "eval_benchmark", "base_model", "training_dataset", "lora_adapter", "gguf_model",
          "eval_report"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("artifacts")
    monkeypatch_module.setenv("LLM_ASSETS_CHECKPOINT_DIR", str(root / "checkpoints"))
    training = [a for a in PIPELINE_ASSETS if a.key.to_user_string() != "production_model"]
    # The repository's own bunny model, with its real 95% gate, on a few training steps.
    result = materialize(training + PIPELINE_CHECKS, resources=resources_for(root, models_dir=REPO_MODELS_DIR),
                         run_config=tiny_run_config(), raise_on_error=False, partition_key="pet-brain")
    return result, LocalArtifactStore(root), root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def manifest(run, name):
    """The manifest `name` wrote in the fixture's run."""
    result, store, _ = run
    return read_manifest(store, manifest_key(name, result.run_id, "pet-brain"))


def test_every_asset_materializes_with_location_hash_and_data_version(run):
    result, store, _ = run
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    assert sorted(mats) == sorted(ASSETS)
    for name in ASSETS:
        meta = mats[name].materialization.metadata
        value = manifest(run, name)
        assert meta["manifest_key"].value == manifest_key(name, result.run_id, "pet-brain")
        assert meta["sha256"].value == value["sha256"]
        assert mats[name].materialization.tags["dagster/data_version"] == value["sha256"][:16]
        path = store.local_path(value["uri"], expected_sha256=value["sha256"])  # verifies the bytes
        assert path.exists()


def test_training_data_check_passes_on_generated_data(run):
    result, _, _ = run
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks["training_data_valid"].passed


def test_under_trained_model_fails_the_gate_with_a_reason(run):
    result, _, _ = run
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    gate = checks["accuracy_gate"]
    assert not gate.passed
    assert "no variant passes" in gate.description and "threshold 0.95" in gate.description
    report = manifest(run, "eval_report")
    assert report["gate"]["passed"] is False and "lineage" not in report  # registered_model reads the parents
    # Not registered as a candidate (the step fails), but kept in the audit trail as a rejected version.
    assert "registered_model" not in {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    from llm_assets.core.registry import ModelRegistry

    with ModelRegistry(f"sqlite:///{run[2]}/registry.db") as registry:
        [version] = registry.list_versions("pet-brain")
    assert version.status == "rejected" and version.gate_passed is False
    assert version.gate_reason == gate.description


def test_eval_report_has_metrics_plots_and_baseline(run):
    _, store, _ = run
    value = manifest(run, "eval_report")
    folder = store.local_path(value["uri"])
    report = json.loads((folder / "eval_report.json").read_text())
    assert set(report["variants"]) == {"f32", "q8_0"}
    scores = report["variants"]["q8_0"]["scores"]
    for key in ("strict_accuracy", "per_field_accuracy", "exact_match", "jaccard", "rouge_l", "bleu",
                "invalid_rate", "action_distribution", "confusion"):
        assert key in scores, key
    assert report["baseline"]["scores"]["n"] == 8
    for png in ("loss_curve.png", "per_field_accuracy.png", "confusion.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gguf_tokenizes_and_answers_like_the_hf_model(run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_assets.core.gguf_export import merge_adapter
    from llm_assets.core.llama_runtime import load_llama

    _, store, root = run
    gguf = manifest(run, "gguf_model")
    folder = store.local_path(gguf["uri"])
    for variant in gguf["variants"].values():
        assert sha256_file(folder / variant["file"]) == variant["sha256"]
        assert (folder / f"Modelfile.{variant['quantization']}").exists()
        assert "## " in (folder / f"MODEL_CARD.{variant['quantization']}.md").read_text()
    base = store.local_path(manifest(run, "base_model")["uri"])
    adapter = store.local_path(manifest(run, "lora_adapter")["uri"])
    merged = merge_adapter(base, adapter, root / "merged-for-test")
    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    llm, _ = load_llama(folder / gguf["variants"]["f32"]["file"], n_ctx=256)
    for row in pet_task.generate_training_rows(3, seed=99):
        prompt = tok.apply_chat_template([{"role": "user", "content": row["prompt"]}], tokenize=False,
                                         add_generation_prompt=True)
        hf_ids = tok(prompt)["input_ids"]
        assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == hf_ids
        with torch.no_grad():
            out = model.generate(torch.tensor([hf_ids]), max_new_tokens=12, do_sample=False,
                                 pad_token_id=tok.eos_token_id)
        hf_new = out[0, len(hf_ids):].tolist()
        llm.reset()
        llm.eval(hf_ids)
        gguf_new = []
        for _ in range(len(hf_new)):
            token = int(llm.sample(temp=0.0))
            gguf_new.append(token)
            if token == tok.eos_token_id:
                break
            llm.eval([token])
        assert gguf_new == hf_new[: len(gguf_new)] and len(gguf_new) == len(hf_new)


def test_the_demo_summary_reads_what_this_run_wrote(run):
    from llm_assets.demo import summarize

    result, store, _ = run
    summary = summarize(result, store, 12.34, "pet-brain")
    report, gguf = manifest(run, "eval_report"), manifest(run, "gguf_model")
    assert summary["strict_accuracy"] == round(float(report["gate"]["value"] or 0.0), 4)
    variant = report["gate"]["variant"] or next(iter(gguf["variants"]))
    assert summary["gguf"].endswith(gguf["variants"][variant]["file"]) and summary["seconds"] == 12.3
    assert summary["gguf_bytes"] == gguf["variants"][variant]["bytes"]


def test_a_gguf_found_on_a_disk_says_where_it_came_from(run):
    """Every variant carries its model, dataset version, run and commit in its own metadata (the quantizer keeps
    what the converter wrote), and `llm-assets registry which FILE` finds its registry version by sha256."""
    import subprocess
    import sys

    from llm_assets.core.gguf_convert import read_provenance

    result, store, root = run
    gguf, dataset = manifest(run, "gguf_model"), manifest(run, "training_dataset")
    folder = store.local_path(gguf["uri"])
    for variant in gguf["variants"].values():
        provenance = read_provenance(folder / variant["file"])
        assert provenance["model"] == "pet-brain" and provenance["dataset_version"] == dataset["sha256"][:16]
        assert provenance["dagster_run_id"] == result.run_id and provenance["adapter_sha256"]
    registered = manifest(run, "eval_report")["gate"]["variant"] or next(iter(gguf["variants"]))
    path = folder / gguf["variants"][registered]["file"]
    out = subprocess.run([sys.executable, "-m", "llm_assets.cli", "registry", "which", str(path), "--db",
                          f"sqlite:///{root}/registry.db", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    found = __import__("json").loads(out.stdout)
    assert [(v["model"], v["version"], v["dataset_version"]) for v in found["versions"]] == \
        [("pet-brain", 1, dataset["sha256"][:16])]
