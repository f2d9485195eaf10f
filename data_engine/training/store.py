"""The model store (DESIGN.md, Model store): training runs, their checkpoints, and selected candidates.

Layout under the store's root (a contract: the team's own trainer writes into it):

    <model>/runs/<run_id>/request.json        what was asked, written once before the trainer starts
    <model>/runs/<run_id>/splits.json         frame URI -> train / val / test, the trainer's split assignment
    <model>/runs/<run_id>/checkpoints/<name>  written by the trainer
    <model>/runs/<run_id>/checkpoints.json    written last by the trainer: [{name, uri, epoch, step, metrics}]
    <model>/candidates/<candidate_id>.json    the selected checkpoint, its run and label version

Records are written once (If-None-Match): a retry finds what an earlier attempt wrote and reuses it.
The same class runs on S3 (prod) and on a local folder (local profile) through ObjectStore.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from data_engine.objectstore import LocalObjectStore, ObjectStore, PreconditionFailed, S3ObjectStore, model_store_location

REQUEST = "request.json"
SPLITS = "splits.json"
CHECKPOINTS = "checkpoints.json"
# Run, checkpoint and candidate names become keys and path segments.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class ModelStoreError(RuntimeError):
    """The model store holds something missing or malformed (e.g. a trainer's checkpoints.json)."""


def model_store_uri(settings: Any, fleet: Any, model: str) -> str:
    """`$DATA_ENGINE_HOME/models` (local profile), else `s3://<training.s3_bucket or storage.s3_bucket>/<training.prefix>`.
    `settings` is a data_engine.settings.Settings, `fleet` a FleetConfig."""
    return model_store_location(settings, fleet, model, "training", "models", ModelStoreError)


def check_name(kind: str, name: str) -> str:
    if not SAFE_NAME.match(name):
        raise ModelStoreError(f"{kind} {name!r} cannot name an object: use letters, digits, '.', '_' and '-'")
    return name


class ModelStore:
    @classmethod
    def from_uri(cls, uri: str) -> ModelStore:
        """`s3://bucket/prefix` or a local folder (what `model_store_uri` returns)."""
        if uri.startswith("s3://"):
            bucket, _, prefix = uri[len("s3://") :].partition("/")
            return cls(S3ObjectStore(bucket, prefix))
        return cls(LocalObjectStore(Path(uri)))

    def __init__(self, objects: ObjectStore):
        self.objects = objects

    def _run_key(self, model: str, run_id: str, name: str) -> str:
        return f"{model}/runs/{check_name('run id', run_id)}/{name}"

    def run_uri(self, model: str, run_id: str) -> str:
        """The run folder as the trainer sees it: an s3:// URI, or a local path."""
        return self.objects.describe(self._run_key(model, run_id, "")).rstrip("/")

    def describe(self, model: str, run_id: str, name: str) -> str:
        return self.objects.describe(self._run_key(model, run_id, name))

    def _read_json(self, key: str) -> Any | None:
        try:
            data = self.objects.get(key)
        except KeyError:
            return None
        try:
            return json.loads(data)
        except json.JSONDecodeError as error:
            raise ModelStoreError(f"{self.objects.describe(key)} is not valid JSON: {error}") from None

    def _write_once(self, key: str, record: Any) -> bool:
        """Write `record` unless the object exists; False when it did (an earlier attempt wrote it)."""
        try:
            self.objects.put(key, json.dumps(record, indent=1).encode(), if_none_match=True)
        except PreconditionFailed:
            return False
        return True

    # Runs

    def request(self, model: str, run_id: str) -> dict[str, Any] | None:
        return self._read_json(self._run_key(model, run_id, REQUEST))

    def write_request(self, model: str, run_id: str, request: dict[str, Any], splits: dict[str, str]) -> dict[str, Any]:
        """Record a training request (splits first, request.json last) and return the request that holds:
        this one, or the one an earlier attempt of the same run recorded."""
        self._write_once(self._run_key(model, run_id, SPLITS), splits)
        self._write_once(self._run_key(model, run_id, REQUEST), request)
        return self.request(model, run_id)

    def checkpoints(self, model: str, run_id: str) -> list[dict[str, Any]] | None:
        """The run's checkpoints.json, checked against the contract; None until the trainer wrote it."""
        key = self._run_key(model, run_id, CHECKPOINTS)
        entries = self._read_json(key)
        if entries is None:
            return None
        where = self.objects.describe(key)
        if not isinstance(entries, list) or not entries:
            raise ModelStoreError(f"{where} must be a non-empty list of checkpoints [{{name, uri, epoch, step, metrics}}]")
        for position, entry in enumerate(entries):
            missing = [field for field in ("name", "uri", "epoch", "step", "metrics") if not isinstance(entry, dict) or field not in entry]
            if missing or not isinstance(entry["metrics"], dict):
                raise ModelStoreError(f"{where}: checkpoint {position} lacks {missing or ['metrics as an object']}")
            check_name(f"{where}: checkpoint name", str(entry["name"]))
        return entries

    # Candidates

    def candidate(self, model: str, candidate_id: str) -> dict[str, Any] | None:
        return self._read_json(f"{model}/candidates/{check_name('candidate id', candidate_id)}.json")

    def write_candidate(self, model: str, record: dict[str, Any]) -> bool:
        """Write `<model>/candidates/<candidate_id>.json` once; False when it was already there."""
        return self._write_once(f"{model}/candidates/{check_name('candidate id', record['candidate_id'])}.json", record)

    def describe_candidate(self, model: str, candidate_id: str) -> str:
        return self.objects.describe(f"{model}/candidates/{candidate_id}.json")
