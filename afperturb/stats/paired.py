"""McNemar's test for one binary outcome per request in each arm (exact and mid-p)."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

from afperturb.errors import DesignError, InsufficientDataError
from afperturb.stats import _sm
from afperturb.stats._frame import ArmSpec, cells_of, condition_mask, model_mask
from afperturb.stats._results import ResultMixin

__all__ = ["McNemarResult", "mcnemar", "mcnemar_table"]


@dataclasses.dataclass(frozen=True, repr=False)
class McNemarResult(ResultMixin):
    """McNemar's exact test on the discordant pairs, with the mid-p variant.

    ``b`` counts requests where only the treated arm complied, ``c`` where only the control
    did. With X ~ Binom(b + c, ½) and m = min(b, c), ``pvalue`` is the exact two-sided
    ``min(1, 2·P(X ≤ m))`` and ``pvalue_midp`` the mid-p ``min(1, 2·[P(X < m) + ½·P(X = m)])``
    (1 when b = c or when no pair is discordant). ``odds_ratio`` = b / c is the conditional
    (matched-pairs) odds ratio with an exact Clopper–Pearson interval.
    """

    statistic: float
    pvalue: float
    pvalue_midp: float
    b: int
    c: int
    n_pairs: int
    odds_ratio: float
    or_ci_low: float
    or_ci_high: float
    confidence_level: float
    method: str = "mcnemar exact"

    _repr_fields = ("b", "c", "pvalue", "pvalue_midp")


def mcnemar_table(table: npt.ArrayLike, confidence_level: float = 0.95) -> McNemarResult:
    """McNemar from a 2×2 table: rows treated (complied, not), columns control (complied, not)."""
    t = np.asarray(table, dtype=float)
    if t.shape != (2, 2) or (t < 0).any():
        raise DesignError(f"expected a 2×2 table of non-negative counts, got {t.tolist()}")
    b, c = int(t[0, 1]), int(t[1, 0])
    res = _sm.contingency_tables().mcnemar(t, exact=True)
    n = b + c
    # Mid-p from the binomial itself, not exact p − P(X = m): the exact p-value is capped at 1,
    # so subtracting afterwards gives 1 − P(X = m) instead of 1 when b = c.
    m = min(b, c)
    below, at = float(sps.binom.cdf(m - 1, n, 0.5)), float(sps.binom.pmf(m, n, 0.5))
    midp = min(1.0, 2 * (below + 0.5 * at)) if n else 1.0
    if n:
        ci = sps.binomtest(b, n).proportion_ci(confidence_level=confidence_level)
        low, high = float(ci.low), float(ci.high)
        or_low = low / (1 - low) if low < 1 else float("inf")
        or_high = high / (1 - high) if high < 1 else float("inf")
    else:
        or_low, or_high = float("nan"), float("nan")
    return McNemarResult(
        statistic=float(res.statistic),
        pvalue=float(res.pvalue),
        pvalue_midp=midp,
        b=b,
        c=c,
        n_pairs=int(t.sum()),
        odds_ratio=b / c if c else float("inf") if b else float("nan"),
        or_ci_low=or_low,
        or_ci_high=or_high,
        confidence_level=confidence_level,
    )


def mcnemar(
    data: object,
    treated: ArmSpec,
    control: ArmSpec,
    *,
    model: str | None = None,
    confidence_level: float = 0.95,
) -> McNemarResult:
    """McNemar on requests scored exactly once in each arm (one condition, one sample each).

    With several samples or conditions per request use :func:`compliance_gap`, whose paired
    method handles clusters.
    """
    cells = cells_of(data)
    in_model = model_mask(cells, model)
    t_mask = in_model & condition_mask(cells.conditions, treated)
    c_mask = in_model & condition_mask(cells.conditions, control)
    kt, nt = cells.per_request(t_mask)
    kc, nc = cells.per_request(c_mask)
    both = (nt > 0) & (nc > 0)
    if not both.any():
        raise InsufficientDataError("no request is scored in both arms")
    if (nt[both] != 1).any() or (nc[both] != 1).any():
        raise DesignError(
            "McNemar needs one scored trial per request in each arm; this design has several "
            "(conditions or samples): use compliance_gap(..., method='paired')"
        )
    yt, yc = kt[both] > 0, kc[both] > 0
    table = [
        [int(np.sum(yt & yc)), int(np.sum(yt & ~yc))],
        [int(np.sum(~yt & yc)), int(np.sum(~yt & ~yc))],
    ]
    return mcnemar_table(table, confidence_level)
