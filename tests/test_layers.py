"""The package's layers: a module imports only from its own layer or the layers below it.

Low to high: config, work, checks and backend; data; models; methods; training; analysis; plots
and diagrams; studies and exercises.
Plots draw what models and analysis give and may import only those (and config); diagrams
draw models and may import only models (and config). Every
import is read from the source (``ast``), including imports inside functions.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mtlkit"

RANK = {"": 0, "config": 0, "work": 0, "checks": 0, "backend": 0, "data": 1, "models": 2,
        "methods": 3, "training": 4, "analysis": 5, "plots": 6, "diagrams": 6,
        "studies": 7,
        "exercises": 7}  # fmt: skip
"""Each top-level part of the package and its layer (config, work, checks and backend share
the lowest)."""

PLOTS_MAY_IMPORT = {"", "config", "models", "analysis", "plots"}
DIAGRAMS_MAY_IMPORT = {"", "config", "models"}


def part(module: str) -> str:
    """The top-level part of a dotted ``mtlkit...`` name: ``mtlkit.models.graph`` -> models."""
    names = module.split(".")
    return names[1] if len(names) > 1 else ""


def imported(path: Path) -> list[str]:
    """Every ``mtlkit`` module that ``path`` imports (``from mtlkit import x`` names x)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "mtlkit"]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: use absolute imports (from mtlkit...), not relative.")
        elif isinstance(node, ast.ImportFrom) and node.module == "mtlkit":
            found += [f"mtlkit.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module.startswith("mtlkit."):
            found.append(node.module)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_of_the_package_has_a_layer():
    parts = {part(module_name(p)) for p in MODULES}
    assert parts <= set(RANK), f"give {sorted(parts - set(RANK))} a layer in RANK"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_imports_a_higher_layer(path):
    here = part(module_name(path))
    higher = [m for m in imported(path) if RANK[part(m)] > RANK[here]]
    assert not higher, f"{module_name(path)} (layer {here or 'mtlkit'}) imports {higher}"


@pytest.mark.parametrize("path", [p for p in MODULES if part(module_name(p)) == "plots"])
def test_plots_import_only_config_models_and_analysis(path):
    others = [m for m in imported(path) if part(m) not in PLOTS_MAY_IMPORT]
    assert not others, f"{module_name(path)} imports {others}"


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from mtlkit import training\n    from mtlkit.studies import x\n")
    assert imported(bad) == ["mtlkit.training", "mtlkit.studies"]


@pytest.mark.parametrize("path", [p for p in MODULES if part(module_name(p)) == "diagrams"])
def test_diagrams_import_only_config_and_models(path):
    others = [m for m in imported(path) if part(m) not in DIAGRAMS_MAY_IMPORT]
    assert not others, f"{module_name(path)} imports {others}"
