"""The lineage-tracked model registry: versions, production/previous aliases, history, lineage.

SQLAlchemy on SQLite (default) or PostgreSQL; the schema is migrated to head by Alembic on open.
Pure core: no dagster import.
"""

from llm_assets.core.registry.engine import default_registry_url
from llm_assets.core.registry.errors import RegistryConflictError, RegistryError, RegistryNotFoundError
from llm_assets.core.registry.models import PREVIOUS, PRODUCTION, STAGING, STATUSES
from llm_assets.core.registry.records import HistoryEvent, ModelSummary, VersionRecord
from llm_assets.core.registry.store import NO_PRODUCTION, ModelRegistry

__all__ = [
    "ModelRegistry", "VersionRecord", "HistoryEvent", "ModelSummary", "RegistryError", "RegistryNotFoundError",
    "RegistryConflictError", "NO_PRODUCTION", "PRODUCTION", "PREVIOUS", "STAGING", "STATUSES", "default_registry_url",
]
