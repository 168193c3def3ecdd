"""GGUF evaluation for real: a tiny model built here, converted, run by llama.cpp."""

import shutil

import pytest

from llm_assets.core.errors import ConfigError
from llm_assets.core.evaluation import GgufGenerator, evaluate_gguf, evaluate_variants, generate_gguf
from llm_assets.core.isolated import ChildCrashedError
from llm_assets.core.llama_runtime import settings_for_this_machine
from llm_assets.core.gguf_export import convert_to_gguf
from llm_assets.core.pet_benchmark import generate_benchmark
from llm_assets.core.pet_task import generate_training_rows
from llm_assets.core.tiny_model import EOS, TinyModelSpec, build_tiny_model

SPEC = TinyModelSpec(vocab_size=300, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
                     pretrain_steps=5)
MAX_TOKENS = 96  # the small spec's tokenizer needs up to ~73 tokens for an expected answer


def chat(prompt: str) -> str:
    return f"<|user|>\n{prompt}\n<|assistant|>\n"


@pytest.fixture(scope="module")
def benchmark():
    rows = generate_benchmark(n_per_category=2)
    return {"prompts": [chat(r["prompt"]) for r in rows], "references": [r["completion"] for r in rows],
            "categories": [r["category"] for r in rows]}


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory):
    """The untrained tiny model, and a twin whose final norm is zero: its logits are all 0, so
    greedy decoding picks token 0, the end-of-text token, at once."""
    root = tmp_path_factory.mktemp("eval")
    prompts = [r["prompt"] for r in generate_training_rows(300, seed=3)]
    build_tiny_model(root / "hf", prompts, SPEC)
    shutil.copytree(root / "hf", root / "mute_hf")
    from safetensors.torch import load_file, save_file

    weights = load_file(root / "mute_hf" / "model.safetensors")
    weights["model.norm.weight"].zero_()
    save_file(weights, root / "mute_hf" / "model.safetensors", metadata={"format": "pt"})
    paths = {"model": root / "model.gguf", "mute": root / "mute.gguf"}
    convert_to_gguf(root / "hf", paths["model"], outtype="f32")
    convert_to_gguf(root / "mute_hf", paths["mute"], outtype="f32")
    return paths


def test_special_tokens_are_parsed_in_prompts(ggufs):
    with GgufGenerator(ggufs["model"]) as generator:
        assert generator.tokenize("<|user|>") == [1]
        assert generator.tokenize(EOS) == [0]
        assert generator.tokenize(chat("hi"))[0] == 1
        assert generator.n_ctx == SPEC.max_positions  # clamped to the training context


def test_generate_gguf_is_greedy_and_bounded(ggufs, benchmark):
    prompts = benchmark["prompts"]
    first = generate_gguf(ggufs["model"], prompts, max_tokens=12, batch_size=4)
    assert len(first) == len(prompts)
    for out in first:
        assert set(out) == {"text", "seconds", "completion_tokens"}
        assert isinstance(out["text"], str) and out["seconds"] > 0
        assert 0 <= out["completion_tokens"] <= 12
    assert max(o["completion_tokens"] for o in first) == 12  # an untrained model rambles until cut off
    # Greedy is deterministic, and batching does not change what a prompt gets.
    assert generate_gguf(ggufs["model"], prompts, max_tokens=12, batch_size=4) == [
        {**o, "seconds": pytest.approx(o["seconds"], abs=60)} for o in first]
    one_by_one = generate_gguf(ggufs["model"], prompts[:4], max_tokens=12, batch_size=1)
    assert [o["text"] for o in one_by_one] == [o["text"] for o in first[:4]]


def test_generation_stops_at_end_of_text(ggufs, benchmark):
    outputs = generate_gguf(ggufs["mute"], benchmark["prompts"][:3], max_tokens=20)
    assert [(o["text"], o["completion_tokens"]) for o in outputs] == [("", 0)] * 3


def test_evaluate_variants_report(ggufs, benchmark, tmp_path):
    # Two variants and a baseline: the file copy stands in for a second quantization.
    copy = shutil.copy(ggufs["model"], tmp_path / "copy.gguf")
    progress = []
    report = evaluate_variants({"f32": ggufs["model"], "copy": copy}, ggufs["mute"], **benchmark,
                               max_tokens=MAX_TOKENS, threshold=0.95,
                               on_progress=lambda *a: progress.append(a), batch_size=4)
    n = len(benchmark["prompts"])
    assert report["n_examples"] == n and set(report["variants"]) == {"f32", "copy"}
    entry = report["variants"]["f32"]
    assert entry["file_size_bytes"] == ggufs["model"].stat().st_size
    assert entry["scores"]["n"] == n and entry["scores"]["strict_accuracy"] == 0.0
    assert set(entry["scores"]["per_category"]) == set(benchmark["categories"])
    assert entry["latency"]["n"] == 8 and 0 < entry["latency"]["mean_s"] <= entry["latency"]["p95_s"]
    assert entry["throughput"]["examples_per_s"] > 0 and entry["throughput"]["batch_size"] == 4
    assert 60 < entry["longest_answer_tokens"] <= MAX_TOKENS
    assert entry["scores"] == report["variants"]["copy"]["scores"]  # same weights, same answers
    assert len(entry["samples"]) == 3
    baseline = report["baseline"]["scores"]
    assert baseline["invalid_rate"] == 1.0 and baseline["strict_accuracy"] == 0.0
    assert entry["improvement"]["strict_accuracy"] == 0.0
    assert entry["improvement"]["invalid_rate"] == entry["scores"]["invalid_rate"] - 1.0
    gate = report["gate"]
    assert gate["passed"] is False and gate["threshold"] == 0.95
    assert gate["reason"].startswith("no variant passes (threshold 0.95, baseline 0.000): f32 0.000")
    assert progress[-1] == ("baseline", n, n)
    assert ("f32", 4, n) in progress
    # Every file was loaded through the one loader, with the settings it decides for this machine.
    settings = settings_for_this_machine("auto").to_dict()
    assert [e["llama_settings"] for e in (entry, report["variants"]["copy"], report["baseline"])] == [settings] * 3


def segfault_in_q4(on_progress, name, gguf_path, **kwargs):
    """evaluate_one for the crash test: the real evaluation, except that variant q4 loads its GGUF, answers
    two prompts and then dies of a real SIGSEGV (a read of address 0), as llama.cpp's AMX kernels do."""
    if name == "q4":
        import ctypes

        with GgufGenerator(gguf_path) as generator:
            generator.generate(kwargs["prompts"][:2], max_tokens=4)
            on_progress(name, 2, len(kwargs["prompts"]))
            ctypes.string_at(0)
    return evaluate_gguf(name=name, gguf_path=gguf_path, on_progress=on_progress, **kwargs)


def test_a_llama_cpp_crash_in_evaluation_is_an_error_naming_the_variant(ggufs, benchmark, tmp_path):
    q4 = shutil.copy(ggufs["model"], tmp_path / "pet-q4.gguf")
    progress = []
    with pytest.raises(ChildCrashedError) as caught:
        evaluate_variants({"f32": ggufs["model"], "q4": q4}, None, benchmark["prompts"][:4],
                          benchmark["references"][:4], max_tokens=MAX_TOKENS, evaluate_one=segfault_in_q4,
                          on_progress=lambda *a: progress.append(a))
    message = str(caught.value)
    assert "evaluating q4" in message and "pet-q4.gguf" in message and "killed by SIGSEGV" in message
    assert "use_extra_bufts=" in message and "llm-assets doctor" in message
    assert caught.value.exitcode == -11
    assert ("f32", 4, 4) in progress and ("q4", 2, 4) in progress  # f32 finished; q4 died after its first batch


def test_errors_inside_the_evaluation_process_arrive_intact(ggufs, benchmark):
    with pytest.raises(ConfigError) as caught:
        evaluate_variants({"f32": ggufs["model"]}, None, benchmark["prompts"][:2], benchmark["references"][:2],
                          max_tokens=16)
    assert caught.value.field == "max_tokens" and "cut off" in str(caught.value)


def test_named_deployable_variant_fails_with_its_reason(ggufs, benchmark):
    report = evaluate_variants({"f32": ggufs["model"]}, None, benchmark["prompts"][:4],
                               benchmark["references"][:4], max_tokens=MAX_TOKENS, deployable="f32",
                               threshold=0.5)
    assert report["baseline"] is None and "improvement" not in report["variants"]["f32"]
    assert report["gate"]["reason"] == "f32 strict accuracy 0.000 < 0.5"


def test_config_errors_come_before_any_generation(ggufs, benchmark, tmp_path):
    missing = tmp_path / "missing.gguf"
    args = (benchmark["prompts"], benchmark["references"])
    with pytest.raises(ConfigError, match="deployable"):
        evaluate_variants({"f32": missing}, None, *args, max_tokens=MAX_TOKENS, deployable="q4_k_m")
    with pytest.raises(ConfigError, match="threshold"):
        evaluate_variants({"f32": missing}, None, *args, max_tokens=MAX_TOKENS, threshold=95)
    with pytest.raises(ConfigError, match="max_tokens=16.*cut off"):
        evaluate_variants({"f32": ggufs["model"]}, None, *args, max_tokens=16)
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        generate_gguf(missing, args[0])
    with pytest.raises(ConfigError, match="n_ctx"):
        generate_gguf(ggufs["model"], [chat("hunger 50, " * 200)])


def test_llama_repack_setting_reaches_every_evaluation_process(ggufs, benchmark):
    report = evaluate_variants({"f32": ggufs["model"]}, ggufs["mute"], benchmark["prompts"][:2],
                               benchmark["references"][:2], max_tokens=MAX_TOKENS, repack="off")
    for entry in (report["variants"]["f32"], report["baseline"]):
        assert entry["llama_settings"] == {"use_extra_bufts": False,
                                           "reason": "llama_repack=off: repacked layouts turned off"}
    with pytest.raises(ConfigError, match="llama_repack='fast'"):
        evaluate_variants({"f32": ggufs["model"]}, None, benchmark["prompts"][:2], benchmark["references"][:2],
                          max_tokens=MAX_TOKENS, repack="fast")


def test_eval_config_offers_the_llama_repack_setting():
    from pydantic import ValidationError

    from llm_assets.config import CONFIG_BY_ASSET

    EvalConfig = CONFIG_BY_ASSET["eval_report"]
    assert EvalConfig().llama_repack == "auto" and EvalConfig(llama_repack="off").llama_repack == "off"
    assert "AMX" in EvalConfig.model_fields["llama_repack"].description
    with pytest.raises(ValidationError, match="llama_repack"):
        EvalConfig(llama_repack="fast")
