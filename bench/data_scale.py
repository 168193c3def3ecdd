"""Data at scale: preparing, validating and deduplicating generated rows, columnar against row by row.

Project: `dataset_stream.prepare_split`, what training_dataset runs: raw JSONL
in blocks through Arrow, token counts in tokenizer threads, dedupe, split and
the two split files written. Baseline: dataset_prep's row functions in
sequence (read_jsonl -> normalize_rows -> validate -> dedupe -> split_rows ->
write_split), what the asset ran before, a dict per row. Both read the raw
JSONL that raw_dataset writes for the embedded task (generated once per size
and cached, generation timed apart) and count tokens with the embedded
model's tokenizer; each run is a fresh process reporting its wall and CPU
seconds and its peak RSS. The baseline runs only at the smaller size: at a
million rows it needs several GB.

    python bench/data_scale.py                         # 1,000,000 rows (project), 100,000 (both)
    python bench/data_scale.py --rows 200000 --baseline-rows 50000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402

CHUNK = 50_000


def _generate_chunk(index: int) -> list[str]:
    from llm_assets.core import pet_task

    rows = pet_task.generate_training_rows(CHUNK, seed=index)
    return [json.dumps({**r, "source": f"embedded:pet?seed={index}:{i}"}, ensure_ascii=False)
            for i, r in enumerate(rows, 1)]


def raw_file(cache: Path, rows: int) -> tuple[Path, float]:
    """The raw JSONL of `rows` generated rows (cached); seconds spent generating now (0 when cached)."""
    path = cache / f"raw-{rows}.jsonl"
    if path.exists():
        return path, 0.0
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    with Pool(min(2, os.cpu_count() or 1)) as pool, open(tmp, "w", encoding="utf-8") as out:
        written = 0
        for lines in pool.imap(_generate_chunk, range(-(-rows // CHUNK))):
            lines = lines[:rows - written]
            out.write("\n".join(lines) + "\n")
            written += len(lines)
    tmp.replace(path)
    return path, time.perf_counter() - started


def worker(args) -> None:
    from transformers import AutoTokenizer

    from llm_assets.core import dataset_io, dataset_prep, dataset_stream
    from llm_assets.core.hyperparameters import DatasetParams

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    p = DatasetParams()
    out = Path(tempfile.mkdtemp(prefix=f"data-{args.worker}-"))
    with benchlib.Timer() as timer:
        if args.worker == "project":
            result = dataset_stream.prepare_split(args.raw, tokenizer, out, p.max_tokens, [],
                                                  p.max_duplicate_fraction, p.validation_fraction, p.split_seed)
            summary = {"train_rows": result.train_rows, "duplicates": result.report.counts["duplicates"]}
        else:
            raw = [record for _, record in dataset_io.iter_jsonl(args.raw)]
            rows, issues = dataset_prep.normalize_rows(raw, tokenizer)
            report = dataset_prep.validate(rows, issues, tokenizer, p.max_tokens, [], p.max_duplicate_fraction)
            unique, _ = dataset_prep.dedupe(rows)
            train, validation = dataset_prep.split_rows(unique, p.validation_fraction, p.split_seed)
            dataset_io.write_split(train, validation, out)
            summary = {"train_rows": len(train), "duplicates": report.counts["duplicates"]}
    benchlib.report({"seconds": timer.wall, "cpu_seconds": timer.cpu, **summary})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the project's run")
    parser.add_argument("--baseline-rows", type=int, default=100_000, help="rows for the side-by-side runs")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each (alternating); medians reported")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "llm-assets-bench-data"),
                        help="where generated raw files and the tokenizer are kept between runs")
    parser.add_argument("--worker", choices=["project", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--raw", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return {}

    cache = Path(args.cache_dir)
    print(benchlib.load_line("at start"), flush=True)
    tokenizer = benchlib.embedded_base(cache, pretrain_steps=0)  # only its tokenizer is used
    results: dict[tuple[str, int], list[dict]] = {}
    plan = [("project", args.baseline_rows), ("baseline", args.baseline_rows), ("project", args.rows)]
    for rep in range(args.repeats):
        for who, n in (plan if rep % 2 == 0 else [plan[1], plan[0], plan[2]]):
            raw, generated = raw_file(cache, n)
            if generated:
                print(f"  generated {n:,} rows in {generated:.1f}s (not counted)", flush=True)
            result = benchlib.run_worker(__file__, [who, "--raw", str(raw), "--tokenizer", str(tokenizer)])
            results.setdefault((who, n), []).append(result)
            print(f"  run {rep + 1}/{args.repeats} {who} {n:,} rows: {result['seconds']:.1f}s wall, "
                  f"{result['cpu_seconds']:.1f}s CPU, peak RSS {result['peak_rss_gb']:.2f} GB", flush=True)
    med = {key: {k: benchlib.median([r[k] for r in rs]) for k in ("seconds", "cpu_seconds", "peak_rss_gb")}
           for key, rs in results.items()}
    table = []
    for n in dict.fromkeys([args.baseline_rows, args.rows]):
        p, b = med[("project", n)], med.get(("baseline", n))
        table.append([f"{n:,} rows", p["seconds"], p["cpu_seconds"], p["peak_rss_gb"],
                      b["seconds"] if b else "-", b["cpu_seconds"] if b else "-", b["peak_rss_gb"] if b else "-",
                      f"{b['seconds'] / p['seconds']:.2f}x" if b else "-"])
    benchlib.print_table(f"data: prepare + validate + dedupe + split + write, medians of {args.repeats}",
                         ["", "project s", "CPU s", "RSS GB", "baseline s", "CPU s", "RSS GB", "speedup"], table)
    print(benchlib.load_line("at end"))
    big = med[("project", args.rows)]
    return {"data_rows": args.rows, "data_1m_seconds": round(big["seconds"], 1),
            "data_1m_cpu_seconds": round(big["cpu_seconds"], 1), "data_1m_peak_rss_gb": round(big["peak_rss_gb"], 3),
            "data_speedup": round(med[("baseline", args.baseline_rows)]["seconds"]
                                  / med[("project", args.baseline_rows)]["seconds"], 2)}


if __name__ == "__main__":
    print(json.dumps(main()))
