"""The layering rules of the code (README, Code layout), read from every module's imports, those inside
functions included: the domain packages know nothing of Dagster, and `labels` never reaches into
`annotation` (the Dagster layer hands it the exports)."""

from __future__ import annotations

import ast
from pathlib import Path

import dagster as dg

PACKAGE = Path(__file__).resolve().parents[1] / "data_engine"
DAGSTER_LAYER = {PACKAGE / "defs", PACKAGE / "definitions.py"}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "label_studio_tool" not in p.parts)


def test_no_domain_module_imports_dagster():
    domain = [p for p in modules(PACKAGE) if not any(p == layer or layer in p.parents for layer in DAGSTER_LAYER)]
    assert len(domain) > 20
    offenders = {str(p.relative_to(PACKAGE)): sorted(n for n in imports(p) if n.split(".")[0].startswith("dagster")) for p in domain}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_labels_import_nothing_from_annotation():
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(n for n in imports(p) if n.startswith("data_engine.annotation"))
        for p in modules(PACKAGE / "labels")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_asset_graph_shows_the_review_data_flow():
    """training_labels reads the record of reviewed tasks as a declared input (not by rebuilding another
    asset's path), and no asset of the Dagster layer reads review_tasks' or review_candidates' files."""
    from data_engine.config import load_fleet_config
    from data_engine.defs.labels import build_label_defs

    (training_labels,) = [a for a in build_label_defs(load_fleet_config()).assets if a.key == dg.AssetKey("training_labels")]
    assert dict(training_labels.keys_by_input_name) == {"reviewed_tasks": dg.AssetKey("reviewed_tasks")}
    readers = [p.name for p in modules(PACKAGE / "defs") if "output_key(" in p.read_text() and p.name != "io_manager.py"]
    assert readers == ["review.py"]  # reviewed_tasks writes its own record by a conditional write
