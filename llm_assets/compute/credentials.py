"""What a rented worker may do in the artifact store: read it, and write only its own job's prefixes.

Why: a marketplace host (Vast.ai, a community RunPod machine) is someone else's computer. Handing it the
orchestrator's long-lived S3 key lets it overwrite any manifest, GGUF or checkpoint the next worker loads,
forever. So a remote worker never gets that key; it gets one of:

1. Temporary credentials from STS AssumeRole (`worker_role_arn`), with a session policy written here per job:
   read anything under the store's root, write only `runs/<run_id>/<stage>/` (its output), `checkpoints/<key>/`
   (its job's checkpoints) and its Pipes message prefix. AWS grants the intersection of the role's policy
   and this session policy, so the role itself may be broad. They expire: give the role a MaxSessionDuration
   at least the stage's max_runtime (STS refuses a longer DurationSeconds; role chaining caps it at 1 h).
   MinIO serves AssumeRole on its S3 endpoint, which is where STS is asked when the store has an endpoint.
2. A separate worker key the operator provisioned with such a prefix-scoped policy (`worker_aws_access_key_id`,
   `worker_aws_secret_access_key`, `worker_aws_session_token`), passed through as given, token included.

Free of dagster; boto3 is imported when credentials are asked for.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Optional

from llm_assets.core.errors import ConfigError
from llm_assets.core.s3_settings import S3Settings

MAX_STS_SECONDS = 12 * 3600
MIN_STS_SECONDS = 900


def _arn(bucket: str, key: str = "") -> str:
    return f"arn:aws:s3:::{bucket}" + (f"/{key}" if key else "")


def write_prefixes(root: str, run_id: str, stage: str, key: str, messages_prefix: str) -> list[str]:
    """The key prefixes one job's worker writes (relative to the bucket), each ending in '/'."""
    def under_root(part: str) -> str:
        return "/".join(p for p in (root.strip("/"), part) if p) + "/"
    return [under_root(f"runs/{run_id}/{stage}"), under_root(f"checkpoints/{key}"), messages_prefix.strip("/") + "/"]


def scoped_policy(bucket: str, root: str, prefixes: list[str]) -> dict:
    """An IAM policy: read (and list) everything under `root`, write only under `prefixes`."""
    root_prefix = (root.strip("/") + "/") if root.strip("/") else ""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadTheStore", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [_arn(bucket, f"{root_prefix}*")]},
        {"Sid": "ListTheStore", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [_arn(bucket)],
         "Condition": {"StringLike": {"s3:prefix": [f"{root_prefix}*"]}}},
        {"Sid": "WriteOnlyThisJob", "Effect": "Allow",
         "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"],
         "Resource": [_arn(bucket, f"{p}*") for p in prefixes]},
    ]}


def assume_worker_role(orchestrator: S3Settings, *, role_arn: str, session_name: str, policy: dict,
                       seconds: float, sts_endpoint_url: Optional[str] = None) -> S3Settings:
    """Temporary, job-scoped credentials for the worker (endpoint and region kept, key id / secret / token new)."""
    from botocore.exceptions import ClientError

    session = orchestrator.session()
    endpoint = sts_endpoint_url or orchestrator.endpoint_url  # MinIO / moto serve STS on the S3 endpoint
    sts = session.client("sts", endpoint_url=endpoint)
    duration = int(min(MAX_STS_SECONDS, max(MIN_STS_SECONDS, seconds)))
    try:
        answer = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name[:64], Policy=json.dumps(policy),
                                 DurationSeconds=duration)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("AccessDenied", "ValidationError", "MalformedPolicyDocument", "NoSuchEntity"):
            raise ConfigError("worker_role_arn", role_arn, f"STS refused AssumeRole ({code}) for {duration}s: the "
                              "orchestrator must be allowed sts:AssumeRole on it, and its MaxSessionDuration must "
                              "cover the stage's max_runtime") from None
        raise
    credentials = answer["Credentials"]
    return replace(orchestrator, access_key_id=credentials["AccessKeyId"],
                   secret_access_key=credentials["SecretAccessKey"], session_token=credentials["SessionToken"])


def provisioned_worker(orchestrator: S3Settings, access_key_id: Optional[str], secret_access_key: Optional[str],
                       session_token: Optional[str]) -> S3Settings:
    """The operator's separate worker credential, with the store's endpoint and region."""
    if not access_key_id or not secret_access_key:
        raise ConfigError("worker_aws_access_key_id", access_key_id and "***",
                          "a worker credential needs both worker_aws_access_key_id and worker_aws_secret_access_key")
    if access_key_id == orchestrator.access_key_id:
        raise ConfigError("worker_aws_access_key_id", "***", "is the orchestrator's own key; give workers a "
                          "separate, prefix-scoped one (llm_assets/compute/credentials.py)")
    return S3Settings(endpoint_url=orchestrator.endpoint_url, region=orchestrator.region, access_key_id=access_key_id,
                      secret_access_key=secret_access_key, session_token=session_token)
