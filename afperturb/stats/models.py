"""Logistic GLM with cluster-robust (by request) errors for interactions.

Fitted on per-(condition, request) binomial counts, not on trial rows: the score equations
and the cluster sums are identical, and a million trials shrink to a few thousand rows. With
the request as cluster this is the GEE estimator with an independence working correlation.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

from afperturb.errors import InsufficientDataError, unknown_choice
from afperturb.stats import _sm
from afperturb.stats._frame import (
    ArmSpec,
    BoolArray,
    Cells,
    FloatArray,
    IntArray,
    cells_of,
    condition_mask,
    model_mask,
)
from afperturb.stats._results import ResultMixin
from afperturb.stats.gaps import ALTERNATIVES

__all__ = [
    "FactorByLevel",
    "InteractionEstimate",
    "factor_by_level_from_cells",
    "interaction",
    "interaction_from_cells",
]


@dataclasses.dataclass(frozen=True, repr=False)
class InteractionEstimate(ResultMixin):
    """The factor × moderator coefficient of a logistic model (log-odds per unit moderator)."""

    estimate: float
    ci_low: float
    ci_high: float
    pvalue: float
    statistic: float
    se: float
    odds_ratio: float
    alternative: str
    confidence_level: float
    factor: str
    moderator: str
    n_cells: int
    n_requests: int
    n_trials: int
    terms: str
    method: str = "GLM binomial (logit), cluster-robust by request"

    def confidence_interval(self, confidence_level: float = 0.95) -> tuple[float, float]:
        """Wald interval on the log-odds scale at another level."""
        z = float(sps.norm.ppf(0.5 + confidence_level / 2))
        return (self.estimate - z * self.se, self.estimate + z * self.se)


def _cluster_glm(
    x: FloatArray, k: FloatArray, n: FloatArray, cond: IntArray, groups: IntArray
) -> tuple[FloatArray, FloatArray]:
    """Binomial-logit GLM coefficients with statsmodels' cluster-robust covariance.

    Every covariate here is a property of the *condition*, so the likelihood depends on the
    cells only through each condition's totals: statsmodels fits the GLM on one row per
    condition (a few dozen rows instead of conditions × requests, 12 s → 0.1 s at 10⁶
    trials), and the sandwich is assembled from the per-request scores
    ``s_i = Σ_c x_c (k_ci − n_ci p_c)`` with statsmodels' small-sample factor
    ``G/(G−1)·(N−1)/(N−K)`` (N cells, K coefficients): the same numbers as
    ``GLM(...).fit(cov_type="cluster")`` on the cells (tests/test_stats_tests.py checks it).
    """
    codes, first = np.unique(cond, return_index=True)
    row = np.searchsorted(codes, cond)
    xc = x[first]
    kc = np.bincount(row, weights=k, minlength=len(codes))
    nc = np.bincount(row, weights=n, minlength=len(codes))
    sm = _sm.api()
    glm = sm.GLM(np.column_stack([kc, nc - kc]), xc, family=sm.families.Binomial())
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # One intercept per minimal pair can make the condition-level model saturated: then
        # statsmodels flags "perfect prediction" and divides its (unused) scale by zero
        # residual df. The MLE is still exact, and the sandwich below does not use the scale.
        warnings.simplefilter("ignore", _sm.perfect_separation_warning())
        params = np.asarray(glm.fit().params, dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-(xc @ params)))
    bread = np.linalg.pinv((xc * (nc * p * (1 - p))[:, None]).T @ xc)
    g_codes, g = np.unique(groups, return_inverse=True)
    resid = k - n * p[row]
    # Residuals summed per (request, condition), then s_i = Σ_c r_ic · x_c.
    per_cell = np.bincount(g * len(codes) + row, weights=resid, minlength=len(g_codes) * len(codes))
    scores = per_cell.reshape(len(g_codes), len(codes)) @ xc
    n_groups, nobs, k_params = len(g_codes), len(k), x.shape[1]
    factor = n_groups / (n_groups - 1.0) * (nobs - 1.0) / (nobs - k_params)
    cov = factor * bread @ (scores.T @ scores) @ bread
    return params, np.asarray(cov, dtype=np.float64)


def interaction_from_cells(
    cells: Cells,
    mask: BoolArray,
    factor: str = "trained",
    moderator: str = "deployment_harm",
    *,
    alternative: str = "two-sided",
    confidence_level: float = 0.95,
    strata: IntArray | None = None,
) -> InteractionEstimate:
    """Fit logit p = b0 + b1·factor + b2·moderator + b3·factor·moderator on selected cells.

    b2 is dropped when the moderator does not vary where factor = 0 (then b3 is the slope
    within factor = 1, which is what the interaction means in that design). With ``strata``
    (one integer per condition, e.g. the minimal pair a condition belongs to) the intercept
    and b2 are replaced by one intercept per stratum: anything a stratum's conditions share
    (the framing of their common prompt, the moderator itself) is absorbed, and b3 is
    estimated from the factor's effect within strata only.
    """
    if alternative not in ALTERNATIVES:
        raise unknown_choice("alternative", alternative, ALTERNATIVES)
    for column in (factor, moderator):
        if column not in cells.conditions.columns:
            raise unknown_choice("column", column, sorted(map(str, cells.conditions.columns)))
    sel = mask[cells.cond] & (cells.n > 0)
    cond = cells.cond[sel]
    f = cells.conditions[factor].to_numpy(dtype=float)[cond]
    h = cells.conditions[moderator].to_numpy(dtype=float)[cond]
    if np.unique(h[f == 1]).size < 2:
        raise InsufficientDataError(f"{moderator!r} takes < 2 values where {factor} holds")
    if strata is not None:
        codes, uniq = pd.factorize(strata[cond])
        columns = [np.asarray(codes == j, dtype=float) for j in range(len(uniq))] + [f]
        names = [f"stratum[{j}]" for j in range(len(uniq))] + [factor]
    else:
        columns = [np.ones_like(f), f]
        names = ["const", factor]
        if np.unique(h[f == 0]).size >= 2:
            columns.append(h)
            names.append(moderator)
    columns.append(f * h)
    names.append(f"{factor}:{moderator}")
    x = np.column_stack(columns)
    k, n = cells.k[sel], cells.n[sel]
    groups = cells.req[sel]
    params, cov = _cluster_glm(x, k, n, cond, groups)
    est, se = float(params[-1]), float(math.sqrt(max(cov[-1, -1], 0.0)))
    z = est / se if se > 0 else math.nan
    if alternative == "greater":
        p = float(sps.norm.sf(z))
    elif alternative == "less":
        p = float(sps.norm.cdf(z))
    else:
        p = float(2 * sps.norm.sf(abs(z)))
    q = float(sps.norm.ppf(0.5 + confidence_level / 2))
    return InteractionEstimate(
        estimate=est,
        ci_low=est - q * se,
        ci_high=est + q * se,
        pvalue=p,
        statistic=z,
        se=se,
        odds_ratio=math.exp(est),
        alternative=alternative,
        confidence_level=confidence_level,
        factor=factor,
        moderator=moderator,
        n_cells=int(sel.sum()),
        n_requests=int(np.unique(groups).size),
        n_trials=int(n.sum()),
        terms=" + ".join(names)
        if strata is None
        else f"{len(names) - 2} stratum intercepts + {factor} + {factor}:{moderator}",
    )


@dataclasses.dataclass(frozen=True, repr=False)
class FactorByLevel(ResultMixin):
    """Does a factor's log-odds effect differ between the levels of ``by``? (Wald χ²)."""

    statistic: float
    df: int
    pvalue: float
    levels: tuple[float, ...]
    estimates: tuple[float, ...]
    ses: tuple[float, ...]
    factor: str
    by: str
    n_cells: int
    n_requests: int
    method: str = "GLM binomial (logit), stratum intercepts, cluster-robust Wald χ²"

    _repr_fields = ("statistic", "df", "pvalue")


def factor_by_level_from_cells(
    cells: Cells,
    mask: BoolArray,
    factor: FloatArray,
    level: FloatArray,
    strata: IntArray,
    *,
    names: tuple[str, str] = ("trained", "paraphrase"),
) -> FactorByLevel:
    """Wald test that the factor's log-odds coefficient is the same at every level.

    ``factor``, ``level`` and ``strata`` hold one value per condition of ``cells`` (``names``
    labels the factor and the level in the result).

    logit p = stratum intercept + Σ_l b_l · factor · [by = l], fitted on the selected cells
    with cluster-robust errors by request; H0: b_1 = … = b_L (L − 1 df). ``strata`` (one
    integer per condition) gives each minimal pair its own intercept, so anything both of a
    pair's conditions share (a paraphrase that lifts compliance in both arms) is absorbed and
    only the factor's effect within pairs is compared. This is the log-odds counterpart of
    the probability-scale heterogeneity test: a constant log-odds effect at different
    baselines gives different probability gaps, and a reviewer asks that both scales agree.
    """
    sel = mask[cells.cond] & (cells.n > 0) & (strata[cells.cond] >= 0)
    cond = cells.cond[sel]
    f, lv = factor[cond], level[cond]
    levels = np.unique(lv)
    if levels.size < 2:
        raise InsufficientDataError(f"{names[1]!r} takes < 2 values in the selected conditions")
    codes, uniq = pd.factorize(strata[cond])
    columns = [np.asarray(codes == j, dtype=float) for j in range(len(uniq))]
    columns += [f * (lv == v) for v in levels]
    params, cov = _cluster_glm(
        np.column_stack(columns), cells.k[sel], cells.n[sel], cond, cells.req[sel]
    )
    b, v = params[len(uniq) :], cov[len(uniq) :, len(uniq) :]
    contrast = np.eye(levels.size)[1:] - np.eye(levels.size)[0]
    diff = contrast @ b
    stat = float(diff @ np.linalg.pinv(contrast @ v @ contrast.T) @ diff)
    df = levels.size - 1
    return FactorByLevel(
        statistic=stat,
        df=df,
        pvalue=float(sps.chi2.sf(stat, df)),
        levels=tuple(float(x) for x in levels),
        estimates=tuple(float(x) for x in b),
        ses=tuple(float(math.sqrt(max(x, 0.0))) for x in np.diag(v)),
        factor=names[0],
        by=names[1],
        n_cells=int(sel.sum()),
        n_requests=int(np.unique(cells.req[sel]).size),
    )


def interaction(
    data: object,
    factor: str = "trained",
    moderator: str = "deployment_harm",
    *,
    where: ArmSpec | None = None,
    model: str | None = None,
    alternative: str = "two-sided",
    confidence_level: float = 0.95,
) -> InteractionEstimate:
    """Logistic factor × moderator interaction with cluster-robust standard errors by request.

    Example:
        >>> from afperturb.stats.simulate import simulate_frame
        >>> f = simulate_frame("instrumental_goal_guarding", "opus-like", n_requests=400)
        >>> r = interaction(f, "trained", "deployment_harm", alternative="greater")
        >>> r.pvalue < 0.001
        True
    """
    cells = cells_of(data)
    mask = model_mask(cells, model)
    if where is not None:
        mask = mask & condition_mask(cells.conditions, where)
    return interaction_from_cells(
        cells, mask, factor, moderator, alternative=alternative, confidence_level=confidence_level
    )
