"""GGUF export against the real llama.cpp: tokens, logits and generations must match transformers."""

import contextlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

from llm_assets.core.errors import ConfigError, DataFormatError, PipelineError, UnsupportedArchitectureError
from llm_assets.core.gguf_export import (
    UnsupportedTokenizerError, convert_to_gguf, export_gguf_variants, merge_adapter, quantize_gguf,
    write_modelfile,
)
from llm_assets.core.model_card import render_model_card
from llm_assets.core.pet_task import generate_training_rows
from llm_assets.core.tiny_model import TinyModelSpec, build_tiny_model

SPEC = TinyModelSpec(vocab_size=300, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
                     pretrain_steps=5)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # Tiny models: a second thread only spins, ~30x slower on a busy 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def rows():
    return generate_training_rows(300, seed=0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, rows):
    out = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny_model(out, [r["prompt"] for r in rows], SPEC)
    return out


@pytest.fixture(scope="module")
def variants(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    found = export_gguf_variants(tiny_dir, out, "pet", float_type="f16", quantizations=("q8_0", "q4_k_m"))
    found["f32"] = {"path": str(convert_to_gguf(tiny_dir, out / "pet-f32.gguf", "f32"))}
    return found


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


@contextlib.contextmanager
def llama(path, **kwargs):
    from llama_cpp import GGML_TYPE_F32

    from llm_assets.core.llama_runtime import load_llama

    # An f32 KV cache, so the f32 GGUF can be held to float32 tolerances.
    # One thread: the models are tiny, and spinning threads crawl on a busy 2-core machine.
    llm, _ = load_llama(path, n_ctx=256, n_threads=1, n_threads_batch=1,
                        type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, **kwargs)
    try:
        yield llm
    finally:
        llm.close()


def hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def gguf_logits(path, ids):
    with llama(path, logits_all=True) as llm:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])


def assert_logits_close(path, model, ids, rel=1e-3):
    want, got = hf_logits(model, ids), gguf_logits(path, ids)
    scale = float(np.abs(want).max())
    assert scale > 0.1, "the model's logits are too flat to tell a right conversion from a wrong one"
    assert float(np.abs(got - want).max()) < rel * scale


def hf_greedy(model, ids, n):
    ids = list(ids)
    for _ in range(n):
        ids.append(int(hf_logits(model, ids)[-1].argmax()))
    return ids


def gguf_greedy(path, ids, n):
    ids = list(ids)
    with llama(path, logits_all=True) as llm:
        llm.eval(ids)
        for _ in range(n):
            ids.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval(ids[-1:])
    return ids


def chat_ids(tokenizer, prompt):
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"]


def random_model(out, tokenizer_dir, config, model_cls, seed=0):
    """A random model with our tokenizer; biases and norms random too, so dropping one cannot go unseen."""
    torch.manual_seed(seed)
    model = model_cls(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.5 if name.endswith("bias") else 0.1)
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(tokenizer_dir / name, out / name)
    return model.eval()


# --- the embedded tiny model ---------------------------------------------------

@pytest.mark.parametrize("variant, file_type", [("f32", 0), ("f16", 1), ("q8_0", 7), ("q4_k_m", 15)])
def test_every_variant_loads_in_llama_cpp(variants, hf_tokenizer, variant, file_type):
    from llm_assets.core.llama_runtime import load_llama

    llm, _ = load_llama(variants[variant]["path"], n_ctx=256, n_threads=1)
    try:
        meta = llm.metadata
        assert int(meta["general.file_type"]) == file_type
        assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.pre"] == "qwen2"
        assert meta["tokenizer.ggml.add_bos_token"] == "false"
        assert int(meta["tokenizer.ggml.eos_token_id"]) == hf_tokenizer.eos_token_id
        assert meta["tokenizer.chat_template"] == hf_tokenizer.chat_template
        out = llm("<|user|>\nThe bunny's hunger is 5.\n<|assistant|>\n", max_tokens=8, temperature=0)
        assert out["usage"]["completion_tokens"] >= 1
    finally:
        llm.close()


def test_variant_records(variants):
    assert set(variants) == {"f16", "q8_0", "q4_k_m", "f32"}
    for name in ("f16", "q8_0", "q4_k_m"):
        record = variants[name]
        assert record["quantization"] == name and len(record["sha256"]) == 64
        assert record["bytes"] == os.path.getsize(record["path"])
    assert variants["q4_k_m"]["bytes"] < variants["q8_0"]["bytes"] < variants["f16"]["bytes"]


def test_tokenization_matches_transformers(variants, hf_tokenizer, rows):
    texts = [r["prompt"] for r in rows[:40]] + [r["completion"] for r in rows[:10]]
    texts += [hf_tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]},
                                                {"role": "assistant", "content": r["completion"]}], tokenize=False)
              for r in rows[:10]]
    texts += [
        "<|user|>\n<|assistant|>\n<|endoftext|><|endoftext|>", "<|user|>no newline<|assistant|>{}",
        "0 1 22 333 4444 55555 12.5 -7 1e9 3..3",
        "Ünïcödé: café, naïve, 日本語, Ελληνικά, 🐇🥕🦊, \u200d",
        "   leading and    inner   runs   ", "\n\n\nnewlines\n \n\t\ttabs\r\n", "", " ", "'s 're 'VE 'll",
        "<|user", "|>", "<|unknown|> token",
    ]
    with llama(variants["f16"]["path"], vocab_only=True) as llm:
        for text in texts:
            want = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == want, text
            if text and "<|" not in text:  # plain text comes back byte for byte
                assert llm.detokenize(want) == text.encode(), text


def test_f32_logits_and_greedy_generation_match_transformers(variants, tiny_dir, hf_tokenizer, rows):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    ids = chat_ids(hf_tokenizer, rows[0]["prompt"])
    assert_logits_close(variants["f32"]["path"], model, ids)
    assert gguf_greedy(variants["f32"]["path"], ids, 20) == hf_greedy(model, ids, 20)
    # f16 weights: close, not exact.
    assert_logits_close(variants["f16"]["path"], model, ids, rel=2e-2)


# --- other Llama-family architectures ---------------------------------------------

def _qwen2(tiny_dir, out):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    # Tied embeddings, attention biases and more embedding rows than tokens, like Qwen2.5-0.5B.
    config = Qwen2Config(vocab_size=304, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                         eos_token_id=0, bos_token_id=0)
    return random_model(out, tiny_dir, config, Qwen2ForCausalLM)


def _mistral(tiny_dir, out):
    from transformers import MistralConfig, MistralForCausalLM

    # Grouped-query attention and a head_dim that is not hidden_size / heads.
    config = MistralConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=128,
                           rope_theta=50_000.0, sliding_window=None, eos_token_id=0, bos_token_id=0)
    return random_model(out, tiny_dir, config, MistralForCausalLM)


def _llama32(tiny_dir, out):
    from transformers import LlamaConfig, LlamaForCausalLM

    # Llama 3.2 style: GQA, tied embeddings, llama3 rope scaling (a rope_freqs tensor in GGUF).
    rope = {"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=128,
                         rope_parameters=rope, tie_word_embeddings=True, eos_token_id=0, bos_token_id=0)
    return random_model(out, tiny_dir, config, LlamaForCausalLM)


@pytest.mark.parametrize("build", [_qwen2, _mistral, _llama32], ids=["qwen2", "mistral-gqa", "llama3-rope"])
def test_other_architectures_match_transformers(build, tiny_dir, hf_tokenizer, rows, tmp_path):
    model = build(tiny_dir, tmp_path / "hf")
    gguf_path = convert_to_gguf(tmp_path / "hf", tmp_path / "model.gguf", "f32")
    ids = chat_ids(hf_tokenizer, rows[1]["prompt"])[:60]
    assert_logits_close(gguf_path, model, ids)
    assert gguf_greedy(gguf_path, ids, 10) == hf_greedy(model, ids, 10)


def test_unsupported_architecture_is_named(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=300, n_embd=32, n_layer=1, n_head=2, n_positions=64)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UnsupportedArchitectureError, match=r"GPT2LMHeadModel.*LlamaForCausalLM.*Qwen2ForCausalLM"):
        convert_to_gguf(tmp_path / "gpt2", tmp_path / "gpt2.gguf")
    assert not (tmp_path / "gpt2.gguf").exists()


def test_unknown_pre_tokenizer_is_refused(tiny_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_dir, model_dir)
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{N}{1,2}|\p{L}+|\s+|[^\s\p{L}\p{N}]+"
    (model_dir / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(UnsupportedTokenizerError, match="pre-tokenizer regex"):
        convert_to_gguf(model_dir, tmp_path / "out.gguf")
    # A sentencepiece-only folder (Mistral / Llama 2 style) is refused by name too.
    (model_dir / "tokenizer.json").unlink()
    (model_dir / "tokenizer.model").write_bytes(b"\0")
    with pytest.raises(UnsupportedTokenizerError, match="sentencepiece"):
        convert_to_gguf(model_dir, tmp_path / "out.gguf")
    with pytest.raises(ConfigError, match="outtype"):
        convert_to_gguf(model_dir, tmp_path / "out.gguf", "bf16")
    assert list(tmp_path.glob("*.gguf")) == [] and list(tmp_path.glob(".*partial")) == []


def test_tokenizer_that_adds_bos(tiny_dir, tmp_path):
    """Llama 3 style: transformers prepends BOS, so llama.cpp must too (add_bos_token true)."""
    from transformers import AutoTokenizer

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_dir, model_dir)
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    bos, a, b = ({"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}})
    tok["post_processor"] = {
        "type": "TemplateProcessing", "single": [bos, a], "pair": [bos, a, bos, b],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}},
    }
    (model_dir / "tokenizer.json").write_text(json.dumps(tok))
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    (model_dir / "tokenizer_config.json").write_text(json.dumps({**config, "bos_token": "<|endoftext|>"}))
    hf = AutoTokenizer.from_pretrained(model_dir)
    path = convert_to_gguf(model_dir, tmp_path / "bos.gguf")
    with llama(path, vocab_only=True) as llm:
        assert llm.metadata["tokenizer.ggml.add_bos_token"] == "true"
        for text in ("hunger 45", "<|user|>\nhi\n<|assistant|>\n"):
            assert hf(text)["input_ids"][0] == 0
            assert llm.tokenize(text.encode(), add_bos=True, special=True) == hf(text)["input_ids"]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_checkpoint_leaves_nothing_behind(tiny_dir, tmp_path, damage):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_dir, model_dir)
    weights = model_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"\xff" * 64 if damage == "garbage" else data[: len(data) // 2])
    out = tmp_path / "out" / "model.gguf"
    with pytest.raises(DataFormatError, match="model.safetensors"):
        convert_to_gguf(model_dir, out, "f16")
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_failure_after_the_file_is_written_leaves_nothing(tiny_dir, tmp_path):
    """An added token that strips whitespace (llama.cpp cannot) only shows when the written file is tokenized."""
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_dir, model_dir)
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    tok["added_tokens"][0]["lstrip"] = True
    (model_dir / "tokenizer.json").write_text(json.dumps(tok))
    out = tmp_path / "out" / "model.gguf"
    with pytest.raises(UnsupportedTokenizerError, match=r"would tokenize differently.*transformers \[0, 1, 2\]"):
        convert_to_gguf(model_dir, out, "f16")
    assert list(out.parent.iterdir()) == []


# --- LoRA merge --------------------------------------------------------------------

def test_merged_lora_equals_base_plus_adapter(tiny_dir, hf_tokenizer, rows, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    load = lambda path: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    lora = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    get_peft_model(load(tiny_dir), lora).save_pretrained(tmp_path / "adapter")

    merged_dir = merge_adapter(tiny_dir, tmp_path / "adapter", tmp_path / "merged")
    ids = chat_ids(hf_tokenizer, rows[2]["prompt"])
    with_adapter = hf_logits(PeftModel.from_pretrained(load(tiny_dir), tmp_path / "adapter").eval(), ids)
    merged = load(merged_dir)
    assert np.abs(hf_logits(merged, ids) - with_adapter).max() < 1e-4
    assert np.abs(hf_logits(load(tiny_dir), ids) - with_adapter).max() > 1e-2, "the adapter changed nothing"
    assert (merged_dir / "tokenizer.json").read_bytes() == (tiny_dir / "tokenizer.json").read_bytes()
    assert not list(merged_dir.glob("adapter_*"))
    # The merged checkpoint converts like any other.
    assert_logits_close(convert_to_gguf(merged_dir, tmp_path / "merged.gguf", "f32"), merged, ids)


def test_full_model_in_place_of_adapter_is_copied(tiny_dir, tmp_path):
    out = merge_adapter(tmp_path / "unused-base", tiny_dir, tmp_path / "merged")
    assert (out / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()
    with pytest.raises(DataFormatError, match="adapter_config.json"):
        merge_adapter(tiny_dir, tmp_path / "empty", tmp_path / "merged2")


# --- quantization, Modelfile, model card ---------------------------------------------

def test_unknown_quantization_is_a_config_error(variants, tiny_dir, tmp_path):
    with pytest.raises(ConfigError, match="q3_xyz"):
        quantize_gguf(variants["f16"]["path"], tmp_path / "x.gguf", "q3_xyz")
    with pytest.raises(ConfigError, match="q9_9"):
        export_gguf_variants(tiny_dir, tmp_path / "out", "pet", quantizations=("q8_0", "q9_9"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.gguf").exists()


def test_failed_quantization_leaves_nothing(tmp_path):
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(PipelineError, match="could not quantize"):
        quantize_gguf(tmp_path / "broken.gguf", tmp_path / "out.gguf", "q8_0")
    assert [p.name for p in tmp_path.iterdir()] == ["broken.gguf"]


@pytest.mark.parametrize("quantization", ["q4_0", "q5_k_m", "q6_k"])
def test_other_quantizations_load(variants, tmp_path, quantization):
    path = quantize_gguf(variants["f16"]["path"], tmp_path / f"pet-{quantization}.gguf", quantization, threads=1)
    with llama(path) as llm:
        assert llm.tokenize(b"<|user|>", add_bos=False, special=True) == [1]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_modelfile(variants, tmp_path):
    gguf_path = tmp_path / "pet-q4_k_m.gguf"
    shutil.copy(variants["q4_k_m"]["path"], gguf_path)
    text = write_modelfile(gguf_path, tmp_path / "Modelfile").read_text()
    assert text.splitlines()[0] == "FROM ./pet-q4_k_m.gguf"
    assert 'TEMPLATE """<|user|>\n{{ .Prompt }}\n<|assistant|>\n"""' in text
    assert 'PARAMETER stop "<|endoftext|>"' in text and "PARAMETER temperature 0\n" in text
    elsewhere = write_modelfile(gguf_path, tmp_path / "sub" / "Modelfile", "chatml").read_text()
    assert elsewhere.startswith(f"FROM {gguf_path.resolve()}\n") and '"<|im_end|>"' in elsewhere
    with pytest.raises(ConfigError, match="chat_format"):
        write_modelfile(gguf_path, tmp_path / "M2", "vicuna")


def test_model_card(variants):
    card = render_model_card({
        "name": "pet-bunny",
        "base_model": {"id": "embedded:tiny-llama", "revision": "abc123"},
        "data": {"version": "d41d8c", "rows": {"train": 2700, "validation": 300}},
        "metrics": {"json_valid_rate": 0.987, "by_variant": {"q4_k_m": 0.91}},
        "config": {"lora": {"r": 16, "alpha": 32}, "learning_rate": 2e-4},
        "variants": {k: v for k, v in variants.items() if k != "f32"},
    })
    assert "# pet-bunny" in card and "`embedded:tiny-llama`" in card and "`abc123`" in card
    assert "`d41d8c`" in card and "| Rows (train) | 2,700 |" in card
    assert "| json_valid_rate | 0.987 |" in card and "| by_variant.q4_k_m | 0.91 |" in card
    assert "learning_rate: 0.0002" in card and "  r: 16" in card
    for record in (variants["f16"], variants["q4_k_m"]):
        assert record["sha256"] in card
    assert 'load_llama("pet-q4_k_m.gguf", n_ctx=512)' in card and "llama-completion -m pet-q4_k_m.gguf" in card
    assert "ollama create pet-bunny -f Modelfile" in card
    assert render_model_card({"name": "bare"}).count("unknown") == 3
    router = render_model_card({"name": "router", "example_prompt": "my card was charged twice",
                                "system_prompt": "Route the ticket."})
    assert ('messages=[{"role": "system", "content": "Route the ticket."}, '
            '{"role": "user", "content": "my card was charged twice"}]') in router and "bunny" not in router
