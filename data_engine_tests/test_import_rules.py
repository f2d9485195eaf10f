"""The layering rules of the code (README, Code layout), read from every module's imports, those inside
functions included: the domain packages know nothing of Dagster, and `labels` never reaches into
`annotation` (the Dagster layer hands it the exports)."""

from __future__ import annotations

import ast
from pathlib import Path

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
