"""Trend of a gap over an ordered axis (e.g. deployment_harm), paired by request.

For each level ℓ the per-request gap d_iℓ = C_i(treated, ℓ) − C_i(control, ℓ) is formed (the
control arm at the same level when it was run there, else the pooled control). The slope of the
gap on the level scores is a linear contrast Σ w_ℓ d_iℓ with w_ℓ = (x_ℓ − x̄)/Σ(x − x̄)², so each
request contributes one number and the test is a one-sample t on those numbers: a cluster-robust
test of the treated × level interaction on the probability scale.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from afperturb.errors import InsufficientDataError, unknown_choice
from afperturb.stats._frame import (
    ArmSpec,
    BoolArray,
    Cells,
    FloatArray,
    cells_of,
    condition_mask,
    model_mask,
)
from afperturb.stats._results import ResultMixin
from afperturb.stats.gaps import ALTERNATIVES, t_pvalue

__all__ = ["TrendEstimate", "gap_trend", "level_differences"]


@dataclasses.dataclass(frozen=True, repr=False)
class TrendEstimate(ResultMixin):
    """Slope of the gap per unit of the level score, with a paired t test and interval."""

    estimate: float
    ci_low: float
    ci_high: float
    pvalue: float
    statistic: float
    se: float
    df: float
    alternative: str
    confidence_level: float
    n_pairs: int
    n_levels: int
    by: str
    method: str
    levels: tuple[float, ...] = dataclasses.field(default=(), repr=False)
    gaps: tuple[float, ...] = dataclasses.field(default=(), repr=False)
    _contrasts: FloatArray | None = dataclasses.field(default=None, repr=False, compare=False)

    def confidence_interval(self, confidence_level: float = 0.95) -> tuple[float, float]:
        """Two-sided t interval for the slope at another level."""
        q = float(sps.t.ppf(0.5 + confidence_level / 2, self.df))
        return (self.estimate - q * self.se, self.estimate + q * self.se)

    def level_table(self) -> pd.DataFrame:
        """The gap at each level: the numbers a trend plot shows."""
        return pd.DataFrame({self.by: list(self.levels), "gap": list(self.gaps)})

    def equivalence_pvalue(self, margin: float) -> float:
        """TOST p-value that the slope lies within ± margin."""
        if self.se == 0:
            return 0.0 if abs(self.estimate) < margin else 1.0
        low = sps.t.sf((self.estimate + margin) / self.se, self.df)
        high = sps.t.cdf((self.estimate - margin) / self.se, self.df)
        return float(max(low, high))


def level_differences(
    cells: Cells,
    treated: BoolArray,
    control: BoolArray,
    by: str,
    *,
    matched: bool = False,
    af: bool = False,
    complete: bool = True,
) -> tuple[list[object], FloatArray]:
    """Per-request gap at each level of ``by`` (rows: requests, columns: sorted levels).

    With ``complete`` only requests scored at every level are kept; otherwise every request
    scored at some level is kept and missing levels are NaN. With ``matched`` the control must
    exist at every level; otherwise a level without its own control uses the pooled control.
    """
    column = cells.conditions[by]
    levels = sorted(pd.unique(column[treated]))
    kc_all, nc_all = cells.per_request(control, af=af)
    columns = []
    for level in levels:
        at = np.asarray((column == level).to_numpy(), dtype=bool)
        kt, nt = cells.per_request(treated & at, af=af)
        kc, nc = cells.per_request(control & at, af=af)
        if not (nc > 0).any():
            if matched:
                raise InsufficientDataError(f"no control conditions at {by}={level!r}")
            kc, nc = kc_all, nc_all
        with np.errstate(invalid="ignore", divide="ignore"):
            columns.append(np.where((nt > 0) & (nc > 0), kt / nt - kc / nc, np.nan))
    d = np.column_stack(columns)
    keep = ~np.isnan(d).any(axis=1) if complete else ~np.isnan(d).all(axis=1)
    return levels, d[keep]


def trend_from_cells(
    cells: Cells,
    treated: BoolArray,
    control: BoolArray,
    by: str,
    *,
    scores: Mapping[object, float] | None = None,
    alternative: str = "two-sided",
    confidence_level: float = 0.95,
) -> TrendEstimate:
    """The trend test on aggregated cells (the fast path used by ``attribute``)."""
    if alternative not in ALTERNATIVES:
        raise unknown_choice("alternative", alternative, ALTERNATIVES)
    levels, d = level_differences(cells, treated, control, by, complete=False)
    if len(levels) < 2:
        raise InsufficientDataError(f"a trend needs ≥ 2 levels of {by!r}, found {levels}")
    m = d.shape[0]
    if m < 2:
        raise InsufficientDataError("a trend needs ≥ 2 requests scored at some level")
    if scores is not None:
        x = np.array([float(scores[lv]) for lv in levels])
    elif all(isinstance(lv, int | float | np.number) for lv in levels):
        x = np.array(levels, dtype=float)
    else:
        x = np.arange(len(levels), dtype=float)
    w = (x - x.mean()) / np.sum((x - x.mean()) ** 2)
    # Available-case level means; request i contributes Σ_ℓ w_ℓ/m_ℓ·d_iℓ over its levels, so
    # the cluster-robust variance sums its centred contributions. With complete data this is
    # exactly the one-sample t on the per-request contrasts d_i·w.
    present = ~np.isnan(d)
    m_level = present.sum(axis=0)
    if (m_level == 0).any():
        raise InsufficientDataError(f"a level of {by!r} has no request scored in both arms")
    filled = np.where(present, d, 0.0)
    gaps = filled.sum(axis=0) / m_level
    est = float(gaps @ w)
    resid = np.where(present, d - gaps, 0.0) @ (w / m_level)
    c = filled @ (w / m_level) * m
    se = float(math.sqrt(m / (m - 1) * np.sum(resid**2)))
    df = float(m - 1)
    stat = est / se if se > 0 else (0.0 if est == 0 else math.copysign(math.inf, est))
    q = float(sps.t.ppf(0.5 + confidence_level / 2, df))
    return TrendEstimate(
        estimate=est,
        ci_low=est - q * se,
        ci_high=est + q * se,
        pvalue=t_pvalue(stat, df, alternative),
        statistic=stat,
        se=se,
        df=df,
        alternative=alternative,
        confidence_level=confidence_level,
        n_pairs=m,
        n_levels=len(levels),
        by=by,
        method="paired linear contrast",
        levels=tuple(float(v) for v in x),
        gaps=tuple(float(v) for v in gaps),
        _contrasts=c,
    )


def gap_trend(
    data: object,
    treated: ArmSpec,
    control: ArmSpec,
    by: str = "deployment_harm",
    *,
    scores: Mapping[object, float] | Sequence[float] | None = None,
    model: str | None = None,
    alternative: str = "two-sided",
    confidence_level: float = 0.95,
) -> TrendEstimate:
    """Does the gap C(treated) − C(control) change with the ordered column ``by``?

    Args:
        data: trial DataFrame or an object with to_frame().
        treated: arm spec (dict or predicate).
        control: arm spec.
        by: an ordered column: a numeric fact (deployment_harm) or an axis whose levels are
            given ``scores`` (a mapping level → score); unscored text levels use their sort rank.
        scores: level scores (mapping) or a sequence in sorted-level order.
        model: which model, when the frame holds several.
        alternative: ``"greater"`` tests that the gap grows with ``by``.
        confidence_level: of the slope's interval.

    Example:
        >>> from afperturb.stats.simulate import simulate_frame
        >>> f = simulate_frame("instrumental_goal_guarding", "opus-like", n_requests=400)
        >>> t = gap_trend(f, {"trained": True}, {"trained": False}, alternative="greater")
        >>> t.pvalue < 0.001, t.n_levels
        (True, 10)
    """
    cells = cells_of(data)
    if by not in cells.conditions.columns:
        raise unknown_choice("column", by, sorted(map(str, cells.conditions.columns)))
    in_model = model_mask(cells, model)
    t_mask = in_model & condition_mask(cells.conditions, treated)
    c_mask = in_model & condition_mask(cells.conditions, control)
    if scores is not None and not isinstance(scores, Mapping):
        ordered = sorted(pd.unique(cells.conditions[by][t_mask]))
        scores = dict(zip(ordered, scores, strict=True))
    return trend_from_cells(
        cells,
        t_mask,
        c_mask,
        by,
        scores=scores,
        alternative=alternative,
        confidence_level=confidence_level,
    )
