"""Modules imported at their first use rather than with the module that names them.

A command line program pays for every import on every run; `websockets`, for one, is needed only by the commands
that open a stream. `importlib.util.LazyLoader` runs the module's code at its first attribute access.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def load_later(name: str) -> ModuleType:
    """The module `name`, loaded at the first attribute access (at once when it is already loaded)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
