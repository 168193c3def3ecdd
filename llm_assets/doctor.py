"""`llm-assets doctor`: can llama.cpp run on this machine, with the settings the project will use?

It prints the CPU's features, the installed llama.cpp build's system info and the settings
llama_runtime decides, then generates a few tokens from each GGUF in a child process, so a crash
(the AMX segfault on Intel Xeons, SIGILL from a wheel built for another CPU) is reported in words
instead of ending this command. Without --gguf it builds a small random-weight model and exports
it to f16, q8_0 and q4_k_m with the project's own converter (needs torch; the serve-only install
passes --gguf).

Exit codes: 0 every generation ran, 1 one crashed or failed, 2 a usage error.
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from pathlib import Path

from llm_assets.core import llama_runtime
from llm_assets.core.isolated import ChildCrashedError, call_isolated

PROMPT = "<|user|>\nhunger 80, energy 20: what now?\n<|assistant|>\n"


def add_doctor_command(commands) -> None:
    p = commands.add_parser("doctor", help="check that llama.cpp runs on this machine, and with which settings",
                            description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--gguf", action="append", default=[], metavar="FILE",
                   help="a GGUF to try (repeatable); default: a small model built and exported here")
    p.add_argument("--llama-repack", default="auto", choices=llama_runtime.REPACK_MODES,
                   help=llama_runtime.REPACK_HELP)
    p.set_defaults(handler=run_doctor)


def generate_once(on_progress, gguf_path: str, repack: str) -> dict:
    """A few greedy tokens from one GGUF (runs in the child process)."""
    from llm_assets.core.evaluation import GgufGenerator

    started = time.perf_counter()
    with GgufGenerator(gguf_path, n_ctx=128, repack=repack) as generator:
        out = generator.generate([PROMPT, PROMPT.replace("80", "10")], max_tokens=8, batch_size=2)
    return {"tokens": sum(o["completion_tokens"] for o in out), "seconds": time.perf_counter() - started}


def tiny_ggufs(folder: Path) -> list[Path]:
    """A random-weight Llama wide enough for llama.cpp's quantized kernels, as f16, q8_0 and q4_k_m GGUFs."""
    from transformers.utils.logging import disable_progress_bar

    from llm_assets.core.gguf_export import export_gguf_variants
    from llm_assets.core.tiny_model import TinyModelSpec, build_tiny_model

    disable_progress_bar()  # save_pretrained's shard bar would interleave with the report

    texts = [PROMPT, "rest", "eat", "play", "bathe", "sleep", "explore"]
    spec = TinyModelSpec(hidden_size=256, intermediate_size=512, num_layers=2, pretrain_steps=0)
    build_tiny_model(folder / "model", texts, spec)
    variants = export_gguf_variants(folder / "model", folder, "doctor", "f16", ["q8_0", "q4_k_m"])
    return [Path(v["path"]) for v in variants.values()]


def report_lines(repack: str) -> list[str]:
    import llama_cpp

    flags = llama_runtime.cpu_flags()
    settings = llama_runtime.settings_for_this_machine(repack)
    shown = [f for f in llama_runtime.REPORTED_FLAGS if f in flags]
    amx = sorted(llama_runtime.AMX_FLAGS & flags)
    return [
        f"machine:        {platform.machine()}, {llama_runtime.cpu_name()}",
        f"cpu features:   {' '.join(shown) or '(none of interest found)'}",
        f"amx:            {', '.join(amx) if amx else 'no'}",
        f"llama-cpp-python {llama_cpp.__version__}, system info:",
        f"  {llama_runtime.system_info()}",
        f"settings:       {settings.describe()}",
    ]


def run_doctor(args) -> int:
    for line in report_lines(args.llama_repack):
        print(line, flush=True)
    missing = [g for g in args.gguf if not Path(g).is_file()]
    if missing:
        print(f"llm-assets doctor: no such GGUF file: {', '.join(missing)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="llm-assets-doctor-") as scratch:
        if args.gguf:
            files = [Path(g) for g in args.gguf]
        else:
            print("building a small test model (f16, q8_0, q4_k_m) ...", flush=True)
            try:
                files = tiny_ggufs(Path(scratch))
            except ImportError as exc:  # the serve-only install has llama.cpp but not torch/transformers
                print(f"llm-assets doctor: cannot build a test model here ({exc}); pass --gguf FILE",
                      file=sys.stderr)
                return 2
        failures = 0
        for path in files:
            try:
                out = call_isolated(generate_once, {"gguf_path": str(path), "repack": args.llama_repack},
                                    f"generating from {path.name}")
            except ChildCrashedError as exc:
                failures += 1
                print(f"CRASH {path.name}: {exc}", flush=True)
            except Exception as exc:  # noqa: BLE001 - a file llama.cpp refuses is a finding, not a doctor bug
                failures += 1
                print(f"FAIL  {path.name}: {type(exc).__name__}: {exc}", flush=True)
            else:
                print(f"ok    {path.name}: {out['tokens']} tokens in {out['seconds']:.2f} s", flush=True)
    if failures:
        print(f"{failures} of {len(files)} generations failed. On an Intel CPU with AMX, try "
              "--llama-repack off; a llama-cpp-python built by `make install` (deploy/llama_cpp/cmake-args.sh) "
              "has no AMX kernels. See README, Troubleshooting.", flush=True)
        return 1
    print(f"llama.cpp runs on this machine: {len(files)} of {len(files)} generations ok.", flush=True)
    return 0
