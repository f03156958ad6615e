"""The compliance gap between two arms, with an interval that respects the design.

Conditions in an afperturb sweep share their requests, so the two arms of a gap are *paired*
by request (and clustered when there are several samples per request). The default paired
method averages each request's outcomes within each arm, takes the per-request difference
``d_i`` and reports ``mean(d)`` with a t interval on ``sd(d)/sqrt(m)`` — i.e. a cluster-robust
standard error with the request as cluster. It keeps 95 % coverage at n = 100–400 with
request_sd = 1.0 (see docs/validation.md); an independent two-proportion interval would be too
wide or too narrow depending on the sign of the within-request correlation. When the arms do
not share requests, Newcombe's hybrid score interval (statsmodels) is used instead, on each
arm's *effective* counts (trials divided by the arm's design effect of clustering by request,
as :mod:`afperturb.stats.rates` does): several samples of one request are not independent
trials. With 5 samples per request and intra-request correlation 1/3 Newcombe on trial counts
covered 81 %, on effective counts 94 %; with one trial per request the two are identical.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Literal

import numpy as np
from scipy import stats as sps

from afperturb.errors import DesignError, InsufficientDataError, unknown_choice
from afperturb.stats import _sm
from afperturb.stats._frame import (
    ArmSpec,
    BoolArray,
    Cells,
    FloatArray,
    cells_of,
    condition_mask,
    describe_spec,
    model_mask,
)
from afperturb.stats._results import ResultMixin
from afperturb.stats.rates import design_effect

__all__ = [
    "ALTERNATIVES",
    "GapEstimate",
    "compliance_gap",
    "gap_from_cells",
    "paired_differences",
    "t_pvalue",
]

Alternative = Literal["two-sided", "greater", "less"]
Method = Literal["auto", "paired", "bootstrap", "newcombe"]
ALTERNATIVES = ("two-sided", "greater", "less")
_METHODS = ("auto", "paired", "bootstrap", "newcombe")
_SM_ALTERNATIVE = {"two-sided": "two-sided", "greater": "larger", "less": "smaller"}
#: Share of the larger arm's requests that must appear in both arms to analyse them as paired.
PAIRED_OVERLAP = 0.8


def t_pvalue(statistic: float, df: float, alternative: str) -> float:
    """p-value of a t (or, with df = inf, normal) statistic for a scipy-style alternative."""
    if math.isnan(statistic):
        return float("nan")
    if alternative == "greater":
        return float(sps.t.sf(statistic, df))
    if alternative == "less":
        return float(sps.t.cdf(statistic, df))
    return float(min(1.0, 2 * sps.t.sf(abs(statistic), df)))


def _ratio_ci(log_value: float, var: float, level: float) -> tuple[float, float, float]:
    if not math.isfinite(log_value) or not var >= 0:
        return (float("nan"),) * 3
    z = float(sps.norm.ppf(0.5 + level / 2))
    half = z * math.sqrt(var)
    return (math.exp(log_value), math.exp(log_value - half), math.exp(log_value + half))


@dataclasses.dataclass(frozen=True, repr=False)
class GapEstimate(ResultMixin):
    """A compliance gap C(treated) − C(control) with its interval, test and ratio measures.

    ``ci_low``/``ci_high`` are two-sided at ``confidence_level`` whatever the ``alternative``;
    ``pvalue`` follows ``alternative``. ``n_pairs`` is the number of requests in both arms (0
    for the independent Newcombe method, whose interval, score test and ratio intervals use
    each arm's effective counts; ``n_treated``/``n_control`` stay trial counts). Risk and odds
    ratios come with delta-method (paired) or statsmodels (independent) intervals: report them
    near 0 % or 100 % compliance.
    """

    estimate: float
    ci_low: float
    ci_high: float
    pvalue: float
    statistic: float
    alternative: str
    method: str
    confidence_level: float
    se: float
    df: float
    n_pairs: int
    n_treated: int
    n_control: int
    rate_treated: float
    rate_control: float
    risk_ratio: float
    rr_ci_low: float
    rr_ci_high: float
    odds_ratio: float
    or_ci_low: float
    or_ci_high: float
    format_failures_treated: int
    format_failures_control: int
    failed_treated: int
    failed_control: int
    treated: str
    control: str
    _counts: tuple[float, float, float, float] = dataclasses.field(
        default=(0.0, 0.0, 0.0, 0.0), repr=False, compare=False
    )
    _boot: FloatArray | None = dataclasses.field(default=None, repr=False, compare=False)

    def confidence_interval(self, confidence_level: float = 0.95) -> tuple[float, float]:
        """Two-sided interval for the gap at another level, by the same method."""
        if self.method == "bootstrap" and self._boot is not None:
            tail = (1 - confidence_level) / 2 * 100
            low, high = np.percentile(self._boot, [tail, 100 - tail])
            return (float(low), float(high))
        if self.method == "newcombe":
            kt, nt, kc, nc = self._counts
            low, high = _sm.proportion().confint_proportions_2indep(
                kt, nt, kc, nc, method="newcomb", compare="diff", alpha=1 - confidence_level
            )
            return (float(low), float(high))
        q = float(sps.t.ppf(0.5 + confidence_level / 2, self.df))
        return (self.estimate - q * self.se, self.estimate + q * self.se)


def paired_differences(
    cells: Cells, treated: BoolArray, control: BoolArray, *, af: bool = False
) -> tuple[FloatArray, FloatArray]:
    """Per-request mean outcome in each arm, over the requests scored in both arms."""
    kt, nt = cells.per_request(treated, af=af)
    kc, nc = cells.per_request(control, af=af)
    both = (nt > 0) & (nc > 0)
    return kt[both] / nt[both], kc[both] / nc[both]


def _paired(
    pt: FloatArray, pc: FloatArray, alternative: str, level: float
) -> dict[str, float | int]:
    m = len(pt)
    d = pt - pc
    est = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(m))
    df = float(m - 1)
    stat = est / se if se > 0 else 0.0 if est == 0 else math.copysign(math.inf, est)
    q = float(sps.t.ppf(0.5 + level / 2, df))
    a, b = float(pt.mean()), float(pc.mean())
    cov = np.cov(pt, pc, ddof=1) / m
    va, vb, vab = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_rr = math.log(a / b) if a > 0 and b > 0 else math.nan
        var_rr = va / a**2 + vb / b**2 - 2 * vab / (a * b) if a > 0 and b > 0 else math.nan
        ok = 0 < a < 1 and 0 < b < 1
        ga, gb = (a * (1 - a), b * (1 - b)) if ok else (math.nan, math.nan)
        log_or = math.log(a / (1 - a)) - math.log(b / (1 - b)) if ok else math.nan
        var_or = va / ga**2 + vb / gb**2 - 2 * vab / (ga * gb) if ok else math.nan
    rr = _ratio_ci(log_rr, var_rr, level)
    odds = _ratio_ci(log_or, var_or, level)
    return {
        "estimate": est,
        "ci_low": est - q * se,
        "ci_high": est + q * se,
        "pvalue": t_pvalue(stat, df, alternative),
        "statistic": stat,
        "se": se,
        "df": df,
        "n_pairs": m,
        "rate_treated": a,
        "rate_control": b,
        "risk_ratio": rr[0],
        "rr_ci_low": rr[1],
        "rr_ci_high": rr[2],
        "odds_ratio": odds[0],
        "or_ci_low": odds[1],
        "or_ci_high": odds[2],
    }


def _bootstrap(
    pt: FloatArray, pc: FloatArray, alternative: str, level: float, n_boot: int, seed: int
) -> tuple[dict[str, float | int], FloatArray]:
    out = _paired(pt, pc, alternative, level)
    d = pt - pc
    rng = np.random.default_rng(seed)
    m = len(d)
    boot = np.empty(n_boot)
    for start in range(0, n_boot, 500):  # chunks bound memory at 500 × m
        idx = rng.integers(0, m, size=(min(500, n_boot - start), m))
        boot[start : start + len(idx)] = d[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    # p-value by inverting the percentile interval: the share of resamples beyond zero.
    below = (np.sum(boot <= 0) + 1) / (n_boot + 1)
    above = (np.sum(boot >= 0) + 1) / (n_boot + 1)
    p = {"greater": below, "less": above}.get(alternative, min(1.0, 2 * min(below, above)))
    out.update(ci_low=float(low), ci_high=float(high), pvalue=float(p), se=float(boot.std()))
    return out, boot


def _newcombe(
    counts: tuple[float, float, float, float], alternative: str, level: float
) -> dict[str, float | int]:
    # statsmodels divides by rates that may be 0 (ratio columns we do not use): silence that.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return _newcombe_inner(counts, alternative, level)


def _newcombe_inner(
    counts: tuple[float, float, float, float], alternative: str, level: float
) -> dict[str, float | int]:
    kt, nt, kc, nc = counts
    alpha = 1 - level
    low, high = _sm.proportion().confint_proportions_2indep(
        kt, nt, kc, nc, method="newcomb", compare="diff", alpha=alpha
    )
    test = _sm.proportion().test_proportions_2indep(
        kt, nt, kc, nc, method="score", compare="diff", alternative=_SM_ALTERNATIVE[alternative]
    )
    a, b = kt / nt, kc / nc
    ratios: dict[str, float] = {}
    for name, compare, method in (
        ("rr", "ratio", "log-adjusted"),
        ("or", "odds-ratio", "logit-adjusted"),
    ):
        try:
            lo, hi = _sm.proportion().confint_proportions_2indep(
                kt, nt, kc, nc, method=method, compare=compare, alpha=alpha
            )
        except (ZeroDivisionError, ValueError, FloatingPointError):
            lo, hi = math.nan, math.nan
        ratios[f"{name}_ci_low"], ratios[f"{name}_ci_high"] = float(lo), float(hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        rr = a / b if b > 0 else math.nan
        odds = (a / (1 - a)) / (b / (1 - b)) if 0 < a < 1 and 0 < b < 1 else math.nan
    est = a - b
    return {
        "estimate": est,
        "ci_low": float(low),
        "ci_high": float(high),
        "pvalue": float(test.pvalue),
        "statistic": float(test.statistic),
        "se": float(math.sqrt(a * (1 - a) / nt + b * (1 - b) / nc)),
        "df": math.inf,
        "n_pairs": 0,
        "rate_treated": a,
        "rate_control": b,
        "risk_ratio": rr,
        "odds_ratio": odds,
        **ratios,
    }


def gap_from_cells(
    cells: Cells,
    treated: BoolArray,
    control: BoolArray,
    *,
    alternative: str = "two-sided",
    method: str = "auto",
    confidence_level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    af: bool = False,
    labels: tuple[str, str] = ("treated", "control"),
) -> GapEstimate:
    """The gap between two condition masks of already-aggregated cells (the fast path)."""
    if alternative not in ALTERNATIVES:
        raise unknown_choice("alternative", alternative, ALTERNATIVES)
    if method not in _METHODS:
        raise unknown_choice("method", method, _METHODS)
    kt, nt = cells.per_request(treated, af=af)
    kc, nc = cells.per_request(control, af=af)
    counts = (float(kt.sum()), float(nt.sum()), float(kc.sum()), float(nc.sum()))
    if counts[1] == 0 or counts[3] == 0:
        empty = labels[0] if counts[1] == 0 else labels[1]
        raise InsufficientDataError(f"no scored trials in the {empty} arm")
    both = (nt > 0) & (nc > 0)
    shared = int(both.sum())
    if method == "auto":
        larger = max(int((nt > 0).sum()), int((nc > 0).sum()))
        method = "paired" if shared >= 2 and shared >= PAIRED_OVERLAP * larger else "newcombe"
    if method in ("paired", "bootstrap") and shared < 2:
        raise InsufficientDataError(
            f"a paired gap needs ≥ 2 requests scored in both arms, found {shared}"
        )
    boot = None
    newcombe_counts = counts
    pt, pc = kt[both] / np.maximum(nt[both], 1), kc[both] / np.maximum(nc[both], 1)
    if method == "paired":
        fields = _paired(pt, pc, alternative, confidence_level)
    elif method == "bootstrap":
        fields, boot = _bootstrap(pt, pc, alternative, confidence_level, n_boot, seed)
    else:
        # Newcombe on effective counts: each arm's trials divided by its design effect of
        # clustering by request (the Wilson intervals compliance_rate reports). With one
        # trial per request both design effects are 1 and this is Newcombe on trial counts.
        deff_t, deff_c = design_effect(kt, nt), design_effect(kc, nc)
        newcombe_counts = (
            counts[0] / deff_t,
            counts[1] / deff_t,
            counts[2] / deff_c,
            counts[3] / deff_c,
        )
        fields = _newcombe(newcombe_counts, alternative, confidence_level)
    return GapEstimate(
        alternative=alternative,
        method=method,
        confidence_level=confidence_level,
        n_treated=round(counts[1]),
        n_control=round(counts[3]),
        format_failures_treated=cells.count(treated, "format_failures"),
        format_failures_control=cells.count(control, "format_failures"),
        failed_treated=cells.count(treated, "failed"),
        failed_control=cells.count(control, "failed"),
        treated=labels[0],
        control=labels[1],
        _counts=newcombe_counts,
        _boot=boot,
        **fields,  # type: ignore[arg-type]
    )


def compliance_gap(
    data: object,
    treated: ArmSpec,
    control: ArmSpec,
    *,
    model: str | None = None,
    alternative: Alternative = "two-sided",
    method: Method = "auto",
    confidence_level: float = 0.95,
    outcome: Literal["complied", "af_reasoning"] = "complied",
    n_boot: int = 2000,
    seed: int = 0,
) -> GapEstimate:
    """Compliance gap C(treated) − C(control), paired by request when the arms share requests.

    Args:
        data: trial DataFrame (SweepResult.to_frame() columns) or an object with to_frame().
        treated: ``{axis: level}`` or ``{fact: value}`` (lists mean "any of") or a predicate on
            the per-condition table.
        control: the comparison arm, same forms.
        model: which model, when the frame holds several.
        alternative: ``"two-sided"``, ``"greater"`` (treated complies more) or ``"less"``.
        method: ``"auto"`` (paired if ≥ 80 % of requests are shared, else Newcombe),
            ``"paired"`` (per-request differences, cluster-robust t), ``"bootstrap"`` (cluster
            bootstrap over requests, seeded) or ``"newcombe"`` (independent arms; counts
            divided by each arm's design effect of clustering by request).
        confidence_level: of the two-sided interval.
        outcome: ``"complied"``, or ``"af_reasoning"`` for the gap in AF-reasoning rates.
        n_boot: bootstrap resamples.
        seed: bootstrap seed (numpy Generator).

    Example:
        >>> from afperturb.stats.simulate import simulate_frame
        >>> f = simulate_frame("rater_sycophancy", rater_sycophancy=1.0, n_requests=200)
        >>> pro, enterprise = {"rater_scrutiny": "pro"}, {"rater_scrutiny": "enterprise"}
        >>> gap = compliance_gap(f, treated=pro, control=enterprise)
        >>> gap.method, gap.n_pairs
        ('paired', 200)
    """
    cells = cells_of(data)
    in_model = model_mask(cells, model)
    t_mask = in_model & condition_mask(cells.conditions, treated)
    c_mask = in_model & condition_mask(cells.conditions, control)
    for name, spec, mask in (("treated", treated, t_mask), ("control", control, c_mask)):
        if not mask.any():
            raise InsufficientDataError(f"no condition matches the {name} arm {spec!r}")
    if (t_mask & c_mask).any():
        both = cells.conditions.loc[t_mask & c_mask, "condition_id"].astype(str).tolist()
        raise DesignError(f"conditions {both} match both arms; the arms must not overlap")
    return gap_from_cells(
        cells,
        t_mask,
        c_mask,
        alternative=alternative,
        method=method,
        confidence_level=confidence_level,
        n_boot=n_boot,
        seed=seed,
        af=outcome == "af_reasoning",
        labels=(describe_spec(treated), describe_spec(control)),
    )
