"""Compliance (or AF-reasoning) rates with Wilson intervals, widened for clustering.

Rates are reported for completeness; the papers' mistake was to compare rates by eye. The
inference about *differences* lives in :mod:`afperturb.stats.gaps`.

Trials are not independent: several samples of one request, or one request under several
pooled conditions, share that request's difficulty. A plain Wilson interval over all trials
then claims more precision than the data hold. The interval here is Wilson's with the
*effective* sample size of the design (Korn & Graubard 1998): the cluster-robust variance of
the pooled rate, with requests as clusters, divided by the binomial variance gives the design
effect ``deff``; the interval is Wilson's at ``n / deff`` trials (``deff`` is never taken
below 1). With one trial per request it is exactly Wilson's interval.
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

__all__ = ["RateEstimate", "compliance_rate", "design_effect", "rates_by", "wilson_interval"]

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
    """A proportion with its Wilson interval and the trials that could not be scored.

    ``design_effect`` is how much clustering by request inflates the variance (1: trials
    independent); ``n_effective`` = ``n / design_effect`` is the sample size the interval uses;
    ``clusters`` is the number of requests. ``method`` is ``"wilson"``, or
    ``"wilson-clustered"`` when the design effect widened the interval.
    """

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
    design_effect: float = 1.0
    n_effective: float = float("nan")
    clusters: int = 0

    _repr_fields = ("estimate", "ci_low", "ci_high", "n")

    def confidence_interval(self, confidence_level: float = 0.95) -> tuple[float, float]:
        """The interval at another level (same design effect)."""
        if self.n <= 0:
            return (float("nan"), float("nan"))
        n_eff = self.n / self.design_effect
        return wilson_interval(self.estimate * n_eff, n_eff, confidence_level)


def design_effect(successes: np.ndarray, trials: np.ndarray) -> float:
    """Variance inflation of a pooled proportion from clustering (≥ 1; 1 when undefined).

    ``successes`` and ``trials`` are per cluster (request). The cluster-robust variance of
    the ratio estimate p = Σk / Σn, ``m/(m-1) · Σ(k_i - p·n_i)² / (Σn)²``, over the binomial
    ``p(1-p)/Σn``. Exactly 1 when no cluster holds more than one trial, when p is 0 or 1, or
    with fewer than two clusters.

    Example:
        >>> import numpy as np
        >>> design_effect(np.array([3, 0, 3, 0]), np.array([3, 3, 3, 3]))  # all-or-nothing
        4.0
    """
    keep = trials > 0
    k, n = successes[keep], trials[keep]
    m, total = len(n), float(n.sum())
    if m < 2 or total <= m:
        return 1.0
    p = float(k.sum()) / total
    if p <= 0.0 or p >= 1.0:
        return 1.0
    robust = m / (m - 1) * float(np.sum((k - p * n) ** 2)) / total**2
    return max(1.0, robust / (p * (1.0 - p) / total))


def _rate(cells: Cells, mask: np.ndarray, outcome: str, level: float) -> RateEstimate:
    af = outcome == "af_reasoning"
    k_r, n_r = cells.per_request(mask, af=af)
    k, n = float(k_r.sum()), float(n_r.sum())
    deff = design_effect(k_r, n_r)
    n_eff = n / deff if n > 0 else float("nan")
    low, high = wilson_interval(k / deff, n_eff, level) if n > 0 else (float("nan"),) * 2
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
        method="wilson" if deff == 1.0 else "wilson-clustered",
        design_effect=deff,
        n_effective=n_eff,
        clusters=int(np.count_nonzero(n_r)),
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
        confidence_level: of the interval (Wilson's, widened by the design effect of
            clustering by request; see the module docstring).

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
