"""Every setting of `llm-assets serve`, with a description: one source of truth for the CLI and the app."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, Field, field_validator, model_validator

from llm_assets.core.llama_runtime import REPACK_HELP, validate_repack
from llm_assets.core.s3_settings import S3Settings


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "llm-assets" / "serve")


class ServeConfig(BaseModel):
    """What to serve, from where, and the limits requests are held to."""

    model_config = {"extra": "forbid"}

    models: list[str] = Field(default_factory=list, description="Registry model names to serve (comma-separated on "
                              "the command line); a client names one as `model` (`<name>`, `<name>@<alias>`, "
                              "`<name>@<version>`). Empty: every model that has the alias in the registry, found "
                              "as they appear.")
    registry_url: Optional[str] = Field(
        default=None, description="Registry database URL (sqlite:///PATH or postgresql://...). Unset: "
        "$LLM_ASSETS_REGISTRY_URL, else $DAGSTER_HOME/registry.db.")
    alias: str = Field(default="production", description="The registry alias a bare model name means.")
    host: str = Field(default="127.0.0.1", description="Address to listen on (0.0.0.0 for every interface: then an "
                      "API key is required, or --insecure-no-auth).")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to listen on (0: any free port).")
    poll_interval_s: float = Field(default=5.0, gt=0, description="How often the registry's alias is read; a "
                                   "POST /v1/admin/refresh checks at once.")
    retry_failed_after_s: float = Field(
        default=300.0, gt=0, description="A version that failed to load is tried again after this long (the "
        "failure is noted in the registry once, not on every retry).")
    cache_dir: str = Field(default_factory=default_cache_dir, description="Where fetched GGUF files are kept, "
                           "named by sha256; the served and the previous file stay, older ones are removed.")
    s3_endpoint_url: Optional[str] = Field(
        default=None, description="S3-compatible endpoint for s3:// GGUF URIs (MinIO, moto). Unset: "
        "$LLM_ASSETS_S3_ENDPOINT_URL, else AWS. Credentials come from the environment as for the pipeline "
        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), else boto3's chain (profiles, roles).")
    s3_region: Optional[str] = Field(default=None, description="AWS region for s3:// URIs. Unset: $AWS_REGION, "
                                     "else $AWS_DEFAULT_REGION.")
    n_ctx: int = Field(default=2048, ge=16, description="Context window per request, in tokens (prompt + answer); "
                       "clamped to the model's training context.")
    n_threads: Optional[int] = Field(default=None, ge=1, description="llama.cpp threads; unset: 1 for models under "
                                     "64 MiB (more only spin), else the CPUs this process may use.")
    llama_repack: str = Field(default="auto", description=REPACK_HELP)
    max_tokens_limit: int = Field(default=512, ge=1, description="Largest max_tokens a request may ask for.")
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Largest request body; larger is 413.")
    grammar_max_schema_bytes: int = Field(default=65_536, ge=1024, description="Largest response_format JSON "
                                          "schema, in bytes of compact JSON; larger is a 400 naming its size.")
    grammar_max_depth: int = Field(default=64, ge=2, description="Deepest nesting (objects and arrays) of a "
                                   "response_format schema; deeper is a 400.")
    grammar_max_bytes: int = Field(default=262_144, ge=4096, description="Largest grammar a response_format may "
                                   "compile to; larger, or a minItems/maxItems/minLength/maxLength that would make "
                                   "one, is a 400.")
    grammar_timeout_s: float = Field(default=5.0, gt=0, description="Longest a response_format's grammar may take "
                                     "to compile in a grammar worker; then the worker is killed and replaced and the "
                                     "request gets a 400 (remembered for that schema). Also the longest wait for a "
                                     "free worker (then 503).")
    grammar_workers: int = Field(default=2, ge=1, description="Worker processes compiling response_format "
                                 "grammars, each with llama.cpp's library loaded.")
    grammar_worker_memory_bytes: int = Field(default=1 << 30, ge=64 << 20, description="Memory a grammar worker "
                                             "may map beyond what it holds at start; a schema needing more is a 400.")
    grammar_cache_bytes: int = Field(default=16 << 20, ge=0, description="Compiled grammars and refusals kept by "
                                     "schema hash, least recently used dropped first.")
    memory_budget_bytes: Optional[int] = Field(
        default=None, ge=1, description="Bytes of GGUF that may be loaded at once, every model together. A model "
        "that does not fit evicts the least recently used idle model (never one serving or with requests queued); "
        "a new version that does not fit beside its old one swaps with a short queue instead. Unset: no limit.")
    load: Literal["start", "first_use"] = Field(
        default="start", description="When a model is loaded: at start (and on every promotion), or on the first "
        "request for it (a request that finds it unloaded waits for the load).")
    max_queue_per_model: int = Field(default=32, ge=1, description="Requests running or queued on one model; more "
                                     "get 429 with Retry-After.")
    request_timeout_s: float = Field(default=300.0, gt=0, description="Longest a request may take, queue and "
                                     "generation included; then it is cancelled and gets a 504 timeout error.")
    max_waiting: int = Field(default=64, ge=1, description="Requests that may wait for a model being loaded or "
                             "swapped with a queue; more get 503 with Retry-After.")
    wait_timeout_s: float = Field(default=120.0, gt=0, description="Longest a request waits for a model to be "
                                  "loaded before it gets 503 with Retry-After.")
    smoke_items: int = Field(default=8, ge=0, description="Benchmark items the new model must answer before it is "
                             "swapped in (0: only check that it generates).")
    smoke_min_accuracy: float = Field(default=0.0, ge=0, le=1, description="Strict accuracy the smoke items must "
                                      "reach at least.")
    smoke_tolerance: float = Field(
        default=0.4, ge=0, le=1, description="The smoke accuracy may fall this far below the strict accuracy the "
        "registry recorded for the version (a handful of items is a noisy estimate); any further is a failure.")
    pet_max_tokens: int = Field(default=128, ge=16, description="Token budget of one /v1/pet/decide answer; the "
                                "grammar bounds the JSON, so this is never reached by a well-formed decision.")
    api_key_env: str = Field(default="LLM_ASSETS_SERVE_API_KEY", description="Environment variable holding the "
                             "clients' API key; when it is set, /v1/* requires `Authorization: Bearer <key>`.")
    admin_api_key_env: str = Field(default="LLM_ASSETS_SERVE_ADMIN_KEY", description="Environment variable holding "
                                   "the admin key that /v1/admin/* requires (the clients' key gets 403). Unset: "
                                   "admin endpoints are open only when no client key is set either, on loopback.")
    insecure_no_auth: bool = Field(default=False, description="Serve on a non-loopback address without an API key "
                                   "(refused otherwise); logged as a warning at start.")
    actor: str = Field(default="serve", description="Actor name on the notes the server adds to the registry.")

    @field_validator("llama_repack")
    @classmethod
    def _known_repack(cls, value: str) -> str:
        return validate_repack(value)

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value):
        if isinstance(value, str):  # the command line's comma-separated list
            value = [v.strip() for v in value.split(",") if v.strip()]
        for name in value or []:
            if "@" in name:
                raise ValueError(f"{name!r}: name a model; a client picks an alias or version as <name>@<ref>")
        return value

    @model_validator(mode="after")
    def _limits_fit(self) -> "ServeConfig":
        if self.max_tokens_limit >= self.n_ctx:
            raise ValueError(f"max_tokens_limit={self.max_tokens_limit} must be below n_ctx={self.n_ctx}, "
                             f"leaving room for a prompt")
        return self

    def s3_settings(self) -> S3Settings:
        """How s3:// GGUF URIs are reached: the endpoint and region set here, the rest from the environment,
        read now (the same variables the pipeline and its workers use)."""
        return S3Settings(endpoint_url=self.s3_endpoint_url, region=self.s3_region).or_else(S3Settings.from_env())

    def api_key(self) -> str | None:
        """Read at use time, never stored on the config (so it cannot end up in a repr or a log)."""
        return os.environ.get(self.api_key_env) or None

    def admin_key(self) -> str | None:
        return os.environ.get(self.admin_api_key_env) or None

    def exposure_problem(self) -> str | None:
        """Why this config must not start: an address other machines reach, and no key (fail closed)."""
        if is_loopback(self.host) or self.api_key() or self.insecure_no_auth:
            return None
        return (f"refusing to serve on {self.host} without an API key: set ${self.api_key_env} (or choose another "
                f"variable with --api-key-env), listen on 127.0.0.1, or pass --insecure-no-auth to serve every "
                f"client unauthenticated")


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
