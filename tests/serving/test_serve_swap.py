"""Hot swaps: the server follows promotions and rollbacks under load with no failed request; a bad version
never replaces the served one; a memory limit turns the swap into a short queue."""

import threading
import time

import httpx
import pytest

from tests.serving.conftest import MODEL, RunningServer

PET = {"hunger": 80, "energy": 50, "happiness": 60, "hygiene": 70, "time": "morning", "objects": {"carrot": 2}}


class Load:
    """Clients hammering the server from threads (openai completions, chat streams, pet decisions)."""

    def __init__(self, server, clients: int = 4):
        self.server, self.clients = server, clients
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok, self.failures, self.versions = 0, [], set()

    def _client(self, i: int) -> None:
        client = self.server.openai()
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                if (i + n) % 3 == 0:
                    out = client.completions.create(model=MODEL, prompt=f"<|user|>\nhunger {n}\n<|assistant|>\n",
                                                    max_tokens=16, temperature=0)
                    assert out.usage.completion_tokens >= 1
                    version = int(out.system_fingerprint.split("-v")[1].split("-")[0])
                elif (i + n) % 3 == 1:
                    raw = client.chat.completions.with_raw_response.create(
                        model=MODEL, messages=[{"role": "user", "content": f"energy {n}"}], max_tokens=16,
                        temperature=0, stream=True)
                    chunks = list(raw.parse())
                    assert chunks and chunks[-1].choices[0].finish_reason in ("length", "stop")
                    version = int(raw.headers["x-model-version"])
                else:
                    response = httpx.post(self.server.url + "/v1/pet/decide", json=PET, timeout=60)
                    assert response.status_code == 200, response.text
                    version = response.json()["version"]
                with self.lock:
                    self.ok += 1
                    self.versions.add(version)
            except Exception as exc:  # every failure is collected and reported by the test
                with self.lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self):
        deadline = time.monotonic() + 60
        while self.server.health().get("serving") is None:  # load starts once a model is served
            assert time.monotonic() < deadline, self.server.health()
            time.sleep(0.05)
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=120)

    def wait_requests(self, n: int, timeout_s: float = 60) -> None:
        target, deadline = self.ok + n, time.monotonic() + timeout_s
        while self.ok < target:
            assert time.monotonic() < deadline and not self.failures, self.failures[:3]
            time.sleep(0.02)


def test_promotions_and_rollbacks_under_load_fail_no_request(ggufs, versions, serve_config):
    v1, v2 = versions.add(ggufs["a"]), versions.add(ggufs["b"])
    versions.promote(v1)
    with RunningServer(serve_config(poll_interval_s=0.1)) as server, Load(server) as load:
        server.wait_serving(v1)
        load.wait_requests(10)
        versions.promote(v2)  # followed by polling, no notification
        server.wait_serving(v2)
        load.wait_requests(10)
        versions.registry.rollback(MODEL, actor="test")
        server.wait_serving(v1)
        load.wait_requests(10)
        versions.promote(v2)
        server.wait_serving(v2)
        load.wait_requests(10)
        health = server.health()
        deadline = time.monotonic() + 30
        while server.served().holder.loaded_bytes() != ggufs["b"].stat().st_size:  # v1 unloads once drained
            assert time.monotonic() < deadline, server.served().holder.loaded_bytes()
            time.sleep(0.02)
    assert load.failures == [] and load.ok >= 40
    assert load.versions == {v1, v2}
    assert health["status"] == "ok" and health["registry"]["last_swap"]["from_version"] == v1
    assert server.state.metrics.counter("swaps_total", {"result": "success"}) == 4


def test_in_flight_request_finishes_on_the_model_it_started_on(ggufs, versions, serve_config):
    v1, v2 = versions.add(ggufs["a"]), versions.add(ggufs["b"])
    versions.promote(v1)
    with RunningServer(serve_config()) as server:
        server.wait_serving(v1)
        old = server.served().holder.try_acquire()  # a request has taken v1, as every request does first
        versions.promote(v2)
        assert server.refresh()["serving"] == v2
        new = server.openai().completions.create(model=MODEL, prompt="hi", max_tokens=2)
        assert "-v2-" in new.system_fingerprint
        assert not old.closed and old.in_flight == 1  # the old model waits for its request
        answer = old.submit("completion", {"prompt": "<|user|>\nhi\n<|assistant|>\n", "max_tokens": 4,
                                           "stream": False, "temperature": 0}).result(timeout=60)
        assert answer["usage"]["completion_tokens"] >= 1  # answered by v1 after v2 took over
        old.leave()
        deadline = time.monotonic() + 30
        while not old.closed or server.served().holder.loaded_bytes() != ggufs["b"].stat().st_size:
            assert time.monotonic() < deadline, "the drained model was never unloaded"
            time.sleep(0.02)


@pytest.mark.parametrize("damage, stage, words", [
    ("garbage", "load", "llama.cpp could not load"),
    ("truncated", "load", "llama.cpp could not load"),
    ("changed_after_registration", "verify", "sha256 mismatch"),
    ("missing", "fetch", "no such file"),
    ("smoke", "smoke", "strict accuracy 0.00 on 3 benchmark items < required 0.60"),
])
def test_a_bad_version_never_replaces_the_served_one(ggufs, versions, serve_config, copy_of, damage, stage, words):
    v1 = versions.add(ggufs["a"])
    versions.promote(v1)
    if damage in ("garbage", "truncated"):
        bad = versions.add(ggufs[damage])
    elif damage == "smoke":  # loads fine, but answers far below the accuracy the registry recorded for it
        bad = versions.add(ggufs["b"], accuracy=1.0)
    else:
        bad = versions.add(copy_of(ggufs["b"], "b.gguf"))
        path = versions.store.local_path(versions.registry.get(MODEL, bad).gguf_uri)
        if damage == "missing":
            path.unlink()
        else:
            path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with RunningServer(serve_config()) as server, Load(server, clients=2) as load:
        server.wait_serving(v1)
        load.wait_requests(5)
        versions.promote(bad)
        assert server.refresh()["serving"] == v1  # the poll may have tried it first: both report the same
        load.wait_requests(5)
        health = server.health()
        assert health["status"] == "degraded" and health["serving"]["version"] == v1
        failure = health["registry"]["last_failure"]
        assert (failure["version"], failure["stage"]) == (bad, stage) and words in failure["error"]
        [note] = versions.notes()
        assert note.to_version == bad and note.actor.startswith("serve@") and words in note.reason
        assert f"still serving v{v1}" in note.reason
        server.refresh()  # checked again: not retried at once, and not noted twice
        assert len(versions.notes()) == 1
        assert server.state.metrics.counter("swaps_total", {"result": "failed", "stage": stage}) == 1
        # A rollback through the registry is followed the same way, and health recovers.
        versions.registry.rollback(MODEL, actor="test")
        assert server.refresh()["serving"] == v1 and server.health()["status"] == "ok"
    assert load.failures == []
    assert list((server.served().follower.cache_dir).glob(".*")) == []  # no half-fetched file left behind


def test_memory_limited_swap_queues_requests_instead_of_failing(ggufs, versions, serve_config):
    big, small = ggufs["a"], ggufs["b"]
    v1, v2, bad = versions.add(big), versions.add(small), versions.add(ggufs["truncated"])
    versions.promote(v2)
    limit = big.stat().st_size + 1000  # the big one fits alone, never beside another
    with RunningServer(serve_config(memory_budget_bytes=limit)) as server, Load(server) as load:
        server.wait_serving(v2)
        load.wait_requests(10)
        for version in (v1, v2, v1):
            versions.promote(version)
            assert server.refresh()["serving"] == version
            assert server.served().holder.loaded_bytes() <= limit
            load.wait_requests(10)
        versions.promote(bad)  # fails to load: the old model is loaded again before the queue is released
        server.refresh()
        health = server.health()
        assert health["serving"]["version"] == v1 and health["registry"]["last_failure"]["stage"] == "load"
        load.wait_requests(10)
    assert load.failures == [] and load.versions == {v1, v2}
    assert server.state.metrics.counter("swaps_total", {"result": "success"}) == 4
    assert server.state.metrics.counter("queued_requests_total") > 0  # the swaps really held requests back


def test_gguf_fetched_from_s3_and_verified(ggufs, versions, serve_config, monkeypatch):
    """A version whose GGUF lives on a real S3-compatible server (moto, on loopback)."""
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.serving.conftest import free_port

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-secret-never-shown")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="models")
        from llm_assets.core.artifacts_s3 import S3ArtifactStore
        from llm_assets.core.s3_settings import S3Settings

        art = S3ArtifactStore("models", "pet", S3Settings(endpoint_url=endpoint)).put_content_addressed(ggufs["b"])
        v1 = versions.add(ggufs["a"])
        v2 = versions.registry.register(MODEL, gguf_uri=art.uri, gguf_sha256=art.sha256, gguf_bytes=art.size,
                                        gate_passed=True, metrics={"strict_accuracy": 0.0}).version
        v3 = versions.registry.register(MODEL, gguf_uri=art.uri, gguf_sha256="0" * 64, gguf_bytes=art.size,
                                        gate_passed=True, metrics={"strict_accuracy": 0.0}).version
        versions.promote(v1)
        with RunningServer(serve_config(s3_endpoint_url=endpoint, poll_interval_s=30)) as server:
            server.wait_serving(v1)
            versions.promote(v2)
            assert server.refresh()["serving"] == v2 and server.health()["serving"]["uri"] == art.uri
            versions.promote(v3)  # the registry's sha256 does not match the object: never served
            server.refresh()
            health = server.health()
            assert health["serving"]["version"] == v2 and health["registry"]["last_failure"]["stage"] == "verify"
            assert "s3-secret" not in str(health) + str([n.reason for n in versions.notes()])
    finally:
        moto.stop()


def test_llm_assets_serve_command(ggufs, versions, serve_config, tmp_path):
    """The console entry point, as a user starts it: a process that serves, and stops cleanly on SIGTERM."""
    import signal
    import subprocess
    import sys

    versions.promote(versions.add(ggufs["a"]))
    config = serve_config()
    process = subprocess.Popen([sys.executable, "-m", "llm_assets.cli", "serve", "--registry-url", versions.url,
                                "--port", str(config.port), "--cache-dir", str(tmp_path / "cli-cache"),
                                "--smoke-items", "2", "--log-level", "info"], stderr=subprocess.PIPE, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{config.port}", time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=5).json().get("models", {}).get(MODEL, {}).get("serving"):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "llm-assets serve did not come up"
            time.sleep(0.2)
        answer = httpx.post(url + "/v1/pet/decide", json=PET, timeout=60)
        assert answer.status_code == 200 and answer.json()["version"] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why it stopped.
    assert process.returncode in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr and "unloaded pet-brain v1" in stderr
    assert "n_ctx_train" not in stderr  # the context is clamped before llama.cpp could warn about it
    bad = subprocess.run([sys.executable, "-m", "llm_assets.cli", "serve", "--n-ctx", "8"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--n-ctx: Input should be greater than or equal to 16" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "llm_assets.cli", "serve", "--llama-repack", "fast"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--llama-repack" in bad.stderr and "choose one of auto, on, off" in bad.stderr
