"""The code location's entry point: `dagster dev` / `dagster ... -m data_engine.definitions`.

Only the fleet config is read here; clients are created inside resources when a run needs them.
"""

import dagster as dg

from data_engine.config import load_fleet_config
from data_engine.defs.evaluation import build_evaluation_defs
from data_engine.defs.labels import build_label_defs
from data_engine.defs.profiles import resources_for
from data_engine.defs.review import build_review_defs
from data_engine.defs.reviewer import build_reviewer_defs
from data_engine.defs.selection import build_selection_defs
from data_engine.defs.training import build_training_defs
from data_engine.settings import current_settings


def build_definitions() -> dg.Definitions:
    config = load_fleet_config()
    settings = current_settings()
    resources = resources_for(settings, config)
    # The demo's simulated reviewer exists where the demo runs: the local profile.
    reviewer = [build_reviewer_defs(config, settings)] if settings.profile == "local" else []
    return dg.Definitions.merge(
        build_selection_defs(config),
        build_review_defs(config, automatic=resources["annotation"].configured),
        build_label_defs(config),
        build_training_defs(config),
        build_evaluation_defs(config, settings),
        *reviewer,
        # Steps run in the run's own process: a step subprocess would import the code location again (seconds
        # per step) to call a warehouse, CVAT or S3; no job here has independent steps that would run in parallel.
        dg.Definitions(resources=resources, executor=dg.in_process_executor),
    )


defs = build_definitions()
