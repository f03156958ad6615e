"""Statistics defects from the review (issue 13, item 6): each test fails without its fix."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats import proportion as smp
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

import afperturb.stats as st
from afperturb.errors import DesignError

# ---------------------------------------------------------------- McNemar mid-p


@pytest.mark.parametrize(
    ("b", "c", "hand"),
    [
        (1, 1, 1.0),  # b = c: 2·P(X < 1) + P(X = 1) = 2·¼ + ½
        (3, 3, 1.0),  # b = c: the two tails and the middle make up the whole distribution
        (0, 0, 1.0),  # no discordant pairs: no evidence either way
        (5, 2, 37 / 128),  # 2·[P(X < 2) + ½·P(X = 2)] = 2·(8 + 10.5)/128, X ~ Binom(7, ½)
        (2, 5, 37 / 128),  # symmetric in b and c
        (0, 3, 1 / 8),  # 2·[0 + ½·⅛]
        (4, 1, 7 / 32),  # 2·[1/32 + ½·5/32]
        (6, 5, 793 / 1024),  # 2·[P(X < 5) + ½·P(X = 5)] = 2·(562 + 231)/2048, X ~ Binom(11, ½)
    ],
)
def test_mcnemar_midp_by_hand_and_scipy_binom(b: int, c: int, hand: float) -> None:
    r = st.mcnemar_table([[7, b], [c, 9]])
    n, m = b + c, min(b, c)
    # scipy.stats.binom: the two-sided mid-p of X ~ Binom(b + c, ½), capped at 1
    ref = min(1.0, 2 * (stats.binom.cdf(m - 1, n, 0.5) + 0.5 * stats.binom.pmf(m, n, 0.5)))
    assert r.pvalue_midp == pytest.approx(hand, abs=1e-12)
    assert r.pvalue_midp == pytest.approx(ref, abs=1e-12)
    assert r.pvalue_midp <= r.pvalue


# ---------------------------------------------------- misclassification (Rogan–Gladen)


def _ordered(r: st.CorrectedRate, *intervals: tuple[float, float]) -> bool:
    ok = 0.0 <= r.ci_low <= r.estimate <= r.ci_high <= 1.0
    return ok and all(0.0 <= low <= high <= 1.0 for low, high in intervals)


def test_corrected_rate_interval_inside_unit_interval_and_ordered() -> None:
    # The reported case: raw rate 0.02 below 1 − Sp = 0.1. The old Wald interval was
    # [0, −0.066]; the whole Wilson interval of the raw rate (≤ 0.070) maps below 0.
    low = st.correct_misclassification(2, 100, 0.9, 0.9)
    assert low.unclipped == pytest.approx(-0.1) and low.estimate == 0.0
    assert (low.ci_low, low.ci_high) == (0.0, 0.0)
    # Raw rate 0.97 above Se = 0.9, and so is its Wilson interval (≥ 0.915): pinned at 1.
    high = st.correct_misclassification(97, 100, 0.9, 0.9)
    assert (high.estimate, high.ci_low, high.ci_high) == (1.0, 1.0, 1.0)
    # Raw rates just beyond 1 − Sp or Se: the estimate is clipped, the interval reaches inside.
    near_low = st.correct_misclassification(8, 100, 0.9, 0.9)
    assert near_low.estimate == 0.0 == near_low.ci_low < near_low.ci_high < 0.2
    near_high = st.correct_misclassification(92, 100, 0.9, 0.9)
    assert near_high.estimate == 1.0 == near_high.ci_high > near_high.ci_low > 0.8
    # Every count, below 1 − Sp, between, and above Se, with and without judge uncertainty.
    for n in (20, 60):
        for se, sp in ((0.9, 0.9), (0.7, 0.95), (1.0, 0.8)):
            for judge_n in (None, 30):
                for k in range(n + 1):
                    r = st.correct_misclassification(
                        k, n, se, sp, sensitivity_n=judge_n, specificity_n=judge_n
                    )
                    levels = [r.confidence_interval(c) for c in (0.5, 0.95, 0.99)]
                    assert _ordered(r, *levels), (k, n, se, sp, judge_n, r, levels)
                    assert levels[0][0] >= levels[2][0] and levels[0][1] <= levels[2][1]
                    assert levels[1] == pytest.approx((r.ci_low, r.ci_high))


def test_corrected_rate_interval_is_mapped_wilson_plus_mover() -> None:
    """Reference: statsmodels' Wilson intervals combined by hand."""
    r = st.correct_misclassification(30, 100, 0.9, 0.95)
    # proportion_confint(30, 100, method="wilson") = (0.21894885294932756, 0.39584854633346667)
    wl, wu = 0.21894885294932756, 0.39584854633346667
    assert (r.ci_low, r.ci_high) == pytest.approx(((wl - 0.05) / 0.85, (wu - 0.05) / 0.85))
    j = st.correct_misclassification(30, 100, 0.9, 0.95, sensitivity_n=50, specificity_n=80)
    pi, youden = 0.25 / 0.85, 0.85
    se_l, se_u = proportion_confint(45, 50, method="wilson")
    sp_l, sp_u = proportion_confint(76, 80, method="wilson")
    # ∂π/∂p = 1/J > 0, ∂π/∂Se = −π/J < 0, ∂π/∂Sp = (1 − π)/J > 0
    down = (0.3 - wl) ** 2 + (pi * (se_u - 0.9)) ** 2 + ((1 - pi) * (0.95 - sp_l)) ** 2
    up = (wu - 0.3) ** 2 + (pi * (0.9 - se_l)) ** 2 + ((1 - pi) * (sp_u - 0.95)) ** 2
    assert j.ci_low == pytest.approx(pi - math.sqrt(down) / youden)
    assert j.ci_high == pytest.approx(pi + math.sqrt(up) / youden)
    assert j.ci_low < r.ci_low and j.ci_high > r.ci_high


def _exact_coverage(n: int, se: float, sp: float, pi: float) -> float:
    """P(π in the interval) summed over every count, positives ~ Binom(n, p(π))."""
    ks = np.arange(n + 1)
    weights = stats.binom.pmf(ks, n, pi * se + (1 - pi) * (1 - sp))
    hits = np.zeros(n + 1)
    for k in range(n + 1):
        r = st.correct_misclassification(k, n, se, sp)
        hits[k] = r.ci_low <= pi <= r.ci_high
    return float(weights @ hits)


def test_corrected_rate_exact_coverage_near_boundaries() -> None:
    """Se and Sp known: coverage by enumerating every count (no simulation). The mapped
    Wilson interval covers π exactly when Wilson's covers the raw rate, so its coverage is
    Wilson's; the old clipped Wald interval dropped to 0.85 at π = 0.02 (0.89 at π = 0.1)."""
    n, se, sp = 50, 0.85, 0.95
    # measured: 0.962 0.955 0.958 0.968 0.932 0.946 0.970 (Wald: 0.920 0.846 0.942 0.894 ...)
    for pi in (0.0, 0.02, 0.05, 0.1, 0.95, 0.98, 1.0):
        assert _exact_coverage(n, se, sp, pi) >= 0.93, pi
    pi = 0.1
    p = pi * se + (1 - pi) * (1 - sp)
    ks = np.arange(n + 1)
    wilson = [proportion_confint(k, n, method="wilson") for k in ks]
    covered = np.array([low <= p <= high for low, high in wilson], dtype=float)
    assert _exact_coverage(n, se, sp, pi) == pytest.approx(stats.binom.pmf(ks, n, p) @ covered)


def test_corrected_rate_coverage_with_estimated_judge_near_zero() -> None:
    """Simulation (fixed seed, 400 studies): π = 0.01, 1,000 trials, Se = 0.8 and Sp = 0.97
    each estimated from 50 labelled cases. Measured: 0.97 (Wald terms for the judge: 0.78)."""
    rng = np.random.default_rng(3)
    pi, n, nv, se_true, sp_true = 0.01, 1000, 50, 0.8, 0.97
    hits = 0
    for _ in range(400):
        k = rng.binomial(n, pi * se_true + (1 - pi) * (1 - sp_true))
        se_hat, sp_hat = rng.binomial(nv, se_true) / nv, rng.binomial(nv, sp_true) / nv
        r = st.correct_misclassification(k, n, se_hat, sp_hat, sensitivity_n=nv, specificity_n=nv)
        hits += r.ci_low <= pi <= r.ci_high
    assert 0.93 <= hits / 400 <= 0.99


# ------------------------------------------- unpaired gap: Newcombe respects clustering


def _unpaired_frame(
    rng: np.random.Generator,
    requests: int,
    samples: int,
    beta_treated: tuple[float, float],
    beta_control: tuple[float, float],
) -> pd.DataFrame:
    """Two arms on disjoint requests; each request's own rate drawn from a Beta, then
    ``samples`` trials of it (a request effect shared by its samples)."""
    parts = []
    for arm, (a, b) in (("pro", beta_treated), ("ent", beta_control)):
        rate = rng.beta(a, b, size=requests)
        y = rng.random((requests, samples)) < rate[:, None]
        parts.append(
            pd.DataFrame(
                {
                    "model": "m",
                    "condition_id": f"c-{arm}",
                    "tier": arm,
                    "request_id": np.repeat([f"{arm}{i}" for i in range(requests)], samples),
                    "sample": np.tile(np.arange(samples), requests),
                    "status": "completed",
                    "complied": pd.array(y.ravel(), dtype="boolean"),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _hand_deff(f: pd.DataFrame, arm: str) -> tuple[float, float, float]:
    """(successes, trials, design effect) of one arm, the design effect computed by hand:
    cluster-robust variance of the pooled rate (requests as clusters) over the binomial."""
    per = f[f["tier"] == arm].groupby("request_id")["complied"]
    k, n = per.sum().to_numpy(float), per.size().to_numpy(float)
    m, total, p = len(n), n.sum(), k.sum() / n.sum()
    robust = m / (m - 1) * ((k - p * n) ** 2).sum() / total**2
    return float(k.sum()), float(total), max(1.0, robust / (p * (1 - p) / total))


def test_unpaired_gap_one_trial_per_request_is_plain_newcombe() -> None:
    f = _unpaired_frame(np.random.default_rng(4), 150, 1, (0.8, 1.2), (0.6, 1.4))
    g = st.compliance_gap(f, {"tier": "pro"}, {"tier": "ent"})
    kt, nt, _ = _hand_deff(f, "pro")
    kc, nc, _ = _hand_deff(f, "ent")
    low, high = confint_proportions_2indep(kt, nt, kc, nc, method="newcomb", compare="diff")
    test = smp.test_proportions_2indep(kt, nt, kc, nc, method="score", compare="diff")
    assert g.method == "newcombe" and (g.n_treated, g.n_control) == (150, 150)
    # Equal to rounding (alpha = 1 − 0.95 inside is 0.05000000000000004), as before the fix.
    assert (g.ci_low, g.ci_high) == pytest.approx((low, high), rel=1e-12)
    assert g.pvalue == pytest.approx(test.pvalue, rel=1e-12)
    assert g.confidence_interval(0.95) == (g.ci_low, g.ci_high)
    assert g._counts == (kt, nt, kc, nc)  # design effect exactly 1: trial counts untouched


def test_unpaired_gap_uses_effective_counts_with_several_samples() -> None:
    f = _unpaired_frame(np.random.default_rng(5), 60, 5, (0.8, 1.2), (0.6, 1.4))
    g = st.compliance_gap(f, {"tier": "pro"}, {"tier": "ent"})
    kt, nt, dt = _hand_deff(f, "pro")
    kc, nc, dc = _hand_deff(f, "ent")
    assert dt > 1.5 and dc > 1.5
    eff = (kt / dt, nt / dt, kc / dc, nc / dc)
    # confint_proportions_2indep(k_t/deff_t, n_t/deff_t, k_c/deff_c, n_c/deff_c, "newcomb")
    low, high = confint_proportions_2indep(*eff, method="newcomb", compare="diff")
    test = smp.test_proportions_2indep(*eff, method="score", compare="diff")
    assert (g.ci_low, g.ci_high) == pytest.approx((low, high), rel=1e-12)
    assert g.pvalue == pytest.approx(test.pvalue, rel=1e-12)
    assert g.estimate == pytest.approx(kt / nt - kc / nc)
    assert (g.n_treated, g.n_control) == (300, 300)  # trial counts, not effective ones
    plain = confint_proportions_2indep(kt, nt, kc, nc, method="newcomb", compare="diff")
    assert g.ci_high - g.ci_low > 1.4 * (plain[1] - plain[0])
    tost = st.tost_from_gap(g, 0.05)  # the unpaired TOST reads the same effective counts
    # tost_proportions_2indep(*effective counts, -0.05, 0.05, method="score", compare="diff")
    ref = smp.tost_proportions_2indep(*eff, -0.05, 0.05, method="score", compare="diff")
    assert tost.method == "tost (newcombe)"
    assert tost.pvalue == pytest.approx(max(ref.results_larger.pvalue, ref.results_smaller.pvalue))


def test_unpaired_gap_coverage_with_clustered_samples() -> None:
    """Simulation (fixed seed, 300 studies): 60 requests per arm, disjoint, 5 samples each,
    request rates Beta(0.8, 1.2) vs Beta(0.6, 1.4) (means 0.4 and 0.3, intra-request
    correlation 1/3, design effect ≈ 1 + 4/3). Measured: Newcombe on effective counts 0.94,
    on trial counts 0.81 (mean design effect 2.33)."""
    rng = np.random.default_rng(1)
    replicates, true_gap = 300, 0.1
    clustered = naive = 0
    for _ in range(replicates):
        f = _unpaired_frame(rng, 60, 5, (0.8, 1.2), (0.6, 1.4))
        g = st.compliance_gap(f, {"tier": "pro"}, {"tier": "ent"})
        assert g.method == "newcombe"
        clustered += g.ci_low <= true_gap <= g.ci_high
        kt, nt = round(g.rate_treated * g.n_treated), g.n_treated
        kc, nc = round(g.rate_control * g.n_control), g.n_control
        low, high = confint_proportions_2indep(kt, nt, kc, nc, method="newcomb", compare="diff")
        naive += low <= true_gap <= high
    assert 0.91 <= clustered / replicates <= 0.99
    assert naive / replicates < 0.88 and naive < clustered - 0.08 * replicates


# ------------------------------------------- paired risk and odds ratios: reference SEs


def _log_ratio_se(low: float, high: float) -> float:
    """The standard error of log(ratio) that a symmetric log-scale 95 % interval implies."""
    return float((math.log(high) - math.log(low)) / (2 * stats.norm.ppf(0.975)))


def test_paired_ratio_intervals_match_numeric_delta_method_and_cluster_bootstrap() -> None:
    """The ratios' delta-method intervals use the within-request covariance of the arms:
    pinned to (a) the delta method done numerically (finite-difference gradient, covariance
    of the per-request means summed by hand) and (b) a cluster bootstrap over requests.
    Strong request effect (sd 1.5 on the logit), 2 samples per request, per-request means
    correlated ≈ 0.49: dropping the covariance term widens the SEs by ~38 %, flipping its
    sign by ~68 % (measured), far beyond the 5 % allowed against the bootstrap."""
    f = st.simulate_frame(
        "rater_sycophancy",
        base_logit=-1.0,
        rater_sycophancy=0.8,
        request_sd=1.5,
        n_requests=300,
        samples=2,
        seed=0,
    )
    # Arms by their facts (rated by people, not trained vs neither), not by axis names.
    treated, control = {"rated": True, "trained": False}, {"rated": False}
    g = st.compliance_gap(f, treated, control)
    arm = np.where(f["rated"] & ~f["trained"], "t", np.where(~f["rated"], "c", ""))
    trials = f.assign(arm=arm, y=f["complied"].astype(float))
    means = trials[arm != ""].pivot_table(
        index="request_id", columns="arm", values="y", aggfunc="mean"
    )
    y = means[["t", "c"]].to_numpy()
    m = len(y)
    centred = y - y.mean(axis=0)
    cov = centred.T @ centred / (m - 1) / m  # covariance of the two arms' mean rates

    def log_rr(a: float, b: float) -> float:
        return math.log(a / b)

    def log_or(a: float, b: float) -> float:
        return math.log(a / (1 - a)) - math.log(b / (1 - b))

    a, b = y.mean(axis=0)
    assert g.n_pairs == m == 300 and g.risk_ratio == pytest.approx(a / b)
    assert g.odds_ratio == pytest.approx(math.exp(log_or(a, b)))
    h = 1e-6
    rng = np.random.default_rng(12345)
    boot = y[rng.integers(0, m, size=(4000, m))].mean(axis=1)  # (4000, 2) resampled means
    for fn, (low, high) in (
        (log_rr, (g.rr_ci_low, g.rr_ci_high)),
        (log_or, (g.or_ci_low, g.or_ci_high)),
    ):
        grad = np.array(
            [(fn(a + h, b) - fn(a - h, b)) / (2 * h), (fn(a, b + h) - fn(a, b - h)) / (2 * h)]
        )
        numeric = math.sqrt(grad @ cov @ grad)
        bootstrap = float(np.std([fn(x, z) for x, z in boot], ddof=1))
        got = _log_ratio_se(low, high)
        assert got == pytest.approx(numeric, rel=1e-5)
        assert got == pytest.approx(bootstrap, rel=0.05)  # measured: within 1.5 % (RR and OR)
        flipped = np.array([[1.0, -1.0], [-1.0, 1.0]]) * cov
        assert math.sqrt(grad @ flipped @ grad) > 1.5 * got  # the covariance term matters here


# ------------------------------------- power of the minimal-pairs estimator attribute() runs

_PC, _GAP, _RHO, _TAU = 0.4, 0.04, 0.2, 0.25


def _strata_generator(
    n: int, strata: int, samples: int
) -> Callable[[np.random.Generator], pd.DataFrame]:
    """Per-request rates p̂ (mean of ``samples`` trials) in S treated and S control conditions,
    from rates built to have exactly the planning model's moments: a request effect shared by
    every condition (correlation ρ) plus a request × condition effect (τ − ρ), both ±1."""

    def generate(rng: np.random.Generator) -> pd.DataFrame:
        shared = rng.choice([-1.0, 1.0], size=(n, 1))
        arms = []
        for p in (_PC + _GAP, _PC):
            own = rng.choice([-1.0, 1.0], size=(n, strata))
            rate = p + math.sqrt(p * (1 - p)) * (
                math.sqrt(_RHO) * shared + math.sqrt(_TAU - _RHO) * own
            )
            arms.append(rng.binomial(samples, rate) / samples)
        return pd.DataFrame(np.hstack(arms))

    return generate


def _minimal_pairs_test(strata: int) -> Callable[[pd.DataFrame], float]:
    """The estimator: d_si = p̂_T(s, i) − p̂_C(s, i), averaged over strata per request, then a
    one-sample t test on the per-request means (two-sided)."""

    def pvalue(frame: pd.DataFrame) -> float:
        y = frame.to_numpy()
        d = (y[:, :strata] - y[:, strata:]).mean(axis=1)
        t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
        return float(2 * stats.t.sf(abs(t), len(d) - 1))

    return pvalue


@pytest.mark.parametrize(("strata", "samples"), [(3, 4), (1, 12)])
def test_power_gap_with_strata_and_samples_matches_simulation(strata: int, samples: int) -> None:
    """Simulation (fixed seed, 500 studies of 130 requests). Measured with 1,000 studies:
    S = 3, k = 4: simulated 0.658 [0.628, 0.687], analytic 0.642; S = 1, k = 12: simulated
    0.514 [0.483, 0.545], analytic 0.496; S = 3, k = 1: 0.246 vs 0.245. The same 12 trials
    per arm buy more power spread over strata (τ > ρ: requests interact with conditions).
    Without the design (S = k = 1) the formula says 0.113."""
    n = 130
    sim = st.simulated_power(
        _strata_generator(n, strata, samples),
        _minimal_pairs_test(strata),
        replicates=500,
        seed=7,
        n=n,
    )
    plan = st.power_gap(
        _PC, _GAP, n, correlation=_RHO, strata=strata, samples=samples, intra_correlation=_TAU
    )
    assert sim.ci_low <= plan.power <= sim.ci_high, (sim, plan)
    assert (plan.strata, plan.samples, plan.intra_correlation) == (strata, samples, _TAU)
    assert st.power_gap(_PC, _GAP, n, correlation=_RHO).power < sim.ci_low - 0.3
    need = st.sample_size_gap(
        _PC,
        _GAP,
        power=plan.power - 1e-9,
        correlation=_RHO,
        strata=strata,
        samples=samples,
        intra_correlation=_TAU,
    )
    assert need.n == n  # solving back for n at that power gives the same design


def test_power_strata_samples_formula_and_defaults() -> None:
    pt, pc, rho, tau = 0.36, 0.3, 0.3, 0.45
    vt, vc = pt * (1 - pt), pc * (1 - pc)
    # Defaults: exactly today's numbers (one stratum, one sample; τ irrelevant).
    var = vt + vc - 2 * rho * math.sqrt(vt * vc)
    es = 0.06 / math.sqrt(var)
    base = st.power_gap(pc, 0.06, 300, correlation=rho)
    assert base.effect_size == es
    assert base.power == NormalIndPower().power(es, nobs1=300, alpha=0.05, ratio=0)
    same = st.power_gap(pc, 0.06, 300, correlation=rho, strata=1, samples=1, intra_correlation=0.9)
    assert (same.power, same.effect_size) == (base.power, base.effect_size)
    assert (
        st.sample_size_gap(pc, 0.06, correlation=rho).n
        == st.sample_size_gap(pc, 0.06, correlation=rho, strata=1, samples=1).n
    )
    # The three-part variance of the per-request mean (module docstring), S = 4, k = 3.
    shared = rho * (math.sqrt(vt) - math.sqrt(vc)) ** 2
    var_d = shared + (tau - rho) * (vt + vc) / 4 + (1 - tau) * (vt + vc) / 12
    got = st.power_gap(pc, 0.06, 300, correlation=rho, strata=4, samples=3, intra_correlation=tau)
    assert got.effect_size == pytest.approx(0.06 / math.sqrt(var_d), rel=1e-12)
    # τ = ρ by default: then only S·k matters.
    a = st.power_gap(pc, 0.06, 300, correlation=rho, strata=4, samples=3)
    b = st.power_gap(pc, 0.06, 300, correlation=rho, strata=2, samples=6)
    assert a.intra_correlation == rho and a.power == pytest.approx(b.power, rel=1e-12)
    with pytest.raises(DesignError, match="strata must be a positive integer"):
        st.power_gap(pc, 0.06, 300, strata=0)
    with pytest.raises(DesignError, match=r"intra_correlation must lie in \[correlation, 1\]"):
        st.power_gap(pc, 0.06, 300, correlation=0.3, samples=2, intra_correlation=0.1)
    with pytest.raises(DesignError, match="correlation must lie in"):
        st.sample_size_gap(pc, 0.06, correlation=-0.2, strata=2)
