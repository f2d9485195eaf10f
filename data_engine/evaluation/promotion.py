"""The production pointer of a model (DESIGN.md, Model store): `<model>/production.json`, moved only by a
conditional write, with every position it held kept in `<model>/production-history/<NNNNNN>.json`.

    {"candidate", "checkpoint_uri", "label_version", "previous", "reason", "moved_by", "moved_at",
     "action": "promote" | "override" | "rollback", "sequence", "gates": {gate: passed}}

A move first makes sure the history holds the current record (write-once, so a crash after an earlier
move loses nothing), then swaps the pointer with If-Match on the ETag it read, then records the new one,
then (when configured) sets an SSM parameter to the same record; a retried promotion sets it again.
Two moves racing read the same pointer; one swap wins and the other fails with ProductionMoved. A
promotion is also refused when production is no longer the model the candidate was evaluated against.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from data_engine.evaluation.gates import GateResult, failed
from data_engine.objectstore import ObjectStore, PreconditionFailed

POINTER = "production.json"
HISTORY = "production-history"


class PromotionRefused(Exception):
    """A gate failed (and no override was given), or the request itself is wrong (no reason, unknown model)."""


class ProductionMoved(Exception):
    """Production changed since it was read: another promotion or rollback won; re-evaluate against it."""


@dataclass(frozen=True)
class Production:
    record: dict[str, Any]
    etag: str


class ProductionPointer:
    def __init__(self, objects: ObjectStore, ssm_parameter: str | None = None, ssm_client: Any = None):
        self.objects = objects
        self.ssm_parameter = ssm_parameter
        self._ssm_client = ssm_client

    def describe(self, model: str) -> str:
        return self.objects.describe(f"{model}/{POINTER}")

    def current(self, model: str) -> Production | None:
        try:
            data, etag = self.objects.get_with_etag(f"{model}/{POINTER}")
        except KeyError:
            return None
        return Production(record=json.loads(data), etag=etag)

    def history(self, model: str) -> list[dict[str, Any]]:
        """Every record production.json held, oldest first (the current one included)."""
        entries = {}
        for key in self.objects.list(f"{model}/{HISTORY}/"):
            record = json.loads(self.objects.get(key))
            entries[record["sequence"]] = record
        current = self.current(model)
        if current is not None:
            entries[current.record["sequence"]] = current.record
        return [entries[sequence] for sequence in sorted(entries)]

    def promote(
        self, model: str, report: Mapping[str, Any], gates: list[GateResult], *, moved_by: str, override_reason: str | None = None
    ) -> dict[str, Any]:
        """Make the report's candidate production. Refused when a gate failed, unless `override_reason`
        is given: then the move is recorded as an override naming the failed gates and the reason."""
        failures = failed(gates)
        if failures and not (override_reason and override_reason.strip()):
            raise PromotionRefused(
                f"candidate {report['candidate']['candidate_id']} of model {model!r} is not promoted: "
                + "; ".join(result.describe() for result in failures)
            )
        current = self.current(model)
        candidate = report["candidate"]
        if current is not None and current.record["candidate"] == candidate["candidate_id"]:
            self._publish(current.record)  # already production: a retried promotion, which may have crashed before this
            return current.record
        evaluated_against = report["production"]["candidate_id"] if report.get("production") else None
        now_production = current.record["candidate"] if current else None
        if evaluated_against != now_production:
            raise ProductionMoved(
                f"model {model!r}: candidate {candidate['candidate_id']} was evaluated against production {evaluated_against},"
                f" but production is now {now_production}; re-run evaluation_report so the gates compare against it"
            )
        if failures:
            reason = f"override of failed gates {[result.name for result in failures]}: {override_reason}"
        else:
            reason = "every gate passed"
        record = self._record(
            candidate, current, action="override" if failures else "promote", reason=reason, moved_by=moved_by
        )
        record["gates"] = {result.name: result.passed for result in gates}
        return self._move(model, current, record)

    def rollback(self, model: str, to_candidate: str, *, reason: str, moved_by: str) -> dict[str, Any]:
        """Point production back at `to_candidate`, a model that was production before."""
        if not reason.strip():
            raise PromotionRefused("a rollback needs a reason (it is recorded in production.json and its history)")
        history = self.history(model)
        earlier = [entry for entry in history if entry["candidate"] == to_candidate]
        if not earlier:
            known = sorted({entry["candidate"] for entry in history}) or ["none yet"]
            raise PromotionRefused(
                f"model {model!r} was never in production as {to_candidate!r}; earlier production models: {', '.join(known)}"
            )
        current = self.current(model)
        if current is not None and current.record["candidate"] == to_candidate:
            raise PromotionRefused(f"{to_candidate!r} is already model {model!r}'s production model")
        target = earlier[-1]
        source = {"candidate_id": target["candidate"], "checkpoint_uri": target["checkpoint_uri"], "label_version": target["label_version"]}
        return self._move(model, current, self._record(source, current, action="rollback", reason=reason, moved_by=moved_by))

    @staticmethod
    def _record(candidate: Mapping[str, Any], current: Production | None, *, action: str, reason: str, moved_by: str) -> dict[str, Any]:
        return {
            "candidate": candidate["candidate_id"],
            "checkpoint_uri": candidate["checkpoint_uri"],
            "label_version": candidate["label_version"],
            "previous": current.record["candidate"] if current else None,
            "reason": reason,
            "moved_by": moved_by,
            "moved_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "action": action,
            "sequence": current.record["sequence"] + 1 if current else 1,
        }

    def _move(self, model: str, current: Production | None, record: dict[str, Any]) -> dict[str, Any]:
        if current is not None:
            self._remember(model, current.record)
        data = json.dumps(record, indent=1).encode()
        try:
            if current is None:
                self.objects.put(f"{model}/{POINTER}", data, if_none_match=True)
            else:
                self.objects.put(f"{model}/{POINTER}", data, if_match=current.etag)
        except PreconditionFailed:
            raise ProductionMoved(
                f"model {model!r}: production.json changed while {record['action']} of {record['candidate']} ran"
                f" (another promotion or rollback won); read production again and re-evaluate against it"
            ) from None
        self._remember(model, record)
        self._publish(record)
        return record

    def _publish(self, record: dict[str, Any]) -> None:
        if self.ssm_parameter is None:
            return
        if self._ssm_client is None:
            import boto3

            self._ssm_client = boto3.client("ssm")
        self._ssm_client.put_parameter(Name=self.ssm_parameter, Value=json.dumps(record), Type="String", Overwrite=True)

    def _remember(self, model: str, record: dict[str, Any]) -> None:
        """Write the record's history entry once (an identical one may already be there)."""
        try:
            self.objects.put(f"{model}/{HISTORY}/{record['sequence']:06d}.json", json.dumps(record, indent=1).encode(), if_none_match=True)
        except PreconditionFailed:
            pass  # written by the move that made it, or by an earlier move's backfill
