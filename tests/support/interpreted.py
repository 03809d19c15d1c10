"""Interpreted copies of compiled modules, for the few tests that patch a module's internals.

A module compiled with mypyc (``setup.py``) calls its own functions and methods directly, so
patching them has no effect there. Such a test loads the module's source again, as Python,
under a name of its own; everything else it imports is the real, compiled thing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ("interpreted",)


def interpreted(name: str) -> ModuleType:
    """A fresh interpreted copy of module ``name`` (e.g. ``gateway.proxy.observer``)."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None, name
    source = Path(spec.origin).parent / f"{name.rpartition('.')[2]}.py"
    copy_name = f"{name}__interpreted"
    copy_spec = importlib.util.spec_from_file_location(copy_name, source)
    assert copy_spec is not None and copy_spec.loader is not None
    module = importlib.util.module_from_spec(copy_spec)
    sys.modules[copy_name] = module  # dataclasses resolve their annotations through it
    copy_spec.loader.exec_module(module)
    return module
