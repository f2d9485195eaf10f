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


def test_the_review_stage_reaches_into_no_annotation_tool():
    """The review stage speaks only the neutral interface (annotation/backend.py): outside the backends'
    own modules (and the resource that picks one), no module of the annotation package and no review asset
    imports a backend or reads a tool's block of the model's config (`annotation.cvat`): each backend reads
    its own settings."""
    own = {"cvat.py", "label_studio.py", "label_studio_server.py"}
    neutral = [p for p in modules(PACKAGE / "annotation") if p.name not in own]
    neutral += [PACKAGE / "defs" / name for name in ("review.py", "rereview.py", "labels.py")]
    tools = ("data_engine.annotation.cvat", "data_engine.annotation.label_studio", "cvat_sdk")
    offenders = {}
    for path in neutral:
        tree = ast.parse(path.read_text(), str(path))
        found = {name for name in imports(path) if name.startswith(tools)}
        found |= {f".{node.attr}" for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "cvat"}
        if found:
            offenders[str(path.relative_to(PACKAGE))] = sorted(found)
    assert len(neutral) > 10
    assert offenders == {}
