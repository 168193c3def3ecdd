import os

import pytest

# Nothing may be fetched from a model hub: tests use the embedded tiny model.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def pytest_collection_modifyitems(config, items):
    """Files holding slow tests first, in their own order otherwise.

    `make test` hands whole files to two workers in collection order; the file with the real-training
    ladder test takes about four minutes, and started last it would be the run's tail.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable sort: each file keeps its order


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3-compatible server (moto's server mode) on a free loopback port, one per test module."""
    pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
    from tests.moto_server import moto_server

    with moto_server() as endpoint:
        yield endpoint
