"""A run's compute limits: the run config's (a preset's) over the backend's fields, the run's tags over both,
every bad value refused naming its field; every gpu preset sets them."""

from types import SimpleNamespace

import pytest

from llm_assets.compute.backends.runpod import RunPodBackend
from llm_assets.compute.limits import run_limits
from llm_assets.core.errors import ConfigError
from llm_assets.presets import load_preset


def context(run_config=None, tags=None):
    return SimpleNamespace(run=SimpleNamespace(run_config=run_config or {}, tags=tags or {}, run_id="r"))


def limits(**values):
    return {"resources": {"compute_backends": {"config": {"limits": values}}}}


def test_the_run_configs_limits_override_the_backend_and_the_tags_override_both():
    backend = RunPodBackend(api_key="k", max_cost_usd=25.0, max_runtime_seconds=7200)
    assert backend.limits(context(), "lora_adapter")["max_cost_usd"] == 25.0
    chosen = backend.limits(context(limits(max_cost_usd=3.0, max_runtime_seconds={"default": 60, "lora_adapter": 900})),
                            "lora_adapter")
    assert chosen["max_cost_usd"] == 3.0 and chosen["max_runtime_seconds"] == 900
    assert chosen["startup_timeout_seconds"] == backend.startup_timeout_seconds
    assert backend.limits(context(limits(max_runtime_seconds={"default": 60})), "gguf_model")["max_runtime_seconds"] == 60
    lowered = backend.limits(context(limits(max_runtime_seconds=900), {"dagster/max_runtime": "120"}), "lora_adapter")
    assert lowered["max_runtime_seconds"] == 120


@pytest.mark.parametrize("config, where", [
    (limits(max_cost_usd=0), "limits.max_cost_usd=0"),
    (limits(max_cost=5), "limits.max_cost=5"),
    (limits(heartbeat_timeout_seconds="soon"), "limits.heartbeat_timeout_seconds='soon'"),
    (limits(max_runtime_seconds={"lora_adapter": -1}), "limits.max_runtime_seconds.lora_adapter=-1"),
    ({"resources": {"compute_backends": {"config": {"budget": 1}}}}, "compute_backends.config.budget=1"),
])
def test_bad_limits_are_refused_naming_the_field(config, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.").replace("'", ".")):
        run_limits(config, "lora_adapter")


@pytest.mark.parametrize("preset", ["gpu_small", "gpu_medium", "gpu_large"])
def test_every_gpu_preset_sets_a_budget_and_deadlines(preset):
    chosen = run_limits(load_preset(preset), "lora_adapter")
    assert set(chosen) == {"max_cost_usd", "startup_timeout_seconds", "heartbeat_timeout_seconds",
                           "max_runtime_seconds"}
    assert run_limits(load_preset(preset), "gguf_model")["max_runtime_seconds"] < chosen["max_runtime_seconds"]


def test_a_bad_run_cost_tag_is_refused_by_name():
    from llm_assets.compute.backends.remote import run_cap

    assert run_cap(context(tags={"llm_assets/max_cost_usd": "2.5"}), 9.0) == 2.5
    with pytest.raises(ConfigError, match="llm_assets/max_cost_usd"):
        run_cap(context(tags={"llm_assets/max_cost_usd": "lots"}), 1.0)
