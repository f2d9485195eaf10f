"""Object storage for asset outputs (and later label versions): a local folder or an S3 bucket.

Writes are atomic (a temporary file renamed into place locally; a single PUT on S3), so a crash never
leaves a half-written object that a later step could read. boto3 is imported only when S3 is used.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path


class ObjectStore(ABC):
    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; KeyError naming the key when it does not exist."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix`, sorted."""

    @abstractmethod
    def describe(self, key: str) -> str:
        """Where `key` lives, for metadata and messages (a path or an s3:// URI)."""


class LocalObjectStore(ObjectStore):
    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"object key {key!r} points outside the store {self.root}")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as partial:
            partial.write(data)
        os.replace(partial.name, path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"no object {key!r} in {self.root}") from None

    def list(self, prefix: str) -> list[str]:
        base = self.root.resolve()
        return sorted(
            str(path.relative_to(base))
            for path in base.rglob("*")
            if path.is_file() and not path.name.startswith(".") and str(path.relative_to(base)).startswith(prefix)
        )

    def describe(self, key: str) -> str:
        return str(self._path(key))


class S3ObjectStore(ObjectStore):
    """A bucket and key prefix; credentials and endpoint come from boto3's standard chain."""

    def __init__(self, bucket: str, prefix: str = "", client=None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client

    @property
    def client(self):
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise KeyError(f"no object {self.describe(key)}") from None

    def list(self, prefix: str) -> list[str]:
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        return sorted(keys)

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"
