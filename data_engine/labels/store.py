"""The versioned label store: immutable label versions and a `latest` pointer per model.

Layout (a contract: trainers read it), under the store's root:

    <model>/versions/<version_id>/annotations.json   COCO; images' file_name = frame URI
    <model>/versions/<version_id>/manifest.json      parent, merged tasks, counts, sha256 of annotations.json
    <model>/latest.json                              {"version": ..., "moved_at", "moved_by", "reason", "previous"}
    <model>/refused/<digest>.json                    {"version": ...}: a merge's version its checks refused

Every object of a version is written once (If-None-Match); the manifest goes last, so a version
without one is incomplete and ignored. The pointer moves by compare-and-swap (If-Match on the ETag
read, If-None-Match for the first), so a writer that lost a race finds out instead of overwriting.
A refused version is recorded under the digest of its parent and content, so re-running the same
merge finds it instead of writing the same version again.
The same class runs on S3 (prod) and on a local folder (local profile) through ObjectStore.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_engine.objectstore import LocalObjectStore, ObjectStore, PreconditionFailed, S3ObjectStore, model_store_location

ANNOTATIONS = "annotations.json"
MANIFEST = "manifest.json"
LATEST = "latest.json"
REFUSED = "refused"
# What new_version_id makes; nothing else names a version (a rollback target is a path segment).
VERSION_ID = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{8}")


class LabelStoreError(RuntimeError):
    """The label store is missing something it should hold, or holds something corrupt."""


class CorruptPointer(LabelStoreError):
    """`latest.json` cannot be read as a pointer; `etag` lets a rollback replace it."""

    def __init__(self, message: str, etag: str):
        super().__init__(message)
        self.etag = etag


class PointerMoved(Exception):
    """Someone else moved `latest` since it was read; re-read it and try again."""


@dataclass(frozen=True)
class Pointer:
    """`latest.json` as read: the version it names, and the ETag a conditional move must match."""

    version: str
    etag: str
    record: dict[str, Any]


def new_version_id(now: dt.datetime | None = None) -> str:
    """`YYYYMMDDTHHMMSSffffffZ-<random>`: sorts by creation time; the suffix keeps concurrent ids apart."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now.astimezone(dt.timezone.utc):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}"


def check_version_id(model: str, version: str) -> None:
    """Refuse anything that is not a version id (e.g. `../../other/versions/<id>`), naming the fix."""
    if not isinstance(version, str) or not VERSION_ID.fullmatch(version):
        raise LabelStoreError(
            f"{version!r} is not a label version id of model {model!r} (they look like 20261125T101500123456Z-1a2b3c4d);"
            f" list them with `data-engine labels versions --model {model}`"
        )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def label_store_uri(settings: Any, fleet: Any, model: str) -> str:
    """Where a model's label store lives: `$DATA_ENGINE_HOME/labels` (local profile), else
    `s3://<labels.s3_bucket or storage.s3_bucket>/<labels.prefix>` (prod). `settings` is a
    data_engine.settings.Settings, `fleet` a FleetConfig."""
    return model_store_location(settings, fleet, model, "labels", "labels", LabelStoreError)


class LabelStore:
    @classmethod
    def from_uri(cls, uri: str) -> LabelStore:
        """`s3://bucket/prefix` or a local folder (what `label_store_uri` returns)."""
        if uri.startswith("s3://"):
            bucket, _, prefix = uri[len("s3://") :].partition("/")
            return cls.s3(bucket, prefix)
        return cls.local(uri)

    def __init__(self, objects: ObjectStore):
        self.objects = objects

    @classmethod
    def local(cls, root: str | Path) -> LabelStore:
        """The local profile's store, `$DATA_ENGINE_HOME/labels`."""
        return cls(LocalObjectStore(Path(root)))

    @classmethod
    def s3(cls, bucket: str, prefix: str = "labels", client: Any = None) -> LabelStore:
        """The prod store: the model's `labels.s3_bucket` (or storage bucket) and `labels.prefix`."""
        return cls(S3ObjectStore(bucket, prefix, client=client))

    def describe(self, model: str, version: str | None = None) -> str:
        """Where a model's labels (or one version of them) live, for metadata and messages."""
        return self.objects.describe(f"{model}/versions/{version}" if version else model)

    # Reading

    def latest(self, model: str) -> Pointer | None:
        """The model's current pointer, or None before its first version."""
        try:
            data, etag = self.objects.get_with_etag(f"{model}/{LATEST}")
        except KeyError:
            return None
        try:
            record = json.loads(data)
            check_version_id(model, record["version"])
        except (ValueError, TypeError, KeyError, LabelStoreError):
            raise CorruptPointer(
                f"{self.objects.describe(f'{model}/{LATEST}')} is corrupt (not a JSON object naming a version id);"
                f" point it at a good version with `data-engine labels rollback --model {model} --version <id>`"
                f" (list them with `data-engine labels versions --model {model}`)",
                etag,
            ) from None
        return Pointer(version=record["version"], etag=etag, record=record)

    def manifest(self, model: str, version: str) -> dict[str, Any]:
        check_version_id(model, version)
        key = f"{model}/versions/{version}/{MANIFEST}"
        try:
            data = self.objects.get(key)
        except KeyError:
            raise LabelStoreError(
                f"label version {version!r} of model {model!r} does not exist (or is incomplete) at {self.describe(model, version)};"
                f" list the versions with `data-engine labels versions --model {model}`"
            ) from None
        try:
            manifest = json.loads(data)
            if not isinstance(manifest, dict) or not isinstance(manifest.get("annotations_sha256"), str):
                raise ValueError("not a manifest")
        except ValueError:
            raise LabelStoreError(
                f"{self.objects.describe(key)} is corrupt (not a label version manifest); the version cannot be used:"
                f" if it is latest, roll back to another with `data-engine labels rollback --model {model} --version <id>`"
            ) from None
        return manifest

    def annotations(self, model: str, version: str) -> bytes:
        """The version's annotations.json bytes, checked against the manifest's sha256."""
        manifest = self.manifest(model, version)
        data = self.objects.get(f"{model}/versions/{version}/{ANNOTATIONS}")
        if sha256(data) != manifest["annotations_sha256"]:
            raise LabelStoreError(
                f"{self.describe(model, version)}/{ANNOTATIONS} does not match its manifest's sha256;"
                " the object was altered or corrupted: roll back to an earlier version"
            )
        return data

    def label_set(self, model: str, version: str | None = None) -> dict[str, Any]:
        """A version's COCO dict (default: the latest), for checks and exports."""
        if version is None:
            head = self.latest(model)
            if head is None:
                raise LabelStoreError(f"model {model!r} has no label version yet at {self.describe(model)}; merge or import one first")
            version = head.version
        return json.loads(self.annotations(model, version))

    def versions(self, model: str) -> list[str]:
        """Complete versions (those with a manifest), oldest first."""
        prefix = f"{model}/versions/"
        return sorted(
            key[len(prefix) :].split("/")[0] for key in self.objects.list(prefix) if key.endswith(f"/{MANIFEST}")
        )

    # Writing

    def write_version(self, model: str, annotations_json: bytes, manifest: dict[str, Any]) -> str:
        """Write a new immutable version and return its id; the manifest gets the id and checksum."""
        version = new_version_id()
        manifest = {
            "version": version,
            "model": model,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            **manifest,
            "annotations_sha256": sha256(annotations_json),
            "annotations_bytes": len(annotations_json),
        }
        base = f"{model}/versions/{version}"
        self.objects.put(f"{base}/{ANNOTATIONS}", annotations_json, if_none_match=True)
        self.objects.put(f"{base}/{MANIFEST}", json.dumps(manifest, indent=1).encode(), if_none_match=True)
        return version

    def refused_version(self, model: str, digest: str) -> str | None:
        """The complete version recorded as refused under `digest` (`record_refused`), if any."""
        try:
            version = json.loads(self.objects.get(f"{model}/{REFUSED}/{digest}.json"))["version"]
            self.manifest(model, version)
        except (KeyError, ValueError, TypeError, LabelStoreError):
            return None  # never recorded, or unreadable: the merge writes the version again
        return version

    def record_refused(self, model: str, digest: str, version: str) -> None:
        """Remember that `version` (parent and content summed up by `digest`) failed its checks."""
        self.objects.put(f"{model}/{REFUSED}/{digest}.json", json.dumps({"version": version}).encode())

    def version_file(self, model: str, version: str, name: str) -> bytes | None:
        """A file derived from a version (e.g. `yolo.zip`), or None when it was not written yet."""
        try:
            return self.objects.get(f"{model}/versions/{version}/{name}")
        except KeyError:
            return None

    def write_version_file(self, model: str, version: str, name: str, data: bytes) -> bool:
        """Write a file derived from a complete version, once: False when it already exists.

        Derived files never change what the version holds (annotations.json and the manifest stay as
        written); they sit next to them, e.g. `<model>/versions/<id>/yolo.zip`.
        """
        if name in (ANNOTATIONS, MANIFEST):
            raise ValueError(f"{name} is part of the version itself, not a derived file")
        self.manifest(model, version)  # raises, naming the version, if it is missing or incomplete
        try:
            self.objects.put(f"{model}/versions/{version}/{name}", data, if_none_match=True)
        except PreconditionFailed:
            return False
        return True

    def move_latest(
        self, model: str, version: str, expected: Pointer | None, *, reason: str, moved_by: str | None = None
    ) -> Pointer:
        """Point `latest` at `version` if it still is `expected` (None: no pointer yet); else PointerMoved."""
        record = {
            "version": version,
            "previous": expected.version if expected else None,
            "reason": reason,
            "moved_by": moved_by,
            "moved_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        }
        data = json.dumps(record, indent=1).encode()
        try:
            if expected is None:
                etag = self.objects.put(f"{model}/{LATEST}", data, if_none_match=True)
            else:
                etag = self.objects.put(f"{model}/{LATEST}", data, if_match=expected.etag)
        except PreconditionFailed as error:
            raise PointerMoved(f"latest label version of {model!r} moved since it was read ({error})") from None
        return Pointer(version=version, etag=etag, record=record)
