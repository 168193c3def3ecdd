"""Hugging Face checkpoint -> GGUF for the Llama family, written with gguf-py.

Follows llama.cpp's convert_hf_to_gguf.py for three architectures:
LlamaForCausalLM and MistralForCausalLM (GGUF arch "llama": q/k weights are
permuted because HF rotates halves while llama.cpp rotates pairs) and
Qwen2ForCausalLM (arch "qwen2": NEOX rope, attention biases, no permute).

The vocabulary must tokenize in llama.cpp exactly as in transformers, so only
byte-level BPE tokenizers whose pre-tokenizer llama.cpp reimplements are
accepted, and the written file is checked by tokenizing sample texts with
llama.cpp before it is moved into place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from llm_assets.core.atomic import atomic_path
from llm_assets.core.errors import ConfigError, DataFormatError, UnsupportedArchitectureError

log = logging.getLogger(__name__)

# HF architecture -> GGUF architecture, and whether q/k need llama.cpp's permute.
ARCHITECTURES = {
    "LlamaForCausalLM": ("llama", True),
    "MistralForCausalLM": ("llama", True),
    "Qwen2ForCausalLM": ("qwen2", False),
}
FLOAT_TYPES = ("f32", "f16")

# Pre-tokenizer regexes (as written in tokenizer.json) that llama.cpp
# reimplements, with its tokenizer.ggml.pre name and the BPE `ignore_merges`
# setting llama.cpp applies for that type.
PRE_TOKENIZERS = {
    # Qwen2 (and the embedded tiny model): single digits.
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": ("qwen2", False),
    # Llama 3: digits in groups of up to three.
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": ("llama-bpe", True),
}

# Texts the written vocabulary must tokenize exactly as transformers does.
# The first is llama.cpp's own pre-tokenizer fingerprint text.
CHECK_TEXTS = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated)"
    " ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作"
    "1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told"
    " he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "The bunny's hunger is 45, energy is 7 and it sees a carrot (12 m away).\n\n",
    '{"action":"eat","target":"carrot","hunger":100}  trailing   spaces\t\ttabs\r\n',
)


class UnsupportedTokenizerError(UnsupportedArchitectureError):
    """The tokenizer would tokenize differently in llama.cpp, so no GGUF is written."""


@dataclass
class _PlannedTensor:
    name: str  # GGUF name
    shape: tuple[int, ...]
    dtype: str  # "float32" or "float16"
    load: Callable[[], "object"]  # returns a float32 torch tensor, already transformed


def convert_to_gguf(model_dir: str | Path, out_path: str | Path, outtype: str = "f16",
                    verify_tokenizer: bool = True) -> Path:
    """Convert a saved HF causal LM folder to one GGUF file at `out_path` (atomic).

    outtype "f32" keeps every tensor in float32; "f16" stores matrices in
    float16 and keeps 1-D tensors (norms, biases) in float32 as llama.cpp does.
    """
    import gguf
    import numpy as np

    if outtype not in FLOAT_TYPES:
        raise ConfigError("outtype", outtype, f"must be one of {', '.join(FLOAT_TYPES)}")
    model_dir = Path(model_dir)
    config = _read_config(model_dir)
    arch, permute = _architecture(config, model_dir)
    tokenizer = _load_tokenizer(model_dir)
    tensors = _plan_tensors(model_dir, config, arch, permute, outtype)
    with atomic_path(out_path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        try:
            writer.add_name(model_dir.name)
            writer.add_file_type(gguf.LlamaFileType.ALL_F32 if outtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
            _add_hparams(writer, config)
            _add_vocab(writer, model_dir, config, tokenizer)
            for t in tensors:
                dtype = np.dtype(t.dtype)
                writer.add_tensor_info(t.name, t.shape, dtype, math.prod(t.shape) * dtype.itemsize)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            # One tensor in memory at a time, so multi-GB checkpoints fit in RAM.
            for t in tensors:
                data = t.load().numpy().astype(t.dtype)
                if data.shape != t.shape:
                    raise DataFormatError(model_dir, None, f"{t.name}: shape {data.shape}, planned {t.shape}")
                writer.write_tensor_data(data)
        finally:
            writer.close()
        if verify_tokenizer:
            _verify_tokenization(tmp, tokenizer, model_dir)
    log.info("wrote %s (%s, %d tensors)", out_path, outtype, len(tensors))
    return Path(out_path)


# --- Model -------------------------------------------------------------------

def _read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise DataFormatError(path, None, "no config.json: not a saved Hugging Face model folder")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(path, e.lineno, f"invalid JSON: {e.msg}") from e


def _architecture(config: dict, model_dir: Path) -> tuple[str, bool]:
    names = config.get("architectures") or [config.get("model_type", "unknown")]
    hf_arch = names[0]
    if hf_arch not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"{model_dir}: architecture {hf_arch!r} cannot be converted to GGUF; "
            f"supported: {', '.join(ARCHITECTURES)}")
    if config.get("hidden_act", "silu") != "silu":
        raise UnsupportedArchitectureError(
            f"{model_dir}: hidden_act {config['hidden_act']!r} is not supported (only 'silu')")
    if config.get("mlp_bias"):
        raise UnsupportedArchitectureError(f"{model_dir}: mlp_bias=true is not supported by llama.cpp's {hf_arch}")
    return ARCHITECTURES[hf_arch]


def _rope(config: dict) -> dict:
    # transformers >= 5 writes rope_parameters; older versions rope_theta + rope_scaling.
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    params["rope_type"] = params.get("rope_type", params.get("type")) or "default"
    return params


def _head_dim(config: dict) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def _add_hparams(writer, config: dict) -> None:
    import gguf

    n_head = config["num_attention_heads"]
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads") or n_head)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(_head_dim(config))
    writer.add_key_length(_head_dim(config))
    writer.add_value_length(_head_dim(config))
    rope = _rope(config)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    kind = rope["rope_type"]
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif kind not in ("default", "llama3"):  # llama3 is a rope_freqs tensor, see _plan_tensors
        raise UnsupportedArchitectureError(f"rope type {kind!r} is not supported (default, linear, llama3 are)")
    if config.get("sliding_window") and config.get("use_sliding_window", True):
        log.warning("sliding_window=%s is ignored: llama.cpp's %s attends to the whole context",
                    config["sliding_window"], config.get("model_type"))


def _llama3_rope_factors(config: dict) -> "object":
    """Per-frequency divisors for Llama 3.x rope scaling (llama.cpp's rope_freqs)."""
    import torch

    rope, dim = _rope(config), _head_dim(config)
    freqs = 1.0 / (float(rope["rope_theta"]) ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_ctx = rope.get("original_max_position_embeddings", 8192)
    out = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(out, dtype=torch.float32)


def _permute(w, n_head: int):
    """HF's rotate-half q/k layout -> llama.cpp's interleaved pairs (as convert_hf_to_gguf.py)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _safetensors_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [model_dir / f for f in sorted(set(weight_map.values()))]
    if (model_dir / "model.safetensors").is_file():
        return [model_dir / "model.safetensors"]
    raise DataFormatError(model_dir, None, "no model.safetensors: save the model with safe_serialization=True "
                          "(PyTorch .bin checkpoints are not read)")


def _plan_tensors(model_dir: Path, config: dict, arch: str, permute: bool, outtype: str) -> list[_PlannedTensor]:
    import gguf
    from safetensors import safe_open

    n_layers, n_head = config["num_hidden_layers"], config["num_attention_heads"]
    n_kv_head = config.get("num_key_value_heads") or n_head
    tied = bool(config.get("tie_word_embeddings", False))
    gguf_arch = gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.QWEN2
    name_map = gguf.get_tensor_name_map(gguf_arch, n_layers)
    planned: list[_PlannedTensor] = []

    def out_dtype(gguf_name: str, ndim: int) -> str:
        if outtype == "f32" or ndim <= 1 or gguf_name.endswith("_norm.weight"):
            return "float32"
        return "float16"

    for path in _safetensors_files(model_dir):
        try:
            with safe_open(path, framework="pt") as f:
                entries = [(k, tuple(f.get_slice(k).get_shape())) for k in f.keys()]
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise DataFormatError(path, None, f"cannot read safetensors file: {e}") from e
        for hf_name, shape in entries:
            if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
                continue  # recomputed by llama.cpp / shared with token_embd
            gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise DataFormatError(path, None, f"tensor {hf_name!r} has no GGUF counterpart for arch {arch!r}")
            heads = None
            if permute and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                heads = n_head
            elif permute and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                heads = n_kv_head
            if heads and shape[0] != heads * _head_dim(config):
                raise DataFormatError(path, None, f"{hf_name} has {shape[0]} rows, config says "
                                      f"{heads} heads x {_head_dim(config)} dims")
            planned.append(_PlannedTensor(gguf_name, shape, out_dtype(gguf_name, len(shape)),
                                          _loader(path, hf_name, heads)))

    if not tied and all(t.name != "output.weight" for t in planned):
        raise DataFormatError(model_dir, None, "lm_head.weight is missing and tie_word_embeddings is false")
    if _rope(config)["rope_type"] == "llama3":
        factors = _llama3_rope_factors(config)
        planned.append(_PlannedTensor("rope_freqs.weight", tuple(factors.shape), "float32", lambda: factors))
    return planned


def _loader(path: Path, hf_name: str, permute_heads: int | None):
    def load():
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as f:
                t = f.get_tensor(hf_name).float()
        except Exception as e:
            raise DataFormatError(path, None, f"cannot read tensor {hf_name!r}: {e}") from e
        return _permute(t, permute_heads) if permute_heads else t
    return load


# --- Vocabulary --------------------------------------------------------------

def _load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    if not (model_dir / "tokenizer.json").is_file():
        spm = (model_dir / "tokenizer.model").is_file()
        hint = " (a sentencepiece tokenizer.model is not supported)" if spm else ""
        raise UnsupportedTokenizerError(
            f"{model_dir}: no tokenizer.json{hint}; only byte-level BPE tokenizers convert")
    return AutoTokenizer.from_pretrained(model_dir)


def pre_tokenizer_type(tokenizer_json: dict, where: str = "tokenizer.json") -> str:
    """llama.cpp's tokenizer.ggml.pre for a byte-level BPE tokenizer.json, or UnsupportedTokenizerError."""
    model = tokenizer_json.get("model") or {}
    decoder = tokenizer_json.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder.get("type") != "ByteLevel":
        raise UnsupportedTokenizerError(
            f"{where}: model {model.get('type')!r} with decoder {decoder.get('type')!r} is not a byte-level BPE "
            "tokenizer; only byte-level BPE (GPT-2 style) tokenizers convert")
    normalizer = tokenizer_json.get("normalizer")
    if normalizer is not None and normalizer.get("type") != "NFC":
        raise UnsupportedTokenizerError(
            f"{where}: normalizer {normalizer.get('type')!r} has no llama.cpp equivalent")
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds != ["Split", "ByteLevel"]:
        raise UnsupportedTokenizerError(f"{where}: pre-tokenizer steps {kinds} are not Split(regex) + ByteLevel")
    split, byte_level = steps
    regex = (split.get("pattern") or {}).get("Regex")
    if (split.get("behavior") != "Isolated" or split.get("invert") or byte_level.get("add_prefix_space")
            or byte_level.get("use_regex", True)):
        raise UnsupportedTokenizerError(f"{where}: pre-tokenizer options {steps} have no llama.cpp equivalent")
    if regex not in PRE_TOKENIZERS:
        raise UnsupportedTokenizerError(
            f"{where}: pre-tokenizer regex {regex!r} is not one llama.cpp implements "
            f"(known: {', '.join(n for n, _ in PRE_TOKENIZERS.values())}); a GGUF would tokenize differently")
    name, ignore_merges = PRE_TOKENIZERS[regex]
    if bool(model.get("ignore_merges", False)) != ignore_merges:
        raise UnsupportedTokenizerError(f"{where}: ignore_merges={model.get('ignore_merges')} but llama.cpp's "
                                        f"{name!r} pre-tokenizer assumes {ignore_merges}")
    return name


def _add_vocab(writer, model_dir: Path, config: dict, tokenizer) -> None:
    import gguf

    path = model_dir / "tokenizer.json"
    pre = pre_tokenizer_type(json.loads(path.read_text(encoding="utf-8")), str(path))
    vocab_size = config["vocab_size"]
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise DataFormatError(path, None, f"token id {max(by_id)} is beyond the model's vocab_size {vocab_size}")
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # embedding rows the tokenizer never produces
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            # llama.cpp splits CONTROL tokens out of text only when asked to parse
            # specials, USER_DEFINED ones always: the same as HF special/plain added tokens.
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)

    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    for kind in ("bos", "eos", "unk", "pad"):
        tid = getattr(tokenizer, f"{kind}_token_id", None)
        if isinstance(tid, int):
            special.special_token_ids[kind] = tid
    add_bos, add_eos = _added_special_tokens(tokenizer)
    special.add_special_token["bos"], special.add_special_token["eos"] = add_bos, add_eos
    if isinstance(tokenizer.chat_template, str):
        special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)


def _added_special_tokens(tokenizer) -> tuple[bool, bool]:
    """Whether HF puts BOS / EOS around encoded text, observed rather than read from config."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = bos is not None and full[:1] == [bos] and full[1:2] == plain[:1]
    add_eos = eos is not None and full[-1:] == [eos] and len(full) > len(plain) + add_bos
    if full != [bos] * add_bos + plain + [eos] * add_eos:
        raise UnsupportedTokenizerError(
            f"the tokenizer turns {plain} into {full}; GGUF can only say 'add BOS' and 'add EOS'")
    return bool(add_bos), bool(add_eos)


def _verify_tokenization(gguf_path: Path, tokenizer, model_dir: Path) -> None:
    specials = "".join(t.content for t in tokenizer.added_tokens_decoder.values())
    with _llama_cpp_vocab(gguf_path) as vocab:
        for text in (*CHECK_TEXTS, specials + CHECK_TEXTS[1] + specials):
            want = tokenizer(text, add_special_tokens=False)["input_ids"]
            got = _llama_cpp_tokenize(vocab, text)
            if got != want:
                k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                raise UnsupportedTokenizerError(
                    f"{model_dir}: llama.cpp would tokenize differently from transformers (in {text[:40]!r}..., "
                    f"at token {k}: llama.cpp {got[k:k + 6]}, transformers {want[k:k + 6]} = "
                    f"{tokenizer.decode(want[k:k + 6])!r}); not writing the GGUF")


@contextlib.contextmanager
def _llama_cpp_vocab(gguf_path: Path):
    """llama.cpp's vocabulary from a GGUF, loaded alone (no weights, no context)."""
    from llm_assets.core.llama_runtime import load_model

    try:
        model, _ = load_model(gguf_path, vocab_only=True)
    except ValueError as exc:  # llama-cpp-python's word for a file llama.cpp refused
        raise DataFormatError(gguf_path, None, f"llama.cpp cannot load the GGUF just written: {exc}") from exc
    try:
        yield model.vocab
    finally:
        model.close()


def _llama_cpp_tokenize(vocab, text: str) -> list[int]:
    import llama_cpp

    data = text.encode("utf-8")
    room = len(data) + 1  # no special tokens are added, and every token covers at least one byte
    buf = (llama_cpp.llama_token * room)()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, room, False, True)
    if n < 0:
        raise UnsupportedTokenizerError(f"llama.cpp needed {-n} tokens for {len(data)} bytes")
    return list(buf[:n])
