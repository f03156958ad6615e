"""The one place that imports inspect_ai, with the install hint when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

HINT = 'this needs inspect_ai: pip install "afperturb[inspect]"'


def inspect_ai() -> ModuleType:
    """The ``inspect_ai`` package, or an ImportError that says how to install it."""
    try:
        return importlib.import_module("inspect_ai")
    except ImportError as exc:
        raise ImportError(HINT) from exc
