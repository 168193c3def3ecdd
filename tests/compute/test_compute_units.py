"""The pure parts of compute: worker command (torchrun), job identity, cost and budget, selection, errors."""

import subprocess
import sys

import pytest

from llm_assets.compute.cost import BudgetExceededError, CostMeter
from llm_assets.compute.launch import job_key, worker_command, worker_environment
from llm_assets.core.s3_settings import S3Settings
from llm_assets.core.errors import ConfigError
from llm_assets.core.failures import (
    EXIT_FATAL, EXIT_RETRYABLE, TransientNetworkError, classify, error_from_exit, exit_status,
)
from llm_assets.compute.backends import ComputeBackends, LocalProcessBackend, exit_code_of
from llm_assets.compute.backends.kubernetes import K8sBackend, pod_failure
from llm_assets.compute.backends.remote import DetachedProcessBackend


def test_worker_command_single_device_and_torchrun_for_more_than_one_gpu():
    assert worker_command("lora_adapter", 0, "/py") == ["/py", "-m", "llm_assets.compute.worker", "lora_adapter"]
    assert worker_command("gguf_model", 1) == ["python", "-m", "llm_assets.compute.worker", "gguf_model"]
    assert worker_command("lora_adapter", 4) == ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=4",
                                             "-m", "llm_assets.compute.worker", "lora_adapter"]
    assert LocalProcessBackend(gpus=2).command("lora_adapter")[:2] == ["torchrun", "--standalone"]
    with pytest.raises(ConfigError, match="stage='train'"):
        worker_command("train")


def test_job_key_is_the_same_for_the_same_work_and_differs_otherwise():
    inputs = {"training_dataset": {"sha256": "a" * 64, "uri": "s3://x/1"}, "base_model": {"sha256": "b" * 64}}
    moved = {**inputs, "training_dataset": {"sha256": "a" * 64, "uri": "s3://elsewhere"}}
    assert job_key("lora_adapter", inputs, {"learning_rate": 0.1}) == job_key("lora_adapter", moved, {"learning_rate": 0.1})
    assert job_key("lora_adapter", inputs, {"learning_rate": 0.1}) != job_key("lora_adapter", inputs, {"learning_rate": 0.2})
    assert job_key("lora_adapter", inputs, {"learning_rate": 0.1}) != job_key("gguf_model", inputs, {"learning_rate": 0.1})


def test_cost_per_example_and_budget_cap_on_an_injected_clock():
    now = [1000.0]
    meter = CostMeter("runpod", hourly_price_usd=3.6, max_cost_usd=0.01, started_at=1000.0, clock=lambda: now[0])
    now[0] += 5  # 5 s at $3.60/h = $0.005
    report = meter.report(training_examples=100)
    assert report["cost_usd"] == pytest.approx(0.005)
    assert report["cost_per_training_example_usd"] == pytest.approx(0.00005)
    assert report["compute_seconds"] == 5 and report["max_cost_usd"] == 0.01
    assert meter.seconds_until_cap() == pytest.approx(5.0)
    meter.check_budget()
    now[0] += 6
    with pytest.raises(BudgetExceededError, match=r"exceeded the budget cap max_cost_usd=\$0.0100") as err:
        meter.check_budget()
    assert not classify(err.value).retryable
    assert CostMeter("local", 0.0).seconds_until_cap() is None


def test_unknown_backend_names_the_choices():
    backends = ComputeBackends({"local": LocalProcessBackend()})
    with pytest.raises(ConfigError, match=r"compute='runpod'.*\['in_process', 'local'\]"):
        backends.get("runpod")


@pytest.mark.parametrize("cls", [LocalProcessBackend, DetachedProcessBackend, K8sBackend])
def test_every_backend_field_is_described(cls):
    for name, field in cls.model_fields.items():
        assert field.description, f"{cls.__name__}.{name}"


def test_worker_environment_carries_store_endpoint_and_credentials_only_when_set():
    env = worker_environment(S3Settings(endpoint_url="http://127.0.0.1:9", access_key_id="AK", secret_access_key="SK"),
                             flush_seconds=2, extra={"HF_HUB_OFFLINE": 1})
    assert env["LLM_ASSETS_S3_ENDPOINT_URL"] == "http://127.0.0.1:9" and env["AWS_SECRET_ACCESS_KEY"] == "SK"
    assert "AWS_REGION" not in env and env["HF_HUB_OFFLINE"] == "1" and env["LLM_ASSETS_PIPES_FLUSH_SECONDS"] == "2"
    assert "AWS_SESSION_TOKEN" not in env
    temporary = worker_environment(S3Settings(region="eu-west-1", access_key_id="ASIA", secret_access_key="SK",
                                              session_token="TOKEN"), flush_seconds=2)
    assert temporary["AWS_SESSION_TOKEN"] == "TOKEN" and temporary["AWS_DEFAULT_REGION"] == "eu-west-1"


def test_the_worker_gets_the_credentials_the_store_resolved_through_boto3s_public_api(monkeypatch):
    from llm_assets.core.artifacts_s3 import S3ArtifactStore

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")  # a role's temporary credentials
    store = S3ArtifactStore("bucket", s3=S3Settings(endpoint_url="http://127.0.0.1:9", region="us-east-1"))
    resolved = store.resolved_s3_settings()
    assert (resolved.access_key_id, resolved.secret_access_key, resolved.session_token) == (
        "ASIAENV", "env-secret", "env-token")
    explicit = S3ArtifactStore("bucket", s3=S3Settings(region="us-east-1", access_key_id="AKIA",
                                                       secret_access_key="given"))
    resolved = explicit.resolved_s3_settings()
    assert (resolved.access_key_id, resolved.secret_access_key) == ("AKIA", "given")
    assert "env-secret" not in repr(store) and "given" not in repr(explicit)


def test_exit_codes_and_pod_failures_map_onto_the_failure_classification():
    assert exit_code_of("External execution process failed with code -9") == -9
    assert error_from_exit(0, "worker") is None
    assert classify(error_from_exit(-9, "worker")).reason == "preemption"
    assert "killed by SIGKILL" in str(error_from_exit(-9, "worker"))
    assert classify(error_from_exit(EXIT_RETRYABLE, "worker")).retryable
    assert not classify(error_from_exit(1, "worker")).retryable
    assert exit_status(classify(TransientNetworkError("x"))) == EXIT_RETRYABLE
    assert exit_status(classify(ValueError("x"))) == EXIT_FATAL
    assert classify(pod_failure(Exception("Terminated with exit code 75"))).retryable
    assert classify(pod_failure(Exception("Terminated with exit code 1"))).reason == "unclassified"
    assert classify(pod_failure(Exception('Failed: Reason="ImagePullBackOff" Message="x"'))).reason == "bootstrap"
    assert classify(pod_failure(Exception("Timed out while waiting for pod to become ready"))).reason == "queue_full"
    assert classify(pod_failure(Exception('Pod "p" was unexpectedly killed'))).reason == "preemption"
    assert classify(pod_failure(Exception("Terminated with exit code 137: OOMKilled"))).reason == "oom"


def test_worker_outside_dagster_says_how_it_is_started():
    done = subprocess.run([sys.executable, "-m", "llm_assets.compute.worker", "lora_adapter"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 2 and "DAGSTER_PIPES_CONTEXT is not set" in done.stderr


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_worker_help_prints_usage_without_a_pipes_context(flag):
    done = subprocess.run([sys.executable, "-m", "llm_assets.compute.worker", flag], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m llm_assets.compute.worker {raw_dataset|eval_benchmark|base_model|"
                                  "training_dataset|lora_adapter|gguf_model|eval_report}")
    for words in ("talking to Dagster through Pipes", "lora_adapter      reads training_dataset, base_model",
                  "raw_dataset       reads no upstream asset",
                  "DAGSTER_PIPES_CONTEXT", "LLM_ASSETS_S3_ENDPOINT_URL", "LLM_ASSETS_CHECKPOINT_DIR"):
        assert words in done.stdout
    assert "Traceback" not in done.stderr


def test_worker_refuses_an_unknown_stage_by_name():
    done = subprocess.run([sys.executable, "-m", "llm_assets.compute.worker", "lora_adaptr"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 2 and ("unknown stage 'lora_adaptr'; expected one of raw_dataset, eval_benchmark, "
                                     "base_model, training_dataset, lora_adapter, gguf_model, eval_report") in done.stderr
