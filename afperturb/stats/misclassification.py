"""Rogan–Gladen correction of a rate for an imperfect judge, with a CI inside [0, 1].

A judge with sensitivity Se and specificity Sp reports positives at rate
p = π·Se + (1 − π)(1 − Sp), so π = (p + Sp − 1) / (Se + Sp − 1). The delta-method variance
adds the judge's own uncertainty when Se and Sp were estimated from n_pos / n_neg labelled
cases (Greenland 1988)::

    Var(π) = [p(1−p)/n + π²·Se(1−Se)/n_pos + (1−π)²·Sp(1−Sp)/n_neg] / (Se + Sp − 1)²

The interval is *not* the Wald interval π ± z·sqrt(Var(π)). That one ignores that the raw
rate and the judge's Se and Sp are proportions: near the boundaries (raw rate near or beyond
1 − Sp or Se; Se or Sp near 1) it undercovers, runs outside [0, 1], and after clipping each
end at one boundary only it can come out inverted (2 positives of 100 with Se = Sp = 0.9 gave
[0, −0.066]). Instead each of the three proportions gets its Wilson interval and the ends are
combined by MOVER (Zou & Donner 2008; the construction of Newcombe's interval for a
difference) on the linearisation π ≈ π̂ + Σ g_j·(θ_j − θ̂_j), g = (1, −π, 1 − π)/(Se + Sp − 1)
for θ = (p, Se, Sp)::

    low  = π̂ − sqrt(Σ_j g_j²·(θ̂_j − θ_j,near)²)   θ_j,near: the Wilson end of θ_j that
    high = π̂ + sqrt(Σ_j g_j²·(θ_j,far − θ̂_j)²)    lowers π (near) or raises it (far)

and the estimate and both ends are clipped to [0, 1] last; clipping is monotone, so
0 ≤ ci_low ≤ estimate ≤ ci_high ≤ 1 always. With Se and Sp known only the raw rate's term
remains, and since π is increasing in p the interval is Wilson's interval mapped through the
correction: it covers π exactly when Wilson's covers p, so it has Wilson's coverage. Why not
Wald: exact coverage for π in [0, 0.1] with n = 50, Se = 0.85, Sp = 0.95 falls to 0.85 for
Wald and stays ≥ 0.93 here; with Se and Sp estimated from 50 cases each (π = 0.01,
n = 1000, Se = 0.8, Sp = 0.97) simulated coverage is 0.78 with Wald terms for the judge and
0.97 with Wilson's (tests/test_stats_review_fixes.py).
When a raw rate's whole interval lies below 1 − Sp (or above Se) the interval collapses onto
0 (or 1): the counts contradict the stated Se and Sp, which is worth checking against the
judge's validation set.
"""

from __future__ import annotations

import dataclasses
import math

from afperturb.errors import DesignError
from afperturb.stats._results import ResultMixin
from afperturb.stats.rates import wilson_interval

__all__ = ["CorrectedRate", "correct_misclassification"]


@dataclasses.dataclass(frozen=True, repr=False)
class CorrectedRate(ResultMixin):
    """A prevalence corrected for misclassification, with an interval inside [0, 1].

    ``estimate`` is the Rogan–Gladen estimate clipped to [0, 1] (``unclipped`` before
    clipping); ``se`` its delta-method standard error (reported, not used by the interval).
    The interval combines Wilson intervals of the raw rate and of the judge's Se and Sp
    (module docstring), so 0 ≤ ``ci_low`` ≤ ``estimate`` ≤ ``ci_high`` ≤ 1.
    """

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
    method: str = "rogan-gladen (wilson, mover)"
    _positives: float = dataclasses.field(default=math.nan, repr=False, compare=False)
    _trials: float = dataclasses.field(default=math.nan, repr=False, compare=False)
    _sensitivity_n: float = dataclasses.field(default=0.0, repr=False, compare=False)
    _specificity_n: float = dataclasses.field(default=0.0, repr=False, compare=False)

    _repr_fields = ("estimate", "ci_low", "ci_high", "raw_rate")

    def confidence_interval(self, confidence_level: float = 0.95) -> tuple[float, float]:
        """The interval at another level, by the same method (inside [0, 1])."""
        return _interval(
            self._positives,
            self._trials,
            (self.sensitivity, self._sensitivity_n),
            (self.specificity, self._specificity_n),
            confidence_level,
        )


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def _interval(
    positives: float,
    n: float,
    sensitivity: tuple[float, float],
    specificity: tuple[float, float],
    level: float,
) -> tuple[float, float]:
    """MOVER with Wilson ends for the raw rate and, when estimated (n > 0), Se and Sp."""
    (se, se_n), (sp, sp_n) = sensitivity, specificity
    youden = se + sp - 1
    pi = (positives / n + sp - 1) / youden
    terms = [(1 / youden, positives / n, *wilson_interval(positives, n, level))]
    if se_n > 0:
        terms.append((-pi / youden, se, *wilson_interval(se * se_n, se_n, level)))
    if sp_n > 0:
        terms.append(((1 - pi) / youden, sp, *wilson_interval(sp * sp_n, sp_n, level)))
    down = up = 0.0
    for g, theta, low, high in terms:
        # max(0, ·): Wilson's interval contains θ̂, but at θ̂ = 0 or 1 only up to rounding.
        near, far = max(0.0, theta - low), max(0.0, high - theta)
        if g < 0:
            near, far = far, near
        down += (g * near) ** 2
        up += (g * far) ** 2
    return (_clip(pi - math.sqrt(down)), _clip(pi + math.sqrt(up)))


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
        sensitivity_n: truly positive labelled cases behind ``sensitivity`` (adds its
            uncertainty); None when it is known.
        specificity_n: truly negative labelled cases behind ``specificity``.
        confidence_level: of the interval (Wilson ends combined by MOVER; module docstring).

    Example:
        >>> r = correct_misclassification(30, 100, sensitivity=0.9, specificity=0.95)
        >>> round(r.estimate, 4), round(r.ci_low, 4), round(r.ci_high, 4)
        (0.2941, 0.1988, 0.4069)
    """
    if n <= 0 or not 0 <= positives <= n:
        raise DesignError(f"need 0 ≤ positives ≤ n and n > 0, got {positives}/{n}")
    for name, value in (("sensitivity", sensitivity), ("specificity", specificity)):
        if not 0 < value <= 1:
            raise DesignError(f"{name} must be in (0, 1], got {value!r}")
    for name, count in (("sensitivity_n", sensitivity_n), ("specificity_n", specificity_n)):
        if count is not None and not count >= 0:
            raise DesignError(f"{name} must be ≥ 0 (or None: known), got {count!r}")
    youden = sensitivity + specificity - 1
    if youden <= 0:
        raise DesignError(
            f"sensitivity + specificity must exceed 1 (got {sensitivity} + {specificity}): "
            "the judge is no better than chance"
        )
    p = positives / n
    pi = (p + specificity - 1) / youden
    se_n, sp_n = float(sensitivity_n or 0.0), float(specificity_n or 0.0)
    var = p * (1 - p) / n
    if se_n > 0:
        var += pi**2 * sensitivity * (1 - sensitivity) / se_n
    if sp_n > 0:
        var += (1 - pi) ** 2 * specificity * (1 - specificity) / sp_n
    low, high = _interval(positives, n, (sensitivity, se_n), (specificity, sp_n), confidence_level)
    return CorrectedRate(
        estimate=_clip(pi),
        ci_low=low,
        ci_high=high,
        se=math.sqrt(var) / youden,
        raw_rate=p,
        unclipped=pi,
        n=round(n),
        sensitivity=sensitivity,
        specificity=specificity,
        confidence_level=confidence_level,
        _positives=float(positives),
        _trials=float(n),
        _sensitivity_n=se_n,
        _specificity_n=sp_n,
    )
