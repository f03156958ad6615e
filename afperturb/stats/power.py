"""Power and sample size for a paired compliance gap: analytic and by simulation.

The estimator planned for is the one ``attribute()`` runs: for each of the S matched pairs of
conditions (strata; a treated and a control condition agreeing on every other axis) every
request gives d_si = p̂_T(s, i) − p̂_C(s, i), p̂ the mean over its ``samples`` trials; the
per-request mean D_i = (1/S)·Σ_s d_si enters a one-sample test (cluster-robust by request).
statsmodels ``NormalIndPower`` with ``ratio=0`` (one-sample) on gap / sd(D) does the rest.

With one stratum and one sample, D is y_T − y_C and

    Var(D) = p_T(1−p_T) + p_C(1−p_C) − 2ρ·sqrt(p_T(1−p_T)·p_C(1−p_C)),

where ρ (``correlation``) is the within-request correlation of a treated and a control trial
(request heterogeneity makes ρ > 0 and pairing pays). With several strata or samples the
variance of a request's rates is split the way a shared request effect splits it: v_X =
p_X(1−p_X); two trials of one request in *different* conditions (either arm, any stratum)
correlate ρ, two samples of one request in the *same* condition τ (``intra_correlation``,
τ ≥ ρ; by default τ = ρ, a request's difficulty being the same in every condition, as in the
simulated models' ground truth). Then, with s_X = sqrt(v_X) and k samples,

    Var(d_s)          = (v_T + v_C)·(1 − (1−τ)(1 − 1/k)) − 2ρ·s_T·s_C
    Cov(d_s, d_s')    = ρ·(s_T − s_C)²                         (s ≠ s')
    Var(D)            = Var(d_s)/S + (1 − 1/S)·Cov(d_s, d_s')
                      = ρ(s_T − s_C)² + (τ − ρ)(v_T + v_C)/S + (1 − τ)(v_T + v_C)/(S·k):

a part no replication removes (the request effect, nearly cancelled inside each pair), the
request × condition part that more strata average out, and trial noise that strata and samples
both average out. The strata are assumed to be pairs of distinct conditions with the same two
rates; with S = k = 1 the formula is exactly the one above.
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
    """Power of a gap test (analytic, or simulated with a Wilson interval on the power).

    ``n`` is requests; ``strata`` and ``samples`` the matched pairs and samples per request
    the analytic power assumed (module docstring), ``intra_correlation`` the correlation of two
    samples of a request in one condition it assumed.
    """

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
    strata: int = 1
    samples: int = 1
    intra_correlation: float = math.nan

    _repr_fields = ("power", "n", "gap", "method")


def _design(
    correlation: float, strata: int, samples: int, intra_correlation: float | None
) -> float:
    """Check the replication design; returns τ (``intra_correlation``, default ρ)."""
    for name, value in (("strata", strata), ("samples", samples)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise DesignError(f"{name} must be a positive integer, got {value!r}")
    tau = correlation if intra_correlation is None else intra_correlation
    if strata == 1 and samples == 1:
        return tau
    if not 0 <= correlation <= 1:
        raise DesignError(
            f"with strata={strata} or samples={samples} > 1 the correlation must lie in [0, 1] "
            f"(a request effect shared by the conditions), got {correlation}"
        )
    if not correlation <= tau <= 1:
        raise DesignError(
            f"intra_correlation must lie in [correlation, 1] = [{correlation}, 1] (two samples "
            f"of one request in one condition agree at least as much as two conditions), "
            f"got {tau}"
        )
    return tau


def _effect_size(
    p_control: float,
    gap: float,
    correlation: float,
    strata: int = 1,
    samples: int = 1,
    intra_correlation: float = 0.0,
) -> float:
    if gap == 0:
        raise DesignError(
            "gap must be non-zero (a gap of 0 cannot be detected at any n); got 0, e.g. use "
            "0.05 for 5 percentage points"
        )
    p_t = p_control + gap
    if not (0 <= p_control <= 1 and 0 <= p_t <= 1):
        raise DesignError(f"p_control={p_control} and p_control + gap={p_t} must lie in [0, 1]")
    if not -1 <= correlation <= 1:
        raise DesignError(f"correlation must lie in [-1, 1], got {correlation}")
    var_t, var_c = p_t * (1 - p_t), p_control * (1 - p_control)
    # The share of a condition's variance left in a request's mean of k samples: 1 when k = 1.
    kept = 1 - (1 - intra_correlation) * (1 - 1 / samples)
    var_d = var_t * kept + var_c * kept - 2 * correlation * math.sqrt(var_t * var_c)
    across = correlation * (math.sqrt(var_t) - math.sqrt(var_c)) ** 2
    var = var_d / strata + (1 - 1 / strata) * across
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
    strata: int = 1,
    samples: int = 1,
    intra_correlation: float | None = None,
) -> PowerResult:
    """Analytic power of the paired gap test with ``n`` requests.

    Args:
        p_control: the control arm's compliance rate.
        gap: the true gap p_treated − p_control.
        n: requests (each scored in every condition of every stratum).
        correlation: within-request correlation ρ of a treated and a control trial.
        alpha: test level.
        alternative: ``"two-sided"``, ``"greater"`` or ``"less"``.
        strata: matched pairs of conditions per request that the gap averages (S).
        samples: samples per request in each condition (k).
        intra_correlation: correlation τ of two samples of one request in one condition;
            None: equal to ``correlation`` (module docstring). Matters only with samples > 1.

    Example:
        >>> round(power_gap(0.12, 0.10, 400, correlation=0.2).power, 3)
        0.988
        >>> round(power_gap(0.12, 0.05, 200, correlation=0.2, strata=3, samples=2).power, 3)
        0.972
    """
    _check_alternative(alternative)
    tau = _design(correlation, strata, samples, intra_correlation)
    es = _effect_size(p_control, gap, correlation, strata, samples, tau)
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
        strata=int(strata),
        samples=int(samples),
        intra_correlation=tau,
    )


def sample_size_gap(
    p_control: float,
    gap: float,
    *,
    power: float = 0.9,
    correlation: float = 0.0,
    alpha: float = 0.05,
    alternative: str = "two-sided",
    strata: int = 1,
    samples: int = 1,
    intra_correlation: float | None = None,
) -> PowerResult:
    """Requests needed to detect ``gap`` with the given power (rounded up).

    ``strata``, ``samples`` and ``intra_correlation`` as in :func:`power_gap`.

    Example:
        >>> sample_size_gap(0.12, 0.05, correlation=0.3).n
        730
        >>> sample_size_gap(0.12, 0.05, correlation=0.3, strata=3, samples=2).n
        125
    """
    _check_alternative(alternative)
    tau = _design(correlation, strata, samples, intra_correlation)
    es = _effect_size(p_control, gap, correlation, strata, samples, tau)
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
        strata=strata,
        samples=samples,
        intra_correlation=intra_correlation,
    )


def paired_correlation(data: object, treated: ArmSpec, control: ArmSpec) -> float:
    """Correlation of the two arms' per-request compliance, for planning the next study.

    With one sample per request this is the ``correlation`` ρ of :func:`power_gap`. With
    several it is the correlation of the per-request *means*, which trial noise dilutes: it
    understates ρ, so planning with it is conservative.
    """
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
