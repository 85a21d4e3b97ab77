"""The layer order of docs/architecture.md holds: no module of ``monai_iqad`` imports a package of a higher layer."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import monai_iqad

ROOT = Path(monai_iqad.__file__).parent

#: Rank of each subpackage (docs/architecture.md): a module may import packages of its own rank or lower. ``utils``
#: (atomic writes, config flags) is below everything; ``losses`` and ``metrics`` share a rank.
LAYERS = {
    "utils": 0,
    "data": 1,
    "transforms": 2,
    "demo": 3,
    "networks": 4,
    "losses": 5,
    "metrics": 5,
    "engines": 6,
    "handlers": 7,
    "label": 8,
}

#: Entry points that nothing imports, allowed to forward upwards: ``python -m monai_iqad.data`` runs the demo CLI.
ENTRY_POINTS = {"data/__main__.py"}


def imported_modules(source: str, package: Sequence[str]) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in ``source``, relative imports resolved against ``package``
    (e.g. ``["monai_iqad", "data", "converters"]``)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module or "").split(".")]).rstrip(".")
            out += [(node.lineno, f"{module}.{a.name}" if node.module is None else module) for a in node.names]
    return out


def test_imported_modules_resolves_relative_imports():
    source = "from ...demo import a\nfrom ..datalist import b\nfrom . import c\nimport monai_iqad.label.app, os\n"
    found = [m for _, m in imported_modules(source, ["monai_iqad", "data", "converters"])]
    assert found == [
        "monai_iqad.demo",
        "monai_iqad.data.datalist",
        "monai_iqad.data.converters.c",
        "monai_iqad.label.app",
        "os",
    ]


def test_no_module_imports_a_higher_layer():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if len(rel.parts) < 2 or rel.as_posix() in ENTRY_POINTS:
            continue  # top-level modules (cli.py, score.py) sit above every package
        own = LAYERS[rel.parts[0]]
        package = ["monai_iqad", *rel.parent.parts]
        for line, module in imported_modules(path.read_text(encoding="utf-8"), package):
            parts = module.split(".")
            if parts[0] == "monai_iqad" and len(parts) > 1 and LAYERS.get(parts[1], -1) > own:
                offenders.append(f"{rel.as_posix()}:{line} imports {module}")
    assert not offenders, "imports against the layer order of docs/architecture.md:\n" + "\n".join(offenders)


def test_every_subpackage_has_a_layer():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert packages <= set(LAYERS), sorted(packages - set(LAYERS))
