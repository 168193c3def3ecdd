"""Every benchmark in turn (`make bench`); the last line printed is one JSON object with the key figures.

Keys: train_speedup, train_loss_ratio (project / baseline validation loss),
eval_speedup, orchestration_overhead, data_1m_seconds, data_1m_peak_rss_gb,
train_peak_rss_gb, faults_duplicate_machines, faults_leaked_machines, faults_runs_over_budget
(bench/remote_faults.py), plus the machine (CPU, cores, bf16, load at start and end)
and the secondary figures each script returns. bench/serve_swap.py (serving)
runs too where it exists; its absence or failure is reported, never fatal.

    python bench/run_all.py            # the default sizes: well under 30 minutes on 2 quiet cores
    python bench/run_all.py --quick    # small sizes, a minute or two: does everything still run?
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import benchlib  # noqa: E402
import data_scale  # noqa: E402
import eval_speed  # noqa: E402
import orchestration_overhead  # noqa: E402
import remote_faults  # noqa: E402
import structured_output  # noqa: E402
import train_speed  # noqa: E402

QUICK = {
    "train": ["--rows", "320", "--validation-rows", "64", "--repeats", "1", "--pretrain-steps", "10"],
    "eval": ["--examples", "20", "--repeats", "1", "--pretrain-steps", "10"],
    "orchestration": ["--rows", "300", "--steps", "5", "--examples", "10", "--pretrain-steps", "5", "--repeats", "1"],
    "data": ["--rows", "20000", "--baseline-rows", "5000"],
    "faults": ["--launches", "30"],
}


def serve_swap(quick: bool) -> dict:
    """bench/serve_swap.py's figures where that benchmark exists (another part of the project owns it)."""
    script = HERE / "serve_swap.py"
    if not script.exists():
        print("\nserve_swap: bench/serve_swap.py not present, skipped")
        return {}
    args = ["--seconds", "10", "--gap", "2"] if quick else []
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=HERE.parent)
    print("\n" + proc.stdout.rstrip())
    last = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    try:
        figures = json.loads(last[0]) if proc.returncode == 0 and last else None
    except json.JSONDecodeError:
        figures = None
    if not isinstance(figures, dict):
        print(f"serve_swap: exit {proc.returncode}, no JSON figures: {proc.stderr.strip()[-500:]}")
        return {"serve_swap_error": f"exit {proc.returncode}"}
    return {f"serve_{k}" if not k.startswith("serve") else k: v for k, v in figures.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that every benchmark runs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for the training runs (0: default)")
    parser.add_argument("--skip", action="append", default=[], choices=["train", "eval", "orchestration", "data",
                                                                        "serve", "structured"],
                        help="leave a benchmark out")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    figures: dict = {"machine": benchlib.machine()}
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    extra = (lambda name: QUICK[name] if args.quick else [])
    model = None
    if "train" not in args.skip:
        figures |= train_speed.main(extra("train") + ["--workdir", str(work / "train"), "--threads", str(args.threads)])
        trained = sorted((work / "train").glob("project-*/model"), key=lambda p: p.stat().st_mtime)
        model = trained[-1] if trained else None  # a tuned model answers like one: fair answer lengths
    if "eval" not in args.skip:
        figures |= eval_speed.main(extra("eval") + ["--workdir", str(work / "eval")]
                                   + (["--model", str(model)] if model else []))
    if "orchestration" not in args.skip:
        figures |= orchestration_overhead.main(extra("orchestration"))
    if "data" not in args.skip:
        figures |= data_scale.main(extra("data"))
    if "serve" not in args.skip:
        figures |= serve_swap(args.quick)
    if "faults" not in args.skip:
        faults = remote_faults.main(extra("faults"))
        figures |= {f"faults_{k}": v for k, v in faults.items() if k in (
            "launches", "duplicate_machines", "leaked_machines", "runs_over_budget", "worst_billed_over_cap")}
    if "structured" not in args.skip:
        quick = ["--schemas", "50"] if args.quick else []
        figures |= {f"structured_{k}": v for k, v in structured_output.main(quick).items()}
    figures["machine"]["load_1min_at_end"] = round(__import__("os").getloadavg()[0], 2)
    figures["bench_seconds"] = round(time.perf_counter() - started, 1)
    figures["quick"] = args.quick
    return figures


if __name__ == "__main__":
    print(json.dumps(main()))
