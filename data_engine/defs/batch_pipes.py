"""Dagster Pipes over S3 for a Batch job: dagster-aws's S3 injector and reader at a fixed location.

dagster-aws picks a random S3 prefix per session. A Batch job outlives the step that submitted it, so
the prefix here is chosen once per job and kept in the job's tags: a retried step that reattaches to
the job reads the messages it writes. And each Batch attempt's writer counts its chunks from 1 again,
over the previous attempt's, so the reader starts over when an attempt starts and skips the chunks the
previous attempt left behind (written before it stopped).

Imported only inside the launcher's `run` (dagster_aws.pipes imports boto3).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError
from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader
from dagster_pipes import PipesBlobStoreMessageWriter, PipesContextData, PipesParams


class JobS3ContextInjector(PipesS3ContextInjector):
    """Writes the Pipes context to `<key_prefix>/context.json`; every attempt of the job reads it."""

    def __init__(self, *, bucket: str, client: Any, key_prefix: str):
        super().__init__(bucket=bucket, client=client, key_prefix=key_prefix)
        self.key = f"{key_prefix}/context.json"

    @contextmanager
    def inject_context(self, context: PipesContextData) -> Iterator[PipesParams]:
        self.client.put_object(Body=json.dumps(context).encode(), Bucket=self.bucket, Key=self.key)
        yield {"bucket": self.bucket, "key": self.key}
        self.client.delete_object(Bucket=self.bucket, Key=self.key)


class JobS3MessageReader(PipesS3MessageReader):
    """Reads the chunks `<key_prefix>/messages/<n>.json` of the job's current attempt."""

    def __init__(self, *, bucket: str, client: Any, key_prefix: str, interval: float):
        super().__init__(bucket=bucket, client=client, interval=interval)
        self.key_prefix = f"{key_prefix}/messages"
        self._not_before: dt.datetime | None = None
        self._lock = threading.Lock()  # the counter is moved by the reader thread and by `start_attempt`

    @contextmanager
    def get_params(self) -> Iterator[PipesParams]:
        yield {"bucket": self.bucket, "key_prefix": self.key_prefix, PipesBlobStoreMessageWriter.INCLUDE_STDIO_IN_MESSAGES_KEY: False}

    def start_attempt(self, previous_stopped_at_ms: int | None) -> None:
        """Read from chunk 1 again, ignoring chunks last written before the previous attempt stopped."""
        with self._lock:
            self.counter = 1
            if previous_stopped_at_ms is not None:
                self._not_before = dt.datetime.fromtimestamp(previous_stopped_at_ms / 1000, dt.timezone.utc)

    def download_messages(self, cursor: Any, params: PipesParams) -> tuple[int, str] | None:
        with self._lock:
            return super().download_messages(cursor, params)

    def download_messages_chunk(self, index: int, params: PipesParams) -> str | None:
        try:
            chunk = self.client.get_object(Bucket=self.bucket, Key=f"{self.key_prefix}/{index}.json")
        except ClientError:
            return None
        # S3 truncates LastModified to the second, so a stale chunk always compares below the stop.
        if self._not_before is not None and chunk["LastModified"] < self._not_before:
            return None
        return chunk["Body"].read().decode("utf-8")
