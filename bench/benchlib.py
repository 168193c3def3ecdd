"""What the benchmarks share: the machine's description, workers in subprocesses, medians and tables.

Every measured run happens in a fresh subprocess that reports its own wall
seconds, CPU seconds (all threads) and peak RSS (getrusage of itself), so one
run's memory never hides in another's and imports are paid alike.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "BENCH_RESULT "


def machine() -> dict:
    """CPU model, usable cores, bf16 support and the load when asked: the context every figure needs."""
    from llm_assets.core.training import cpu_has_native_bf16

    model = platform.processor() or ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {"cpu": model, "cores": cores, "native_bf16": cpu_has_native_bf16(),
            "load_1min": round(os.getloadavg()[0], 2), "python": platform.python_version()}


def peak_rss_gb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Timer:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu


def report(result: dict) -> None:
    """A worker's last line: its result as JSON, peak RSS added."""
    print(RESULT_PREFIX + json.dumps({**result, "peak_rss_gb": round(peak_rss_gb(), 3)}), flush=True)


def run_worker(script: str, args: list[str], timeout: float | None = None) -> dict:
    """Run `script --worker ...` in a fresh interpreter; its reported result."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "true")}
    proc = subprocess.run([sys.executable, script, "--worker", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise RuntimeError(f"{Path(script).name} --worker {' '.join(args)} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def median(values) -> float:
    return float(statistics.median(values))


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """A plain text table: the first column left-aligned, figures right-aligned."""
    cells = [[_fmt(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def load_line(when: str) -> str:
    load = os.getloadavg()
    return f"load average {when}: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {machine()['cores']} cores"


def embedded_base(workdir: Path, pretrain_steps: int) -> Path:
    """The embedded base model the bunny trains on (models/pet-brain.yaml), built once per work folder."""
    from llm_assets.core.base_models import prepare_base_model
    from llm_assets.core.hyperparameters import BaseModelParams
    from llm_assets.core.tiny_model import EMBEDDED_MODEL_ID

    out = workdir / f"base-{pretrain_steps}"
    if not (out / "config.json").exists():
        prepare_base_model(BaseModelParams(model_id=EMBEDDED_MODEL_ID, pretrain_steps=pretrain_steps), out)
    return out


def framed_rows(base: Path, n: int, seed: int) -> list[dict]:
    """n generated rows of the embedded task with prompts in the base model's chat frame."""
    from transformers import AutoTokenizer

    from llm_assets.core import dataset_prep, pet_task

    tokenizer = AutoTokenizer.from_pretrained(base)
    rows = pet_task.generate_training_rows(n, seed)
    prompts = dataset_prep.PromptRenderer(tokenizer).frame_user_texts([r["prompt"] for r in rows])
    return [{"prompt": p, "completion": r["completion"]} for p, r in zip(prompts, rows)]
