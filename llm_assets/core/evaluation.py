"""Benchmark evaluation of GGUF files through llama.cpp: the eval_report's engine.

Each GGUF variant of the fine-tuned model (f16, q8_0, q4_k_m, ...) and the
untuned base model's GGUF answer every benchmark prompt with greedy decoding;
metrics.score_predictions scores the answers and gate.evaluate_gate decides
which variant (if any) may be deployed. What is measured is exactly what will
be served: the quantized file run by llama.cpp, not the PyTorch weights.

llama_cpp is imported inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable

from llm_assets.core.errors import ConfigError
from llm_assets.core.gate import SMALLEST_PASSING, evaluate_gate, metric_of, validate_threshold
from llm_assets.core.isolated import call_isolated
from llm_assets.core.llama_runtime import load_model, quiet_llama_log, settings_for_this_machine, validate_repack
from llm_assets.core import scorers

N_SAMPLES = 3  # answers kept in the report per model, for a reader to eyeball
DEFAULT_BATCH_SIZE = 16  # sequences decoded together (8-32 measured about equal on the tiny model)
LATENCY_EXAMPLES = 8  # prompts re-run one at a time to measure what a single request waits
# Below this size a model's per-token work is microseconds and extra threads only
# add synchronisation; on a busy 2-core machine 2 threads measured 50x slower than 1.
SMALL_MODEL_BYTES = 64 * 2**20


def default_threads(gguf_path: str | Path | None = None) -> int:
    """1 thread for small models, else the cores this process may use."""
    if gguf_path is not None and Path(gguf_path).stat().st_size < SMALL_MODEL_BYTES:
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class GgufGenerator:
    """One GGUF loaded once; greedy completions for batches of chat-formatted prompts.

    Prompts are tokenized with special=True (so "<|user|>" is one special
    token, as in training) and without an added BOS: a chat template that
    wants one writes it into the prompt text. Each sequence stops at the
    model's end-of-generation token or after max_tokens. Greedy decoding is
    an argmax over the logits (what llama.cpp's greedy sampler does); several
    sequences share each llama_decode call, which on the tiny model is 2-3x
    faster than create_completion one prompt at a time.
    """

    def __init__(self, gguf_path: str | Path, n_ctx: int = 512, n_threads: int | None = None,
                 repack: str = "auto"):
        import llama_cpp
        from llama_cpp import _internals

        self._llama_cpp, self._internals = llama_cpp, _internals
        self.model, self.settings = load_model(gguf_path, repack)
        self.path = Path(gguf_path)
        self.n_threads = n_threads or default_threads(self.path)
        # Positions past the training context are noise; llama.cpp would only warn.
        self.n_ctx = min(n_ctx, self.model.n_ctx_train() or n_ctx)
        self.n_vocab = self.model.n_vocab()

    def close(self) -> None:
        self.model.close()

    def __enter__(self) -> "GgufGenerator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def generate(self, prompts: list[str], max_tokens: int = 64, batch_size: int = DEFAULT_BATCH_SIZE,
                 on_example: Callable[[int], None] | None = None) -> list[dict]:
        """[{text, seconds, completion_tokens}] per prompt, in order.

        seconds is the wait from the start of the prompt's batch to its last
        token: single-request latency when batch_size is 1.
        """
        if max_tokens < 1:
            raise ConfigError("max_tokens", max_tokens, "must be at least 1")
        if batch_size < 1:
            raise ConfigError("batch_size", batch_size, "must be at least 1")
        tokenized = [self.tokenize(p) for p in prompts]
        for i, tokens in enumerate(tokenized):
            if len(tokens) >= self.n_ctx:
                raise ConfigError("n_ctx", self.n_ctx, f"prompt {i} has {len(tokens)} tokens, no room to answer")
        if not tokenized:
            return []
        # KV room for the longest prompt plus its answer, not a whole n_ctx per sequence.
        seq_ctx = min(self.n_ctx, max(map(len, tokenized)) + max_tokens)
        batch_size = min(batch_size, len(prompts))
        ctx, batch = self._new_context(seq_ctx, batch_size)
        try:
            results: list[dict] = []
            for start in range(0, len(tokenized), batch_size):
                results += self._generate_batch(ctx, batch, tokenized[start:start + batch_size], seq_ctx, max_tokens)
                if on_example:
                    on_example(len(results))
            return results
        finally:
            batch.close()
            ctx.close()

    def _new_context(self, seq_ctx: int, n_seq: int):
        params = self._llama_cpp.llama_context_default_params()
        # Not a unified KV cache: each sequence gets its own slots and attends
        # over those only. llama.cpp pads a sequence's slots to a multiple of
        # 256; asking for exactly that avoids its "rounding down" warning.
        seq_slots = -(-seq_ctx // 256) * 256
        params.n_ctx = seq_slots * n_seq
        params.n_seq_max = n_seq
        params.n_batch = seq_ctx * n_seq  # the first step feeds every prompt at once
        params.n_ubatch = min(512, params.n_batch)
        params.n_threads = params.n_threads_batch = self.n_threads
        params.no_perf = True
        with quiet_llama_log():
            ctx = self._internals.LlamaContext(model=self.model, params=params, verbose=False)
        batch = self._internals.LlamaBatch(n_tokens=params.n_batch, embd=0, n_seq_max=n_seq, verbose=False)
        return ctx, batch

    def _generate_batch(self, ctx, batch, prompts: list[list[int]], seq_ctx: int, max_tokens: int) -> list[dict]:
        import numpy as np

        lib, vocab = self._llama_cpp, self.model.vocab
        started = time.perf_counter()
        ctx.kv_cache_clear()
        batch.reset()
        rows: dict[int, int] = {}  # sequence -> its logits row in the last decoded batch
        for seq, tokens in enumerate(prompts):
            batch.add_sequence(tokens, seq, False)
            rows[seq] = batch.n_tokens() - 1
        ctx.decode(batch)
        positions = [len(t) for t in prompts]
        answers: list[list[int]] = [[] for _ in prompts]
        finished = [0.0] * len(prompts)
        while rows:
            step = []
            for seq, row in rows.items():
                logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx.ctx, row), shape=(self.n_vocab,))
                token = int(logits.argmax())
                if not lib.llama_vocab_is_eog(vocab, token):
                    answers[seq].append(token)
                if (lib.llama_vocab_is_eog(vocab, token) or len(answers[seq]) >= max_tokens
                        or positions[seq] >= seq_ctx):
                    finished[seq] = time.perf_counter() - started
                else:
                    step.append((seq, token))
            if not step:
                break
            raw = batch.batch
            raw.n_tokens = len(step)
            rows = {}
            for j, (seq, token) in enumerate(step):
                raw.token[j], raw.pos[j], raw.seq_id[j][0], raw.n_seq_id[j], raw.logits[j] = (
                    token, positions[seq], seq, 1, True)
                positions[seq] += 1
                rows[seq] = j
            ctx.decode(batch)
        # Undecodable bytes are dropped, as llama-cpp-python's create_completion does.
        return [{"text": self.model.detokenize(a).decode("utf-8", errors="ignore"), "seconds": s,
                 "completion_tokens": len(a)} for a, s in zip(answers, finished)]


def generate_gguf(gguf_path: str | Path, prompts: list[str], max_tokens: int = 64,
                  n_threads: int | None = None, n_ctx: int = 512, batch_size: int = DEFAULT_BATCH_SIZE,
                  on_example: Callable[[int], None] | None = None, repack: str = "auto") -> list[dict]:
    """Greedy completions of chat-formatted prompts: [{text, seconds, completion_tokens}]."""
    with GgufGenerator(gguf_path, n_ctx=n_ctx, n_threads=n_threads, repack=repack) as generator:
        return generator.generate(prompts, max_tokens, batch_size, on_example)


def latency_stats(seconds: list[float], tokens: list[int]) -> dict:
    """Mean and p95 (nearest rank) seconds per example, and generated tokens per second."""
    if not seconds:
        return {"n": 0, "mean_s": 0.0, "p95_s": 0.0, "tokens_per_s": 0.0}
    ordered = sorted(seconds)
    total = sum(seconds)
    return {"n": len(seconds), "mean_s": total / len(seconds), "p95_s": ordered[math.ceil(0.95 * len(ordered)) - 1],
            "tokens_per_s": sum(tokens) / total if total > 0 else 0.0}


def _check_answer_room(generator: GgufGenerator, name: str, references: list[str], max_tokens: int) -> int:
    """The longest expected answer in this model's tokens, end-of-text included; it must fit max_tokens."""
    longest = max(len(generator.tokenize(r)) for r in references) + 1
    if max_tokens < longest:
        raise ConfigError("max_tokens", max_tokens,
                          f"the longest expected answer takes {longest} tokens of {name} ({generator.path.name}), "
                          "so correct answers would be cut off; raise max_tokens")
    return longest


def evaluate_gguf(name: str, gguf_path: str | Path, prompts: list[str], references: list[str],
                  categories: list[str] | None, max_tokens: int = 64, n_threads: int | None = None,
                  n_ctx: int = 512, on_progress: Callable[[str, int, int], None] | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, latency_examples: int = LATENCY_EXAMPLES,
                  repack: str = "auto", scorer: str | None = "pet", scorer_options: dict | None = None) -> dict:
    """One model's entry of the report: scores, latency, throughput, file size and a few sample answers.

    `scorer` names the scorer (llm_assets.core.scorers); None returns the answers as `predictions` instead,
    for a caller that scores every model in one process (the scorers' import costs seconds per process).

    The benchmark runs in batches (throughput); latency is what one request
    alone waits, measured on the first `latency_examples` prompts.
    """
    total = len(prompts)
    with GgufGenerator(gguf_path, n_ctx=n_ctx, n_threads=n_threads, repack=repack) as generator:
        answer_tokens = _check_answer_room(generator, name, references, max_tokens)
        started = time.perf_counter()
        progress = (lambda done: on_progress(name, done, total)) if on_progress else None
        outputs = generator.generate(prompts, max_tokens, batch_size, progress)
        elapsed = time.perf_counter() - started
        single = generator.generate(prompts[:latency_examples], max_tokens, batch_size=1)
    texts = [o["text"] for o in outputs]
    generated = sum(o["completion_tokens"] for o in outputs)
    return {
        "path": str(gguf_path),
        "file_size_bytes": Path(gguf_path).stat().st_size,
        **({"scores": scorers.score(scorer, texts, references, categories, scorer_options)} if scorer
           else {"predictions": texts}),
        "latency": latency_stats([o["seconds"] for o in single], [o["completion_tokens"] for o in single]),
        "throughput": {"seconds": elapsed, "examples_per_s": total / elapsed if elapsed > 0 else 0.0,
                       "tokens_per_s": generated / elapsed if elapsed > 0 else 0.0,
                       "batch_size": min(batch_size, total), "threads": generator.n_threads},
        "longest_answer_tokens": answer_tokens,
        "llama_settings": generator.settings.to_dict(),
        "samples": [{"prediction": t, "reference": r} for t, r in zip(texts[:N_SAMPLES], references)],
    }


def evaluate_variants(variants: dict[str, str | Path], baseline: str | Path | None, prompts: list[str],
                      references: list[str], categories: list[str] | None = None, max_tokens: int = 64,
                      deployable: str = SMALLEST_PASSING, threshold: float = 0.95,
                      on_progress: Callable[[str, int, int], None] | None = None,
                      n_threads: int | None = None, n_ctx: int = 512,
                      batch_size: int = DEFAULT_BATCH_SIZE, repack: str = "auto",
                      evaluate_one: Callable[..., dict] = evaluate_gguf, scorer: str = "pet",
                      scorer_options: dict | None = None, metric: str = "strict_accuracy",
                      margin: float | None = 0.0) -> dict:
    """The eval_report: every variant and the baseline scored, compared and gated.

    Configuration is checked before any answer is generated, so a typo in
    `deployable`, `threshold` or a too small `max_tokens` costs seconds.
    on_progress(model, done, total) is called after each batch. Answers are scored by `scorer` here, once
    per model; the gate reads `metric` and compares with the baseline unless `margin` is None.

    Each model is evaluated by `evaluate_one` (a module-level function, evaluate_gguf unless a test
    substitutes one) in a child process: if llama.cpp crashes, the error names the variant, the GGUF
    and the llama.cpp settings instead of the step dying of a signal.
    """
    validate_threshold(threshold)
    validate_repack(repack)
    if not variants:
        raise ConfigError("variants", variants, "no GGUF variant to evaluate")
    if deployable != SMALLEST_PASSING and deployable not in variants:
        raise ConfigError("deployable", deployable,
                          f"must be {SMALLEST_PASSING!r} or one of the variants: {', '.join(variants)}")
    if len(prompts) != len(references):
        raise ConfigError("prompts", len(prompts), f"must match the {len(references)} references")
    if not prompts:
        raise ConfigError("prompts", 0, "the benchmark is empty")
    if "baseline" in variants:
        raise ConfigError("variants", list(variants), "'baseline' is reserved for the untuned model")
    # The scorer and the gate's metric, tried on one reference before any answer is generated.
    metric_of(scorers.score(scorer, references[:1], references[:1], None, scorer_options), metric, scorer)

    def run(name: str, path) -> dict:
        settings = settings_for_this_machine(repack)
        describe = (f"evaluating {name} ({path}) with llama.cpp {settings.describe()}; "
                    "`llm-assets doctor` checks this machine's llama.cpp, and llama_repack=off avoids its "
                    "repacked kernels")
        kwargs = dict(name=name, gguf_path=str(path), prompts=prompts, references=references,
                      categories=categories, max_tokens=max_tokens, n_threads=n_threads, n_ctx=n_ctx,
                      batch_size=batch_size, repack=repack, scorer=None)
        entry = call_isolated(evaluate_one, kwargs, describe, on_progress)
        entry["scores"] = scorers.score(scorer, entry.pop("predictions"), references, categories, scorer_options)
        return entry

    report: dict = {"n_examples": len(prompts), "max_tokens": max_tokens, "threshold": threshold,
                    "deployable": deployable, "variants": {name: run(name, path) for name, path in variants.items()}}
    report["baseline"] = run("baseline", baseline) if baseline is not None else None
    if report["baseline"] is not None:
        for entry in report["variants"].values():
            entry["improvement"] = scorers.improvement(entry["scores"], report["baseline"]["scores"])
    report["scorer"] = scorer
    report["gate"] = evaluate_gate(report, threshold, deployable, metric, margin).to_dict()
    return report
