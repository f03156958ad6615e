"""Power and sample size for a paired compliance gap: analytic and by simulation.

Analytic: the paired test is a one-sample test on per-request differences d = y_T − y_C, with
Var(d) = p_T(1−p_T) + p_C(1−p_C) − 2ρ·sqrt(p_T(1−p_T)·p_C(1−p_C)), where ρ is the
within-request correlation of the two arms' outcomes (request heterogeneity makes ρ > 0 and
pairing pays). statsmodels ``NormalIndPower`` with ``ratio=0`` (one-sample) does the rest.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from afperturb.errors import DesignError, unknown_choice
from afperturb.stats import _sm
from afperturb.stats._frame import ArmSpec
from afperturb.stats._results import ResultMixin
from afperturb.stats.gaps import ALTERNATIVES, compliance_gap, paired_differences
from afperturb.stats.rates import wilson_interval

__all__ = [
    "PowerResult",
    "paired_correlation",
    "power_gap",
    "sample_size_gap",
    "simulated_power",
]

_SM_ALT = {"two-sided": "two-sided", "greater": "larger", "less": "smaller"}


@dataclasses.dataclass(frozen=True, repr=False)
class PowerResult(ResultMixin):
    """Power of a gap test (analytic, or simulated with a Wilson interval on the power)."""

    power: float
    n: int
    gap: float
    p_control: float
    correlation: float
    alpha: float
    alternative: str
    method: str
    ci_low: float = math.nan
    ci_high: float = math.nan
    replicates: int = 0
    effect_size: float = math.nan

    _repr_fields = ("power", "n", "gap", "method")


def _effect_size(p_control: float, gap: float, correlation: float) -> float:
    p_t = p_control + gap
    if not (0 <= p_control <= 1 and 0 <= p_t <= 1):
        raise DesignError(f"p_control={p_control} and p_control + gap={p_t} must lie in [0, 1]")
    if not -1 <= correlation <= 1:
        raise DesignError(f"correlation must lie in [-1, 1], got {correlation}")
    var_t, var_c = p_t * (1 - p_t), p_control * (1 - p_control)
    var = var_t + var_c - 2 * correlation * math.sqrt(var_t * var_c)
    if var <= 0:
        raise DesignError("the paired difference has zero variance; power is degenerate")
    return gap / math.sqrt(var)


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise unknown_choice("alternative", alternative, ALTERNATIVES)


def power_gap(
    p_control: float,
    gap: float,
    n: int,
    *,
    correlation: float = 0.0,
    alpha: float = 0.05,
    alternative: str = "two-sided",
) -> PowerResult:
    """Analytic power of the paired gap test with ``n`` requests per arm.

    Example:
        >>> round(power_gap(0.12, 0.10, 400, correlation=0.2).power, 3)
        0.988
    """
    _check_alternative(alternative)
    es = _effect_size(p_control, gap, correlation)
    power = (
        _sm.power()
        .NormalIndPower()
        .power(effect_size=es, nobs1=n, alpha=alpha, ratio=0, alternative=_SM_ALT[alternative])
    )
    return PowerResult(
        power=float(power),
        n=int(n),
        gap=gap,
        p_control=p_control,
        correlation=correlation,
        alpha=alpha,
        alternative=alternative,
        method="analytic (paired normal)",
        effect_size=es,
    )


def sample_size_gap(
    p_control: float,
    gap: float,
    *,
    power: float = 0.9,
    correlation: float = 0.0,
    alpha: float = 0.05,
    alternative: str = "two-sided",
) -> PowerResult:
    """Requests per condition needed to detect ``gap`` with the given power (rounded up).

    Example:
        >>> sample_size_gap(0.12, 0.05, correlation=0.3).n
        730
    """
    _check_alternative(alternative)
    es = _effect_size(p_control, gap, correlation)
    n = (
        _sm.power()
        .NormalIndPower()
        .solve_power(
            effect_size=es,
            nobs1=None,
            alpha=alpha,
            power=power,
            ratio=0,
            alternative=_SM_ALT[alternative],
        )
    )
    return power_gap(
        p_control,
        gap,
        math.ceil(float(n)),
        correlation=correlation,
        alpha=alpha,
        alternative=alternative,
    )


def paired_correlation(data: object, treated: ArmSpec, control: ArmSpec) -> float:
    """Correlation of the two arms' per-request compliance, for planning the next study."""
    from afperturb.stats._frame import cells_of, condition_mask

    cells = cells_of(data)
    t = condition_mask(cells.conditions, treated)
    c = condition_mask(cells.conditions, control)
    pt, pc = paired_differences(cells, t, c)
    if pt.std() == 0 or pc.std() == 0:
        return 0.0
    return float(np.corrcoef(pt, pc)[0, 1])


def simulated_power(
    generate: Callable[[np.random.Generator], pd.DataFrame],
    test: Callable[[pd.DataFrame], float] | tuple[ArmSpec, ArmSpec],
    *,
    replicates: int = 200,
    alpha: float = 0.05,
    alternative: str = "greater",
    seed: int = 0,
    gap: float = math.nan,
    p_control: float = math.nan,
    n: int = 0,
) -> PowerResult:
    """Share of ``replicates`` simulated frames in which ``test`` gives p < ``alpha``.

    Args:
        generate: makes one trial frame from a Generator (e.g. a partial of
            ``simulate_frame``, or a sweep of a simulated model).
        test: returns a p-value for a frame, or a (treated, control) pair of arm specs for
            the default paired compliance gap.
        replicates: number of simulated studies.
        alpha: significance level.
        alternative: used with the (treated, control) form.
        seed: seeds one Generator that is passed to every replicate in turn.
        gap: the true gap, recorded in the result for reference.
        p_control: the true control rate, recorded for reference.
        n: requests per condition in each simulated frame, recorded for reference.
    """
    _check_alternative(alternative)
    rng = np.random.default_rng(seed)
    if isinstance(test, tuple):
        treated, control = test

        def run(frame: pd.DataFrame) -> float:
            return compliance_gap(frame, treated, control, alternative=alternative).pvalue  # type: ignore[arg-type]

        test_fn: Callable[[pd.DataFrame], float] = run
    else:
        test_fn = test
    hits = sum(test_fn(generate(rng)) < alpha for _ in range(replicates))
    low, high = wilson_interval(hits, replicates)
    return PowerResult(
        power=hits / replicates,
        n=n,
        gap=gap,
        p_control=p_control,
        correlation=math.nan,
        alpha=alpha,
        alternative=alternative,
        method="simulation",
        ci_low=low,
        ci_high=high,
        replicates=replicates,
    )
