"""Heterogeneity of a gap across levels that should not matter (paraphrases): low coherence.

Two views. Cochran's Q, I² and the DerSimonian–Laird τ² treat the per-level gaps as independent
studies (the familiar meta-analysis summary). But the levels share requests, so their gaps are
positively correlated and Q is conservative; the primary ``pvalue`` is therefore a paired Wald
test (Hotelling's T², F form) that all per-level gaps are equal, using the per-request
covariance of the gaps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
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
from afperturb.stats.trend import level_differences

__all__ = [
    "HeterogeneityResult",
    "gap_heterogeneity",
    "heterogeneity_from_cells",
    "heterogeneity_from_differences",
]


@dataclasses.dataclass(frozen=True, repr=False)
class HeterogeneityResult(ResultMixin):
    """Is the gap the same at every level of ``by``? (paired Wald test; Q, I², τ² beside it)."""

    statistic: float
    pvalue: float
    df_num: float
    df_den: float
    q: float
    q_pvalue: float
    i2: float
    tau2: float
    tau: float
    pooled: float
    gap_min: float
    gap_max: float
    sign_flip: bool
    n_levels: int
    n_pairs: int
    by: str
    method: str = "paired Hotelling T² (F)"
    levels: tuple[float, ...] = dataclasses.field(default=(), repr=False)
    gaps: tuple[float, ...] = dataclasses.field(default=(), repr=False)
    ses: tuple[float, ...] = dataclasses.field(default=(), repr=False)
    _diffs: FloatArray | None = dataclasses.field(default=None, repr=False, compare=False)

    _repr_fields = ("tau", "i2", "gap_min", "gap_max", "pvalue")

    def equivalence_pvalue(self, margin: float) -> float:
        """Intersection–union TOST that every level's gap lies within ± margin of the mean.

        Small values are evidence the gap *is* invariant (refutes low coherence).
        """
        if self._diffs is None:
            return math.nan
        d = self._diffs - self._diffs.mean(axis=1, keepdims=True)
        m = d.shape[0]
        mean, se = d.mean(axis=0), d.std(axis=0, ddof=1) / math.sqrt(m)
        with np.errstate(divide="ignore", invalid="ignore"):
            p_low = sps.t.sf((mean + margin) / se, m - 1)
            p_up = sps.t.cdf((mean - margin) / se, m - 1)
        p = np.where(se > 0, np.maximum(p_low, p_up), np.where(np.abs(mean) < margin, 0.0, 1.0))
        return float(p.max())


def heterogeneity_from_cells(
    cells: Cells,
    treated: BoolArray,
    control: BoolArray,
    by: str = "paraphrase",
    *,
    alpha: float = 0.05,
) -> HeterogeneityResult:
    """The heterogeneity test on aggregated cells; control is matched level by level."""
    levels, d = level_differences(cells, treated, control, by, matched=True)
    return heterogeneity_from_differences(levels, d, by, alpha=alpha)


def heterogeneity_from_differences(
    levels: Sequence[object], d: FloatArray, by: str, *, alpha: float = 0.05
) -> HeterogeneityResult:
    """The heterogeneity test on a requests × levels matrix of per-request gaps (complete rows)."""
    n_lv, m = len(levels), d.shape[0]
    if n_lv < 2:
        raise InsufficientDataError(f"heterogeneity needs ≥ 2 levels of {by!r}, found {levels}")
    if m <= n_lv:
        raise InsufficientDataError(f"need more than {n_lv} requests scored at every level")
    gaps = d.mean(axis=0)
    cov = np.cov(d, rowvar=False, ddof=1) / m
    ses = np.sqrt(np.diag(cov))
    contrast = np.diff(np.eye(n_lv), axis=0)
    cg = contrast @ gaps
    t2 = float(cg @ np.linalg.pinv(contrast @ cov @ contrast.T) @ cg)
    df1, df2 = float(n_lv - 1), float(m - n_lv + 1)
    f_stat = t2 * df2 / ((m - 1) * df1)
    pvalue = float(sps.f.sf(f_stat, df1, df2))
    # Cochran's Q / DerSimonian–Laird on the per-level gaps as if independent.
    with np.errstate(divide="ignore"):
        w = np.where(ses > 0, 1 / ses**2, 0.0)
    if w.sum() > 0:
        pooled = float(np.sum(w * gaps) / w.sum())
        q = float(np.sum(w * (gaps - pooled) ** 2))
        denom = w.sum() - np.sum(w**2) / w.sum()
        tau2 = max(0.0, (q - df1) / denom) if denom > 0 else 0.0
    else:
        pooled, q, tau2 = float(gaps.mean()), 0.0, 0.0
    crit = float(sps.t.ppf(1 - alpha, m - 1))
    significant_pos = bool(np.any(gaps - crit * ses > 0))
    significant_neg = bool(np.any(gaps + crit * ses < 0))
    return HeterogeneityResult(
        statistic=f_stat,
        pvalue=pvalue,
        df_num=df1,
        df_den=df2,
        q=q,
        q_pvalue=float(sps.chi2.sf(q, df1)),
        i2=max(0.0, (q - df1) / q) if q > 0 else 0.0,
        tau2=tau2,
        tau=math.sqrt(tau2),
        pooled=pooled,
        gap_min=float(gaps.min()),
        gap_max=float(gaps.max()),
        sign_flip=significant_pos and significant_neg,
        n_levels=n_lv,
        n_pairs=m,
        by=by,
        levels=tuple(float(v) if isinstance(v, int | float) else math.nan for v in levels),
        gaps=tuple(float(g) for g in gaps),
        ses=tuple(float(s) for s in ses),
        _diffs=d,
    )


def gap_heterogeneity(
    data: object,
    treated: ArmSpec,
    control: ArmSpec,
    by: str = "paraphrase",
    *,
    model: str | None = None,
    alpha: float = 0.05,
) -> HeterogeneityResult:
    """Heterogeneity of the gap C(treated) − C(control) across the levels of ``by``.

    Each level's treated conditions are compared with that level's control conditions.
    ``sign_flip`` says whether one level's gap is significantly positive and another's
    significantly negative (one-sided at ``alpha`` each, unadjusted: descriptive).

    Example:
        >>> from afperturb.stats.simulate import simulate_frame
        >>> f = simulate_frame("low_coherence", "sonnet-like", n_requests=400)
        >>> h = gap_heterogeneity(f, {"trained": True}, {"trained": False})
        >>> h.pvalue < 0.001, h.sign_flip
        (True, True)
    """
    cells = cells_of(data)
    if by not in cells.conditions.columns:
        raise unknown_choice("column", by, sorted(map(str, cells.conditions.columns)))
    in_model = model_mask(cells, model)
    t_mask = in_model & condition_mask(cells.conditions, treated)
    c_mask = in_model & condition_mask(cells.conditions, control)
    return heterogeneity_from_cells(cells, t_mask, c_mask, by, alpha=alpha)
