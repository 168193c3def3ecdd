"""The browser tests' code location: production's Definitions plus `train_ui_smoke_job`.

The job runs tests/fixtures/ui_smoke.yaml, a whole-graph smoke run in about a minute, built the way production
builds its preset jobs (jobs.preset_job). It is a test fixture, so it lives here and never in the production
job list. tests/browser/workspace.yaml loads this file; tests/browser/conftest.py starts `dagster dev` on it.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from jobs import preset_job
from llm_assets.definitions import defs as production

UI_SMOKE = Path(__file__).resolve().parents[1] / "fixtures" / "ui_smoke.yaml"
MODEL = "pet-smoke"

# The smoke job trains the tests' own model (tests/fixtures/models/pet-smoke.yaml, conftest points the code location
# at that folder): its runs carry the partition, so the Launchpad launches them like any other job.
defs = dg.Definitions.merge(production, dg.Definitions(jobs=[preset_job(UI_SMOKE, tags={"dagster/partition": MODEL})]))
