"""The demo's simulated reviewer in the local profile: `simulated_reviewer_sensor` (off by default; turn
it on in the UI, or `data-engine demo` does) reviews a bounded number of open frames per model and tick,
and `review_from_cli` is the same pass for `data-engine reviewer run`.

Thin: the reviewing lives in `data_engine.reviewer`; the truth comes from the demo warehouse.
"""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
import os
from typing import TYPE_CHECKING

import dagster as dg

from data_engine.config import FleetConfig
from data_engine.defs.cvat_resource import LABEL_STUDIO_NOT_STARTED, AnnotationResource
from data_engine.settings import Settings

if TYPE_CHECKING:
    from data_engine.reviewer import ReviewerSettings, ReviewSummary

# `on`: the sensor starts running with the code location (what `data-engine demo` sets).
SENSOR_SWITCH = "DATA_ENGINE_SIMULATED_REVIEWER"


class SimulatedReviewerResource(dg.ConfigurableResource):
    """The sensor's reviewer: its rates and seed (ReviewerSettings), and frames per model and tick."""

    error_rate: float = 0.05
    skip_rate: float = 0.05
    reject_rate: float = 0.01
    seed: int = 0
    frames_per_tick: int = 25

    def reviewer_settings(self) -> "ReviewerSettings":
        from data_engine.reviewer import ReviewerSettings

        return ReviewerSettings(self.error_rate, self.skip_rate, self.reject_rate, self.seed, self.frames_per_tick)


def review_model(
    annotation: AnnotationResource, settings: Settings, config: FleetConfig, model: str, reviewer: "ReviewerSettings", *, quick: bool = False, logger=None
) -> "ReviewSummary":
    """One pass of the simulated reviewer over a model's open frames in the profile's Label Studio."""
    from data_engine.annotation.label_studio import LabelStudioBackend
    from data_engine.reviewer import ReviewerUnavailable, review_demo_model

    if not annotation.configured:
        raise ReviewerUnavailable(LABEL_STUDIO_NOT_STARTED)
    with annotation.open(quick=quick, logger=logger) as backend:
        if not isinstance(backend, LabelStudioBackend):
            raise ReviewerUnavailable("the simulated reviewer works in Label Studio, the local profile's annotation server: unset CVAT_URL")
        return review_demo_model(backend, config, model, reviewer, settings.home, settings.warehouse_path)


def review_from_cli(settings: Settings, config: FleetConfig, model: str, reviewer: "ReviewerSettings") -> "ReviewSummary":
    """`review_model` with the profile's annotation resource, outside any run."""
    from data_engine.defs.profiles import annotation_resource

    with dg.build_resources({"annotation": annotation_resource(settings)}) as resources:
        return review_model(resources.annotation, settings, config, model, reviewer)


def build_reviewer_defs(config: FleetConfig, settings: Settings) -> dg.Definitions:
    fleet = config
    on = os.environ.get(SENSOR_SWITCH) == "on"

    @dg.sensor(
        name="simulated_reviewer_sensor",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING if on else dg.DefaultSensorStatus.STOPPED,
        description="The demo's simulated reviewer: reviews open frames in Label Studio toward the demo's ground truth"
        f" (mistakes journaled under $DATA_ENGINE_HOME/reviewer). Off by default; {SENSOR_SWITCH}=on starts it running.",
    )
    def simulated_reviewer_sensor(
        context: dg.SensorEvaluationContext, annotation: AnnotationResource, simulated_reviewer: SimulatedReviewerResource
    ):
        from data_engine.reviewer import ReviewerUnavailable

        reviewer = simulated_reviewer.reviewer_settings()
        try:
            lines = [review_model(annotation, settings, fleet, model, reviewer, quick=True, logger=context.log).line(model) for model in fleet.models]
        except ReviewerUnavailable as error:
            return dg.SkipReason(str(error))
        return dg.SkipReason("; ".join(lines))

    return dg.Definitions(sensors=[simulated_reviewer_sensor], resources={"simulated_reviewer": SimulatedReviewerResource()})
