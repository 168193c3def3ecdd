"""A run's compute limits: deadlines and budget from its run config, over each backend's defaults.

Where they live: `resources.compute_backends.config.limits` of the run config. `compute_backends` is a plain
object resource, which Dagster hands any config to without a schema; this module is that schema. So a preset
(configs/*.yaml) sets the limits for every run of its job, and the Launchpad shows and edits them per run:

    resources:
      compute_backends:
        config:
          limits: {max_cost_usd: 20.0, startup_timeout_seconds: 1200, heartbeat_timeout_seconds: 600,
                   max_runtime_seconds: {default: 3600, lora_adapter: 21600}}

Precedence: the run's tags (llm_assets/max_cost_usd; dagster/max_runtime lowers every stage's max_runtime),
then these limits, then the backend's own fields. Free of dagster.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from llm_assets.core.errors import ConfigError

LIMIT_FIELDS = {
    "max_cost_usd": "budget per run in USD, over every launch of the run",
    "startup_timeout_seconds": "a machine not running (nor its worker talking) this long after launch is stopped",
    "heartbeat_timeout_seconds": "no message from a running worker this long: the machine is stopped",
    "max_runtime_seconds": "longest a stage may run: a number for every stage, or {default: N, <stage>: N}",
}
WHERE = "resources.compute_backends.config.limits"


def _number(value: Any, where: str, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (positive and value == 0):
        raise ConfigError(where, value, "a positive number" if positive else "a number >= 0 (0: none)")
    return float(value)


def run_limits(run_config: Optional[Mapping], stage: str) -> dict[str, float]:
    """The limits a run's config sets for `stage` (only those it sets), validated with the field named."""
    section = (((run_config or {}).get("resources") or {}).get("compute_backends") or {}).get("config") or {}
    unknown = sorted(set(section) - {"limits"})
    if unknown:
        raise ConfigError(f"resources.compute_backends.config.{unknown[0]}", section[unknown[0]],
                          "unknown; compute_backends takes only `limits`")
    limits = section.get("limits") or {}
    if not isinstance(limits, Mapping):
        raise ConfigError(WHERE, limits, f"a mapping of {', '.join(LIMIT_FIELDS)}")
    chosen: dict[str, float] = {}
    for name, value in limits.items():
        where = f"{WHERE}.{name}"
        if name not in LIMIT_FIELDS:
            raise ConfigError(where, value, f"unknown limit; expected one of {', '.join(LIMIT_FIELDS)}")
        if name == "max_runtime_seconds" and isinstance(value, Mapping):
            per_stage = value.get(stage, value.get("default"))
            if per_stage is not None:
                chosen[name] = _number(per_stage, f"{where}.{stage if stage in value else 'default'}", False)
            continue
        chosen[name] = _number(value, where, positive=name == "max_cost_usd")
    return chosen
