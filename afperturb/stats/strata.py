"""Minimal pairs of conditions and linear contrasts over them: how a hypothesis compares arms.

Real models' compliance moves with a prompt's *framing*: a pre-deployment identity block, a
deployment story or a plan name lifts compliance in every condition that carries it. Pooling an
arm across prompts turns such a lift into a "motive" (a Pro arm pooled with rated-only
pre-deployment conditions against an Enterprise arm pooled with paid-tier ones measures the
identity block, not the raters). So treated and control conditions are compared only in
**minimal pairs**: two conditions of one model and scenario whose levels differ in exactly one
axis, the axis that moves the facts the hypothesis is about. Every other level (cue family,
deployment, risk, paraphrase, lab, clarification, …) is shared, so a framing effect present in
both prompts cancels inside the pair.

Each pair is a stratum. Within it the two conditions share their requests, giving a per-request
difference ``d[i, s] = p̂_T(s, i) − p̂_C(s, i)`` (``p̂`` the mean over that request's samples).
A hypothesis's estimate is a **linear contrast** ``Σ_s w_s · mean_i d[i, s]`` over the strata:
equal weights ``1/S`` for a gap; centred harm scores within groups of strata for a trend. Its
standard error is cluster-robust by request: each request's influence on the estimate is
``Σ_s w_s (d[i, s] − mean_s) / m_s`` over the strata it was scored in (``m_s`` the requests of
stratum ``s``), which with complete data is exactly the one-sample t on the per-request
contrasts ``Σ_s w_s d[i, s]``, so strata sharing requests are never treated as independent.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats as sps

from afperturb.errors import InsufficientDataError
from afperturb.stats._frame import FACT_COLUMNS, BoolArray, Cells, FloatArray, IntArray
from afperturb.stats.gaps import t_pvalue

__all__ = [
    "META_COLUMNS",
    "Contrast",
    "MatchedPairs",
    "Panel",
    "axis_columns",
    "linear_contrast",
    "minimal_pairs",
    "varying_axes",
]

#: Condition-table columns that are neither axes nor facts.
META_COLUMNS = ("model", "condition_id", "scenario")


def axis_columns(conditions: pd.DataFrame) -> list[str]:
    """The axis columns of a per-condition table: everything but metadata and facts."""
    return [c for c in conditions.columns if c not in META_COLUMNS and c not in FACT_COLUMNS]


def _codes(column: pd.Series) -> IntArray:
    """Integer codes of a column's values, missing values one code of their own."""
    codes, _ = pd.factorize(column.astype(object).where(column.notna(), "\x00missing"))
    return np.asarray(codes, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class Panel:
    """Per-condition × per-request outcome rates (NaN where a request was not scored).

    Built once per ``attribute()`` call: a few hundred conditions × the distinct requests, so
    every stratum's per-request differences are a subtraction of two rows.
    """

    cells: Cells
    rates: FloatArray
    af_rates: FloatArray
    levels: IntArray
    group: IntArray
    axes: tuple[str, ...]

    @classmethod
    def of(cls, cells: Cells) -> Panel:
        """The panel of ``cells`` (rates, level codes, model × scenario group per condition)."""
        shape = (len(cells.conditions), cells.n_requests)

        def dense(k: FloatArray, n: FloatArray) -> FloatArray:
            out = np.full(shape, np.nan)
            ok = n > 0
            out[cells.cond[ok], cells.req[ok]] = k[ok] / n[ok]
            return out

        conds = cells.conditions
        axes = tuple(axis_columns(conds))
        levels = (
            np.column_stack([_codes(conds[a]) for a in axes])
            if axes
            else np.zeros((len(conds), 0), np.int64)
        )
        keys = [c for c in ("model", "scenario") if c in conds.columns]
        group = (
            np.asarray(conds.groupby(keys, sort=False, dropna=False).ngroup().to_numpy(), np.int64)
            if keys
            else np.zeros(len(conds), np.int64)
        )
        return cls(
            cells=cells,
            rates=dense(cells.k, cells.n),
            af_rates=dense(cells.af_k, cells.af_n),
            levels=levels,
            group=group,
            axes=axes,
        )

    def fact(self, name: str, default: object) -> npt.NDArray[np.object_]:
        """One fact per condition (``default`` where the frame lacks the column)."""
        conds = self.cells.conditions
        if name not in conds.columns:
            return np.full(len(conds), default, dtype=object)
        return np.asarray(conds[name].to_numpy(dtype=object), dtype=object)


@dataclasses.dataclass(frozen=True)
class MatchedPairs:
    """Minimal pairs: ``treated[s]`` and ``control[s]`` differ only in axis ``axis[s]``."""

    treated: IntArray
    control: IntArray
    axis: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.treated)

    def select(self, keep: BoolArray) -> MatchedPairs:
        """The pairs where ``keep`` holds."""
        idx = np.flatnonzero(keep)
        return MatchedPairs(self.treated[idx], self.control[idx], tuple(self.axis[i] for i in idx))

    def differences(self, panel: Panel, *, af: bool = False) -> FloatArray:
        """Per-request differences, one column per pair (requests × pairs, NaN if unscored)."""
        rates = panel.af_rates if af else panel.rates
        return np.asarray((rates[self.treated] - rates[self.control]).T, dtype=np.float64)

    def arm_rates(self, panel: Panel, *, af: bool = False) -> tuple[float, float]:
        """Equal-weight mean over pairs of each arm's rate on the requests both arms share."""
        rates = panel.af_rates if af else panel.rates
        t, c = rates[self.treated], rates[self.control]
        both = ~np.isnan(t) & ~np.isnan(c)
        with np.errstate(invalid="ignore"):
            mt = np.where(both, t, 0.0).sum(axis=1) / both.sum(axis=1)
            mc = np.where(both, c, 0.0).sum(axis=1) / both.sum(axis=1)
        ok = both.any(axis=1)
        if not ok.any():
            return math.nan, math.nan
        return float(mt[ok].mean()), float(mc[ok].mean())

    def context(self, panel: Panel, exclude: Iterable[str] = ()) -> IntArray:
        """A code per pair: its axis and the treated condition's levels outside ``exclude``.

        Pairs with equal codes are the same comparison made in prompts that differ only in the
        excluded axes (e.g. the deployment story, or the paraphrase).
        """
        skip = set(exclude)
        cols = [j for j, a in enumerate(panel.axes) if a not in skip]
        rows = [
            (panel.group[t], a, *(int(panel.levels[t, j]) for j in cols if panel.axes[j] != a))
            for t, a in zip(self.treated, self.axis, strict=True)
        ]
        codes, _ = pd.factorize(pd.Series(rows, dtype=object))
        return np.asarray(codes, dtype=np.int64)


def minimal_pairs(panel: Panel, treated: BoolArray, control: BoolArray) -> MatchedPairs:
    """Every (treated, control) pair of one model and scenario differing in exactly one axis."""
    ti, ci = np.flatnonzero(treated), np.flatnonzero(control)
    if not len(ti) or not len(ci) or not panel.axes:
        return MatchedPairs(np.zeros(0, np.int64), np.zeros(0, np.int64), ())
    lt, lc = panel.levels[ti], panel.levels[ci]
    differ = lt[:, None, :] != lc[None, :, :]
    one = (differ.sum(axis=2) == 1) & (panel.group[ti][:, None] == panel.group[ci][None, :])
    a, b = np.nonzero(one)
    axis_index = differ[a, b].argmax(axis=1)
    return MatchedPairs(
        ti[a].astype(np.int64),
        ci[b].astype(np.int64),
        tuple(panel.axes[j] for j in axis_index),
    )


def varying_axes(panel: Panel, mask: BoolArray, values: Sequence[object]) -> set[str]:
    """Axes whose level alone changes ``values`` between two conditions selected by ``mask``.

    Used to find, from the data, which axes set a fact (e.g. ``deployment_harm``): an axis is
    one of them when two conditions differing only in it carry different values.
    """
    idx = np.flatnonzero(mask)
    if len(idx) < 2 or not panel.axes:
        return set()
    lv = panel.levels[idx]
    vals = [values[int(i)] for i in idx]
    differ = lv[:, None, :] != lv[None, :, :]
    one = (differ.sum(axis=2) == 1) & (panel.group[idx][:, None] == panel.group[idx][None, :])
    a, b = np.nonzero(np.triu(one, 1))
    changed = [i for i in range(len(a)) if vals[a[i]] != vals[b[i]]]
    return {panel.axes[int(differ[a[i], b[i]].argmax())] for i in changed}


@dataclasses.dataclass(frozen=True)
class Contrast:
    """A linear contrast over strata with a cluster-robust (by request) t statistic."""

    estimate: float
    se: float
    df: float
    statistic: float
    n_requests: int
    stratum_means: FloatArray
    stratum_requests: IntArray

    def pvalue(self, alternative: str) -> float:
        """p-value of the t statistic for a scipy-style alternative."""
        return t_pvalue(self.statistic, self.df, alternative)

    def interval(self, confidence_level: float) -> tuple[float, float]:
        """Two-sided t interval."""
        q = float(sps.t.ppf(0.5 + confidence_level / 2, self.df))
        return self.estimate - q * self.se, self.estimate + q * self.se

    def equivalence_pvalue(self, margin: float) -> float:
        """TOST p-value that the contrast lies within ± margin."""
        if not self.se > 0:
            return 0.0 if abs(self.estimate) < margin else 1.0
        low = sps.t.sf((self.estimate + margin) / self.se, self.df)
        high = sps.t.cdf((self.estimate - margin) / self.se, self.df)
        return float(max(low, high))


def linear_contrast(d: FloatArray, weights: FloatArray) -> Contrast:
    """``Σ_s w_s · mean_i d[i, s]`` with available-case stratum means (module docstring)."""
    present = ~np.isnan(d)
    m_s = present.sum(axis=0)
    used = weights != 0
    if (m_s[used] == 0).any():
        raise InsufficientDataError("a stratum has no request scored in both of its conditions")
    filled = np.where(present, d, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(m_s > 0, filled.sum(axis=0) / np.maximum(m_s, 1), np.nan)
    w = np.where(used, weights, 0.0)
    scale = np.where(m_s > 0, w / np.maximum(m_s, 1), 0.0)
    rows = present[:, used].any(axis=1)
    m = int(rows.sum())
    if m < 2:
        raise InsufficientDataError(f"a contrast needs ≥ 2 requests scored in a pair, found {m}")
    est = float(np.nansum(means * w))
    influence = np.where(present, d - np.nan_to_num(means), 0.0) @ scale
    se = float(math.sqrt(m / (m - 1) * np.sum(influence[rows] ** 2)))
    df = float(m - 1)
    stat = est / se if se > 0 else (0.0 if est == 0 else math.copysign(math.inf, est))
    return Contrast(
        estimate=est,
        se=se,
        df=df,
        statistic=stat,
        n_requests=m,
        stratum_means=np.asarray(means, np.float64),
        stratum_requests=np.asarray(m_s, np.int64),
    )


def equal_weights(n: int) -> FloatArray:
    """Weights of a plain average over ``n`` strata."""
    return np.full(n, 1.0 / n)


def within_group_slope_weights(x: FloatArray, group: IntArray) -> FloatArray:
    """Weights of the pooled within-group slope of ``d`` on ``x`` (a separate intercept per group).

    Groups whose ``x`` does not vary get weight 0. Raises when no group varies.
    """
    centred = np.zeros_like(x)
    for g in np.unique(group):
        sel = group == g
        centred[sel] = x[sel] - x[sel].mean()
    ss = float(np.sum(centred**2))
    if not ss > 0:
        raise InsufficientDataError("no group of strata spans ≥ 2 values of the trend score")
    return np.asarray(centred / ss, dtype=np.float64)
