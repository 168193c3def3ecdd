"""Dagster Pipes over the artifact store's S3 bucket at keys the backend chooses, so a restarted orchestrator
(or an adopted machine) reads the same job's context and messages."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Iterator

import dagster as dg
from dagster_aws.pipes import PipesS3MessageReader


class FixedKeyS3ContextInjector(dg.PipesContextInjector):
    """Pipes context as one JSON object at a key chosen by the backend (dagster's picks a random one)."""

    def __init__(self, *, bucket: str, client, key: str):
        self.bucket, self.client, self.key = bucket, client, key

    @contextlib.contextmanager
    def inject_context(self, context_data) -> Iterator[dict]:
        self.client.put_object(Body=json.dumps(context_data).encode("utf-8"), Bucket=self.bucket, Key=self.key)
        try:
            yield {"bucket": self.bucket, "key": self.key}
        finally:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)

    def no_messages_debug_text(self) -> str:
        return f"Pipes context at s3://{self.bucket}/{self.key}; the worker reads it with PipesS3ContextLoader."


class FixedPrefixS3MessageReader(PipesS3MessageReader):
    """PipesS3MessageReader on a recorded key prefix, so a restarted orchestrator reads the same job."""

    def __init__(self, *, key_prefix: str, **kwargs):
        super().__init__(**kwargs)
        self.key_prefix = key_prefix

    @contextlib.contextmanager
    def get_params(self) -> Iterator[dict]:
        with super().get_params() as params:
            yield {**params, "key_prefix": self.key_prefix}


class MessageClock:
    """When the worker last said anything through Pipes (a log line, a heartbeat, any message).

    Wraps the session's message handler, which the reader thread calls once per message.
    """

    def __init__(self, handler, clock=time.time):
        self.handler, self.clock = handler, clock
        self.last_at: float | None = None
        self.count = 0
        original = handler.handle_message

        def tracked(message):
            self.last_at, self.count = self.clock(), self.count + 1
            return original(message)

        handler.handle_message = tracked

    @property
    def opened(self) -> bool:
        return self.handler.received_opened_message
