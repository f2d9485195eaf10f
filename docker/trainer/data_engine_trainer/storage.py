"""Reading and writing the URIs of the trainer contract: `s3://bucket/key` (boto3's standard chain,
AWS_ENDPOINT_URL included) or a local path. Local writes go to a temporary file renamed into place,
so a crash never leaves half a checkpoint or half a checkpoints.json."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


@functools.cache
def _s3_client():
    import boto3

    return boto3.client("s3")


def read_bytes(uri: str) -> bytes:
    if uri.startswith("s3://"):
        bucket, key = _split_s3(uri)
        return _s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return Path(uri).read_bytes()


def write_bytes(uri: str, data: bytes) -> None:
    if uri.startswith("s3://"):
        bucket, key = _split_s3(uri)
        _s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as partial:
        partial.write(data)
    os.replace(partial.name, path)


def exists(uri: str) -> bool:
    if uri.startswith("s3://"):
        from botocore.exceptions import ClientError

        bucket, key = _split_s3(uri)
        try:
            _s3_client().head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True
    return Path(uri).exists()


def frame_bytes(frame_uri: str, frames_root: str | None) -> bytes:
    """A frame's image. With `frames_root` (the local profile), `s3://bucket/key` and `gs://bucket/key`
    are files at `<frames_root>/<bucket>/<key>`; otherwise the URI is read as it is."""
    if frames_root:
        for scheme in ("s3://", "gs://"):
            if frame_uri.startswith(scheme):
                bucket, _, key = frame_uri[len(scheme) :].partition("/")
                return (Path(frames_root) / bucket / key).read_bytes()
    return read_bytes(frame_uri)
