"""The versioned label store on a local folder and on a real S3 server (SeaweedFS), with faults."""

from __future__ import annotations

import json
import re
import threading

import pytest

from data_engine.annotation.cvat_export import read_export
from data_engine.labels import (
    ExportError,
    LabelPolicy,
    LabelStore,
    LabelStoreError,
    PointerMoved,
    import_label_set,
    merge_reviewed_tasks,
    rollback_labels,
    validate_label_set,
)
from data_engine.labels.store import new_version_id, sha256
from data_engine.objectstore import LocalObjectStore, PreconditionFailed
from data_engine_tests.cvat_server.coco import export_zip as cvat_export_zip
from data_engine_tests.labels_fixtures import (
    CLASSES,
    MODEL,
    DelegatingStore,
    all_keys,
    coco_export,
    frame,
    label_store,  # noqa: F401  (fixture)
    labels_of,
    latest_coco,
    task,
)

A, B, C, D = (frame(index=i) for i in range(4))


def test_conditional_puts(label_store):
    objects = label_store.objects
    etag = objects.put("m/latest.json", b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        objects.put("m/latest.json", b"2", if_none_match=True)
    data, read_etag = objects.get_with_etag("m/latest.json")
    assert (data, read_etag) == (b"1", etag)
    new_etag = objects.put("m/latest.json", b"2", if_match=etag)
    with pytest.raises(PreconditionFailed):
        objects.put("m/latest.json", b"3", if_match=etag)
    assert objects.get_with_etag("m/latest.json") == (b"2", new_etag)
    with pytest.raises(PreconditionFailed):
        objects.put("m/other.json", b"3", if_match=etag)
    with pytest.raises(KeyError):
        objects.get_with_etag("m/missing.json")
    objects.put("m/plain.json", b"x")  # unconditional puts keep working
    assert objects.list("m/") == ["m/latest.json", "m/plain.json"]


def test_first_merge_from_empty_writes_the_layout(label_store):
    outcome = merge_reviewed_tasks(label_store, MODEL, [task(1, {A: [("PET", [1, 1, 5, 5])], B: []})], CLASSES, created_by="sensor")
    assert outcome.created and outcome.parent is None and outcome.merged_tasks == ["1"]
    version = outcome.version
    assert sorted(all_keys(label_store)) == [
        f"{MODEL}/latest.json",
        f"{MODEL}/versions/{version}/annotations.json",
        f"{MODEL}/versions/{version}/manifest.json",
    ]
    assert json.loads(label_store.objects.get(f"{MODEL}/latest.json"))["version"] == version
    manifest = label_store.manifest(MODEL, version)
    annotations = label_store.annotations(MODEL, version)
    assert manifest["parent"] is None
    assert manifest["merged_tasks"] == [{"task_id": "1", "updated_date": "2026-03-02T10:00:00Z"}]
    assert manifest["counts"]["images"] == 2 and manifest["counts"]["annotations"] == 1
    assert manifest["counts"]["images_added"] == 2
    assert manifest["annotations_sha256"] == sha256(annotations)
    coco = json.loads(annotations)
    assert not any(validate_label_set(coco, CLASSES).values())
    assert label_store.versions(MODEL) == [version]
    assert outcome.location.endswith(f"{MODEL}/versions/{version}")


def test_first_merge_on_an_imported_base(label_store):
    base = coco_export({A: [("Film", [1, 1, 1, 1])], B: [("PET", [2, 2, 2, 2])]}, labels=["Film", "PET"])
    imported = import_label_set(label_store, MODEL, base, CLASSES, source_name="legacy-2025.json", created_by="ops")
    assert label_store.manifest(MODEL, imported)["source"] == "import"
    outcome = merge_reviewed_tasks(label_store, MODEL, [task(1, {B: [("HDPE", [3, 3, 3, 3])], C: []})], CLASSES)
    assert outcome.parent == imported
    assert labels_of(latest_coco(label_store)) == {A: [("Film", [1, 1, 1, 1])], B: [("HDPE", [3, 3, 3, 3])], C: []}
    assert (outcome.counts.images_added, outcome.counts.images_replaced) == (1, 1)
    assert labels_of(label_store.label_set(MODEL)) == labels_of(label_store.label_set(MODEL, outcome.version))


def _duplicate_frame(coco):
    coco["images"].append({**coco["images"][0], "id": 99})


def _box(value):
    def corrupt(coco):
        coco["annotations"][0]["bbox"][2] = value

    return corrupt


def _zero_size_image(coco):
    coco["images"][1]["width"] = 0


@pytest.mark.parametrize(
    "corrupt, expected",
    [
        (_duplicate_frame, f"no_duplicate_images: frame {A} appears more than once"),
        (_box(-3), "boxes_inside_images: annotation 1 has an empty box [1, 1, -3, 5]"),
        (_zero_size_image, f"image 2 ({B}) needs a positive, finite 'width' and 'height' (has 0 x 480)"),
        (_box(float("nan")), "annotation 1 needs a 'bbox' of 4 finite numbers [x, y, width, height] (has [1, 1, nan, 5])"),
        (_box(float("inf")), "annotation 1 needs a 'bbox' of 4 finite numbers [x, y, width, height] (has [1, 1, inf, 5])"),
        (_box(10_000), "annotation 1 box [1, 1, 10000, 5] lies outside its image"),
    ],
)
def test_an_imported_base_must_pass_the_checks_a_merge_passes(label_store, corrupt, expected):
    """A base with bad frames or boxes would become latest and block every later merge and export."""
    base = coco_export({A: [("PET", [1, 1, 5, 5])], B: [("HDPE", [2, 2, 2, 2])]})
    corrupt(base)
    with pytest.raises(ExportError, match="legacy.json") as refused:
        import_label_set(label_store, MODEL, base, CLASSES, source_name="legacy.json")
    assert expected in str(refused.value)
    assert all_keys(label_store) == []  # nothing written, no pointer
    with pytest.raises(LabelStoreError, match="has no label version yet"):
        label_store.label_set(MODEL)


def test_label_json_is_never_written_with_nan():
    from data_engine.labels.coco import dumps

    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps({"annotations": [{"bbox": [float("nan"), 0, 1, 1]}]})


def test_re_merging_the_same_tasks_is_a_no_op(label_store):
    exports = [task(1, {A: [("PET", [1, 1, 1, 1])]}), task(2, {B: []})]
    first = merge_reviewed_tasks(label_store, MODEL, exports, CLASSES)
    keys = all_keys(label_store)
    again = merge_reviewed_tasks(label_store, MODEL, exports, CLASSES)
    assert not again.created and again.version == first.version
    assert sorted(again.already_merged_tasks) == ["1", "2"]
    assert all_keys(label_store) == keys
    # One new task among merged ones: only it is merged.
    third = merge_reviewed_tasks(label_store, MODEL, exports + [task(3, {C: []})], CLASSES)
    assert third.merged_tasks == ["3"] and sorted(third.already_merged_tasks) == ["1", "2"]
    assert third.counts.images_added == 1 and third.counts.images_replaced == 0


def test_a_re_accepted_task_is_merged_again_replacing_its_frames(label_store):
    merge_reviewed_tasks(label_store, MODEL, [task(1, {A: [("PET", [1, 1, 1, 1])], B: []})], CLASSES)
    reaccepted = task(1, {A: [("HDPE", [2, 2, 2, 2])], B: []}, updated_date="2026-03-05T08:00:00Z")
    outcome = merge_reviewed_tasks(label_store, MODEL, [reaccepted], CLASSES)
    assert outcome.created and outcome.merged_tasks == ["1"]
    assert labels_of(latest_coco(label_store)) == {A: [("HDPE", [2, 2, 2, 2])], B: []}
    assert (outcome.counts.images_replaced, outcome.counts.images_added) == (2, 0)
    manifest = label_store.manifest(MODEL, outcome.version)
    assert manifest["tasks"]["1"]["updated_date"] == "2026-03-05T08:00:00Z"
    # An export older than the merged one is not merged back.
    stale = task(1, {A: []}, updated_date="2026-03-04T00:00:00Z")
    assert not merge_reviewed_tasks(label_store, MODEL, [stale], CLASSES).created


def test_crash_between_version_and_pointer_loses_nothing(label_store):
    merge_reviewed_tasks(label_store, MODEL, [task(1, {A: [("PET", [1, 1, 1, 1])]})], CLASSES)

    class CrashOnPointer(DelegatingStore):
        crashes = 1

        def put(self, key, data, **conditions):
            if key.endswith("latest.json") and self.crashes:
                self.crashes -= 1
                raise ConnectionError("process killed while moving the pointer")
            return super().put(key, data, **conditions)

    crashing = LabelStore(CrashOnPointer(label_store.objects))
    exports = [task(2, {B: [("HDPE", [2, 2, 2, 2])]})]
    with pytest.raises(ConnectionError):
        merge_reviewed_tasks(crashing, MODEL, exports, CLASSES)
    assert len(label_store.versions(MODEL)) == 2  # the orphan is written but not pointed at
    assert labels_of(latest_coco(label_store)) == {A: [("PET", [1, 1, 1, 1])]}

    rerun = merge_reviewed_tasks(crashing, MODEL, exports, CLASSES)
    assert rerun.created and rerun.merged_tasks == ["2"]
    assert labels_of(latest_coco(label_store)) == {A: [("PET", [1, 1, 1, 1])], B: [("HDPE", [2, 2, 2, 2])]}
    assert len(label_store.versions(MODEL)) == 3


def test_concurrent_merges_both_land(label_store):
    merge_reviewed_tasks(label_store, MODEL, [task(1, {A: [("PET", [1, 1, 1, 1])]})], CLASSES)
    both_read = threading.Barrier(2, timeout=30)

    class ReadTogether(DelegatingStore):
        """Both merges read the same latest before either moves it: a guaranteed race."""

        def __init__(self, inner):
            super().__init__(inner)
            self.first_read = threading.local()

        def get_with_etag(self, key):
            result = super().get_with_etag(key)
            if key.endswith("latest.json") and not getattr(self.first_read, "done", False):
                self.first_read.done = True
                both_read.wait()
            return result

    racing = LabelStore(ReadTogether(label_store.objects))
    outcomes, errors = {}, []

    def merge(name, exports):
        try:
            outcomes[name] = merge_reviewed_tasks(racing, MODEL, exports, CLASSES)
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [
        threading.Thread(target=merge, args=("x", [task(2, {B: [("HDPE", [2, 2, 2, 2])]})])),
        threading.Thread(target=merge, args=("y", [task(3, {C: [("Film", [3, 3, 3, 3])], A: []})])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(o.attempts for o in outcomes.values()) == [1, 2]
    assert labels_of(latest_coco(label_store)) == {A: [], B: [("HDPE", [2, 2, 2, 2])], C: [("Film", [3, 3, 3, 3])]}
    latest = label_store.manifest(MODEL, label_store.latest(MODEL).version)
    assert sorted(latest["tasks"]) == ["1", "2", "3"]


def test_malformed_export_writes_nothing(label_store):
    merge_reviewed_tasks(label_store, MODEL, [task(1, {A: []})], CLASSES)
    keys = all_keys(label_store)
    good = coco_export({B: []})
    with pytest.raises(ExportError, match="task 8: the export is not a readable zip"):
        read_export(cvat_export_zip(good, corruption="truncated"), 8)
    broken = task(9, {B: [("PET", [1, 1, 1, 1])]})
    broken.coco["annotations"][0]["image_id"] = 77
    with pytest.raises(ExportError, match="task 9: .*annotation 1 refers to image 77"):
        merge_reviewed_tasks(label_store, MODEL, [task(10, {C: []}), broken], CLASSES)
    with pytest.raises(ExportError, match="task 11: label 'Glass'"):
        merge_reviewed_tasks(label_store, MODEL, [task(11, {C: [("Glass", [1, 1, 1, 1])]}, labels=["Glass"])], CLASSES)
    assert all_keys(label_store) == keys


def test_unknown_label_policy_from_config(label_store):
    from data_engine.config.models import LabelsConfig

    config = LabelsConfig(unknown_label="map", label_mapping={"bottle": "PET"})
    review = task(1, {A: [("bottle", [1, 1, 1, 1])]}, labels=["bottle"])
    merge_reviewed_tasks(label_store, MODEL, [review], CLASSES, LabelPolicy.from_config(config))
    assert labels_of(latest_coco(label_store)) == {A: [("PET", [1, 1, 1, 1])]}


def test_rollback_moves_the_pointer_to_a_named_version(label_store):
    first = merge_reviewed_tasks(label_store, MODEL, [task(1, {A: [("PET", [1, 1, 1, 1])]})], CLASSES).version
    second = merge_reviewed_tasks(label_store, MODEL, [task(2, {A: [("HDPE", [1, 1, 1, 1])]})], CLASSES).version
    assert label_store.versions(MODEL) == [first, second]
    pointer = rollback_labels(label_store, MODEL, first, rolled_back_by="alice", reason="bad review in task 2")
    assert pointer.version == first
    record = label_store.latest(MODEL).record
    assert record["moved_by"] == "alice" and record["previous"] == second and "bad review" in record["reason"]
    assert labels_of(latest_coco(label_store)) == {A: [("PET", [1, 1, 1, 1])]}
    assert label_store.versions(MODEL) == [first, second]  # old versions stay
    with pytest.raises(LabelStoreError, match="'nope' is not a label version id of model 'municipals'"):
        rollback_labels(label_store, MODEL, "nope", rolled_back_by="alice")
    # The next merge builds on the rolled-back-to version.
    third = merge_reviewed_tasks(label_store, MODEL, [task(3, {B: []})], CLASSES)
    assert third.parent == first


def test_rollback_accepts_only_existing_versions_of_that_model(label_store):
    ours = merge_reviewed_tasks(label_store, MODEL, [task(1, {A: [("PET", [1, 1, 1, 1])]})], CLASSES).version
    theirs = merge_reviewed_tasks(label_store, "CnD", [task(1, {B: []})], CLASSES).version
    pointer = label_store.objects.get(f"{MODEL}/latest.json")
    refused = {
        f"../../CnD/versions/{theirs}": "is not a label version id of model 'municipals'",
        f"{theirs}/../../../CnD/versions/{theirs}": "is not a label version id",
        theirs: f"label version {theirs!r} of model 'municipals' does not exist",  # CnD's id, not one of ours
        "": "is not a label version id",
    }
    for version, message in refused.items():
        with pytest.raises(LabelStoreError, match=re.escape(message)) as error:
            rollback_labels(label_store, MODEL, version, rolled_back_by="mallory")
        assert "data-engine labels versions --model municipals" in str(error.value)
    assert label_store.objects.get(f"{MODEL}/latest.json") == pointer  # never moved

    # Rolling back to the current latest says so (None) and changes nothing.
    assert rollback_labels(label_store, MODEL, ours, rolled_back_by="alice") is None
    assert label_store.objects.get(f"{MODEL}/latest.json") == pointer


def test_a_corrupt_pointer_or_manifest_is_named_and_a_rollback_repairs_the_pointer(label_store):
    version = merge_reviewed_tasks(label_store, MODEL, [task(1, {A: [("PET", [1, 1, 1, 1])]})], CLASSES).version
    where = label_store.objects.describe(f"{MODEL}/latest.json")
    for garbage in (b"{not json", b'{"version": "../../CnD/versions/x"}', b"[]"):
        label_store.objects.put(f"{MODEL}/latest.json", garbage)
        with pytest.raises(LabelStoreError) as error:
            merge_reviewed_tasks(label_store, MODEL, [task(2, {B: []})], CLASSES)
        assert str(error.value).startswith(f"{where} is corrupt")
        assert f"data-engine labels rollback --model {MODEL} --version <id>" in str(error.value)
    assert rollback_labels(label_store, MODEL, version, rolled_back_by="ops").version == version
    assert label_store.latest(MODEL).version == version

    manifest_key = f"{MODEL}/versions/{version}/manifest.json"
    label_store.objects.put(manifest_key, b"\x00garbage")
    with pytest.raises(LabelStoreError, match=re.escape(f"{label_store.objects.describe(manifest_key)} is corrupt")):
        label_store.label_set(MODEL)


def test_a_refused_merge_run_again_writes_no_second_version(label_store):
    """The gate refuses: the version is recorded, and the same merge again gates it instead of writing a copy."""
    merge_reviewed_tasks(label_store, MODEL, [task(1, {A: [("PET", [1, 1, 1, 1])]})], CLASSES)
    exports = [task(1, {A: []}, updated_date="2026-03-05T08:00:00Z")]
    refused = merge_reviewed_tasks(label_store, MODEL, exports, CLASSES, gate=lambda *_: False)
    assert not refused.published and not refused.reused
    keys = all_keys(label_store)
    again = merge_reviewed_tasks(label_store, MODEL, exports, CLASSES, gate=lambda *_: False)
    assert again.version == refused.version and again.reused and not again.published
    assert all_keys(label_store) == keys  # nothing new written
    seen = []
    published = merge_reviewed_tasks(label_store, MODEL, exports, CLASSES, gate=lambda v, data, m: seen.append(m["counts"]) or True)
    assert published.version == refused.version and published.published and published.reused
    assert seen[0]["annotations_changed"] == 1 and label_store.latest(MODEL).version == refused.version
    # Different inputs (another review) make a version of their own.
    other = merge_reviewed_tasks(label_store, MODEL, [task(2, {B: []})], CLASSES, gate=lambda *_: False)
    assert other.version not in (refused.version,) and not other.reused


def test_a_stale_pointer_cannot_be_moved(label_store):
    merge_reviewed_tasks(label_store, MODEL, [task(1, {A: []})], CLASSES)
    stale = label_store.latest(MODEL)
    merge_reviewed_tasks(label_store, MODEL, [task(2, {B: []})], CLASSES)
    with pytest.raises(PointerMoved):
        label_store.move_latest(MODEL, stale.version, stale, reason="test")


def test_a_corrupted_version_is_detected(tmp_path):
    store = LabelStore.local(tmp_path)
    version = merge_reviewed_tasks(store, MODEL, [task(1, {A: []})], CLASSES).version
    LocalObjectStore(tmp_path).put(f"{MODEL}/versions/{version}/annotations.json", b"{}")
    with pytest.raises(LabelStoreError, match="does not match its manifest's sha256"):
        store.annotations(MODEL, version)


def test_version_ids_sort_by_creation_time():
    import datetime as dt

    times = [dt.datetime(2026, 3, 1, 10, 0, 0, 999, tzinfo=dt.timezone.utc), dt.datetime(2026, 3, 1, 10, 0, 1, tzinfo=dt.timezone.utc)]
    ids = [new_version_id(t) for t in times]
    assert ids == sorted(ids) and ids[0].startswith("20260301T100000000999Z-")
