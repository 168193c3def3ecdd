"""Hugging Face checkpoint -> GGUF for the Llama family, written with gguf-py.

Follows llama.cpp's convert_hf_to_gguf.py for three architectures:
LlamaForCausalLM and MistralForCausalLM (GGUF arch "llama": q/k weights are
permuted because HF rotates halves while llama.cpp rotates pairs) and
Qwen2ForCausalLM (arch "qwen2": NEOX rope, attention biases, no permute).

The vocabulary must tokenize in llama.cpp exactly as in transformers
(gguf_vocab.py): only byte-level BPE tokenizers whose pre-tokenizer llama.cpp
reimplements are accepted, and the written file is checked by tokenizing
sample texts with llama.cpp before it is moved into place.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from llm_assets.core.atomic import atomic_path
from llm_assets.core.errors import ConfigError, DataFormatError, UnsupportedArchitectureError
from llm_assets.core.gguf_vocab import add_vocab, load_tokenizer, verify_tokenization

log = logging.getLogger(__name__)

# HF architecture -> GGUF architecture, and whether q/k need llama.cpp's permute.
ARCHITECTURES = {
    "LlamaForCausalLM": ("llama", True),
    "MistralForCausalLM": ("llama", True),
    "Qwen2ForCausalLM": ("qwen2", False),
}
FLOAT_TYPES = ("f32", "f16")

@dataclass
class _PlannedTensor:
    name: str  # GGUF name
    shape: tuple[int, ...]
    dtype: str  # "float32" or "float16"
    load: Callable[[], "object"]  # returns a float32 torch tensor, already transformed


PROVENANCE_PREFIX = "llm_assets."


def convert_to_gguf(model_dir: str | Path, out_path: str | Path, outtype: str = "f16",
                    verify_tokenizer: bool = True, provenance: dict[str, str] | None = None) -> Path:
    """Convert a saved HF causal LM folder to one GGUF file at `out_path` (atomic).

    outtype "f32" keeps every tensor in float32; "f16" stores matrices in
    float16 and keeps 1-D tensors (norms, biases) in float32 as llama.cpp does.
    `provenance` (model name, dataset version, training commit, run...) is written as `llm_assets.<key>` string
    metadata, which llama.cpp's quantizer copies: a file found on a disk says where it came from.
    """
    import gguf
    import numpy as np

    if outtype not in FLOAT_TYPES:
        raise ConfigError("outtype", outtype, f"must be one of {', '.join(FLOAT_TYPES)}")
    model_dir = Path(model_dir)
    config = _read_config(model_dir)
    arch, permute = _architecture(config, model_dir)
    tokenizer = load_tokenizer(model_dir)
    tensors = _plan_tensors(model_dir, config, arch, permute, outtype)
    with atomic_path(out_path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        try:
            writer.add_name((provenance or {}).get("model") or model_dir.name)
            for key, value in sorted((provenance or {}).items()):
                if value is not None:
                    writer.add_string(PROVENANCE_PREFIX + key, str(value))
            writer.add_file_type(gguf.LlamaFileType.ALL_F32 if outtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
            _add_hparams(writer, config)
            add_vocab(writer, model_dir, config, tokenizer)
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
            verify_tokenization(tmp, tokenizer, model_dir)
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


def read_provenance(path: str | Path) -> dict[str, str]:
    """The `llm_assets.*` metadata of a GGUF file (empty for files made elsewhere)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out = {}
    for name, field in reader.fields.items():
        if name.startswith(PROVENANCE_PREFIX):
            out[name[len(PROVENANCE_PREFIX):]] = bytes(field.parts[field.data[0]]).decode("utf-8")
    return out
