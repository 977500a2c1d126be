"""Modules imported at their first use rather than with the module that names them.

A command line program pays for every import on every run; `websockets`, for one, is needed only by the commands
that open a stream. The stand-in imports the module on its first attribute access through `importlib`, whose
import lock makes that safe from many threads at once (an orchestrator's five sandboxes open their first
streams together). `importlib.util.LazyLoader` is not: before Python 3.12 a second thread can see the module
half-executed and miss its attributes.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any


class _Deferred:
    """Stands in for a module until an attribute is first read, then hands out the real module's."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<module {self._name!r} (loaded at first use)>"


def load_later(name: str) -> Any:
    """The module `name`, or a stand-in that imports it at the first attribute access."""
    return sys.modules.get(name) or _Deferred(name)
