"""The model registry as a Dagster resource, plus the promotion policy the sensor applies."""

from typing import Literal, Optional

import dagster as dg
from pydantic import Field

from llm_assets.core.registry import ModelRegistry


class ModelRegistryResource(dg.ConfigurableResource):
    """Where registered model versions, aliases and their history live."""

    url: Optional[str] = Field(
        default=None,
        description="SQLAlchemy URL: sqlite:///path/registry.db or postgresql://user:pass@host/db. Unset: "
        "$LLM_ASSETS_REGISTRY_URL, else sqlite:///$DAGSTER_HOME/registry.db.")
    timeout_s: float = Field(default=10.0, gt=0, description="Longest wait for a database lock or connection.")
    promotion_mode: Literal["auto", "manual"] = Field(
        default="auto", description="auto: the promotion sensor promotes passing challengers; manual: it only "
        "reports them and a person promotes with `llm-assets registry promote`.")
    min_improvement: float = Field(
        default=0.0, ge=0, le=1,
        description="Strict-accuracy gain over the production version a challenger needs to be promoted.")

    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.url, timeout_s=self.timeout_s)
