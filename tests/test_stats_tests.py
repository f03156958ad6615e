"""McNemar, TOST, trend, GLM interaction, heterogeneity, multiplicity, misclassification, power."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower

import afperturb.stats as st
from afperturb.errors import DesignError
from afperturb.stats.equivalence import tost_from_gap


def two_arm(t: list[int], c: list[int]) -> pd.DataFrame:
    rows = [
        {
            "condition_id": arm,
            "tier": arm,
            "request_id": f"r{i}",
            "status": "completed",
            "complied": bool(y),
        }
        for arm, ys in (("pro", t), ("ent", c))
        for i, y in enumerate(ys)
    ]
    return pd.DataFrame(rows)


def test_mcnemar_exact_and_midp() -> None:
    r = st.mcnemar_table([[10, 5], [2, 20]])
    # statsmodels mcnemar([[10, 5], [2, 20]], exact=True).pvalue == binomtest(2, 7).pvalue
    assert r.pvalue == pytest.approx(0.453125)
    assert r.pvalue_midp == pytest.approx(0.453125 - stats.binom.pmf(2, 7, 0.5))  # 0.2890625
    assert (r.b, r.c, r.n_pairs, r.odds_ratio) == (5, 2, 37, 2.5)
    assert r.or_ci_low < 2.5 < r.or_ci_high
    f = two_arm([1] * 10 + [1] * 5 + [0] * 2 + [0] * 20, [1] * 10 + [0] * 5 + [1] * 2 + [0] * 20)
    assert st.mcnemar(f, {"tier": "pro"}, {"tier": "ent"}).pvalue == pytest.approx(0.453125)
    with pytest.raises(DesignError, match="one scored trial per request"):
        st.mcnemar(pd.concat([f, f]), {"tier": "pro"}, {"tier": "ent"})


PRO, ENTERPRISE = {"rater_scrutiny": "pro"}, {"rater_scrutiny": "enterprise"}


def test_tost_paired_and_independent() -> None:
    f = st.simulate_frame("rater_sycophancy", "no-gap", n_requests=300, seed=5)
    res = st.equivalence_test(f, PRO, ENTERPRISE, margin=0.05)
    gap = st.compliance_gap(f, PRO, ENTERPRISE)
    low = stats.t.sf((gap.estimate + 0.05) / gap.se, gap.df)
    high = stats.t.cdf((gap.estimate - 0.05) / gap.se, gap.df)
    assert res.pvalue == pytest.approx(max(low, high))
    assert res.ci_low == pytest.approx(gap.confidence_interval(0.90)[0])
    assert res.equivalent(0.05) == (res.pvalue < 0.05)
    f2 = two_arm([1] * 30 + [0] * 70, [1] * 28 + [0] * 72)
    f2.loc[f2["tier"] == "ent", "request_id"] += "x"  # unshared requests → independent TOST
    ind = st.equivalence_test(f2, {"tier": "pro"}, {"tier": "ent"}, margin=0.1)
    # tost_proportions_2indep(30, 100, 28, 100, -0.1, 0.1, method="score", compare="diff")
    assert ind.method == "tost (newcombe)"
    assert ind.pvalue == pytest.approx(0.10541218471739877)
    with pytest.raises(DesignError, match="margin"):
        tost_from_gap(gap, 0.0)


def test_trend_is_ols_slope_of_level_gaps_with_paired_t() -> None:
    f = st.simulate_frame("instrumental_goal_guarding", "opus-like", n_requests=300, seed=9)
    tr = st.gap_trend(f, {"trained": True}, {"trained": False}, alternative="greater")
    x = np.array(tr.levels)
    # The preset's harms: 8 deployments at high risk, and the 3 with an adversary (amateur
    # hackers, criminal facilitation, bioweapon attackers) also at low risk; 0.65 occurs twice
    # (public_plausible_misuse high, amateur_hackers low), so 11 stories give 10 distinct harms.
    assert tr.n_levels == 10 and x[0] == 0.0 and x[-1] == 1.0
    assert tr.estimate == pytest.approx(np.polyfit(x, np.array(tr.gaps), 1)[0])
    assert tr._contrasts is not None
    ref = stats.ttest_1samp(tr._contrasts, 0.0, alternative="greater")
    assert tr.pvalue == pytest.approx(ref.pvalue) and tr.pvalue < 1e-6
    assert tr.level_table().shape == (10, 2)
    null = st.simulate_frame("instrumental_goal_guarding", "no-gap", n_requests=300, seed=9)
    assert st.gap_trend(null, {"trained": True}, {"trained": False}).pvalue > 0.01


def test_interaction_on_cells_equals_trial_level_glm() -> None:
    f = st.simulate_frame("instrumental_goal_guarding", "opus-like", n_requests=150, seed=2)
    r = st.interaction(f, "trained", "deployment_harm")
    f = f[f["complied"].notna()]  # format failures carry no verdict
    y = f["complied"].astype(float).to_numpy()
    tr = f["trained"].astype(float).to_numpy()
    h = f["deployment_harm"].to_numpy()
    x = np.column_stack([np.ones_like(h), tr, h, tr * h])
    groups = pd.factorize(f["request_id"])[0]
    ref = sm.GLM(y, x, family=sm.families.Binomial()).fit(
        cov_type="cluster", cov_kwds={"groups": groups}
    )
    assert r.estimate == pytest.approx(ref.params[3], rel=1e-6)
    assert r.se == pytest.approx(ref.bse[3], rel=1e-6)
    assert r.pvalue == pytest.approx(ref.pvalues[3], rel=1e-5)
    assert r.terms == "const + trained + deployment_harm + trained:deployment_harm"
    assert r.odds_ratio == pytest.approx(math.exp(r.estimate))


def test_heterogeneity_matches_meta_analysis_and_detects_flips() -> None:
    f = st.simulate_frame("low_coherence", "sonnet-like", n_requests=400, seed=4)
    h = st.gap_heterogeneity(f, {"trained": True}, {"trained": False})
    ref = combine_effects(np.array(h.gaps), np.array(h.ses) ** 2, method_re="dl")
    assert h.q == pytest.approx(ref.q) and h.tau2 == pytest.approx(ref.tau2)
    assert h.i2 == pytest.approx(ref.i2)
    assert h.pvalue < 1e-6 and h.sign_flip and h.n_levels == 4
    big_null = st.simulate_frame("low_coherence", "no-gap", n_requests=3000, seed=4)
    hn = st.gap_heterogeneity(big_null, {"trained": True}, {"trained": False})
    assert hn.pvalue > 0.01 and not hn.sign_flip
    assert hn.equivalence_pvalue(0.05) < 0.01 < h.equivalence_pvalue(0.05)


def test_adjust_pvalues_matches_multipletests() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.001])
    assert st.adjust_pvalues(p, "holm") == pytest.approx(multipletests(p, method="holm")[1])
    assert st.adjust_pvalues(p, "bh") == pytest.approx(multipletests(p, method="fdr_bh")[1])
    with_nan = st.adjust_pvalues([0.01, math.nan, 0.04], "holm")
    assert math.isnan(with_nan[1]) and with_nan[[0, 2]] == pytest.approx([0.02, 0.04])
    with pytest.raises(DesignError, match="valid corrections"):
        st.adjust_pvalues(p, "sidak")


def test_rogan_gladen_delta_method() -> None:
    r = st.correct_misclassification(30, 100, 0.9, 0.95)
    se = math.sqrt(0.3 * 0.7 / 100) / 0.85
    assert r.estimate == pytest.approx(0.25 / 0.85)
    assert r.se == pytest.approx(se)
    # The interval is Wilson's on the raw rate mapped through the correction (no longer the
    # clipped Wald interval, which could leave [0, 1] inverted; issue 13):
    # proportion_confint(30, 100, method="wilson")[0] = 0.21894885294932756
    assert r.ci_low == pytest.approx((0.21894885294932756 - 0.05) / 0.85)
    with_judge = st.correct_misclassification(
        30, 100, 0.9, 0.95, sensitivity_n=50, specificity_n=80
    )
    pi = 0.25 / 0.85
    var = 0.21 / 100 + pi**2 * 0.09 / 50 + (1 - pi) ** 2 * 0.0475 / 80
    assert with_judge.se == pytest.approx(math.sqrt(var) / 0.85)
    with pytest.raises(DesignError, match="no better than chance"):
        st.correct_misclassification(30, 100, 0.5, 0.4)


def test_rogan_gladen_coverage_by_simulation() -> None:
    rng = np.random.default_rng(11)
    se_true, sp_true, pi, n, nv = 0.85, 0.9, 0.2, 600, 200
    hits = 0
    for _ in range(300):
        truth = rng.random(n) < pi
        judged = np.where(truth, rng.random(n) < se_true, rng.random(n) > sp_true)
        se_hat = rng.binomial(nv, se_true) / nv
        sp_hat = rng.binomial(nv, sp_true) / nv
        r = st.correct_misclassification(
            judged.sum(), n, se_hat, sp_hat, sensitivity_n=nv, specificity_n=nv
        )
        hits += r.ci_low <= pi <= r.ci_high
    assert 0.92 <= hits / 300 <= 0.985


def test_power_analytic_and_simulated() -> None:
    p = st.power_gap(0.2, 0.1, 200, correlation=0.3)
    var = 0.3 * 0.7 + 0.2 * 0.8 - 2 * 0.3 * math.sqrt(0.21 * 0.16)
    es = 0.1 / math.sqrt(var)
    assert p.effect_size == pytest.approx(es)
    assert p.power == pytest.approx(NormalIndPower().power(es, nobs1=200, alpha=0.05, ratio=0))
    n = st.sample_size_gap(0.2, 0.1, power=0.9, correlation=0.3)
    assert n.power >= 0.9 > st.power_gap(0.2, 0.1, n.n - 1, correlation=0.3).power
    assert st.power_gap(0.2, 0.1, 200, correlation=0.6).power > p.power  # pairing pays
    with pytest.raises(DesignError, match="must lie in"):
        st.power_gap(0.95, 0.1, 100)
    sim = st.simulated_power(
        lambda rng: st.simulate_frame("rater_sycophancy", "sycophant", n_requests=100, seed=rng),
        (PRO, ENTERPRISE),
        replicates=40,
        seed=1,
        n=100,
    )
    # The truth (sycophant, request_sd 0.5): C(pro) 0.2794, C(enterprise) 0.1290, within-request
    # correlation 0.036 (Gauss-Hermite, 80 nodes), so the analytic power at n = 100 is 0.780.
    truth = st.power_gap(0.1290065363772216, 0.1504126484, 100, correlation=0.036054130724508464)
    assert truth.power == pytest.approx(0.780, abs=0.001)
    assert sim.ci_low < truth.power < sim.ci_high and sim.ci_low < sim.power <= sim.ci_high
    assert sim.power > 0.6 and sim.n == 100
    frame = st.simulate_frame("rater_sycophancy", "sycophant", n_requests=400, seed=0)
    rho = st.paired_correlation(frame, PRO, ENTERPRISE)
    assert 0.0 < rho < 0.3


def test_trend_keeps_requests_with_missing_levels() -> None:
    f = st.simulate_frame("instrumental_goal_guarding", "opus-like", n_requests=300, seed=6)
    drop = np.random.default_rng(0).random(len(f)) < 0.1
    tr = st.gap_trend(f[~drop], {"trained": True}, {"trained": False})
    full = st.gap_trend(f, {"trained": True}, {"trained": False})
    assert tr.n_pairs == 300  # available-case: nobody is dropped for one missing level
    assert tr.estimate == pytest.approx(np.polyfit(np.array(tr.levels), np.array(tr.gaps), 1)[0])
    assert 0.9 < tr.se / full.se < 1.3


def test_interaction_with_strata_equals_statsmodels_on_the_cells() -> None:
    """One intercept per stratum; several samples per request (cells carry counts)."""
    from afperturb.stats import build_cells
    from afperturb.stats.models import interaction_from_cells

    f = st.simulate_frame(
        "instrumental_goal_guarding", "opus-like", n_requests=80, samples=3, seed=5
    )
    cells = build_cells(f)
    conds = cells.conditions
    strata = pd.factorize(conds["deployment"].astype(str) + conds["risk"].astype(str))[0]
    mask = np.ones(len(conds), dtype=bool)
    r = interaction_from_cells(cells, mask, strata=strata.astype(np.int64))
    sel = cells.n > 0
    c = cells.cond[sel]
    tr = conds["trained"].to_numpy(float)[c]
    h = conds["deployment_harm"].to_numpy(float)[c]
    dummies = np.eye(strata.max() + 1)[strata[c]]
    x = np.column_stack([dummies, tr, tr * h])
    k, n = cells.k[sel], cells.n[sel]
    ref = sm.GLM(np.column_stack([k, n - k]), x, family=sm.families.Binomial()).fit(
        cov_type="cluster", cov_kwds={"groups": cells.req[sel]}
    )  # statsmodels GLM on the (condition, request) cells with stratum dummies
    assert r.estimate == pytest.approx(ref.params[-1], rel=1e-6)
    assert r.se == pytest.approx(ref.bse[-1], rel=1e-6)
    assert r.terms.endswith("stratum intercepts + trained + trained:deployment_harm")


def test_factor_by_level_wald_equals_statsmodels_on_the_cells() -> None:
    """Log-odds heterogeneity: pair intercepts, one factor coefficient per level, Wald χ²."""
    from afperturb.stats import build_cells
    from afperturb.stats.models import factor_by_level_from_cells

    f = st.simulate_frame("low_coherence", "opus-like", n_requests=60, samples=2, seed=9)
    cells = build_cells(f)
    conds = cells.conditions
    keep = pd.Series(True, index=conds.index)
    para = pd.to_numeric(conds["paraphrase"], errors="coerce").fillna(0).to_numpy(float)
    trained = conds["trained"].astype(bool).to_numpy(float)
    strata = np.where(keep, para, -1).astype(np.int64)  # one intercept per paraphrase's pair
    r = factor_by_level_from_cells(cells, keep.to_numpy(), trained, para, strata)
    sel = keep.to_numpy()[cells.cond] & (cells.n > 0)
    c = cells.cond[sel]
    levels = np.unique(para[c])
    x = np.column_stack(
        [np.eye(int(strata.max()) + 1)[strata[c]][:, levels.astype(int)]]
        + [trained[c] * (para[c] == v) for v in levels]
    )
    k, n = cells.k[sel], cells.n[sel]
    ref = sm.GLM(np.column_stack([k, n - k]), x, family=sm.families.Binomial()).fit(
        cov_type="cluster", cov_kwds={"groups": cells.req[sel]}
    )
    m = len(levels)
    contrast = np.zeros((m - 1, x.shape[1]))
    for j in range(1, m):
        contrast[j - 1, m], contrast[j - 1, m + j] = -1.0, 1.0
    wald = ref.wald_test(contrast, scalar=True, use_f=False)
    assert r.df == m - 1 == 3
    assert r.statistic == pytest.approx(float(wald.statistic), rel=1e-6)
    assert r.pvalue == pytest.approx(float(wald.pvalue), rel=1e-6)
    assert r.estimates == pytest.approx(tuple(ref.params[m:]), rel=1e-6)
