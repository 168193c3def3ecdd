"""The layers the architecture promises: the pure core, the stages, the worker and what it uses, the provider
clients, the presets and the server never import dagster (a worker on a rented GPU and the server on a Raspberry
Pi run without it; only compute backends and assets, which run in the orchestrator, do)."""

import subprocess
import sys

import pytest

PACKAGES_WITHOUT_DAGSTER = ["llm_assets.core", "llm_assets.stages", "llm_assets.compute.worker",
                            "llm_assets.compute.launch", "llm_assets.compute.cost", "llm_assets.compute.checkpoint_sync",
                            "llm_assets.compute.providers", "llm_assets.serving", "llm_assets.presets"]

PROBE = """
import importlib, pkgutil, sys
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), name + "."):
        if ".migrations." not in info.name:  # Alembic's revision scripts run only inside alembic
            importlib.import_module(info.name)
print(sorted(m for m in sys.modules if m == "dagster" or m.startswith("dagster.") or m.startswith("dagster_")))
"""


@pytest.mark.parametrize("package", PACKAGES_WITHOUT_DAGSTER)
def test_package_never_imports_dagster(package):
    out = subprocess.run([sys.executable, "-c", PROBE, package], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", f"{package} imports dagster: {out.stdout[-500:]}"
