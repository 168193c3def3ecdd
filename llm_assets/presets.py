"""Run-config presets: the YAML files under configs/, each a complete run config of the training graph.

Plain Python (no dagster), so the jobs, the retraining resource, the demo and the benchmarks read them
without importing one another.
"""

from __future__ import annotations

from pathlib import Path

import yaml

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


def preset_path(name_or_path: str | Path) -> Path:
    """The YAML file of a preset named under configs/ (no suffix), or the given path to any YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIGS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(preset_names())
        raise FileNotFoundError(f"no preset {str(name_or_path)!r} ({path}); known presets: {known}")
    return path


def load_preset(name_or_path: str | Path) -> dict:
    """A preset's run config, by name (configs/<name>.yaml) or by path."""
    return yaml.safe_load(preset_path(name_or_path).read_text(encoding="utf-8")) or {}


def preset_summary(name_or_path: str | Path) -> str:
    """What a preset is for: its leading comment lines after the first, which names the command that uses it."""
    lines = []
    for line in preset_path(name_or_path).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines[1:])


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


# Stages the model file itself describes (its data, benchmark and base model): a preset's values there are ignored
# for a model's default run, so the model file stays the one place that says what a model is made from.
MODEL_FILE_STAGES = ("raw_dataset", "eval_benchmark", "base_model")


def stage_config(preset: str | Path, asset: str, run_config: dict | None) -> dict:
    """A stage's config for one model's run: the run config's explicit fields over the model's preset's.

    This is what makes a bare Materialize of a model's partition (the Launchpad with nothing typed, a sensor's run)
    train with that model's own hyperparameters. `compute` is never taken from a preset: where work runs is the
    run's choice.
    """
    explicit = (((run_config or {}).get("ops") or {}).get(asset) or {}).get("config") or {}
    if asset in MODEL_FILE_STAGES:
        return dict(explicit)
    defaults = ((load_preset(preset).get("ops") or {}).get(asset) or {}).get("config") or {}
    return {**{k: v for k, v in defaults.items() if k != "compute"}, **explicit}
