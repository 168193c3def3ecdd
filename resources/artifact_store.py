"""ArtifactStoreResource: a local folder or an S3 bucket behind one Dagster resource."""

from __future__ import annotations

import os
from typing import Optional

import dagster as dg
from pydantic import Field

from llm_assets.core.artifacts import ArtifactStore, store_from_uri
from llm_assets.core.s3_settings import S3Settings

ROOT_ENV = "LLM_ASSETS_ARTIFACT_ROOT"
DEFAULT_ROOT = "./artifacts"


class ArtifactStoreResource(dg.ConfigurableResource):
    """Where assets put their files; `store()` gives the ArtifactStore to call, `s3_settings()` how it reaches S3.

    Every field may be left unset: it is then read from its environment variable when the store is used
    (never at import), the same variables a worker gets (S3Settings.to_env). Set fields with
    dg.EnvVar(...) to make a variable required; secrets never appear in repr.
    """

    root: Optional[str] = Field(
        default=None,
        description=f"Store root: a local folder (relative paths resolve against the working directory when the "
        f"store is used), file:///abs/path, or s3://bucket/prefix. Unset: ${ROOT_ENV}, else {DEFAULT_ROOT}.",
    )
    s3_endpoint_url: Optional[str] = Field(
        default=None,
        description="S3 endpoint for S3-compatible servers (MinIO, moto, R2). Unset: $LLM_ASSETS_S3_ENDPOINT_URL, "
        "else AWS.",
    )
    aws_region: Optional[str] = Field(
        default=None, description="S3 region. Unset: $AWS_REGION, else $AWS_DEFAULT_REGION, else boto3's default.")
    aws_access_key_id: Optional[str] = Field(
        default=None, repr=False,
        description="S3 access key id, e.g. dg.EnvVar('AWS_ACCESS_KEY_ID'). Unset: $AWS_ACCESS_KEY_ID, else "
        "boto3's chain (profile, instance role).",
    )
    aws_secret_access_key: Optional[str] = Field(
        default=None, repr=False,
        description="S3 secret key, e.g. dg.EnvVar('AWS_SECRET_ACCESS_KEY'). Unset: $AWS_SECRET_ACCESS_KEY, else "
        "boto3's chain.",
    )
    aws_session_token: Optional[str] = Field(
        default=None, repr=False,
        description="Session token of temporary credentials. Unset: $AWS_SESSION_TOKEN when the key id is the "
        "environment's own.",
    )

    def root_uri(self) -> str:
        """The configured root, else $LLM_ASSETS_ARTIFACT_ROOT, else ./artifacts: read now, at use time."""
        return _resolved(self.root) or os.environ.get(ROOT_ENV) or DEFAULT_ROOT

    def s3_settings(self) -> S3Settings:
        """How this store reaches S3: the configured fields, each unset one read from the environment now.

        Holds secrets: pass `.public()` to anything that shows or records it.
        """
        configured = S3Settings(
            endpoint_url=_resolved(self.s3_endpoint_url), region=_resolved(self.aws_region),
            access_key_id=_resolved(self.aws_access_key_id), secret_access_key=_resolved(self.aws_secret_access_key),
            session_token=_resolved(self.aws_session_token))
        return configured.or_else(S3Settings.from_env())

    def store(self) -> ArtifactStore:
        return store_from_uri(self.root_uri(), s3=self.s3_settings())


def _resolved(value: Optional[str]) -> Optional[str]:
    # Dagster resolves EnvVar fields when it builds the resource; a resource used directly
    # (scripts, tests) still holds the EnvVar, whose str is the variable's name, not its value.
    return value.get_value() if isinstance(value, dg.EnvVar) else value
