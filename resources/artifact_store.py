"""ArtifactStoreResource: a local folder or an S3 bucket behind one Dagster resource."""

from __future__ import annotations

from typing import Optional

import dagster as dg
from pydantic import Field

from llm_assets.core.artifacts import ArtifactStore, store_from_uri


class ArtifactStoreResource(dg.ConfigurableResource):
    """Where assets put their files; `store()` gives the ArtifactStore to call.

    Set the credentials with dg.EnvVar("AWS_ACCESS_KEY_ID") / dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
    or leave them unset to use boto3's default chain. They never appear in repr.
    """

    root: str = Field(
        default="./artifacts",
        description="Store root: a local folder (relative paths resolve against the working "
        "directory when the store is used), file:///abs/path, or s3://bucket/prefix.",
    )
    s3_endpoint_url: Optional[str] = Field(
        default=None,
        description="S3 endpoint for S3-compatible servers (MinIO, moto, R2); unset for AWS.",
    )
    aws_region: Optional[str] = Field(default=None, description="S3 region; unset uses boto3's default.")
    aws_access_key_id: Optional[str] = Field(
        default=None, repr=False,
        description="S3 access key id; set with dg.EnvVar('AWS_ACCESS_KEY_ID'), unset uses boto3's chain.",
    )
    aws_secret_access_key: Optional[str] = Field(
        default=None, repr=False,
        description="S3 secret key; set with dg.EnvVar('AWS_SECRET_ACCESS_KEY'), unset uses boto3's chain.",
    )

    def store(self) -> ArtifactStore:
        return store_from_uri(
            _resolved(self.root) or "./artifacts",
            endpoint_url=_resolved(self.s3_endpoint_url),
            region_name=_resolved(self.aws_region),
            aws_access_key_id=_resolved(self.aws_access_key_id),
            aws_secret_access_key=_resolved(self.aws_secret_access_key),
        )


def _resolved(value: Optional[str]) -> Optional[str]:
    # Dagster resolves EnvVar fields when it builds the resource; a resource used directly
    # (scripts, tests) still holds the EnvVar, whose str is the variable's name, not its value.
    return value.get_value() if isinstance(value, dg.EnvVar) else value
