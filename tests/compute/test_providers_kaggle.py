"""KaggleBackend through the official kaggle package against a local stand-in of Kaggle's kernels API."""

from __future__ import annotations

import dagster as dg
import pytest

from standins.kaggle_api import KaggleStandin
from standins.pipeline import ACCESS_KEY, SECRET_KEY, run_stage_asset, training_config

KEY = "kaggle-key-STANDIN-5d1e-never-in-logs"
FAST = {"poll_interval_seconds": 0.3, "message_poll_seconds": 0.3, "message_flush_seconds": 0.3,
        "cancel_poll_seconds": 0.5}


@pytest.fixture
def kaggle(tmp_path, monkeypatch):
    # What the user attached to the notebook in Kaggle's UI, under the variables' names.
    secrets = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    with KaggleStandin(tmp_path, username="pet-lab", key=KEY, user_secrets=secrets) as cloud:
        monkeypatch.setenv("TEST_KAGGLE_USERNAME", "pet-lab")
        monkeypatch.setenv("TEST_KAGGLE_KEY", KEY)
        yield cloud


def backend(cloud, **fields):
    from llm_assets.compute.backends.kaggle import KaggleBackend

    # The stand-in's kernel image already has the project (this venv): nothing to pip install.
    return KaggleBackend(username=dg.EnvVar("TEST_KAGGLE_USERNAME"), key=dg.EnvVar("TEST_KAGGLE_KEY"),
                         api_endpoint=cloud.url, install=[], **{**FAST, **fields})


def test_kernel_trains_after_queue_full_and_a_500_and_secrets_stay_in_kaggle_secrets(s3, kaggle):
    store, inputs = s3
    kaggle.faults.server_errors = 1   # attempt 1: HTTP 500
    kaggle.faults.no_capacity = 1     # attempt 2: GPU session limit
    result = run_stage_asset(backend(kaggle), store, inputs, training_config(seed=31), max_retries=2,
                             raise_on_error=False)
    said = result.logged_text
    assert result.success, said[-3000:]
    assert "RETRYABLE (provider_unavailable)" in said and "RETRYABLE (queue_full)" in said
    assert "lora_adapter step" in said and "output:" in said  # streamed live, then output and log fetched
    push = kaggle.pushes[-1]
    assert push["enableGpu"] is True and push["kernelType"] == "script" and push["isPrivate"] is True
    assert push["slug"].startswith("pet-lab/llm-assets-lora-adapter-")
    # the pushed source carries the Pipes bootstrap but no secret: those come from Kaggle Secrets
    assert "DAGSTER_PIPES_CONTEXT" in push["text"] and SECRET_KEY not in push["text"]
    assert ACCESS_KEY not in push["text"] and KEY not in push["text"]
    metadata = result.asset_materializations_for_node("stage_under_test")[0].metadata
    assert metadata["compute_backend"].value == "kaggle" and metadata["hourly_price_usd"].value == 0.0
    assert kaggle.leaked() == []
    assert KEY not in said and SECRET_KEY not in said


def test_refused_credentials_are_fatal_and_never_shown(s3, kaggle, monkeypatch):
    store, inputs = s3
    monkeypatch.setenv("TEST_KAGGLE_KEY", "kaggle-WRONG-key-secret")
    result = run_stage_asset(backend(kaggle), store, inputs, training_config(seed=32), raise_on_error=False)
    assert not result.success
    said = result.logged_text
    assert "FATAL (config)" in said and "KAGGLE_KEY" in said and "kaggle-WRONG-key-secret" not in said
    assert kaggle.launches == []
