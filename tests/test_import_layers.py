"""Layers import downward only: each module of detzoo may import its own layer and the ones
below it, never one above (read from the source, nothing imported)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "detzoo"
# lowest first; a module belongs to the longest prefix that names it
LAYERS = [
    ("utilities", ("detzoo.allocator", "detzoo.errors", "detzoo.version", "detzoo.files", "detzoo.download",
                   "detzoo.config", "detzoo.structures")),
    ("layers", ("detzoo.layers",)),
    ("models", ("detzoo.backbones", "detzoo.necks", "detzoo.heads", "detzoo.detectors")),
    ("data/evaluation", ("detzoo.data", "detzoo.evaluation", "detzoo.visualize")),
    ("engine", ("detzoo.engine",)),
    ("zoo", ("detzoo.zoo",)),
    ("api", ("detzoo.api",)),
    ("tools", ("detzoo.tools", "detzoo.export")),
    ("cli", ("detzoo.cli", "detzoo.demo", "detzoo.__main__", "detzoo")),
]


def layer(module: str) -> int:
    matches = [(len(prefix), rank) for rank, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer"
    return max(matches)[1]


def imports(path: Path) -> list[tuple[str, int]]:
    """The detzoo modules ``path`` imports, with their line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return [(name, line) for name, line in found if name == "detzoo" or name.startswith("detzoo.")]


def test_layers_import_downward_only():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "configs" in path.relative_to(PACKAGE).parts:
            continue
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        own = layer(module)
        for name, line in imports(path):
            if layer(name) > own:
                upward.append(f"{module} ({LAYERS[own][0]}) imports {name} ({LAYERS[layer(name)][0]}), line {line}")
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from detzoo.cli import main\nimport detzoo.engine.trainer\n")
    assert [layer(name) for name, _ in imports(bad)] == [8, 4]
    assert layer("detzoo.evaluation.coco") < layer("detzoo.engine.checkpoint")
