"""Promotion gates on hand-made reports: each gate passes, fails naming the number, or ignores what
lacks support."""

from __future__ import annotations

import copy

import pytest

from data_engine.config.models import GatesConfig
from data_engine.evaluation.gates import evaluate_gates, failed


def scores(ap=0.50, classes=None, slices=None, robustness=None):
    return {
        "ap": ap,
        "ap50": ap + 0.2,
        "per_class": classes or {"PET": {"ap": ap, "support": 100}, "Film": {"ap": ap, "support": 100}},
        "slices": slices or {"client": {"acme": {"ap": ap, "boxes": 300, "reliable": True}}, "camera": {"cam-01": {"ap": ap, "boxes": 120, "reliable": True}}},
        "robustness": robustness or {"blur-2": {"ap": ap - 0.05, "drop": 0.05}},
    }


def report(candidate=None, production=None, ci=(-0.001, 0.01), mltest=None, no_production=False):
    return {
        "candidate": {"candidate_id": "run-2--epoch-3"},
        "production": None if no_production else {"candidate_id": "run-1--epoch-5"},
        "scores": {"candidate": candidate or scores(), "production": None if no_production else (production or scores())},
        "comparison": None if no_production else {"bootstrap": {"resamples": 1000, "mean": 0.004, "ci95": list(ci)}},
        "mltest": mltest,
    }


GATES = GatesConfig(ap_tolerance=0.005, class_max_drop=0.02, class_min_support=20, slice_max_drop={"client": 0.03, "camera": 0.05}, robustness_max_extra_drop=0.02, min_ap=0.3, min_ap50=0.5)


def results_by_name(the_report, gates=GATES, mltest_configured=False):
    return {result.name: result for result in evaluate_gates(the_report, gates, mltest_configured)}


def test_a_candidate_as_good_as_production_passes_every_gate():
    results = results_by_name(report(candidate=scores(0.51)))
    assert failed(list(results.values())) == []
    assert "AP 0.5100 vs production 0.5000" in results["overall_ap"].summary


def test_overall_ap_below_production_minus_tolerance_fails_naming_the_numbers():
    result = results_by_name(report(candidate=scores(0.49), ci=(-0.02, -0.005)))["overall_ap"]
    assert not result.passed
    assert [f.what for f in result.failures] == ["AP@[.50:.95]", "lower bound of the bootstrap 95% CI of ΔAP [-0.0200, -0.0050]"]
    assert result.failures[0].limit == pytest.approx(0.495) and result.failures[0].by == pytest.approx(0.005)
    assert "per-class" in result.failures[0].look_at


def test_a_ci_straddling_zero_passes_within_tolerance_and_fails_without_it():
    straddling = report(candidate=scores(0.50), ci=(-0.004, 0.006))
    assert results_by_name(straddling)["overall_ap"].passed
    strict = results_by_name(straddling, GATES.model_copy(update={"ap_tolerance": 0.0}))["overall_ap"]
    assert not strict.passed and strict.failures[0].value == -0.004 and strict.failures[0].by == pytest.approx(0.004)
    assert "test split's size" in strict.failures[0].look_at


def test_a_class_dropping_more_than_its_delta_fails_the_class_gate():
    classes = {"PET": {"ap": 0.47, "support": 100}, "Film": {"ap": 0.55, "support": 100}}
    result = results_by_name(report(candidate=scores(0.51, classes=classes)))["per_class"]
    assert not result.passed
    (failure,) = result.failures
    assert failure.what == "AP of class 'PET' (100 test boxes)" and failure.limit == pytest.approx(0.48) and failure.by == pytest.approx(0.01)
    assert "'PET'" in result.describe()


def test_a_class_below_min_support_is_not_gated():
    classes = {"PET": {"ap": 0.10, "support": 19}, "Film": {"ap": 0.55, "support": 100}}
    result = results_by_name(report(candidate=scores(0.51, classes=classes)))["per_class"]
    assert result.passed and result.summary.startswith("1 classes")
    # The same drop with enough support fails: the support is what spares it.
    classes["PET"]["support"] = 20
    assert not results_by_name(report(candidate=scores(0.51, classes=classes)))["per_class"].passed


def test_a_camera_dropping_more_than_the_camera_delta_fails_the_slice_gate():
    slices = {"client": {"acme": {"ap": 0.49, "boxes": 300, "reliable": True}}, "camera": {"cam-01": {"ap": 0.44, "boxes": 120, "reliable": True}}}
    result = results_by_name(report(candidate=scores(0.51, slices=slices)))["per_slice"]
    assert not result.passed
    (failure,) = result.failures  # the client lost 0.01 (allowed 0.03), the camera 0.06 (allowed 0.05)
    assert failure.what == "AP of camera 'cam-01' (120 test boxes)" and failure.by == pytest.approx(0.01)


def test_a_slice_without_enough_support_is_not_gated():
    slices = {"client": {"acme": {"ap": 0.50, "boxes": 300, "reliable": True}}, "camera": {"cam-01": {"ap": 0.10, "boxes": 12, "reliable": False}}}
    assert results_by_name(report(candidate=scores(0.51, slices=slices)))["per_slice"].passed


def test_robustness_worse_than_production_by_more_than_the_delta_fails():
    fragile = scores(0.51, robustness={"blur-2": {"ap": 0.43, "drop": 0.08}})
    result = results_by_name(report(candidate=fragile))["robustness"]
    assert not result.passed and result.failures[0].what == "AP drop under blur-2" and result.failures[0].by == pytest.approx(0.01)


def test_without_production_the_absolute_minimums_apply():
    assert failed(evaluate_gates(report(candidate=scores(0.35), no_production=True), GATES, False)) == []
    result = results_by_name(report(candidate=scores(0.25), no_production=True))["overall_ap"]
    assert not result.passed and "absolute minimum" in result.failures[0].what and result.failures[0].by == pytest.approx(0.05)


def test_the_external_test_must_pass_when_configured():
    passing = report(mltest={"passed": True, "exit_code": 0, "error": None})
    assert results_by_name(passing, mltest_configured=True)["mltest"].passed
    failing = copy.deepcopy(passing)
    failing["mltest"] = {"passed": False, "exit_code": 2, "error": "exit status 2: 3 cases failed"}
    result = results_by_name(failing, mltest_configured=True)["mltest"]
    assert not result.passed and "3 cases failed" in result.failures[0].look_at
    assert not results_by_name(report(), mltest_configured=True)["mltest"].passed  # configured but no result
    assert results_by_name(report(), mltest_configured=False)["mltest"].passed


def test_evaluation_and_gates_config_name_what_is_wrong(tmp_path):
    import yaml

    from data_engine.config import ConfigError, load_fleet_config
    from data_engine_tests.conftest import TEST_FLEET

    def load_with(section: dict):
        fleet = copy.deepcopy(TEST_FLEET)
        next(iter(fleet["models"].values())).update(section)
        path = tmp_path / "fleet.yaml"
        path.write_text(yaml.safe_dump(fleet, sort_keys=False))
        return load_fleet_config(path)

    model = load_with({"evaluation": {"score_thresholds": {"PET": 0.4}}, "gates": {"class_max_drop": 0.01}})
    settings = next(iter(model.models.values()))
    assert settings.evaluation.threshold("PET") == 0.4 and settings.evaluation.threshold("HDPE") == 0.5
    assert settings.gates.class_max_drop == 0.01 and settings.training.auto.min_new_reviewed_images == 200
    with pytest.raises(ConfigError, match=r"evaluation.score_thresholds: 'Glass' is not one of the model's classes"):
        load_with({"evaluation": {"score_thresholds": {"Glass": 0.4}}})
    with pytest.raises(ConfigError, match="slice_max_drop"):
        load_with({"gates": {"slice_max_drop": {"site": 0.1}}})
