"""Classifiers: tags, offline heuristics, and LLM judges with votes.

The cheap classifiers (:class:`TagClassifier` and the heuristics) run inline in the sweep; the
judges (:mod:`afperturb.classify.judges`) run afterwards through a model backend, with
sequential voting (:mod:`afperturb.classify.voting`); :func:`evaluate` validates any of them
against human labels. The judge and voting modules (and scipy/statsmodels) load on first use so
that the sweep's import stays light; ``evaluate`` is imported eagerly because the function
shares its module's name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from afperturb.classify.base import Classifier
from afperturb.classify.evaluate import Evaluation, evaluate
from afperturb.classify.heuristics import (
    HeuristicAFClassifier,
    HeuristicComplianceClassifier,
    HeuristicMotiveClassifier,
)
from afperturb.classify.tags import TagClassifier, TagResult, parse_tags

if TYPE_CHECKING:
    from afperturb.classify.judges import (
        Judge,
        JudgeClassifier,
        JudgeRun,
        builtin_judges,
        load_judge,
        run,
    )
    from afperturb.classify.voting import VotePolicy

_LAZY: dict[str, str] = {
    "Judge": "afperturb.classify.judges",
    "JudgeClassifier": "afperturb.classify.judges",
    "JudgeRun": "afperturb.classify.judges",
    "builtin_judges": "afperturb.classify.judges",
    "load_judge": "afperturb.classify.judges",
    "run": "afperturb.classify.judges",
    "VotePolicy": "afperturb.classify.voting",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'afperturb.classify' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Classifier",
    "Evaluation",
    "HeuristicAFClassifier",
    "HeuristicComplianceClassifier",
    "HeuristicMotiveClassifier",
    "Judge",
    "JudgeClassifier",
    "JudgeRun",
    "TagClassifier",
    "TagResult",
    "VotePolicy",
    "builtin_judges",
    "evaluate",
    "load_judge",
    "parse_tags",
    "run",
]
