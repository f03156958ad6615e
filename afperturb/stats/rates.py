"""Compliance (or AF-reasoning) rates with Wilson intervals.

Rates are reported for completeness; the papers' mistake was to compare rates by eye. The
inference about *differences* lives in :mod:`afperturb.stats.gaps`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from afperturb.errors import InsufficientDataError, unknown_choice
from afperturb.stats import _sm
from afperturb.stats._frame import ArmSpec, Cells, cells_of, condition_mask, model_mask
from afperturb.stats._results import ResultMixin

__all__ = ["RateEstimate", "compliance_rate", "rates_by", "wilson_interval"]

Outcome = Literal["complied", "af_reasoning"]
_OUTCOMES = ("complied", "af_reasoning")


def wilson_interval(
    successes: float, n: float, confidence_level: float = 0.95
) -> tuple[float, float]:
    """Wilson score interval (statsmodels ``proportion_confint(method="wilson")``)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    low, high = _sm.proportion().proportion_confint(
        successes, n, alpha=1 - confidence_level, method="wilson"
    )
    return (float(low), float(high))


@dataclasses.dataclass(frozen=True, repr=False)
class RateEstimate(ResultMixin):
    """A proportion with its Wilson interval and the trials that could not be scored."""

    estimate: float
    ci_low: float
    ci_high: float
    successes: int
    n: int
    outcome: str
    confidence_level: float
    format_failures: int
    failed: int
    method: str = "wilson"

    _repr_fields = ("estimate", "ci_low", "ci_high", "n")

    def confidence_interval(self, confidence_level: float = 0.95) -> tuple[float, float]:
        """Wilson interval at another level."""
        return wilson_interval(self.successes, self.n, confidence_level)


def _rate(cells: Cells, mask: np.ndarray, outcome: str, level: float) -> RateEstimate:
    af = outcome == "af_reasoning"
    sel = mask[cells.cond]
    k = float((cells.af_k if af else cells.k)[sel].sum())
    n = float((cells.af_n if af else cells.n)[sel].sum())
    low, high = wilson_interval(k, n, level)
    return RateEstimate(
        estimate=k / n if n > 0 else float("nan"),
        ci_low=low,
        ci_high=high,
        successes=round(k),
        n=round(n),
        outcome=outcome,
        confidence_level=level,
        format_failures=cells.count(mask, "format_failures"),
        failed=cells.count(mask, "failed"),
    )


def compliance_rate(
    data: object,
    where: ArmSpec | None = None,
    *,
    model: str | None = None,
    outcome: Outcome = "complied",
    confidence_level: float = 0.95,
) -> RateEstimate:
    """Rate of ``outcome`` among scored trials of the conditions selected by ``where``.

    Args:
        data: a trial DataFrame (SweepResult.to_frame() columns) or an object with to_frame().
        where: ``{axis: level}`` / ``{fact: value}`` or a predicate; None means every condition.
        model: which model, when the frame holds several.
        outcome: ``"complied"`` or ``"af_reasoning"``.
        confidence_level: of the Wilson interval.

    Example:
        >>> import pandas as pd
        >>> f = pd.DataFrame({"condition_id": ["a"] * 4, "request_id": list("wxyz"),
        ...                   "status": "completed", "complied": [True, True, False, None]})
        >>> compliance_rate(f).n
        3
    """
    if outcome not in _OUTCOMES:
        raise unknown_choice("outcome", outcome, _OUTCOMES)
    cells = cells_of(data)
    mask = model_mask(cells, model)
    if where is not None:
        mask = mask & condition_mask(cells.conditions, where)
    if not mask.any():
        raise InsufficientDataError(f"no condition matches {where!r}")
    return _rate(cells, mask, outcome, confidence_level)


def rates_by(
    data: object,
    by: str | Sequence[str] = "condition_id",
    *,
    outcome: Outcome = "complied",
    confidence_level: float = 0.95,
) -> pd.DataFrame:
    """A tidy table of rates, one row per distinct value of the ``by`` column(s) (and model)."""
    if outcome not in _OUTCOMES:
        raise unknown_choice("outcome", outcome, _OUTCOMES)
    cells = cells_of(data)
    keys = ["model", *([by] if isinstance(by, str) else list(by))]
    for key in keys:
        if key not in cells.conditions.columns:
            raise unknown_choice("column", key, sorted(map(str, cells.conditions.columns)))
    rows = []
    for values, group in cells.conditions.groupby(keys, sort=True, dropna=False):
        mask = np.zeros(len(cells.conditions), dtype=bool)
        mask[group.index.to_numpy()] = True
        est = _rate(cells, mask, outcome, confidence_level)
        row = dict(zip(keys, values, strict=True))
        row.update(est._row())
        rows.append(row)
    return pd.DataFrame(rows)
