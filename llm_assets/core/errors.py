"""Errors the pipeline raises on purpose; each names what to fix."""


class PipelineError(Exception):
    """Base class: an error with a message meant for the user."""


class ConfigError(PipelineError, ValueError):
    """An invalid configuration value, raised before any compute is spent."""

    def __init__(self, field: str, value, why: str):
        self.field, self.value, self.why = field, value, why
        super().__init__(f"invalid config: {field}={value!r}: {why}")

    def __reduce__(self):  # so the error crosses a process boundary (llm_assets.core.isolated) intact
        return type(self), (self.field, self.value, self.why)


class DataFormatError(PipelineError, ValueError):
    """Input data that cannot be read; names the file and the line."""

    def __init__(self, path, line: int | None, why: str):
        self.path, self.line, self.why = str(path), line, why
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {why}")

    def __reduce__(self):
        return type(self), (self.path, self.line, self.why)


class UnsupportedArchitectureError(PipelineError):
    """The GGUF converter does not know this model architecture."""


class TrainingHealthError(PipelineError):
    """Training went wrong (non-finite loss, divergence, exploding gradients)."""


class ArtifactIntegrityError(PipelineError):
    """An artifact's bytes do not match the sha256 recorded for it."""
