"""Object storage for asset outputs (and later label versions): a local folder or an S3 bucket.

Writes are atomic (a temporary file renamed into place locally; a single PUT on S3), so a crash never
leaves a half-written object that a later step could read. boto3 is imported only when S3 is used.

Conditional writes (`if_none_match` / `if_match`) let callers build immutable objects and pointers
that move by compare-and-swap: S3's `If-None-Match: *` / `If-Match: <etag>`, and locally the same
check under an exclusive file lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class PreconditionFailed(Exception):
    """A conditional write lost: the object exists (if_none_match) or changed (if_match)."""


class ObjectStoreError(RuntimeError):
    """The store refused or could not serve a request; the message names the object and what to do."""


# S3 error codes that mean the credentials (or the permissions they carry) are wrong.
_CREDENTIAL_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "403"}


class ObjectStore(ABC):
    @abstractmethod
    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        """Write `data` and return the new ETag.

        `if_none_match=True` writes only if no object exists at `key`; `if_match=etag` writes only if
        the current object has that ETag. A failed condition raises PreconditionFailed.
        """

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; KeyError naming the key when it does not exist."""

    @abstractmethod
    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and ETag (for a later `if_match`); KeyError when it does not exist."""

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

    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not if_none_match and if_match is None:
            self._replace(path, data)
            return _etag(data)
        # Compare and swap under a lock that every conditional writer of this key takes.
        with _locked(path.with_name(f".{path.name}.lock")):
            if if_none_match and path.exists():
                raise PreconditionFailed(f"{path} already exists")
            if if_match is not None and (not path.exists() or _etag(path.read_bytes()) != if_match):
                raise PreconditionFailed(f"{path} changed since it was read (expected ETag {if_match})")
            self._replace(path, data)
        return _etag(data)

    @staticmethod
    def _replace(path: Path, data: bytes) -> None:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as partial:
            partial.write(data)
        os.replace(partial.name, path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"no object {key!r} in {self.root}") from None

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, _etag(data)

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

    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        conditions: dict[str, str] = {}
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = if_match
        try:
            response = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **conditions)
        except ClientError as error:
            # 412 PreconditionFailed; 409 ConditionalRequestConflict when two conditional writes race.
            code = error.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409") or (
                if_match is not None and code in ("NoSuchKey", "404")  # AWS answers If-Match on a missing key with 404
            ):
                raise PreconditionFailed(f"{self.describe(key)}: {code} ({conditions})") from None
            raise self._error(key, error) from None
        except BotoCoreError as error:
            raise self._error(key, error) from None
        return response["ETag"]

    def get(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read(), response["ETag"]
        except self.client.exceptions.NoSuchKey:
            raise KeyError(f"no object {self.describe(key)}") from None
        except (BotoCoreError, ClientError) as error:
            raise self._error(key, error) from None

    def list(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        except (BotoCoreError, ClientError) as error:
            raise self._error(prefix, error) from None
        return sorted(keys)

    def _error(self, key: str, error: Exception) -> ObjectStoreError:
        """One message naming the object, what S3 (or botocore) said, and what to do about it."""
        code = getattr(error, "response", {}).get("Error", {}).get("Code")
        if code in _CREDENTIAL_CODES:
            fix = (
                "check the AWS credentials in the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE"
                f" or the instance role) and that they may read and write s3://{self.bucket}"
            )
        elif code == "NoSuchBucket":
            fix = f"create the bucket {self.bucket!r}, or fix the bucket name in the fleet config"
        elif code is None:
            fix = "check AWS_ENDPOINT_URL, the network and the AWS credentials, then retry"
        else:
            fix = "retry; if it persists, check the bucket and the S3 service"
        return ObjectStoreError(f"{self.describe(key)}: S3 request failed ({error}); {fix}")

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def _etag(data: bytes) -> str:
    """A content hash standing in for S3's ETag in the local store (quoted, like S3's)."""
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


@contextmanager
def _locked(lock_path: Path):
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def model_store_location(settings: Any, fleet: Any, model: str, section: str, local_folder: str, error: type[Exception]) -> str:
    """Where one of a model's stores lives: `$DATA_ENGINE_HOME/<local_folder>` (local profile), else
    `s3://<models.<model>.<section>.s3_bucket or storage.s3_bucket>/<that section's prefix>` (prod).
    The label store and the model store share this rule; each raises its own `error`."""
    if model not in fleet.models:
        raise error(f"model {model!r} is not in the fleet config (models: {', '.join(fleet.models)})")
    if settings.profile == "local":
        return str(settings.home / local_folder)
    config = getattr(fleet.models[model], section)
    bucket = config.s3_bucket or (fleet.storage.s3_bucket if fleet.storage else None)
    if bucket is None:
        raise error(
            f"model {model!r} has no bucket for its {section}: set models.{model}.{section}.s3_bucket or storage.s3_bucket"
            " in the fleet config"
        )
    return f"s3://{bucket}/{config.prefix.strip('/')}"
