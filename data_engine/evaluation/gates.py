"""Promotion gates: plain functions of an evaluation report and the model's `gates:` config.

Each gate returns a GateResult saying whether it passed and, when not, which number failed, by how much,
and where to look. Without a production model the candidate is held to the configured absolute minimums
and the comparative gates pass with a note (there is nothing to regress from).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

GATES = ("overall_ap", "per_class", "per_slice", "robustness", "mltest")


@dataclass(frozen=True)
class GateFailure:
    what: str  # the number that failed, e.g. "AP of class PET"
    value: float
    limit: float
    by: float  # how far past the limit
    look_at: str  # where a person starts looking

    def describe(self) -> str:
        return f"{self.what} is {self.value:.4f}, limit {self.limit:.4f} (off by {self.by:.4f}); look at {self.look_at}"


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    summary: str
    failures: list[GateFailure] = field(default_factory=list)

    def describe(self) -> str:
        if self.passed:
            return f"{self.name}: passed ({self.summary})"
        return f"{self.name}: FAILED: " + "; ".join(failure.describe() for failure in self.failures)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_gates(report: Mapping[str, Any], gates: Any, mltest_configured: bool) -> list[GateResult]:
    """Every gate's result, in GATES order. `gates` is the model's GatesConfig."""
    return [
        overall_ap_gate(report, gates),
        per_class_gate(report, gates),
        per_slice_gate(report, gates),
        robustness_gate(report, gates),
        mltest_gate(report, mltest_configured),
    ]


def overall_ap_gate(report: Mapping[str, Any], gates: Any) -> GateResult:
    candidate, production = report["scores"]["candidate"], report["scores"]["production"]
    if production is None:
        failures = [
            _failure(f"{name} (no production model yet: absolute minimum)", candidate[key], minimum, "the per-class table and the training run's validation metrics")
            for name, key, minimum in (("AP@[.50:.95]", "ap", gates.min_ap), ("AP50", "ap50", gates.min_ap50))
            if candidate[key] < minimum
        ]
        return GateResult("overall_ap", not failures, f"AP {candidate['ap']:.4f} >= minimum {gates.min_ap:.4f}, AP50 {candidate['ap50']:.4f} >= {gates.min_ap50:.4f}", failures)
    failures = []
    floor = production["ap"] - gates.ap_tolerance
    if candidate["ap"] < floor:
        failures.append(_failure("AP@[.50:.95]", candidate["ap"], floor, "the per-class and per-slice tables for where it was lost"))
    low, high = report["comparison"]["bootstrap"]["ci95"]
    if low <= -gates.ap_tolerance:
        failures.append(
            GateFailure(
                what=f"lower bound of the bootstrap 95% CI of ΔAP [{low:+.4f}, {high:+.4f}]",
                value=low,
                limit=-gates.ap_tolerance,
                by=-gates.ap_tolerance - low,
                look_at="the test split's size (a wide CI means too few test images to tell) and the per-class deltas",
            )
        )
    summary = f"AP {candidate['ap']:.4f} vs production {production['ap']:.4f} (tolerance {gates.ap_tolerance}), ΔAP CI [{low:+.4f}, {high:+.4f}]"
    return GateResult("overall_ap", not failures, summary, failures)


def per_class_gate(report: Mapping[str, Any], gates: Any) -> GateResult:
    candidate, production = report["scores"]["candidate"], report["scores"]["production"]
    if production is None:
        return GateResult("per_class", True, "no production model to compare against")
    compared = [
        (f"AP of class {name!r} ({metrics['support']} test boxes)", f"class {name!r} in the PR-curve chart and its labels in the latest version", metrics["ap"], before["ap"])
        for name, metrics in candidate["per_class"].items()
        if (before := production["per_class"].get(name)) is not None and metrics["support"] >= gates.class_min_support
    ]
    failures, checked = _regressions(compared, gates.class_max_drop)
    return GateResult("per_class", not failures, f"{checked} classes with >= {gates.class_min_support} test boxes within {gates.class_max_drop} AP of production", failures)


def per_slice_gate(report: Mapping[str, Any], gates: Any) -> GateResult:
    candidate, production = report["scores"]["candidate"], report["scores"]["production"]
    if production is None:
        return GateResult("per_slice", True, "no production model to compare against")
    failures, checked = [], 0
    for kind, max_drop in gates.slice_max_drop.items():
        compared = [
            (f"AP of {kind} {name!r} ({metrics['boxes']} test boxes)", f"the {kind} {name!r} frames: new conditions there, or too few of them in training", metrics["ap"], before["ap"])
            for name, metrics in candidate["slices"].get(kind, {}).items()
            if (before := production["slices"].get(kind, {}).get(name)) is not None and metrics["reliable"]
        ]
        kind_failures, kind_checked = _regressions(compared, max_drop)
        failures += kind_failures
        checked += kind_checked
    return GateResult("per_slice", not failures, f"{checked} slices with enough support within their allowed drop", failures)


def _regressions(compared: list[tuple[str, str, float, float]], max_drop: float) -> tuple[list[GateFailure], int]:
    """Failures for each (what, look_at, AP, production AP) that lost more than max_drop, and how many were
    compared; COCO's -1 (no ground truth in one of them) is not comparable."""
    measurable = [entry for entry in compared if entry[2] >= 0 and entry[3] >= 0]
    failures = [_failure(what, ap, before - max_drop, look_at) for what, look_at, ap, before in measurable if ap < before - max_drop]
    return failures, len(measurable)


def robustness_gate(report: Mapping[str, Any], gates: Any) -> GateResult:
    candidate, production = report["scores"]["candidate"], report["scores"]["production"]
    if production is None:
        return GateResult("robustness", True, "no production model to compare against")
    failures = []
    for name, metrics in candidate["robustness"].items():
        before = production["robustness"].get(name)
        if before is None:
            continue
        limit = before["drop"] + gates.robustness_max_extra_drop
        if metrics["drop"] > limit:
            failures.append(
                GateFailure(f"AP drop under {name}", metrics["drop"], limit, metrics["drop"] - limit, f"the augmentations in training for {name.split('-')[0]}")
            )
    return GateResult("robustness", not failures, f"{len(candidate['robustness'])} perturbations within {gates.robustness_max_extra_drop} of production's drop", failures)


def mltest_gate(report: Mapping[str, Any], configured: bool) -> GateResult:
    result = report.get("mltest")
    if not configured:
        return GateResult("mltest", True, "no external test configured (evaluation.mltest)")
    if result is None:
        return GateResult("mltest", False, "", [GateFailure("external test result", 0, 1, 1, "evaluation.mltest: the report has no result; re-run the evaluation")])
    if result["passed"]:
        return GateResult("mltest", True, "the external test passed")
    return GateResult("mltest", False, "", [GateFailure("external test exit status", float(result["exit_code"] if result["exit_code"] is not None else -1), 0, 1, f"its report ({result.get('error') or 'see the attached report'})")])


def failed(results: list[GateResult]) -> list[GateResult]:
    return [result for result in results if not result.passed]


def _failure(what: str, value: float, limit: float, look_at: str) -> GateFailure:
    return GateFailure(what=what, value=value, limit=limit, by=limit - value, look_at=look_at)
