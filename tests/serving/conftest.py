"""Shared pieces of the serving tests: tiny GGUFs built here, a SQLite registry, a real server on loopback."""

import shutil
import socket
import threading
import time

import httpx
import pytest

from llm_assets.core.artifacts import LocalArtifactStore
from llm_assets.core.gguf_export import convert_to_gguf
from llm_assets.core.pet_task import generate_training_rows
from llm_assets.core.registry import ModelRegistry
from llm_assets.core.tiny_model import TinyModelSpec, build_tiny_model

MODEL = "pet-brain"
SPEC = TinyModelSpec(vocab_size=300, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
                     pretrain_steps=5)


@pytest.fixture(scope="session")
def ggufs(tmp_path_factory):
    """Two different GGUFs of the untrained tiny model (f32 and f16), and damaged files."""
    root = tmp_path_factory.mktemp("serve-gguf")
    build_tiny_model(root / "hf", [r["prompt"] for r in generate_training_rows(300, seed=5)], SPEC)
    paths = {"a": convert_to_gguf(root / "hf", root / "a-f32.gguf", "f32"),
             "b": convert_to_gguf(root / "hf", root / "b-f16.gguf", "f16")}
    data = paths["b"].read_bytes()
    paths["truncated"] = root / "truncated.gguf"
    paths["truncated"].write_bytes(data[: len(data) // 2])
    paths["garbage"] = root / "garbage.gguf"
    paths["garbage"].write_bytes(b"GGUF" + b"\xff" * 4096)
    return paths


class Versions:
    """Registers GGUF files as versions of MODEL (through a real local artifact store) and moves production."""

    def __init__(self, root):
        self.store = LocalArtifactStore(root / "store")
        self.url = f"sqlite:///{root}/registry.db"
        self.registry = ModelRegistry(self.url)

    def add(self, path, accuracy: float = 0.0) -> int:
        artifact = self.store.put_content_addressed(path)
        record = self.registry.register(
            MODEL, gguf_uri=artifact.uri, gguf_sha256=artifact.sha256, gguf_bytes=artifact.size,
            quantization=path.stem, gate_passed=True, metrics={"strict_accuracy": accuracy},
            benchmark_version="pet-bench-v1")
        return record.version

    def promote(self, version: int) -> None:
        self.registry.promote(MODEL, version, actor="test")

    def notes(self) -> list:
        return [e for e in self.registry.history(MODEL) if e.event == "note"]


@pytest.fixture
def versions(tmp_path):
    v = Versions(tmp_path)
    yield v
    v.registry.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    """The real app under uvicorn in a thread of this process, on a free loopback port."""

    def __init__(self, config):
        import uvicorn

        from llm_assets.serving.app import create_app

        self.config = config
        self.app = create_app(config)
        self.state = self.app.state.serve
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=config.port,
                                                    log_level="warning", lifespan="on"))
        self.url = f"http://127.0.0.1:{config.port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def health(self, model: str = MODEL, **headers) -> dict:
        """One model's part of /health, with the server's overall status (`whole`: the body as sent)."""
        key = self.config.api_key()  # the details are for authenticated callers when the server has a key
        headers = headers or ({"Authorization": f"Bearer {key}"} if key else {})
        body = httpx.get(self.url + "/health", timeout=30, headers=headers).json()
        return {**(body.get("models") or {}).get(model, {}), "status": body["status"], "whole": body}

    def served(self, model: str = MODEL):
        return self.state.fleet.get(model)

    def wait_serving(self, version: int, timeout_s: float = 60) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            body = self.health()
            if (body.get("serving") or {}).get("version") == version:
                return body
            assert time.monotonic() < deadline, f"never served v{version}: {body}"
            time.sleep(0.05)

    def refresh(self, model: str = MODEL, **headers) -> dict:
        """Check the registry now; this model's outcome and the version it serves after the check."""
        response = httpx.post(self.url + "/v1/admin/refresh", timeout=120, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["models"][model]

    def openai(self, **kwargs):
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=kwargs.pop("api_key", "unused"), max_retries=0,
                      timeout=60, **kwargs)


@pytest.fixture
def serve_config(tmp_path, versions):
    from llm_assets.serving.config import ServeConfig

    def make(**overrides):
        values = dict(models=[MODEL], registry_url=versions.url, port=free_port(), cache_dir=str(tmp_path / "cache"),
                      poll_interval_s=0.2, smoke_items=3, n_ctx=256, max_tokens_limit=64, n_threads=1)
        return ServeConfig(**(values | overrides))
    return make


@pytest.fixture
def copy_of(tmp_path):
    def copy(path, name):
        return shutil.copy(path, tmp_path / name)
    return copy


@pytest.fixture
def server(ggufs, versions, serve_config):
    """A running server whose production alias points at v1 (ggufs["a"]), already serving it."""
    versions.promote(versions.add(ggufs["a"]))
    with RunningServer(serve_config()) as running:
        running.wait_serving(1)
        yield running
