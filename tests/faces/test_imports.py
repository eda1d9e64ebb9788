"""pipeline/faces has one home per concern, so its modules import each other in one direction.

An import circle (crop.py and pages.py each needed the other) forces imports into function
bodies and makes "which module owns this" a matter of luck; this finds any, at any depth,
including imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pipeline.faces

PACKAGE = Path(pipeline.faces.__file__).parent


def imports_within_package() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "pipeline.faces":  # from pipeline.faces import crop
                    names |= {alias.name for alias in node.names}
                elif node.module.startswith("pipeline.faces."):
                    names.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                names |= {a.name.split(".")[2] for a in node.names if a.name.startswith("pipeline.faces.")}
        graph[path.stem] = {name for name in names if (PACKAGE / f"{name}.py").is_file()} - {path.stem}
    return graph


def test_no_import_circle_in_faces():
    graph = imports_within_package()
    assert {"crop", "pages", "images"} <= graph.keys()

    def cycle_from(module: str, trail: tuple[str, ...]) -> tuple[str, ...] | None:
        if module in trail:
            return trail[trail.index(module):] + (module,)
        for imported in sorted(graph[module]):
            if found := cycle_from(imported, trail + (module,)):
                return found
        return None

    for module in sorted(graph):
        cycle = cycle_from(module, ())
        assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_page_pool_and_the_geometry_do_not_know_the_stage():
    graph = imports_within_package()
    assert "crop" not in graph["pages"] and "crop" not in graph["images"]
    assert "pages" not in graph["images"]
