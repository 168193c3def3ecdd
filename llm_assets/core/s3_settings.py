"""S3Settings: how to reach one S3-compatible server, as one value instead of five loose arguments.

The artifact store, the data loader, the new-data sensor, a remote worker's environment and the model
server all reach S3 the same way, so they share this object. Pure Python: boto3 is imported only when a
client is made, and nothing here imports dagster (a worker or the server may run without it).

Secrets (the credentials) stay out of repr and out of `public()`: only `to_env()` and `client()` see them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Optional

# The worker environment variables, by field. The endpoint has our own name: boto3's AWS_ENDPOINT_URL would
# also redirect every other AWS service a machine talks to.
ENV_NAMES: dict[str, str] = {
    "endpoint_url": "LLM_ASSETS_S3_ENDPOINT_URL",
    "region": "AWS_REGION",
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
}
# boto3 reads the region from AWS_DEFAULT_REGION, other AWS tools from AWS_REGION: a worker gets both.
REGION_FALLBACK_ENV = "AWS_DEFAULT_REGION"
SECRET_FIELDS = frozenset({"access_key_id", "secret_access_key", "session_token"})


@dataclass(frozen=True)
class S3Settings:
    """Endpoint, region and credentials of an S3-compatible server (AWS, MinIO, R2, moto).

    Every field is optional: an unset one is left to boto3's own chain (environment, profile, instance role).
    Empty strings count as unset, so a variable set to "" (AWS: no endpoint) means "the default".
    """

    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    access_key_id: Optional[str] = field(default=None, repr=False)
    secret_access_key: Optional[str] = field(default=None, repr=False)
    session_token: Optional[str] = field(default=None, repr=False)

    def __post_init__(self):
        for f in fields(self):
            if getattr(self, f.name) == "":
                object.__setattr__(self, f.name, None)

    # -- the worker environment ---------------------------------------------------

    def to_env(self) -> dict[str, str]:
        """The environment variables a worker needs to reach the same server (only the set ones).

        Holds secrets: hand it to a provider's secret/env mechanism, never to a log.
        """
        env = {ENV_NAMES[f.name]: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}
        if self.region:
            env[REGION_FALLBACK_ENV] = self.region
        return env

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "S3Settings":
        """The settings `to_env()` wrote, read back (default: this process's environment, read now)."""
        environ = os.environ if environ is None else environ
        values = {name: environ.get(var) or None for name, var in ENV_NAMES.items()}
        values["region"] = values["region"] or environ.get(REGION_FALLBACK_ENV) or None
        return cls(**values)

    # -- combining and showing ------------------------------------------------------

    def or_else(self, fallback: "S3Settings") -> "S3Settings":
        """These settings, each unset field taken from `fallback` (e.g. explicit config over the environment).

        Credentials travel as a set: a key id from one source with a secret from another would never sign.
        A session token belongs to its key id, so it is taken from `fallback` only for the same key id.
        """
        values = {f.name: getattr(self, f.name) or getattr(fallback, f.name)
                  for f in fields(self) if f.name not in SECRET_FIELDS}
        source = self if (self.access_key_id or self.secret_access_key) else fallback
        secrets = {name: getattr(source, name) for name in SECRET_FIELDS}
        if secrets["session_token"] is None and source.access_key_id == fallback.access_key_id:
            secrets["session_token"] = fallback.session_token
        return S3Settings(**values, **secrets)

    def public(self) -> dict[str, str]:
        """What may be shown or sent in clear (Pipes extras, logs, metadata): the set non-secret fields."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in SECRET_FIELDS and getattr(self, f.name)}

    @property
    def has_credentials(self) -> bool:
        return bool(self.access_key_id and self.secret_access_key)

    # -- boto3 ------------------------------------------------------------------------

    def session(self):
        """A boto3 Session with these credentials and region (unset ones: boto3's chain)."""
        import boto3

        return boto3.session.Session(aws_access_key_id=self.access_key_id,
                                     aws_secret_access_key=self.secret_access_key,
                                     aws_session_token=self.session_token, region_name=self.region)

    def client(self, service: str = "s3", config: Any = None, session: Any = None):
        """A boto3 client for `service`; `config` is an optional botocore Config (timeouts, retries).

        The endpoint applies to S3 only: it names an S3-compatible server, not e.g. STS.
        """
        session = session or self.session()
        endpoint = self.endpoint_url if service == "s3" else None
        return session.client(service, endpoint_url=endpoint, config=config)

    def with_resolved_credentials(self, session: Any = None) -> "S3Settings":
        """These settings with the credentials boto3's chain resolves here filled in (a profile, a role...).

        What a worker on another machine needs, where the chain would find nothing. Uses boto3's public
        Session.get_credentials(); when nothing is found the settings come back as they were.
        """
        credentials = (session or self.session()).get_credentials()
        if credentials is None:
            return self
        frozen = credentials.get_frozen_credentials()
        return replace(self, access_key_id=frozen.access_key, secret_access_key=frozen.secret_key,
                       session_token=frozen.token)
