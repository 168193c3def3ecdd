"""Dagster resources: how the pipeline reaches storage and compute."""

from resources.artifact_store import ArtifactStoreResource

__all__ = ["ArtifactStoreResource"]
