"""Getting a base model into a local folder: the embedded tiny Llama, a hub id or a local path."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from llm_assets.core import pet_task, tiny_model
from llm_assets.core.errors import ConfigError
from llm_assets.core.hyperparameters import BaseModelParams

# The embedded model's corpus, from a seed that is not the training data's:
# its state descriptions pretrain the model; its answers only shape the vocabulary.
CORPUS_ROWS = 6000
CORPUS_SEED = 7919


def prepare_base_model(params: BaseModelParams, out_dir: Path,
                       on_step: Callable[[int, int, float], None] | None = None) -> dict:
    """Write the base model (weights + tokenizer) into out_dir; returns what identifies it."""
    if params.model_id == tiny_model.EMBEDDED_MODEL_ID:
        spec = tiny_model.TinyModelSpec(
            vocab_size=params.vocab_size, hidden_size=params.hidden_size,
            intermediate_size=params.intermediate_size, num_layers=params.num_layers,
            num_heads=params.num_heads, pretrain_steps=params.pretrain_steps, seed=params.seed)
        if spec.hidden_size % spec.num_heads:
            raise ConfigError("hidden_size", spec.hidden_size, f"must be a multiple of num_heads={spec.num_heads}")
        corpus = pet_task.generate_training_rows(CORPUS_ROWS, CORPUS_SEED)
        info = tiny_model.build_tiny_model(out_dir, [r["prompt"] for r in corpus], spec, on_step,
                                           vocabulary_texts=[r["completion"] for r in corpus],
                                           domain_words=pet_task.DOMAIN_WORDS,
                                           unguessable_words=pet_task.OBJECTS)
        return {**info, "revision": None}
    return _copy_pretrained(params, out_dir)


def _copy_pretrained(params: BaseModelParams, out_dir: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = params.model_id
    looks_local = source.startswith((".", "/", "~")) or Path(source).expanduser().exists()
    if looks_local and not Path(source).expanduser().is_dir():
        raise ConfigError("model_id", source, "no such local folder (give a hub id or an existing path)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=params.revision)
        model = AutoModelForCausalLM.from_pretrained(source, revision=params.revision, dtype="auto")
    except OSError as exc:
        raise ConfigError("model_id", source, f"cannot load it: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {
        "model_id": source,
        "revision": params.revision or getattr(model.config, "_commit_hash", None),
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": (model.config.architectures or [type(model).__name__])[0],
    }
