"""Evaluation throughput: the project's benchmark evaluation against one-at-a-time HF generate.

Baseline: what a user would write to answer the benchmark with the HF model:
`model.generate` one prompt at a time, greedy, fp32, torch's default threads.
Project: `evaluation.generate_gguf`, the engine of eval_report: each GGUF
variant (f16, q8_0, q4_k_m) through llama-cpp-python, several sequences per
llama_decode call. Same model, same prompts, same max_new_tokens, examples/s
compared; runs alternate and medians are reported. Each variant also runs with
llama.cpp's extra buffer types (repacked weights) off, the setting the project
uses on CPUs with AMX: what that costs here is the `off` rows' ratio.

Without --model the embedded base model is used: untuned, it rarely stops
early, so every answer runs to --max-new-tokens on both sides. run_all passes
the model train_speed just trained, which answers the way a tuned model does.

    python bench/eval_speed.py --examples 100 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402


def hf_one_at_a_time(model_dir: Path, prompts: list[str], max_new_tokens: int) -> tuple[float, int, list[str]]:
    """(seconds, generated tokens, answers) of HF generate, one prompt per call."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    answers, generated = [], 0
    with benchlib.Timer() as timer, torch.no_grad():
        for prompt in prompts:
            ids = tok(prompt, add_special_tokens=False, return_tensors="pt")
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id or tok.eos_token_id)
            new = out[0, ids["input_ids"].shape[1]:]
            generated += int(len(new))
            answers.append(tok.decode(new, skip_special_tokens=True))
    return timer.wall, generated, answers


def project_batched(gguf: Path, prompts: list[str], max_new_tokens: int,
                    repack: str = "auto") -> tuple[float, int, list[str]]:
    from llm_assets.core.evaluation import generate_gguf

    with benchlib.Timer() as timer:
        outputs = generate_gguf(gguf, prompts, max_tokens=max_new_tokens, repack=repack)
    return timer.wall, sum(o["completion_tokens"] for o in outputs), [o["text"] for o in outputs]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="benchmark prompts answered per run")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="longest answer (eval_report's default)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side (alternating); medians reported")
    parser.add_argument("--model", help="an HF model folder (default: the embedded base model, built here)")
    parser.add_argument("--pretrain-steps", type=int, default=100, help="pretraining of the embedded base model")
    parser.add_argument("--workdir", help="folder for models (default: a temporary one)")
    parser.add_argument("--llama-only", action="store_true",
                        help="skip the HF baseline: compare llama.cpp builds (PYTHONPATH=... a wheel) or settings")
    args = parser.parse_args(argv)

    from llm_assets.core import pet_benchmark
    from llm_assets.core.dataset_prep import PromptRenderer
    from llm_assets.core.gguf_export import export_gguf_variants
    from transformers import AutoTokenizer

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    print(benchlib.load_line("at start"), flush=True)
    model_dir = Path(args.model) if args.model else benchlib.embedded_base(work, args.pretrain_steps)
    rows = pet_benchmark.generate_benchmark(max(1, -(-args.examples // 5)))[:args.examples]
    prompts = PromptRenderer(AutoTokenizer.from_pretrained(model_dir)).frame_user_texts([r["prompt"] for r in rows])
    variants = export_gguf_variants(model_dir, work / "gguf", "bench", "f16", ["q8_0", "q4_k_m"])
    from llm_assets.core.llama_runtime import settings_for_this_machine, system_info

    settings = settings_for_this_machine("auto")
    print(f"llama.cpp settings (default): {settings.describe()}", flush=True)
    off = {f"{name} off": name for name in variants}  # the same file with extra buffers off
    baseline = [] if args.llama_only else ["hf_generate"]
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in [*baseline, *variants, *off]}
    for rep in range(args.repeats):
        order = list(runs) if rep % 2 == 0 else list(reversed(runs))
        for name in order:
            if name == "hf_generate":
                seconds, tokens, _ = hf_one_at_a_time(model_dir, prompts, args.max_new_tokens)
            else:
                seconds, tokens, _ = project_batched(Path(variants[off.get(name, name)]["path"]), prompts,
                                                     args.max_new_tokens, "off" if name in off else "auto")
            runs[name].append((seconds, tokens))
            print(f"  run {rep + 1}/{args.repeats} {name}: {seconds:.2f}s, {tokens} tokens", flush=True)
    med = {name: (benchlib.median([s for s, _ in r]), benchlib.median([t for _, t in r])) for name, r in runs.items()}
    import llama_cpp

    print(f"llama-cpp-python {llama_cpp.__version__} from {Path(llama_cpp.__file__).parent}:\n  {system_info()}")
    base_s, base_t = med["hf_generate"] if baseline else (float("nan"), 0)
    table = [["HF generate, one at a time (fp32)", base_s, len(prompts) / base_s, base_t / base_s, 1.0]] \
        if baseline else []
    for name in [*variants, *off]:
        s, t = med[name]
        label = f"{off[name]}, extra buffers off" if name in off else name
        table.append([f"project: llama.cpp batched, {label}", s, len(prompts) / s, t / s, base_s / s])
    benchlib.print_table(f"evaluation: {len(prompts)} benchmark prompts, max_new_tokens {args.max_new_tokens}, "
                         f"greedy, medians of {args.repeats} ({model_dir.name})",
                         ["", "seconds", "examples/s", "tokens/s", "speedup"], table)
    print(benchlib.load_line("at end"))
    f16 = next(iter(variants))
    return {"eval_speedup": round(base_s / med[f16][0], 2),
            "eval_examples_per_s_q4_k_m": round(len(prompts) / med["q4_k_m"][0], 2),
            "eval_speedup_q4_k_m": round(base_s / med["q4_k_m"][0], 2),
            "eval_examples_per_s": round(len(prompts) / med[f16][0], 2),
            "baseline_eval_examples_per_s": round(len(prompts) / base_s, 2),
            # seconds with extra buffers off / seconds with the default settings (>1: off is slower)
            "eval_extra_buffers_off_cost_q4_k_m": round(med["q4_k_m off"][0] / med["q4_k_m"][0], 3),
            "eval_extra_buffers_off_cost_f16": round(med[f"{f16} off"][0] / med[f16][0], 3),
            "llama_use_extra_bufts": settings.use_extra_bufts}


if __name__ == "__main__":
    print(json.dumps(main()))
