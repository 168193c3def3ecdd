"""Ctrl-C or SIGTERM stops a run: the interrupted step fails without a retry and the process exits.

Dagster retries an interrupted step under its RetryPolicy; before `fail_fast` stopped that, SIGTERM on
`make demo` started training again after the retry delay and the process kept running."""

import os
import signal
import subprocess
import sys
import time

import yaml

from tests.pipeline_configs import MODEL, MODELS_DIR, tiny_run_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sigterm_mid_training_stops_the_demo_without_a_retry(tmp_path):
    preset = tmp_path / "long.yaml"  # training long enough to be interrupted: minutes of tiny steps
    preset.write_text(yaml.safe_dump(tiny_run_config(max_steps=20_000, epochs=2000.0, save_steps=20_000,
                                                          logging_steps=20)))
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "dagster"), LLM_ASSETS_ARTIFACT_ROOT=str(tmp_path / "store"),
               LLM_ASSETS_REGISTRY_URL=f"sqlite:///{tmp_path}/registry.db", LLM_ASSETS_MODELS_DIR=MODELS_DIR,
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    (tmp_path / "dagster").mkdir()
    log_path = tmp_path / "demo.log"
    with open(log_path, "w") as log:
        demo = subprocess.Popen([sys.executable, "-m", "llm_assets.demo", "--model", MODEL, "--preset", str(preset)],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while "lora_adapter step " not in log_path.read_text():
            assert demo.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "training never started:\n" + log_path.read_text()[-3000:]
            time.sleep(0.5)
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    said = log_path.read_text()
    assert code == 1, said[-3000:]
    assert "interrupted (SIGINT or SIGTERM)" in said, said[-3000:]
    assert "requested a retry" not in said and "STEP_UP_FOR_RETRY" not in said
