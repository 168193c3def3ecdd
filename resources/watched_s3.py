"""WatchedS3Resource: dagster-aws's S3Resource for new_data_sensor, reaching S3 as the artifact store does."""

from __future__ import annotations

from dataclasses import replace

from dagster_aws.s3 import S3Resource

from llm_assets.core.s3_settings import S3Settings
from resources.artifact_store import _resolved


class WatchedS3Resource(S3Resource):
    """S3Resource whose unset endpoint_url, region_name and credentials are read when a client is made.

    They come from the variables the artifact store and the workers read (S3Settings.from_env:
    LLM_ASSETS_S3_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, ...), so a watched prefix on the same MinIO as
    the store needs no second set; a plain S3Resource would look at AWS_ENDPOINT_URL and AWS_DEFAULT_REGION.
    """

    def s3_settings(self) -> S3Settings:
        configured = S3Settings(
            endpoint_url=_resolved(self.endpoint_url), region=_resolved(self.region_name),
            access_key_id=_resolved(self.aws_access_key_id), secret_access_key=_resolved(self.aws_secret_access_key),
            session_token=_resolved(self.aws_session_token))
        fallback = S3Settings.from_env()
        if self.profile_name:  # a named profile brings its own credentials
            fallback = replace(fallback, access_key_id=None, secret_access_key=None, session_token=None)
        return configured.or_else(fallback)

    def get_client(self):
        s3 = self.s3_settings()
        # A filled-in S3Resource makes the client, so every other field (retries, SSL, profile) applies as usual.
        fields = {name: getattr(self, name) for name in S3Resource.model_fields}
        fields.update(endpoint_url=s3.endpoint_url, region_name=s3.region, aws_access_key_id=s3.access_key_id,
                      aws_secret_access_key=s3.secret_access_key, aws_session_token=s3.session_token)
        return S3Resource(**fields).get_client()
