"""The registry's errors. Messages never carry a database password."""

from llm_assets.core.errors import PipelineError


class RegistryError(PipelineError):
    """A registry operation failed or was refused (database error, gate not passed, artifact mismatch...)."""


class RegistryNotFoundError(RegistryError, LookupError):
    """An unknown model, version or alias."""


class RegistryConflictError(RegistryError):
    """A compare-and-set lost: production moved between the caller's read and its write."""
