"""Everything the package imports is a declared runtime dependency (or the standard library):
`./run` installs the package without the test extras, so a test-only import would break it."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _imported_top_modules() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "firstparty").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"firstparty", "__future__"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_import_is_a_declared_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_normal(re.split(r"[<>=\[; ]", d, maxsplit=1)[0]) for d in project["dependencies"]}
    # uvicorn[standard] brings uvloop and httptools, named by string in cli.py, not imported.
    distributions = packages_distributions()
    missing = {
        module: distributions.get(module, [module])
        for module in _imported_top_modules()
        if not any(_normal(d) in declared for d in distributions.get(module, [module]))
    }
    assert not missing, f"add to [project].dependencies in pyproject.toml: {missing}"
