"""Benchmark: one server for several models, promotions under load (issue 17's "must reach").

Registers N models (default 3) with two versions each on a SQLite registry, starts `llm-assets serve` as its own
process serving all of them, drives it with 8 concurrent clients spread over the models, and moves the
production alias 5 times spread over the models (promote / rollback), then compares with direct
llama-cpp-python: one Llama per model, each answering the same prompts in its own thread.

  failed requests            must be 0 (429/503 with Retry-After are counted apart and shown)
  p99 during swaps           at most 1.5x the steady p99
  served tokens/s            at least 0.95x direct llama-cpp-python

The clients are `openai` clients on the same cores as the server; `--client lean` sends the same requests with
the standard library instead, whose own CPU is smaller, to see the server's share alone.

Run: .venv/bin/python bench/serve_multi.py [--models 3] [--seconds 20] [--memory-budget-bytes N] [--client lean]
The GGUFs are the embedded tiny Llama untrained (f16 and q8_0, as bench/serve_swap.py builds them). Prints a
table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import serve_swap  # noqa: E402
from serve_swap import CLIENTS, Refused, build_ggufs, free_port, get_json, p99, prompts  # noqa: E402


def direct_tokens_per_s(ggufs: list[Path], texts: list[str], max_tokens: int, seconds: float) -> float:
    """One Llama per model, each in its own thread answering one prompt after another (what a user would write
    without a server): total completion tokens per second."""
    from llm_assets.serving.model_process import load_llama

    llms = [load_llama(g, n_ctx=512, n_threads=1)[0] for g in ggufs]
    counts = [0] * len(llms)
    started = time.perf_counter()

    def run(i: int) -> None:
        k = i
        while time.perf_counter() - started < seconds:
            counts[i] += llms[i].create_completion(texts[k % len(texts)], max_tokens=max_tokens,
                                                   temperature=0)["usage"]["completion_tokens"]
            k += len(llms)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(llms))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for llm in llms:
        llm.close()
    return sum(counts) / elapsed


class Clients(serve_swap.Clients):
    """Client i asks model (i + n) % models on its n-th request; each answer's X-Model must be the one asked.
    Records are (start, end, tokens, outcome): "ok", "refused" (429/503 with Retry-After) or the failure."""

    def __init__(self, url: str, names: list[str], texts: list[str], n: int, max_tokens: int, client: str):
        super().__init__(url, texts, n, max_tokens, client)
        self.names = names

    def _run(self, i: int) -> None:
        client = self.client(self.url)
        k = i
        while not self.stop.is_set():
            name, started = self.names[k % len(self.names)], time.perf_counter()
            k += 1
            try:
                out, headers = client.complete(name, self.texts[k % len(self.texts)], self.max_tokens)
                outcome = "ok" if headers.get("x-model") == name else f"wrong model {headers.get('x-model')}"
                record = (started, time.perf_counter(), out["usage"]["completion_tokens"], outcome)
            except Refused as exc:
                record = (started, time.perf_counter(), 0, "refused")
                time.sleep(exc.retry_after / 10)
            except Exception as exc:  # every other outcome is a failure, reported
                record = (started, time.perf_counter(), 0, f"failed {type(exc).__name__}: {exc}")
            with self.lock:
                self.records.append(record)
                if record[3] not in ("ok", "refused"):
                    self.errors.append(record[3])


def serving_version(url: str, name: str) -> int | None:
    return ((get_json(url + "/health").get("models") or {}).get(name, {}).get("serving") or {}).get("version")


def wait_version(url: str, name: str, version: int, timeout_s: float = 120) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if serving_version(url, name) == version:
            return time.perf_counter()
        time.sleep(0.05)
    raise RuntimeError(f"the server never served {name} v{version}: {get_json(url + '/health')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--swaps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0, help="steady load before the swaps, and the "
                        "length of each direct measurement")
    parser.add_argument("--gap", type=float, default=3.0, help="seconds of load between two swaps")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--memory-budget-bytes", type=int, default=None, help="the server's byte budget "
                        "(default: none, every model resident)")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="openai", help="the load generator: "
                        "'openai' (the openai package, what users run) or 'lean' (standard-library HTTP, little CPU "
                        "of its own, to see the server's share alone)")
    args = parser.parse_args()

    from llm_assets.core.artifacts import LocalArtifactStore
    from llm_assets.core.registry import ModelRegistry

    names = [f"model-{i}" for i in range(args.models)]
    with tempfile.TemporaryDirectory(prefix="serve-multi-") as tmp:
        tmp = Path(tmp)
        a, b = build_ggufs(tmp)
        store, url_db = LocalArtifactStore(tmp / "store"), f"sqlite:///{tmp}/registry.db"
        with ModelRegistry(url_db) as registry:
            for name in names:
                for path in (a, b):
                    art = store.put_content_addressed(path)
                    registry.register(name, gguf_uri=art.uri, gguf_sha256=art.sha256, gguf_bytes=art.size,
                                      gate_passed=True, metrics={"strict_accuracy": 0.0})
                registry.promote(name, 1, actor="bench")
        texts = prompts(40)
        direct_before = direct_tokens_per_s([a] * args.models, texts, args.max_tokens, args.seconds / 2)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "llm_assets.cli", "serve", "--registry-url", url_db, "--port", str(port),
                   "--cache-dir", str(tmp / "cache"), "--poll-interval-s", "0.2", "--n-threads", "1",
                   "--smoke-items", "4", "--log-level", "warning"]
        if args.memory_budget_bytes:
            command += ["--memory-budget-bytes", str(args.memory_budget_bytes)]
        server = subprocess.Popen(command, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
        try:
            deadline = time.monotonic() + 180
            while not all(_safe(serving_version, url, n) == 1 for n in names):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start serving every model")
                time.sleep(0.1)
            with Clients(url, names, texts, args.clients, args.max_tokens, args.client) as clients:
                time.sleep(2)  # warm-up, not measured
                steady_start = time.perf_counter()
                time.sleep(args.seconds)
                steady_end = time.perf_counter()
                windows = []
                with ModelRegistry(url_db) as registry:
                    for i in range(args.swaps):
                        name, moved = names[i % len(names)], time.perf_counter()
                        current = registry.resolve(name, "production").version
                        target = registry.promote(name, 3 - current, actor="bench").version
                        windows.append((moved, wait_version(url, name, target)))
                        time.sleep(args.gap)
        finally:
            server.terminate()
            server.wait(timeout=60)
        direct_after = direct_tokens_per_s([a] * args.models, texts, args.max_tokens, args.seconds / 2)

    records = [r for r in clients.records if r[0] >= steady_start]
    failed = sum(1 for r in clients.records if r[3] not in ("ok", "refused"))
    refused = sum(1 for r in clients.records if r[3] == "refused")
    overlaps = lambda r: any(r[0] <= end and r[1] >= start for start, end in windows)  # noqa: E731
    ok = [r for r in records if r[3] == "ok"]
    during = [r[1] - r[0] for r in ok if overlaps(r)]
    steady = [r[1] - r[0] for r in ok if not overlaps(r)]
    served_tps = sum(r[2] for r in ok if r[1] <= steady_end) / (steady_end - steady_start)
    direct_tps = (direct_before + direct_after) / 2
    result = {
        "models": args.models, "clients": args.clients, "alias_moves": len(windows),
        "failed_requests": failed, "refused_429_503": refused, "requests": len(clients.records),
        "swap_seconds_max": round(max(end - start for start, end in windows), 3),
        "steady_p99_s": round(p99(steady), 4), "swap_p99_s": round(p99(during), 4),
        "swap_over_steady_p99": round(p99(during) / p99(steady), 3), "requests_during_swaps": len(during),
        "served_tokens_per_s": round(served_tps, 1), "direct_tokens_per_s": round(direct_tps, 1),
        "direct_tokens_per_s_before_after": [round(direct_before, 1), round(direct_after, 1)],
        "served_over_direct": round(served_tps / direct_tps, 3), "memory_budget_bytes": args.memory_budget_bytes, "client": args.client,
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
    }
    result["passed"] = (failed == 0 and result["swap_over_steady_p99"] <= 1.5 and result["served_over_direct"] >= 0.95)
    print(f"\n{'metric':34} {'served (one server)':30} {'direct llama-cpp-python':24} target")
    for name, served, direct, target in [
            ("failed / refused (429, 503)", f"{failed} / {refused}", "-", "0 failed"),
            ("p99 latency (s)", f"steady {result['steady_p99_s']} / swaps {result['swap_p99_s']}", "-",
             f"swaps <= 1.5x steady ({result['swap_over_steady_p99']}x)"),
            ("tokens/s", result["served_tokens_per_s"], result["direct_tokens_per_s"],
             f">= 0.95x direct ({result['served_over_direct']}x)")]:
        print(f"{name:34} {str(served):30} {str(direct):24} {target}")
    if clients.errors:
        print("first errors:", *clients.errors[:5], sep="\n  ")
    print(json.dumps(result))
    return 0


def _safe(fn, *args):
    try:
        return fn(*args)
    except Exception:  # the server is still starting
        return None


if __name__ == "__main__":
    sys.exit(main())
