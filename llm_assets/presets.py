"""Run-config presets: the YAML files under configs/, each a complete run config of the training graph.

Plain Python (no dagster), so the jobs, the retraining resource, the demo and the benchmarks read them
without importing one another.
"""

from __future__ import annotations

from pathlib import Path

import yaml

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


def load_preset(name_or_path: str) -> dict:
    """A preset's run config, by name (configs/<name>.yaml) or by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIGS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(preset_names())
        raise FileNotFoundError(f"no preset {name_or_path!r} ({path}); known presets: {known}")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))
