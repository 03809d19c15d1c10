"""The modules ``setup.py`` compiles are the compiled ones at run time, and built from these sources."""

from __future__ import annotations

import ast
import importlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def compiled_sources() -> list[str]:
    """``setup.py``'s ``COMPILED`` list, read without running the build."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "COMPILED" for target in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no COMPILED list")


@pytest.mark.parametrize("source", compiled_sources())
def test_the_module_is_compiled_from_its_source(source: str) -> None:
    """An install made without compiling, or before the source changed, fails here, not in the bench."""
    module = importlib.import_module(source.removesuffix(".py").replace("/", "."))
    loaded = Path(module.__file__ or "")
    if os.environ.get("GATEWAY_COMPILE") == "0":  # installed as plain Python on purpose
        assert loaded.suffix == ".py"
        return
    assert loaded.suffix == ".so", f"{source} is not compiled: run `make` (or pip install -e .)"
    assert loaded.stat().st_mtime >= (ROOT / source).stat().st_mtime, (
        f"{source} changed since it was compiled: run `make` (or pip install -e .)"
    )


def test_the_makefile_rebuilds_when_a_compiled_source_changes() -> None:
    """The Makefile reads the same list, so that `make test` never runs a stale build."""
    makefile = (ROOT / "Makefile").read_text()
    assert "$(STAMP): pyproject.toml setup.py $(COMPILED)" in makefile
    assert "setup.py" in makefile.split("COMPILED :=", 1)[1].split("\n", 1)[0]
