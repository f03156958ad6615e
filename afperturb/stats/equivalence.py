"""TOST equivalence of a gap to zero within ± margin: "evidence of absence"."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from scipy import stats as sps

from afperturb.errors import DesignError
from afperturb.stats import _sm
from afperturb.stats._frame import ArmSpec
from afperturb.stats._results import ResultMixin
from afperturb.stats.gaps import GapEstimate, compliance_gap

__all__ = ["EquivalenceResult", "equivalence_test", "tost_from_gap"]


@dataclasses.dataclass(frozen=True, repr=False)
class EquivalenceResult(ResultMixin):
    """Two one-sided tests of −margin < gap < margin; ``pvalue`` is the larger of the two.

    ``ci_low``/``ci_high`` is the two-sided interval at ``confidence_level`` (default 0.90): a
    TOST at level α rejects exactly when the (1 − 2α) interval lies inside ± margin.
    """

    estimate: float
    ci_low: float
    ci_high: float
    pvalue: float
    pvalue_lower: float
    pvalue_upper: float
    margin: float
    method: str
    n_pairs: int
    confidence_level: float

    _repr_fields = ("estimate", "margin", "pvalue")

    def equivalent(self, alpha: float = 0.05) -> bool:
        """Whether the TOST rejects non-equivalence at ``alpha``."""
        return bool(self.pvalue < alpha)


def tost_from_gap(
    gap: GapEstimate, margin: float, confidence_level: float = 0.90
) -> EquivalenceResult:
    """TOST for an already-computed gap (paired t or independent score test)."""
    if not margin > 0:
        raise DesignError(f"margin must be > 0, got {margin!r}")
    if gap.method == "newcombe":
        kt, nt, kc, nc = gap._counts
        res = _sm.proportion().tost_proportions_2indep(
            kt, nt, kc, nc, -margin, margin, method="score", compare="diff"
        )
        p_low, p_up = float(res.results_larger.pvalue), float(res.results_smaller.pvalue)
    elif gap.se > 0:
        p_low = float(sps.t.sf((gap.estimate + margin) / gap.se, gap.df))
        p_up = float(sps.t.cdf((gap.estimate - margin) / gap.se, gap.df))
    else:
        inside = abs(gap.estimate) < margin
        p_low = p_up = 0.0 if inside else 1.0
    low, high = gap.confidence_interval(confidence_level)
    return EquivalenceResult(
        estimate=gap.estimate,
        ci_low=low,
        ci_high=high,
        pvalue=max(p_low, p_up),
        pvalue_lower=p_low,
        pvalue_upper=p_up,
        margin=margin,
        method=f"tost ({gap.method})",
        n_pairs=gap.n_pairs,
        confidence_level=confidence_level,
    )


def equivalence_test(
    data: object,
    treated: ArmSpec,
    control: ArmSpec,
    margin: float = 0.05,
    *,
    model: str | None = None,
    method: Literal["auto", "paired", "newcombe"] = "auto",
    confidence_level: float = 0.90,
) -> EquivalenceResult:
    """TOST of |C(treated) − C(control)| < margin, paired by request when the design allows.

    Example:
        >>> from afperturb.stats.simulate import simulate_frame
        >>> f = simulate_frame("rater_sycophancy", "no-gap", n_requests=2000)
        >>> pro, enterprise = {"rater_scrutiny": "pro"}, {"rater_scrutiny": "enterprise"}
        >>> equivalence_test(f, pro, enterprise, 0.05).equivalent()
        True
    """
    gap = compliance_gap(data, treated, control, model=model, method=method)
    if math.isnan(gap.estimate):
        raise DesignError("the gap is undefined; cannot test equivalence")
    return tost_from_gap(gap, margin, confidence_level)
