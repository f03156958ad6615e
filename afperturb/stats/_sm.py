"""Lazy access to statsmodels.

Importing statsmodels costs about a second, which every ``import afperturb`` (and so every CLI
call) would pay although most never compute a statistic. The statistics modules call these
accessors at the point of use instead of importing statsmodels at module level.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def proportion() -> ModuleType:
    """``statsmodels.stats.proportion`` (Wilson, Newcombe, score tests, TOST)."""
    return importlib.import_module("statsmodels.stats.proportion")


def contingency_tables() -> ModuleType:
    """``statsmodels.stats.contingency_tables`` (McNemar)."""
    return importlib.import_module("statsmodels.stats.contingency_tables")


def power() -> ModuleType:
    """``statsmodels.stats.power`` (NormalIndPower)."""
    return importlib.import_module("statsmodels.stats.power")


def multitest() -> ModuleType:
    """``statsmodels.stats.multitest`` (multipletests)."""
    return importlib.import_module("statsmodels.stats.multitest")


def api() -> ModuleType:
    """``statsmodels.api`` (GLM, GEE, families)."""
    return importlib.import_module("statsmodels.api")


def perfect_separation_warning() -> type[Warning]:
    """The ``PerfectSeparationWarning`` class of statsmodels, to silence where expected."""
    tools = importlib.import_module("statsmodels.tools.sm_exceptions")
    return tools.PerfectSeparationWarning  # type: ignore[no-any-return]
