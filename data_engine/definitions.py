"""The code location's entry point: `dagster dev` / `dagster ... -m data_engine.definitions`.

Only the fleet config is read here; clients are created inside resources when a run needs them.
"""

import dagster as dg

from data_engine.config import load_fleet_config
from data_engine.defs.labels import build_label_defs
from data_engine.defs.profiles import resources_for
from data_engine.defs.review import build_review_defs
from data_engine.defs.selection import build_selection_defs
from data_engine.settings import current_settings


def build_definitions() -> dg.Definitions:
    config = load_fleet_config()
    return dg.Definitions.merge(
        build_selection_defs(config),
        build_review_defs(config),
        build_label_defs(config),
        dg.Definitions(resources=resources_for(current_settings(), config)),
    )


defs = build_definitions()
