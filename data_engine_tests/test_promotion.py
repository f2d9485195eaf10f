"""The production pointer: promotion only through passed gates (or a recorded override), rollback,
history, and two promotions racing, on a local folder and on a real S3 server (SeaweedFS)."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from data_engine.evaluation.gates import GateFailure, GateResult
from data_engine.evaluation.promotion import ProductionMoved, ProductionPointer, PromotionRefused
from data_engine.objectstore import LocalObjectStore, S3ObjectStore
from data_engine_tests.labels_fixtures import DelegatingStore

MODEL = "municipals"
PASSED = [GateResult("overall_ap", True, "ok"), GateResult("per_class", True, "ok")]
CLASS_FAILED = [
    GateResult("overall_ap", True, "ok"),
    GateResult("per_class", False, "", [GateFailure("AP of class 'PET' (100 test boxes)", 0.47, 0.48, 0.01, "class 'PET'")]),
]


def candidate(name: str) -> dict:
    return {"candidate_id": name, "checkpoint_uri": f"s3://models/{name}.pt", "label_version": f"labels-{name}"}


def report(name: str, against: str | None) -> dict:
    return {"candidate": candidate(name), "production": candidate(against) if against else None}


@pytest.fixture(params=["local", "s3"])
def objects(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(tmp_path / "models")
    client = request.getfixturevalue("s3_server").client()
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3ObjectStore(bucket, "models", client=client)


def test_first_promotion_then_a_better_candidate_keeps_history(objects):
    pointer = ProductionPointer(objects)
    first = pointer.promote(MODEL, report("a", None), PASSED, moved_by="dagster run 1")
    assert first["candidate"] == "a" and first["previous"] is None and first["action"] == "promote" and first["sequence"] == 1
    second = pointer.promote(MODEL, report("b", "a"), PASSED, moved_by="dagster run 2")
    assert second["previous"] == "a" and second["checkpoint_uri"] == "s3://models/b.pt" and second["gates"] == {"overall_ap": True, "per_class": True}
    assert json.loads(objects.get(f"{MODEL}/production.json")) == second
    assert [entry["candidate"] for entry in pointer.history(MODEL)] == ["a", "b"]
    # A retried promotion of the production model changes nothing.
    assert pointer.promote(MODEL, report("b", "a"), PASSED, moved_by="retry") == second


def test_a_failed_gate_refuses_promotion_naming_the_gate(objects):
    pointer = ProductionPointer(objects)
    pointer.promote(MODEL, report("a", None), PASSED, moved_by="run 1")
    with pytest.raises(PromotionRefused, match=r"per_class: FAILED: AP of class 'PET' \(100 test boxes\) is 0.4700, limit 0.4800"):
        pointer.promote(MODEL, report("b", "a"), CLASS_FAILED, moved_by="run 2")
    with pytest.raises(PromotionRefused):
        pointer.promote(MODEL, report("b", "a"), CLASS_FAILED, moved_by="run 2", override_reason="  ")
    assert pointer.current(MODEL).record["candidate"] == "a"


def test_an_override_is_an_explicit_recorded_action(objects):
    pointer = ProductionPointer(objects)
    pointer.promote(MODEL, report("a", None), PASSED, moved_by="run 1")
    record = pointer.promote(MODEL, report("b", "a"), CLASS_FAILED, moved_by="alice", override_reason="PET labels of v7 are being fixed")
    assert record["action"] == "override" and record["moved_by"] == "alice"
    assert record["reason"] == "override of failed gates ['per_class']: PET labels of v7 are being fixed"
    assert record["gates"] == {"overall_ap": True, "per_class": False}


def test_rollback_to_a_named_earlier_model_with_a_reason(objects):
    pointer = ProductionPointer(objects)
    pointer.promote(MODEL, report("a", None), PASSED, moved_by="run 1")
    pointer.promote(MODEL, report("b", "a"), PASSED, moved_by="run 2")
    with pytest.raises(PromotionRefused, match="needs a reason"):
        pointer.rollback(MODEL, "a", reason="", moved_by="bob")
    with pytest.raises(PromotionRefused, match="never in production as 'zzz'; earlier production models: a, b"):
        pointer.rollback(MODEL, "zzz", reason="bad", moved_by="bob")
    with pytest.raises(PromotionRefused, match="already"):
        pointer.rollback(MODEL, "b", reason="no-op", moved_by="bob")
    record = pointer.rollback(MODEL, "a", reason="b misses cardboard at night", moved_by="bob")
    assert (record["candidate"], record["checkpoint_uri"], record["previous"], record["action"]) == ("a", "s3://models/a.pt", "b", "rollback")
    assert [entry["candidate"] for entry in pointer.history(MODEL)] == ["a", "b", "a"]
    # A candidate evaluated against b must be re-evaluated: production is a again.
    with pytest.raises(ProductionMoved, match="evaluated against production b, but production is now a; re-run evaluation_report"):
        pointer.promote(MODEL, report("c", "b"), PASSED, moved_by="run 3")


def test_concurrent_promotions_one_wins_the_other_fails_clearly(objects):
    """Both promotions read the same production before either writes it; the conditional write lets one through."""
    ProductionPointer(objects).promote(MODEL, report("a", None), PASSED, moved_by="run 1")
    both_read = threading.Barrier(2, timeout=30)

    class BothReadFirst(DelegatingStore):
        def put(self, key, data, *, if_none_match=False, if_match=None):
            if key.endswith("/production.json"):
                both_read.wait()
            return super().put(key, data, if_none_match=if_none_match, if_match=if_match)

    outcomes: dict[str, object] = {}

    def promote(name: str) -> None:
        try:
            outcomes[name] = ProductionPointer(BothReadFirst(objects)).promote(MODEL, report(name, "a"), PASSED, moved_by=f"run {name}")
        except ProductionMoved as error:
            outcomes[name] = error

    threads = [threading.Thread(target=promote, args=(name,)) for name in ("b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    winners = [name for name, outcome in outcomes.items() if isinstance(outcome, dict)]
    losers = [outcome for outcome in outcomes.values() if isinstance(outcome, ProductionMoved)]
    assert len(winners) == 1 and len(losers) == 1
    assert "changed while promote of" in str(losers[0]) and "re-evaluate" in str(losers[0])
    pointer = ProductionPointer(objects)
    assert pointer.current(MODEL).record["candidate"] == winners[0]
    assert [entry["candidate"] for entry in pointer.history(MODEL)] == ["a", winners[0]]


def test_a_crash_between_pointer_and_history_loses_nothing(objects):
    """The history entry of a move that crashed after swapping the pointer is written by the next move."""
    pointer = ProductionPointer(objects)

    class CrashAfterPointer(DelegatingStore):
        def put(self, key, data, *, if_none_match=False, if_match=None):
            if "production-history/000001" in key:
                raise ConnectionError("the process died")
            return super().put(key, data, if_none_match=if_none_match, if_match=if_match)

    with pytest.raises(ConnectionError):
        ProductionPointer(CrashAfterPointer(objects)).promote(MODEL, report("a", None), PASSED, moved_by="run 1")
    assert pointer.current(MODEL).record["candidate"] == "a"
    pointer.promote(MODEL, report("b", "a"), PASSED, moved_by="run 2")
    assert sorted(objects.list(f"{MODEL}/production-history/")) == [f"{MODEL}/production-history/000001.json", f"{MODEL}/production-history/000002.json"]
    assert [entry["candidate"] for entry in pointer.history(MODEL)] == ["a", "b"]


def test_each_move_sets_the_configured_ssm_parameter_and_a_retry_sets_it_again(tmp_path, moto_server, monkeypatch):
    import boto3

    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    ssm = boto3.client("ssm")
    parameter = f"/data-engine/{uuid.uuid4().hex[:8]}/production"
    objects = LocalObjectStore(tmp_path / "models")

    def published() -> dict:
        return json.loads(ssm.get_parameter(Name=parameter)["Parameter"]["Value"])

    class SsmDown:
        def put_parameter(self, **_):
            raise ConnectionError("SSM unreachable")

    with pytest.raises(ConnectionError):
        ProductionPointer(objects, parameter, ssm_client=SsmDown()).promote(MODEL, report("a", None), PASSED, moved_by="run 1")
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name=parameter)
    pointer = ProductionPointer(objects, parameter)
    pointer.promote(MODEL, report("a", None), PASSED, moved_by="retry of run 1")  # the pointer moved already; SSM is set now
    assert published()["candidate"] == "a"
    pointer.promote(MODEL, report("b", "a"), PASSED, moved_by="run 2")
    assert published()["candidate"] == "b"
    pointer.rollback(MODEL, "a", reason="b regressed", moved_by="bob")
    assert published() == pointer.current(MODEL).record and published()["action"] == "rollback"
