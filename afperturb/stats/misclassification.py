"""Rogan–Gladen correction of a rate for an imperfect judge, with the CI propagated.

A judge with sensitivity Se and specificity Sp reports positives at rate
p = π·Se + (1 − π)(1 − Sp), so π = (p + Sp − 1) / (Se + Sp − 1). The delta-method variance
adds the judge's own uncertainty when Se and Sp were estimated from n_pos / n_neg labelled
cases (Greenland 1988)::

    Var(π) = [p(1−p)/n + π²·Se(1−Se)/n_pos + (1−π)²·Sp(1−Sp)/n_neg] / (Se + Sp − 1)²
"""

from __future__ import annotations

import dataclasses
import math

from scipy import stats as sps

from afperturb.errors import DesignError
from afperturb.stats._results import ResultMixin

__all__ = ["CorrectedRate", "correct_misclassification"]


@dataclasses.dataclass(frozen=True, repr=False)
class CorrectedRate(ResultMixin):
    """A prevalence corrected for misclassification (clipped to [0, 1]) with a delta-method CI."""

    estimate: float
    ci_low: float
    ci_high: float
    se: float
    raw_rate: float
    unclipped: float
    n: int
    sensitivity: float
    specificity: float
    confidence_level: float
    method: str = "rogan-gladen (delta method)"

    _repr_fields = ("estimate", "ci_low", "ci_high", "raw_rate")

    def confidence_interval(self, confidence_level: float = 0.95) -> tuple[float, float]:
        """Wald interval on the corrected rate at another level, clipped to [0, 1]."""
        z = float(sps.norm.ppf(0.5 + confidence_level / 2))
        return (
            max(0.0, self.unclipped - z * self.se),
            min(1.0, self.unclipped + z * self.se),
        )


def correct_misclassification(
    positives: float,
    n: float,
    sensitivity: float,
    specificity: float,
    *,
    sensitivity_n: float | None = None,
    specificity_n: float | None = None,
    confidence_level: float = 0.95,
) -> CorrectedRate:
    """Correct ``positives / n`` for a judge's sensitivity and specificity.

    Args:
        positives: trials the judge called positive (e.g. complied, or AF reasoning).
        n: trials judged.
        sensitivity: P(judge positive | truly positive).
        specificity: P(judge negative | truly negative).
        sensitivity_n: truly positive labelled cases behind ``sensitivity`` (adds its variance).
        specificity_n: truly negative labelled cases behind ``specificity``.
        confidence_level: of the Wald interval.

    Example:
        >>> r = correct_misclassification(30, 100, sensitivity=0.9, specificity=0.95)
        >>> round(r.estimate, 4)
        0.2941
    """
    if n <= 0 or not 0 <= positives <= n:
        raise DesignError(f"need 0 ≤ positives ≤ n and n > 0, got {positives}/{n}")
    for name, value in (("sensitivity", sensitivity), ("specificity", specificity)):
        if not 0 < value <= 1:
            raise DesignError(f"{name} must be in (0, 1], got {value!r}")
    youden = sensitivity + specificity - 1
    if youden <= 0:
        raise DesignError(
            f"sensitivity + specificity must exceed 1 (got {sensitivity} + {specificity}): "
            "the judge is no better than chance"
        )
    p = positives / n
    pi = (p + specificity - 1) / youden
    var = p * (1 - p) / n
    if sensitivity_n:
        var += pi**2 * sensitivity * (1 - sensitivity) / sensitivity_n
    if specificity_n:
        var += (1 - pi) ** 2 * specificity * (1 - specificity) / specificity_n
    se = math.sqrt(var) / youden
    z = float(sps.norm.ppf(0.5 + confidence_level / 2))
    return CorrectedRate(
        estimate=min(1.0, max(0.0, pi)),
        ci_low=max(0.0, pi - z * se),
        ci_high=min(1.0, pi + z * se),
        se=se,
        raw_rate=p,
        unclipped=pi,
        n=round(n),
        sensitivity=sensitivity,
        specificity=specificity,
        confidence_level=confidence_level,
    )
