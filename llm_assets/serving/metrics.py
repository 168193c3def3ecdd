"""Counters, gauges and latency histograms in Prometheus' text format (version 0.0.4), for /metrics.

Small and dependency-free on purpose: the server runs on Raspberry Pi class machines.
"""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PREFIX = "llm_serve"


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    escaped = (str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, v in pairs)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(pairs, escaped)) + "}"


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self._hist: dict[tuple, list] = {}  # (endpoint,) -> [bucket counts..., sum, count]
        self._gauges: dict[str, callable] = {}
        self._help = {
            "requests_total": "Requests answered, by endpoint and HTTP status.",
            "completion_tokens_total": "Tokens generated, by model and version.",
            "prompt_tokens_total": "Prompt tokens evaluated, by model and version.",
            "swaps_total": "Attempts to follow the registry alias, by result and failed stage.",
            "queued_requests_total": "Requests that waited for a model to load or to finish a swap with a queue.",
            "rejected_requests_total": "Requests refused with 429: their model's queue was full.",
            "timed_out_requests_total": "Requests cancelled at request_timeout_s.",
            "cancelled_requests_total": "Requests whose client went away before the answer; their work was stopped.",
            "request_seconds": "Time from a request's arrival to its last byte, by endpoint.",
        }

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self._counters["requests_total"][(("endpoint", endpoint), ("status", str(status)))] += 1
            h = self._hist.setdefault((endpoint,), [0] * (len(LATENCY_BUCKETS) + 2))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def tokens(self, model: str, version: int, prompt: int, completion: int) -> None:
        key = (("model", model), ("version", str(version)))
        with self._lock:
            self._counters["prompt_tokens_total"][key] += prompt
            self._counters["completion_tokens_total"][key] += completion

    def count(self, name: str, value: float = 1) -> None:
        with self._lock:
            self._counters[name][()] += value

    def swap(self, result: str, seconds: float | None, stage: str = "") -> None:
        with self._lock:
            self._counters["swaps_total"][(("result", result), ("stage", stage))] += 1
            if seconds is not None:
                self._counters["last_swap_seconds"] = {(): seconds}

    def gauge(self, name: str, help_text: str, read) -> None:
        """A value read at scrape time: read() -> number, or {labels tuple: number}."""
        self._gauges[name] = (help_text, read)

    def counter(self, name: str, labels: dict | None = None) -> float:
        key = tuple(sorted((labels or {}).items()))
        with self._lock:
            return sum(v for k, v in self._counters.get(name, {}).items() if set(key) <= set(k))

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, series in sorted(self._counters.items()):
                kind = "gauge" if name == "last_swap_seconds" else "counter"
                lines += [f"# HELP {PREFIX}_{name} {self._help.get(name, 'Seconds the last successful swap took.')}",
                          f"# TYPE {PREFIX}_{name} {kind}"]
                lines += [f"{PREFIX}_{name}{_labels(k)} {v:g}" for k, v in sorted(series.items())]
            if self._hist:
                name = f"{PREFIX}_request_seconds"
                lines += [f"# HELP {name} {self._help['request_seconds']}", f"# TYPE {name} histogram"]
                for (endpoint,), h in sorted(self._hist.items()):
                    for bound, count in zip(LATENCY_BUCKETS, h):
                        lines.append(f'{name}_bucket{{endpoint="{endpoint}",le="{bound:g}"}} {count}')
                    lines.append(f'{name}_bucket{{endpoint="{endpoint}",le="+Inf"}} {h[-1]}')
                    lines.append(f'{name}_sum{{endpoint="{endpoint}"}} {h[-2]:.6f}')
                    lines.append(f'{name}_count{{endpoint="{endpoint}"}} {h[-1]}')
        for name, (help_text, read) in sorted(self._gauges.items()):
            value = read()
            lines += [f"# HELP {PREFIX}_{name} {help_text}", f"# TYPE {PREFIX}_{name} gauge"]
            series = value if isinstance(value, dict) else {(): value}
            lines += [f"{PREFIX}_{name}{_labels(k)} {v:g}" for k, v in series.items() if v is not None]
        return "\n".join(lines) + "\n"
