"""The router's side of llama.cpp's server tests (tools/server/tests/unit/test_router.py), asked of `llm-assets serve`
serving several models under a memory budget that holds one: a busy model is never evicted for another, requests
waiting for models are served in arrival order, nothing is sent to a model that is stopping, and a client that
leaves while queued costs no running model its place.
Our own tests of what those tests ask; their text is not copied."""

import threading
import time

import httpx

from tests.serving.conftest import MODEL, RunningServer

A, B, C = MODEL, "ticket-router", "tiny-c"


def register(versions, name: str, path) -> int:
    artifact = versions.store.put_content_addressed(path)
    record = versions.registry.register(name, gguf_uri=artifact.uri, gguf_sha256=artifact.sha256,
                                        gguf_bytes=artifact.size, gate_passed=True,
                                        metrics={"strict_accuracy": 0.0, "gate_metric": "strict_accuracy",
                                                 "scorer": "json"})
    versions.registry.promote(name, record.version, actor="test")
    return artifact.size


def one_at_a_time(ggufs, versions, serve_config):
    """A server for A, B and C (the same GGUF each) whose memory budget holds exactly one of them."""
    size = max(register(versions, name, ggufs["a"]) for name in (A, B, C))
    return RunningServer(serve_config(models=[A, B, C], memory_budget_bytes=size, load="first_use", smoke_items=0,
                                      max_tokens_limit=240))


def loaded(server, name: str) -> bool:
    return (server.health(name).get("serving") or {}).get("version") is not None


class Background:
    """One request in a thread: its response (or error) and when it finished."""

    def __init__(self, server, model: str, max_tokens: int = 8, timeout: float = 120):
        self.response, self.error, self.done_at = None, None, None
        body = {"model": model, "prompt": "hunger 5", "max_tokens": max_tokens, "temperature": 0}

        def run():
            try:
                self.response = httpx.post(server.url + "/v1/completions", json=body, timeout=timeout)
            except httpx.HTTPError as exc:
                self.error = exc
            self.done_at = time.monotonic()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def ok(self, what: str) -> "Background":
        self.thread.join(180)
        assert self.error is None and self.response is not None, f"{what}: {self.error!r}"
        assert self.response.status_code == 200, f"{what}: {self.response.status_code} {self.response.text}"
        return self


def keep_busy(server, model: str, n: int = 6) -> list[Background]:
    """n long answers queued on `model`: it stays busy for a few hundred milliseconds."""
    jobs = [Background(server, model, max_tokens=240) for _ in range(n)]
    time.sleep(0.05)
    return jobs


def test_a_busy_model_is_not_evicted_for_another(ggufs, versions, serve_config):
    with one_at_a_time(ggufs, versions, serve_config) as server:
        Background(server, A).ok("loading A")
        busy = keep_busy(server, A)
        waiting = Background(server, B)
        for i, job in enumerate(busy):  # had A been evicted mid-queue, these would have failed
            job.ok(f"A's request {i}")
        waiting.ok("B's request, queued while A was busy")
        assert waiting.done_at > max(job.done_at for job in busy)
        assert loaded(server, B) and not loaded(server, A)


def test_requests_waiting_for_models_are_served_in_arrival_order(ggufs, versions, serve_config):
    with one_at_a_time(ggufs, versions, serve_config) as server:
        Background(server, A).ok("loading A")
        busy = keep_busy(server, A)
        first = Background(server, B)
        time.sleep(0.2)  # an unambiguous arrival order
        second = Background(server, C)
        for job in busy:
            job.ok("A's request")
        first.ok("B's request")
        second.ok("C's request")
        assert first.done_at < second.done_at


def test_nothing_is_sent_to_a_model_that_is_stopping(ggufs, versions, serve_config):
    with one_at_a_time(ggufs, versions, serve_config) as server:
        for round_ in range(3):  # each request for B stops A, and the request for A right behind it must wait
            Background(server, A).ok(f"round {round_}: A")
            evicting = Background(server, B)
            time.sleep(0.01)
            again = Background(server, A)
            evicting.ok(f"round {round_}: B")
            again.ok(f"round {round_}: A again, sent while A was stopping")


def test_a_client_that_leaves_the_queue_costs_no_model_its_place(ggufs, versions, serve_config):
    with one_at_a_time(ggufs, versions, serve_config) as server:
        Background(server, A).ok("loading A")
        busy = keep_busy(server, A)
        gone = Background(server, B, timeout=0.05)
        gone.thread.join(30)
        assert gone.error is not None  # the client gave up while B was waiting for A
        for job in busy:
            job.ok("A's request")
        time.sleep(2)
        assert loaded(server, A) and not loaded(server, B)
