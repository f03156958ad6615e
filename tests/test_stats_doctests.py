"""The docstring examples of the statistics modules run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "afperturb.stats",
    "afperturb.stats.gaps",
    "afperturb.stats.rates",
    "afperturb.stats.trend",
    "afperturb.stats.models",
    "afperturb.stats.heterogeneity",
    "afperturb.stats.equivalence",
    "afperturb.stats.multiplicity",
    "afperturb.stats.misclassification",
    "afperturb.stats.power",
    "afperturb.stats.simulate",
    "afperturb.hypotheses._table",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
