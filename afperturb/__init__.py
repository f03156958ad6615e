"""afperturb: perturbation experiments on alignment faking, and why models fake it.

The notebook surface, in the order of the data flow (ARCHITECTURE.md §3)::

    import afperturb as af

    p = af.Perturbation.preset("paper")              # scenario templates × declared axes
    res = p.sweep(af.models.get("sim/opus-like"),    # or "openai/...", "anthropic/..."
                  requests=af.datasets.synthetic(400), store="runs.sqlite")
    af.stats.compliance_gap(res, treated={"rater_scrutiny": "pro"},
                            control={"rater_scrutiny": "enterprise"})
    af.attribute(res).to_frame()                     # the hypothesis table

Every public name is re-exported here; ``tests/test_public_surface.py`` checks that ``__all__``
and the documented surface agree.
"""

from typing import TYPE_CHECKING, Any

from afperturb import classify, datasets, errors, models, stats
from afperturb.design import PRESETS, Perturbation
from afperturb.errors import (
    AfperturbError,
    AfperturbWarning,
    BackendError,
    BackendResponseError,
    BackendTimeout,
    ClassifierError,
    DesignError,
    InsufficientDataError,
    RateLimited,
    StoreError,
    TemplateError,
)
from afperturb.hypotheses import HypothesisTable, attribute
from afperturb.records import (
    Completion,
    Condition,
    Facts,
    Label,
    Message,
    Request,
    SamplingParams,
    Trial,
    Usage,
)
from afperturb.results import SweepResult
from afperturb.scenario import Axis, Level, Scenario
from afperturb.shard import merge
from afperturb.store import Store
from afperturb.sweep import CostEstimate, SweepConfig

if TYPE_CHECKING:
    from afperturb import report

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "AfperturbError",
    "AfperturbWarning",
    "Axis",
    "BackendError",
    "BackendResponseError",
    "BackendTimeout",
    "ClassifierError",
    "Completion",
    "Condition",
    "CostEstimate",
    "DesignError",
    "Facts",
    "HypothesisTable",
    "InsufficientDataError",
    "Label",
    "Level",
    "Message",
    "Perturbation",
    "RateLimited",
    "Request",
    "SamplingParams",
    "Scenario",
    "Store",
    "StoreError",
    "SweepConfig",
    "SweepResult",
    "TemplateError",
    "Trial",
    "Usage",
    "__version__",
    "attribute",
    "classify",
    "datasets",
    "errors",
    "merge",
    "models",
    "report",
    "stats",
]


def __getattr__(name: str) -> Any:
    """Import ``af.report`` / ``af.inspect`` on first use (figures and HTML; inspect_ai)."""
    if name in ("report", "inspect"):
        import importlib

        return importlib.import_module(f"afperturb.{name}")
    raise AttributeError(f"module 'afperturb' has no attribute {name!r}")
