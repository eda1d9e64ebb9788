"""Pipeline builds on crawlers, never the reverse: a cycle between the two packages makes
either one hard to change, test or ship alone (issue 13)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (absolute names)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_crawler_module_imports_pipeline():
    offenders = {str(path.relative_to(REPO)): sorted(name for name in imported_modules(path)
                                                      if name == "pipeline" or name.startswith("pipeline."))
                 for path in sorted((REPO / "crawlers").rglob("*.py"))}
    assert not {path: names for path, names in offenders.items() if names}


def test_importing_every_crawler_module_loads_no_pipeline_module():
    # The AST check above misses dynamic imports; this one runs the real imports.
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import crawlers\n"
        "for info in pkgutil.walk_packages(crawlers.__path__, 'crawlers.'):\n"
        "    importlib.import_module(info.name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'pipeline' or m.startswith('pipeline.'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == []
