"""The packages' layer order: each imports only the layers below it, at the
top of a module or inside a function alike, and the studies use only public
names. `python -m pytest tests/test_layers.py` checks it."""

import ast
import os

import pytest

from tests.conftest import ROOT

# Each package and the project packages it may import (besides itself).
PRODUCT = ("utils", "configs", "agents", "replay", "actors", "learner", "launch")
ALLOWED = {
    "utils": set(),
    "configs": {"utils"},
    "agents": {"configs", "utils"},
    "replay": {"agents", "configs", "utils"},
    "actors": {"agents", "configs", "replay", "utils"},
    "learner": {"agents", "configs", "replay", "utils"},
    "launch": {"actors", "agents", "configs", "learner", "replay", "utils"},
    "benchmarks": set(PRODUCT),
    "experiments": set(PRODUCT),
}
PROJECT = set(ALLOWED)


def _modules(package):
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path) as f:
                    yield os.path.relpath(path, ROOT), ast.parse(f.read(), path)


def _imports(tree):
    """(line, module, names) of every import in `tree`, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, tuple(a.name for a in node.names)


def layer_violations(package):
    out = []
    for path, tree in _modules(package):
        for line, module, _ in _imports(tree):
            top = module.split(".")[0]
            if top in PROJECT and top != package and top not in ALLOWED[package]:
                out.append(f"{path}:{line} imports {module}")
    return out


def private_uses(package):
    """Private names of the product that a study imports or reaches into."""
    out = []
    for path, tree in _modules(package):
        aliases = set()
        for line, module, names in _imports(tree):
            if module.split(".")[0] not in PRODUCT:
                continue
            aliases.add(module.split(".")[-1])
            aliases.update(n for n in names if not n.startswith("_"))
            private = [n for n in names if n.startswith("_")]
            if private or any(part.startswith("_") for part in module.split(".")):
                out.append(f"{path}:{line} imports {module} {private}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
            ):
                out.append(f"{path}:{node.lineno} uses {node.value.id}.{node.attr}")
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down_the_layers(package):
    assert layer_violations(package) == []


@pytest.mark.parametrize("package", ["benchmarks", "experiments"])
def test_studies_use_public_names_only(package):
    assert private_uses(package) == []


def test_the_checks_catch_a_planted_violation(tmp_path, monkeypatch):
    """An upward import hidden in a function, and a private name reached into."""
    planted = tmp_path / "agents"
    planted.mkdir()
    (planted / "m.py").write_text("def f():\n    from replay import make_tables\n")
    study = tmp_path / "experiments"
    study.mkdir()
    (study / "s.py").write_text("from launch import report\nreport._aggregate([])\n")
    monkeypatch.setitem(globals(), "ROOT", str(tmp_path))
    assert layer_violations("agents") == [os.path.join("agents", "m.py") + ":2 imports replay"]
    assert private_uses("experiments") == [
        os.path.join("experiments", "s.py") + ":2 uses report._aggregate"
    ]
