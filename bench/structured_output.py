"""Structured-output conformance run: a few hundred varied JSON schemas through `response_format` to `llm-assets serve`.

Each schema is generated deterministically (objects nested in objects, arrays with minItems/maxItems, enums, const,
string formats, patterns and lengths, integers and numbers with bounds, booleans, nullables as type lists,
anyOf/oneOf, required and optional properties, additionalProperties false), plus a few the server must refuse
(an unanchored pattern, a repetition llama.cpp's grammar parser refuses, a schema over the size limit). Each answer
is checked with `jsonschema` (formats included). Prints accepted (200), rejected (400, reasons tallied), finished
(the grammar ended the answer), compliant (valid against its schema), the keywords the non-compliant answers broke,
and latency p50/p95; ends with one JSON line.

    .venv/bin/python bench/structured_output.py                      # starts a server on the tiny GGUF
    .venv/bin/python bench/structured_output.py --schemas 60          # quicker
    .venv/bin/python bench/structured_output.py --url http://127.0.0.1:8000 --model pet-brain

Without --url it builds the tiny untrained model that tests/serving/conftest.py builds, registers its GGUF in a
SQLite registry in a temporary folder and starts `llm-assets serve` on it on loopback (--gguf: another GGUF). An
untrained model picks tokens at random inside what the grammar allows: answers that reach max_tokens before the
grammar ends them are counted as truncated, not as failures of the grammar.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = "pet-brain"
FORMATS = ("date", "time", "date-time", "uuid", "email")
PATTERNS = ("^[a-z]{3,8}$", "^[A-Z][a-z]+$", "^[0-9]{4}-[0-9]{2}$", "^(red|green|blue)$", "^[a-f0-9]{6}$",
            r"^\d{3}-\d{4}$", r"^[\w.]+@example\.com$")


def leaf(rng: random.Random) -> dict:
    kind = rng.choice(["string", "enum", "const", "length", "pattern", "format", "integer", "number", "boolean",
                       "nullable"])
    if kind == "string":
        return {"type": "string"}
    if kind == "enum":
        return {"enum": rng.sample(["calm", "scared", "hungry", "sleepy", "playful", "curious"], rng.randint(2, 4))}
    if kind == "const":
        return {"const": rng.choice(["v1", 42, True, None, "fixed"])}
    if kind == "length":
        low = rng.randint(0, 4)
        return {"type": "string", "minLength": low, "maxLength": low + rng.randint(1, 12)}
    if kind == "pattern":
        return {"type": "string", "pattern": rng.choice(PATTERNS)}
    if kind == "format":
        return {"type": "string", "format": rng.choice(FORMATS)}
    if kind in ("integer", "number"):
        low = rng.randint(-50, 50)
        schema = {"type": kind, "minimum": low, "maximum": low + rng.randint(1, 100)}
        return schema if rng.random() < 0.7 else {"type": kind}
    if kind == "boolean":
        return {"type": "boolean"}
    return {"type": [rng.choice(["string", "integer", "boolean"]), "null"]}


def node(rng: random.Random, depth: int) -> dict:
    roll = rng.random()
    if depth < 3 and roll < 0.22:
        return obj(rng, depth + 1)
    if depth < 3 and roll < 0.38:
        low = rng.randint(0, 2)
        return {"type": "array", "items": node(rng, depth + 1), "minItems": low, "maxItems": low + rng.randint(0, 3)}
    if roll < 0.46:
        key = rng.choice(["anyOf", "oneOf"])  # disjoint alternatives: oneOf means exactly one matches
        return {key: [{"type": "integer"}, {"type": "string", "maxLength": 10}]}
    return leaf(rng)


def obj(rng: random.Random, depth: int) -> dict:
    names = rng.sample(["name", "mood", "count", "score", "tags", "when", "id", "ok", "note", "size", "owner"],
                       rng.randint(1, 5))
    schema = {"type": "object", "properties": {n: node(rng, depth) for n in names},
              "required": [n for n in names if rng.random() < 0.7]}
    if rng.random() < 0.6:
        schema["additionalProperties"] = False
    return schema


def refused_kinds(i: int) -> dict:
    """Schemas a server must refuse with a 400 (never a crash, never a stalled model)."""
    return [{"type": "string", "pattern": "[a-z]+"},
            {"type": "array", "items": {"type": "integer"}, "maxItems": 5000},
            {"type": "object", "description": "x" * 70_000}][i % 3]


def schemas(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 25 == 24:
            out.append(refused_kinds(i // 25))
        elif i % 10 == 3:
            out.append(node(rng, 1))  # a root that is not an object
        else:
            out.append(obj(rng, 1))
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_gguf(tmp: Path) -> Path:
    from llm_assets.core.gguf_export import convert_to_gguf
    from llm_assets.core.pet_task import generate_training_rows
    from llm_assets.core.tiny_model import TinyModelSpec, build_tiny_model

    spec = TinyModelSpec(vocab_size=300, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
                         pretrain_steps=5)
    build_tiny_model(tmp / "hf", [r["prompt"] for r in generate_training_rows(300, seed=5)], spec)
    return convert_to_gguf(tmp / "hf", tmp / "tiny-f32.gguf", "f32")


def start_server(tmp: Path, gguf: Path, max_tokens: int) -> tuple[subprocess.Popen, str]:
    from llm_assets.core.artifacts import LocalArtifactStore
    from llm_assets.core.registry import ModelRegistry

    url_db = f"sqlite:///{tmp}/registry.db"
    artifact = LocalArtifactStore(tmp / "store").put_content_addressed(gguf)
    with ModelRegistry(url_db) as registry:
        registry.register(MODEL, gguf_uri=artifact.uri, gguf_sha256=artifact.sha256, gguf_bytes=artifact.size,
                          gate_passed=True, metrics={"strict_accuracy": 0.0})
        registry.promote(MODEL, 1, actor="bench")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "llm_assets.cli", "serve", "--registry-url", url_db, "--port", str(port),
         "--cache-dir", str(tmp / "cache"), "--n-threads", "1", "--smoke-items", "0",
         "--max-tokens-limit", str(max_tokens), "--log-level", "warning"],
        cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
    return server, f"http://127.0.0.1:{port}"


def wait_ready(url: str, model: str, server: subprocess.Popen | None, timeout_s: float = 180) -> None:
    import httpx

    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            if httpx.post(url + "/v1/chat/completions", json=body, timeout=30).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer a chat within {timeout_s:g}s")


def broken_keyword(error) -> str:
    """The schema keyword an answer broke, e.g. 'format email', 'maximum (number)', 'required'."""
    if error.validator == "format":
        return f"format {error.validator_value}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{error.validator} ({error.schema.get('type', 'untyped')})"
    return str(error.validator)


def run(url: str, model: str, items: list[dict], max_tokens: int) -> dict:
    import httpx
    import jsonschema

    tally = collections.Counter()
    rejected, broken, latencies = collections.Counter(), collections.Counter(), []
    with httpx.Client(timeout=120) as http:
        for i, schema in enumerate(items):
            body = {"model": model, "max_tokens": max_tokens, "temperature": 0,
                    "messages": [{"role": "system", "content": "Answer with one JSON value."},
                                 {"role": "user", "content": f"Example {i}, please."}],
                    "response_format": {"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": schema}}}
            started = time.perf_counter()
            response = http.post(url + "/v1/chat/completions", json=body)
            elapsed = time.perf_counter() - started
            if response.status_code == 400:
                error = response.json()["error"]
                rejected[error.get("code") or error["message"][:60]] += 1
                continue
            if response.status_code != 200:
                tally[f"http_{response.status_code}"] += 1
                continue
            tally["accepted"] += 1
            latencies.append(elapsed)
            choice = response.json()["choices"][0]
            if choice["finish_reason"] != "stop":
                tally["truncated"] += 1
                continue
            tally["finished"] += 1
            try:
                answer = json.loads(choice["message"]["content"])
            except ValueError:
                broken["not JSON"] += 1
                continue
            errors = list(jsonschema.Draft202012Validator(
                schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).iter_errors(answer))
            if errors:
                broken.update({broken_keyword(e) for e in errors})
                tally["noncompliant"] += 1
            else:
                tally["compliant"] += 1
    return {"tally": tally, "rejected": rejected, "broken": broken, "latencies": sorted(latencies)}


def percentile(values: list[float], q: float) -> float | None:
    return round(values[min(len(values) - 1, int(q * len(values)))], 4) if values else None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schemas", type=int, default=300, help="how many schemas (every 25th one is a refusal)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--max-tokens", type=int, default=160, help="per answer (also the server's limit)")
    parser.add_argument("--url", help="a running `llm-assets serve` (default: start one on the tiny GGUF)")
    parser.add_argument("--model", default=MODEL, help="the model name to ask for")
    parser.add_argument("--gguf", type=Path, help="the GGUF to serve (default: build the tiny model)")
    args = parser.parse_args(argv)

    load_start, started = os.getloadavg()[0], time.perf_counter()
    items = schemas(args.schemas, args.seed)
    with tempfile.TemporaryDirectory(prefix="structured-bench-") as tmp:
        server = None
        url = args.url
        if url is None:
            server, url = start_server(Path(tmp), args.gguf or tiny_gguf(Path(tmp)), args.max_tokens)
        try:
            wait_ready(url, args.model, server)
            out = run(url, args.model, items, args.max_tokens)
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=60)
    tally, lat = out["tally"], out["latencies"]
    figures = {
        "schemas": len(items), "accepted": tally["accepted"], "rejected": sum(out["rejected"].values()),
        "rejected_reasons": dict(out["rejected"]), "other_errors": {k: v for k, v in tally.items() if "http" in k},
        "finished": tally["finished"], "truncated": tally["truncated"], "compliant": tally["compliant"],
        "noncompliant": tally["noncompliant"], "broken_keywords": dict(out["broken"].most_common()),
        "compliant_of_finished": round(tally["compliant"] / tally["finished"], 4) if tally["finished"] else None,
        "latency_p50_s": percentile(lat, 0.5), "latency_p95_s": percentile(lat, 0.95),
        "seconds": round(time.perf_counter() - started, 1), "load_1min_start": round(load_start, 2),
        "load_1min_end": round(os.getloadavg()[0], 2), "cores": os.cpu_count(),
    }
    print(f"structured output: {figures['schemas']} schemas to {url if args.url else 'a fresh server'}")
    print(f"  accepted (200)      {figures['accepted']}")
    print(f"  rejected (400)      {figures['rejected']}  {figures['rejected_reasons']}")
    print(f"  finished / truncated {figures['finished']} / {figures['truncated']} (max_tokens={args.max_tokens})")
    print(f"  compliant           {figures['compliant']} of {figures['finished']} finished "
          f"({figures['compliant_of_finished']}); broken keywords {figures['broken_keywords']}")
    print(f"  latency p50 / p95   {figures['latency_p50_s']} s / {figures['latency_p95_s']} s")
    print(f"  load average        {figures['load_1min_start']} -> {figures['load_1min_end']} on "
          f"{figures['cores']} CPUs, {figures['seconds']} s")
    return figures


if __name__ == "__main__":
    print(json.dumps(main()))
