"""The local `evaluate` metric modules (metric_modules/<name>/<name>.py) and their one loader.

`evaluate.load("rouge")` would fetch a script from the Hugging Face Hub, which the pipeline's machines
cannot reach; `evaluate.load(<folder>)` loads a script that ships inside this package instead, so the text
metrics keep evaluate's API (`.compute(predictions=..., references=...)`) and work offline.

Costs worth knowing: `import evaluate` imports transformers' pipelines and torch (about 5 s of CPU, measured
on the 2-core dev machine), paid once per process on the first text metric; evaluate copies each script into
$HF_MODULES_CACHE (default ~/.cache/huggingface/modules), which must be writable. Modules are loaded once per
process and kept in memory (no cache files under ~/.cache/huggingface/metrics).
"""

from __future__ import annotations

import functools
from pathlib import Path

from llm_assets.core.errors import ConfigError

MODULES_DIR = Path(__file__).parent / "metric_modules"
METRIC_MODULES = ("rouge", "bleu", "jaccard")


@functools.lru_cache(maxsize=None)
def load_metric(name: str):
    """The `evaluate.EvaluationModule` of one of METRIC_MODULES, loaded from this package."""
    if name not in METRIC_MODULES:
        raise ConfigError("metric", name, f"no local metric module by that name; known: {', '.join(METRIC_MODULES)}")
    import evaluate

    return evaluate.load(str(MODULES_DIR / name), keep_in_memory=True)


def compute(name: str, predictions: list[str], references: list[str], **kwargs) -> dict:
    return load_metric(name).compute(predictions=predictions, references=references, **kwargs)
