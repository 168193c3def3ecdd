"""From a LoRA adapter to shippable GGUF files: merge, convert, quantize, Modelfile.

merge_adapter folds the adapter into its base model (fp32) so llama.cpp sees a
plain checkpoint; convert_to_gguf (gguf_convert.py) writes the float GGUF;
quantize_gguf runs llama.cpp's own quantizer on it; export_gguf_variants does
all of it once per requested variant; write_modelfile makes the file usable by
`ollama create`. Every output appears atomically or not at all.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence

from llm_assets.core.atomic import atomic_dir, atomic_path, write_text
from llm_assets.core.errors import ConfigError, DataFormatError, PipelineError
from llm_assets.core.gguf_convert import FLOAT_TYPES, convert_to_gguf
from llm_assets.core.gguf_vocab import UnsupportedTokenizerError

__all__ = [
    "CHAT_FORMATS", "FLOAT_TYPES", "QUANTIZATIONS", "UnsupportedTokenizerError", "convert_to_gguf",
    "detect_chat_format", "export_gguf_variants", "merge_adapter", "quantize_gguf", "write_modelfile",
]

log = logging.getLogger(__name__)

# Quantization name -> llama.cpp ftype constant (llama_cpp.LLAMA_FTYPE_MOSTLY_*).
QUANTIZATIONS = {
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
}

# Files that make up a saved tokenizer; copied verbatim so the merged model
# tokenizes byte for byte like the one that was trained.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
)

# Ollama TEMPLATE and stop token per chat format (Go template syntax).
CHAT_FORMATS = {
    "embedded": ("<|user|>\n{{ .Prompt }}\n<|assistant|>\n", "<|endoftext|>"),
    "chatml": ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
               "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>"),
    "llama3": ("{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
               "<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
}


def merge_adapter(base_model_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge a PEFT LoRA adapter into its base (fp32) and save safetensors + tokenizer to `out_dir`.

    A folder without adapter_config.json is taken to be a full model already
    and copied as is.
    """
    base_model_dir, adapter_dir, out_dir = Path(base_model_dir), Path(adapter_dir), Path(out_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        if not (adapter_dir / "config.json").is_file():
            raise DataFormatError(adapter_dir, None, "neither adapter_config.json (a LoRA adapter) "
                                  "nor config.json (a full model)")
        with atomic_dir(out_dir) as tmp:
            shutil.copytree(adapter_dir, tmp, dirs_exist_ok=True)
        return out_dir

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if not (base_model_dir / "config.json").is_file():
        raise DataFormatError(base_model_dir / "config.json", None, "base model folder has no config.json")
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    tokenizer_dir = adapter_dir if (adapter_dir / "tokenizer.json").is_file() else base_model_dir
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copy2(tokenizer_dir / name, tmp / name)
    log.info("merged %s into %s -> %s", adapter_dir, base_model_dir, out_dir)
    return out_dir


def quantize_gguf(src: str | Path, dst: str | Path, quantization: str, threads: int | None = None) -> Path:
    """Quantize a float GGUF with llama.cpp (llama_model_quantize); `dst` appears atomically.

    Rows too narrow for a k-quant's 256-wide blocks fall back to a type
    llama.cpp picks (it does this itself), so tiny models quantize too.
    """
    ftype = _ftype(quantization)
    src = Path(src)
    if not src.is_file():
        raise DataFormatError(src, None, "GGUF to quantize does not exist")
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads or os.cpu_count() or 1
    params.ftype = getattr(llama_cpp, ftype)
    with atomic_path(dst) as tmp:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise PipelineError(f"llama.cpp could not quantize {src} to {quantization} (return code {rc})")
    return Path(dst)


def _ftype(quantization: str) -> str:
    if quantization not in QUANTIZATIONS:
        raise ConfigError("quantization", quantization, f"unknown; choose from {', '.join(QUANTIZATIONS)}")
    return QUANTIZATIONS[quantization]


def export_gguf_variants(
    model_dir: str | Path,
    out_dir: str | Path,
    name: str,
    float_type: str = "f16",
    quantizations: Sequence[str] = ("q8_0", "q4_k_m"),
    threads: int | None = None,
    provenance: dict[str, str] | None = None,
) -> dict[str, dict]:
    """Write `{name}-{variant}.gguf` for the float type and each quantization.

    The float file is converted once and every quantization is made from it.
    Returns variant -> {"path", "sha256", "bytes", "quantization"}.
    """
    from llm_assets.core.artifacts import sha256_file

    if float_type not in FLOAT_TYPES:
        raise ConfigError("float_type", float_type, f"must be one of {', '.join(FLOAT_TYPES)}")
    for q in quantizations:  # fail before minutes of conversion, not after
        _ftype(q)
    out_dir = Path(out_dir)
    paths = {float_type: convert_to_gguf(model_dir, out_dir / f"{name}-{float_type}.gguf", float_type,
                                         provenance=provenance)}
    for q in dict.fromkeys(quantizations):
        paths[q] = quantize_gguf(paths[float_type], out_dir / f"{name}-{q}.gguf", q, threads)
    return {
        variant: {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size,
                  "quantization": variant}
        for variant, path in paths.items()
    }


def detect_chat_format(chat_template: str | None) -> str:
    """The CHAT_FORMATS key whose markers a Jinja chat template uses."""
    markers = {"embedded": "<|assistant|>", "chatml": "<|im_start|>", "llama3": "<|start_header_id|>"}
    for kind, marker in markers.items():
        if chat_template and marker in chat_template:
            return kind
    raise ConfigError("chat_template", (chat_template or "")[:80],
                      f"no known chat format ({', '.join(CHAT_FORMATS)}); pass template= explicitly")


def _gguf_chat_template(gguf_path: Path) -> str | None:
    import gguf

    field = gguf.GGUFReader(gguf_path).get_field(gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    return None if field is None else field.contents()


def write_modelfile(
    gguf_path: str | Path,
    out_path: str | Path,
    chat_format: str = "auto",
    *,
    template: str | None = None,
    stop: Iterable[str] | None = None,
    temperature: float = 0.0,
    parameters: dict | None = None,
    system: str | None = None,
) -> Path:
    """Write an Ollama Modelfile for `gguf_path` to `out_path` (atomic).

    chat_format "auto" reads the chat template stored in the GGUF; or name one
    of CHAT_FORMATS, or pass an Ollama `template` (then give `stop` too).
    """
    gguf_path, out_path = Path(gguf_path), Path(out_path)
    if template is None:
        kind = detect_chat_format(_gguf_chat_template(gguf_path)) if chat_format == "auto" else chat_format
        if kind not in CHAT_FORMATS:
            raise ConfigError("chat_format", kind, f"choose auto or one of {', '.join(CHAT_FORMATS)}")
        template, default_stop = CHAT_FORMATS[kind]
        stop = [default_stop] if stop is None else stop
    if '"""' in template:
        raise ConfigError("template", template, 'an Ollama TEMPLATE cannot contain """')
    # Relative FROM when side by side, so the folder can be moved or uploaded as one.
    same_dir = gguf_path.resolve().parent == out_path.resolve().parent
    lines = [f"FROM {'./' + gguf_path.name if same_dir else gguf_path.resolve()}", f'TEMPLATE """{template}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    for token in stop or ():
        lines.append(f"PARAMETER stop {_quote(token)}")
    lines.append(f"PARAMETER temperature {temperature:g}")
    for key, value in (parameters or {}).items():
        lines.append(f"PARAMETER {key} {value}")
    return write_text(out_path, "\n".join(lines) + "\n")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
