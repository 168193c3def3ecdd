"""Every model's production alias from one server: routing by `model`, each answer labelled with the version and
file that gave it, promotions and rollbacks of one model under load from the openai client, pinned versions, and
a byte budget smaller than both models served by eviction."""

import threading
import time

import httpx

from tests.serving.conftest import MODEL, RunningServer

OTHER = "ticket-router"


def register(versions, name: str, path) -> tuple[int, str]:
    artifact = versions.store.put_content_addressed(path)
    record = versions.registry.register(name, gguf_uri=artifact.uri, gguf_sha256=artifact.sha256,
                                        gguf_bytes=artifact.size, gate_passed=True,
                                        metrics={"gate_metric": "exact_match", "exact_match": 0.0, "scorer": "text"})
    return record.version, artifact.sha256


class TwoModelLoad:
    """Clients asking both models in turn through the openai client; every answer's X-Model / X-Model-Sha256
    must be the model asked for and one of its registered files."""

    def __init__(self, server, files: dict[str, set], clients: int = 4):
        self.server, self.files = server, files
        self.stop, self.failures, self.answers = threading.Event(), [], {name: 0 for name in files}
        self.refused = 0  # 429/503 with Retry-After: documented, counted apart
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def _client(self, i: int) -> None:
        import openai

        client, n = self.server.openai(), 0
        while not self.stop.is_set():
            name = list(self.files)[(i + n) % len(self.files)]
            n += 1
            try:
                raw = client.completions.with_raw_response.create(model=name, prompt=f"hello {n}", max_tokens=4,
                                                                  temperature=0)
            except (openai.RateLimitError, openai.InternalServerError) as exc:
                if exc.status_code in (429, 503) and exc.response.headers.get("Retry-After"):
                    self.refused += 1
                    time.sleep(float(exc.response.headers["Retry-After"]) / 10)
                    continue
                self.failures.append(f"{name}: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - every other outcome is a failure to report
                self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            if raw.headers["X-Model"] != name or raw.headers["X-Model-Sha256"] not in self.files[name]:
                self.failures.append(f"asked {name}, answered by {raw.headers['X-Model']} "
                                     f"{raw.headers['X-Model-Sha256'][:12]}")
            self.answers[name] += 1

    def wait_answers(self, n: int, timeout_s: float = 60) -> None:
        start, deadline = dict(self.answers), time.monotonic() + timeout_s
        while any(self.answers[k] - start[k] < n for k in start):
            assert time.monotonic() < deadline and not self.failures, (self.answers, self.failures)
            time.sleep(0.02)


def test_two_models_promoted_and_rolled_back_under_load_each_answer_from_the_right_model(
        ggufs, versions, serve_config):
    a1, sha_a1 = register(versions, MODEL, ggufs["a"])
    a2, sha_a2 = register(versions, MODEL, ggufs["b"])
    b1, sha_b1 = register(versions, OTHER, ggufs["b"])
    b2, sha_b2 = register(versions, OTHER, ggufs["a"])
    versions.registry.promote(MODEL, a1, actor="test")
    versions.registry.promote(OTHER, b1, actor="test")
    # No model list: every model with a production version is found and served.
    with RunningServer(serve_config(models=[])) as server:
        server.wait_serving(a1)
        listed = {m["id"]: m for m in httpx.get(server.url + "/v1/models").json()["data"]}
        assert set(listed) == {MODEL, OTHER} and listed[OTHER]["sha256"] == sha_b1
        with TwoModelLoad(server, {MODEL: {sha_a1, sha_a2}, OTHER: {sha_b1, sha_b2}}) as load:
            load.wait_answers(5)
            for name, version in ((MODEL, a2), (OTHER, b2), (MODEL, a1), (OTHER, b1), (MODEL, a2)):
                versions.registry.promote(name, version, actor="test")
                assert server.refresh(name)["serving"] == version
                load.wait_answers(5)
            versions.registry.rollback(OTHER, actor="test")
            server.refresh(OTHER)
            load.wait_answers(5)
        assert load.failures == [] and load.refused == 0
        # A promotion of one model swapped only that one: the other kept its single process all along.
        assert server.served(OTHER).holder.current.info.version == b2
        assert server.served(MODEL).holder.current.info.version == a2
        pinned = httpx.post(server.url + "/v1/completions", json={"model": f"{MODEL}@{a1}", "prompt": "hi",
                                                                  "max_tokens": 2}, timeout=60)
        assert pinned.status_code == 200 and pinned.headers["X-Model-Version"] == str(a1)
        assert pinned.headers["X-Model-Sha256"] == sha_a1
        unknown = httpx.post(server.url + "/v1/completions", json={"model": "nope", "prompt": "hi"}, timeout=30)
        assert unknown.status_code == 404 and MODEL in unknown.json()["error"]["message"]


def test_a_byte_budget_smaller_than_both_models_serves_both_by_eviction(ggufs, versions, serve_config):
    a, sha_a = register(versions, MODEL, ggufs["a"])
    b, sha_b = register(versions, OTHER, ggufs["b"])
    versions.registry.promote(MODEL, a, actor="test")
    versions.registry.promote(OTHER, b, actor="test")
    budget = max(ggufs["a"].stat().st_size, ggufs["b"].stat().st_size) + 1000  # one model at a time
    with RunningServer(serve_config(models=[MODEL, OTHER], memory_budget_bytes=budget)) as server:
        peak = [0]
        watching = threading.Event()

        def watch():
            while not watching.is_set():
                peak[0] = max(peak[0], server.state.fleet.budget.loaded_bytes())
                time.sleep(0.005)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        with TwoModelLoad(server, {MODEL: {sha_a}, OTHER: {sha_b}}, clients=3) as load:
            load.wait_answers(10, timeout_s=120)
        watching.set()
        watcher.join(5)
    assert load.failures == []
    assert server.state.fleet.budget.evictions >= 2 and peak[0] <= budget
