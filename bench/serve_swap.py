"""Benchmark: zero-downtime swaps of one model under load.

Starts `llm-assets serve` as its own process on a SQLite registry in a temporary folder, drives it with 8
concurrent clients (completions, greedy, the pet benchmark's prompts), moves the production alias 5 times
(promote / rollback in turn), and compares with direct llama-cpp-python on the same GGUF:

  failed requests            must be 0
  p99 during swaps           at most 1.5x the steady p99
  served tokens/s            at least 0.95x direct llama-cpp-python (one Llama, same prompts, same settings)

The clients are `openai` clients on the same cores as the server; `--client lean` sends the same requests with
the standard library instead, whose own CPU is smaller, to see the server's share alone.

Run: .venv/bin/python bench/serve_swap.py [--gguf A.gguf --gguf-b B.gguf] [--seconds 20]
Without --gguf it builds the embedded tiny Llama (the production shape: 4 layers, 128 wide) untrained, and
exports f16 and q8_0 as the two versions. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = "pet-brain"


def build_ggufs(out: Path) -> tuple[Path, Path]:
    from llm_assets.core.gguf_export import export_gguf_variants
    from llm_assets.core.pet_task import generate_training_rows
    from llm_assets.core.tiny_model import TinyModelSpec, build_tiny_model

    build_tiny_model(out / "hf", [r["prompt"] for r in generate_training_rows(2000, seed=1)],
                     TinyModelSpec(pretrain_steps=20))
    variants = export_gguf_variants(out / "hf", out / "gguf", "pet", float_type="f16", quantizations=("q8_0",))
    return Path(variants["f16"]["path"]), Path(variants["q8_0"]["path"])


def prompts(n: int) -> list[str]:
    from llm_assets.core.pet_benchmark import generate_benchmark

    return [f"<|user|>\n{r['prompt']}\n<|assistant|>\n" for r in generate_benchmark(n_per_category=n // 5 + 1)][:n]


def direct_tokens_per_s(gguf: Path, texts: list[str], max_tokens: int, seconds: float) -> float:
    """One Llama in this process answering the prompts one after another, as the server's worker does."""
    from llm_assets.serving.model_process import load_llama

    llm, _ = load_llama(gguf, n_ctx=512, n_threads=1)
    try:
        tokens, started, i = 0, time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            out = llm.create_completion(texts[i % len(texts)], max_tokens=max_tokens, temperature=0)
            tokens += out["usage"]["completion_tokens"]
            i += 1
        return tokens / (time.perf_counter() - started)
    finally:
        llm.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Refused(Exception):
    """429 or 503 with Retry-After: the server's documented answer under pressure, counted apart."""

    def __init__(self, retry_after: float):
        super().__init__(f"refused, Retry-After {retry_after:g}")
        self.retry_after = retry_after


class LeanClient:
    """A keep-alive HTTP/1.1 client of the completions route on the standard library: the load generator's own
    CPU (it shares the cores with the server here) stays near 0.3 ms a request, where the `openai` client spends
    about 4 ms (pydantic models, httpx)."""

    def __init__(self, url: str):
        import http.client
        import urllib.parse

        netloc = urllib.parse.urlsplit(url).netloc
        self._conn = http.client.HTTPConnection(netloc, timeout=120)

    def complete(self, model: str, prompt: str, max_tokens: int) -> tuple[dict, dict]:
        """(response body, response headers); Refused for 429/503 with Retry-After, RuntimeError otherwise."""
        body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
        try:
            self._conn.request("POST", "/v1/completions", body=body, headers={
                "Content-Type": "application/json", "Authorization": "Bearer bench"})
            response = self._conn.getresponse()
            data = response.read()
        except Exception:
            self._conn.close()  # reconnects on the next request
            raise
        headers = {k.lower(): v for k, v in response.getheaders()}
        if response.status in (429, 503) and headers.get("retry-after"):
            raise Refused(float(headers["retry-after"]))
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
        return json.loads(data), headers


class OpenAIClient:
    """The same call through the `openai` package (what users' code runs)."""

    def __init__(self, url: str):
        import openai

        self._openai = openai
        self._client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=120)

    def complete(self, model: str, prompt: str, max_tokens: int) -> tuple[dict, dict]:
        try:
            raw = self._client.completions.with_raw_response.create(model=model, prompt=prompt,
                                                                    max_tokens=max_tokens, temperature=0)
        except (self._openai.RateLimitError, self._openai.InternalServerError) as exc:
            retry_after = exc.response.headers.get("Retry-After")
            if exc.status_code in (429, 503) and retry_after:
                raise Refused(float(retry_after)) from exc
            raise
        return raw.parse().model_dump(), {k.lower(): v for k, v in raw.headers.items()}


CLIENTS = {"lean": LeanClient, "openai": OpenAIClient}


class Clients:
    """N threads, each its own client, each sending the next prompt as soon as the last is answered. Records are
    (start, end, tokens, version or None for a failure)."""

    def __init__(self, url: str, texts: list[str], n: int, max_tokens: int, client: str = "openai"):
        self.url, self.texts, self.n, self.max_tokens = url, texts, n, max_tokens
        self.client = CLIENTS[client]
        self.records: list[tuple] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def _run(self, i: int) -> None:
        client = self.client(self.url)
        k = i
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                out, _ = client.complete(MODEL, self.texts[k % len(self.texts)], self.max_tokens)
                record = (started, time.perf_counter(), out["usage"]["completion_tokens"],
                          int(out["system_fingerprint"].split("-v")[1].split("-")[0]))
            except Exception as exc:  # every failure counts; the bench reports them
                record = (started, time.perf_counter(), 0, None)
                with self.lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            with self.lock:
                self.records.append(record)
            k += self.n

    def __enter__(self):
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.n)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=180)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] if ordered else float("nan")


def get_json(url: str) -> dict:
    """GET a JSON document with the standard library: the probe runs in the clients' process while they are
    timed, so it must cost them little (an httpx client per call builds an SSL context: milliseconds of GIL)."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=30)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def wait_version(url: str, version: int, timeout_s: float = 120) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ((get_json(url + "/health").get("models") or {}).get(MODEL, {}).get("serving") or {}).get("version") == version:
            return time.perf_counter()
        time.sleep(0.05)  # the probe itself is load on the server: keep it light
    raise RuntimeError(f"the server never served v{version}: {get_json(url + '/health')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, help="first version's GGUF (default: build the tiny model)")
    parser.add_argument("--gguf-b", type=Path, help="second version's GGUF (default: the q8_0 of the first)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--swaps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0, help="steady load before the swaps, and the "
                        "length of each direct measurement")
    parser.add_argument("--gap", type=float, default=3.0, help="seconds of load between two swaps")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--client", choices=sorted(CLIENTS), default="openai", help="the load generator: "
                        "'openai' (the openai package, what users run) or 'lean' (standard-library HTTP, little CPU "
                        "of its own, to see the server's share alone)")
    args = parser.parse_args()

    from llm_assets.core.artifacts import LocalArtifactStore
    from llm_assets.core.registry import ModelRegistry

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        tmp = Path(tmp)
        a, b = (args.gguf, args.gguf_b) if args.gguf and args.gguf_b else build_ggufs(tmp)
        sizes = [a.stat().st_size, b.stat().st_size]
        store, url_db = LocalArtifactStore(tmp / "store"), f"sqlite:///{tmp}/registry.db"
        with ModelRegistry(url_db) as registry:
            for path in (a, b):
                art = store.put_content_addressed(path)
                registry.register(MODEL, gguf_uri=art.uri, gguf_sha256=art.sha256, gguf_bytes=art.size,
                                  gate_passed=True, metrics={"strict_accuracy": 0.0})
            registry.promote(MODEL, 1, actor="bench")
        texts = prompts(40)
        direct_before = direct_tokens_per_s(a, texts, args.max_tokens, args.seconds / 2)

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "llm_assets.cli", "serve", "--registry-url", url_db, "--port", str(port),
             "--cache-dir", str(tmp / "cache"), "--poll-interval-s", "0.2", "--n-threads", "1",
             "--smoke-items", "4", "--log-level", "warning"], cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    wait_version(url, 1, timeout_s=1)
                    break
                except Exception:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("the server did not start")
            with Clients(url, texts, args.clients, args.max_tokens, args.client) as clients:
                time.sleep(2)  # warm-up, not measured
                steady_start = time.perf_counter()
                time.sleep(args.seconds)
                steady_end = time.perf_counter()
                windows = []
                with ModelRegistry(url_db) as registry:
                    for i in range(args.swaps):
                        moved = time.perf_counter()
                        if i % 2 == 0:
                            target = registry.promote(MODEL, 2 if i == 0 else registry.resolve(
                                MODEL, "previous").version, actor="bench").version
                        else:
                            target = registry.rollback(MODEL, actor="bench").version
                        windows.append((moved, wait_version(url, target)))
                        time.sleep(args.gap)
            served_end = steady_end
            metrics_text = __import__("httpx").get(url + "/metrics", timeout=30).text
        finally:
            server.terminate()
            server.wait(timeout=60)
        direct_after = direct_tokens_per_s(a, texts, args.max_tokens, args.seconds / 2)

    records = [r for r in clients.records if r[0] >= steady_start]
    failed = sum(1 for r in records if r[3] is None) + sum(1 for r in clients.records if r[3] is None and r[0] < steady_start)
    overlaps = lambda r: any(r[0] <= end and r[1] >= start for start, end in windows)
    during = [r[1] - r[0] for r in records if overlaps(r)]
    steady = [r[1] - r[0] for r in records if not overlaps(r)]
    steady_tokens = sum(r[2] for r in records if r[1] <= served_end)
    served_tps = steady_tokens / (served_end - steady_start)
    direct_tps = (direct_before + direct_after) / 2
    swap_seconds = [end - start for start, end in windows]
    result = {
        "failed_requests": failed, "requests": len(clients.records), "clients": args.clients,
        "alias_moves": len(windows), "swap_seconds_max": round(max(swap_seconds), 3),
        "steady_p99_s": round(p99(steady), 4), "swap_p99_s": round(p99(during), 4),
        "swap_over_steady_p99": round(p99(during) / p99(steady), 3), "requests_during_swaps": len(during),
        "served_tokens_per_s": round(served_tps, 1), "direct_tokens_per_s": round(direct_tps, 1),
        "direct_tokens_per_s_before_after": [round(direct_before, 1), round(direct_after, 1)],
        "served_over_direct": round(served_tps / direct_tps, 3),
        "gguf_bytes": sizes, "client": args.client, "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        "swaps_succeeded": sum(float(line.split()[-1]) for line in metrics_text.splitlines()
                               if line.startswith('llm_serve_swaps_total{result="success"')),
    }
    result["passed"] = (failed == 0 and result["swap_over_steady_p99"] <= 1.5 and result["served_over_direct"] >= 0.95)
    rows = [("failed requests", failed, "-", "0"),
            ("p99 latency (s)", f"steady {result['steady_p99_s']} / swaps {result['swap_p99_s']}", "-",
             f"swaps <= 1.5x steady ({result['swap_over_steady_p99']}x)"),
            ("tokens/s", result["served_tokens_per_s"], result["direct_tokens_per_s"],
             f">= 0.95x direct ({result['served_over_direct']}x)"),
            ("alias moves / swap time max (s)", f"{len(windows)} / {result['swap_seconds_max']}", "-", "-")]
    print(f"\n{'metric':34} {f'served ({args.clients} {args.client} clients)':34} {'direct llama-cpp-python':24} target")
    for name, served, direct, target in rows:
        print(f"{name:34} {str(served):34} {str(direct):24} {target}")
    if clients.errors:
        print("first errors:", *clients.errors[:5], sep="\n  ")
    print(json.dumps(result))
    return 0  # the figures are the result ("passed" says whether they reach the targets); errors raise


if __name__ == "__main__":
    sys.exit(main())
