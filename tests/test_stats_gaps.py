"""compliance_gap / compliance_rate / rates_by against reference numbers and by simulation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import afperturb.stats as st
from afperturb.errors import DesignError, InsufficientDataError
from afperturb.profiles import MotivationProfile


def frame(
    arms: Mapping[str, Sequence[Any]],
    requests: dict[str, list[str]] | None = None,
    model: str = "m",
) -> pd.DataFrame:
    """One condition per arm name ('tier' axis), one trial per listed outcome."""
    rows = []
    for arm, outcomes in arms.items():
        ids = (requests or {}).get(arm) or [f"r{i}" for i in range(len(outcomes))]
        for rid, y in zip(ids, outcomes, strict=True):
            rows.append(
                {
                    "model": model,
                    "condition_id": f"c-{arm}",
                    "tier": arm,
                    "trained": arm == "free",
                    "request_id": rid,
                    "sample": 0,
                    "status": "failed" if y == "fail" else "completed",
                    "complied": None if y in (None, "fail") else bool(y),
                }
            )
    out = pd.DataFrame(rows)
    out["complied"] = out["complied"].astype("boolean")
    return out


def test_wilson_rate_matches_statsmodels() -> None:
    f = frame({"a": [1] * 30 + [0] * 70 + [None] * 5 + ["fail"] * 2})
    r = st.compliance_rate(f)
    # statsmodels: proportion_confint(30, 100, method="wilson")
    assert (r.successes, r.n) == (30, 100)
    assert r.ci_low == pytest.approx(0.21894885294932756)
    assert r.ci_high == pytest.approx(0.39584854633346667)
    assert (r.format_failures, r.failed) == (5, 2)
    assert r.confidence_interval(0.99)[0] < r.ci_low


def test_paired_gap_equals_paired_t_test() -> None:
    t, c = [1, 1, 0, 1, 1, 0], [0, 1, 0, 0, 1, 1]
    g = st.compliance_gap(frame({"pro": t, "ent": c}), {"tier": "pro"}, {"tier": "ent"})
    ref = stats.ttest_rel(t, c)  # statistic 0.5423261445466404, pvalue 0.6108811833962556
    assert g.method == "paired" and g.n_pairs == 6
    assert g.estimate == pytest.approx(1 / 6)
    assert g.statistic == pytest.approx(ref.statistic) == pytest.approx(0.5423261445466404)
    assert g.pvalue == pytest.approx(0.6108811833962556)
    assert (g.ci_low, g.ci_high) == pytest.approx((-0.6233197838252854, 0.9566531171586187))
    low, high = g.confidence_interval(0.5)
    assert g.ci_low < low < high < g.ci_high
    one_sided = st.compliance_gap(
        frame({"pro": t, "ent": c}), {"tier": "pro"}, {"tier": "ent"}, alternative="greater"
    )
    assert one_sided.pvalue == pytest.approx(0.6108811833962556 / 2)


def test_paired_gap_averages_samples_within_request() -> None:
    f = frame(
        {"pro": [1, 0, 1, 1], "ent": [0, 0, 0, 1]},
        {"pro": ["r0", "r0", "r1", "r1"], "ent": ["r0", "r0", "r1", "r1"]},
    )
    g = st.compliance_gap(f, {"tier": "pro"}, {"tier": "ent"})
    # per-request means: pro (0.5, 1.0), ent (0.0, 0.5) → d = (0.5, 0.5)
    assert g.n_pairs == 2 and g.n_treated == 4
    assert g.estimate == pytest.approx(0.5) and g.se == 0.0
    assert g.pvalue == 0.0


def test_newcombe_when_arms_do_not_share_requests() -> None:
    f = frame(
        {"pro": [1] * 30 + [0] * 70, "ent": [1] * 18 + [0] * 82},
        {"pro": [f"a{i}" for i in range(100)], "ent": [f"b{i}" for i in range(100)]},
    )
    g = st.compliance_gap(f, {"tier": "pro"}, {"tier": "ent"})
    # confint_proportions_2indep(30, 100, 18, 100, method="newcomb", compare="diff")
    # test_proportions_2indep(..., method="score") → pvalue 0.04749879512896162
    # confint_proportions_2indep(..., method="log-adjusted", compare="ratio")
    assert g.method == "newcombe" and g.n_pairs == 0
    assert (g.ci_low, g.ci_high) == pytest.approx((0.0013340883914529922, 0.23469812426823417))
    assert g.pvalue == pytest.approx(0.04749879512896162)
    assert g.risk_ratio == pytest.approx(30 / 18)
    assert (g.rr_ci_low, g.rr_ci_high) == pytest.approx((0.9928828383425395, 2.7375257802102375))
    assert g.confidence_interval(0.95) == pytest.approx((g.ci_low, g.ci_high))


def test_ratios_format_failures_and_views() -> None:
    f = frame({"pro": [1, 1, 0, 1, None, 1], "ent": [0, 1, 0, 0, 1, 1]})
    g = st.compliance_gap(f, {"tier": "pro"}, {"tier": "ent"})
    assert g.n_pairs == 5 and g.format_failures_treated == 1
    assert g.risk_ratio == pytest.approx(g.rate_treated / g.rate_control)
    assert g.rr_ci_low < g.risk_ratio < g.rr_ci_high
    row = g.to_frame()
    assert row.shape[0] == 1 and {"estimate", "ci_low", "pvalue", "n_pairs"} <= set(row)
    assert repr(g).startswith("<GapEstimate estimate=") and "\n" not in repr(g)
    assert g.to_markdown().startswith("| estimate |")
    assert "<table" in g._repr_html_()


PRO, ENTERPRISE = {"rater_scrutiny": "pro"}, {"rater_scrutiny": "enterprise"}


def test_bootstrap_is_seeded() -> None:
    f = st.simulate_frame("rater_sycophancy", "sycophant", n_requests=150, seed=3)
    a = st.compliance_gap(f, PRO, ENTERPRISE, method="bootstrap", seed=1)
    b = st.compliance_gap(f, PRO, ENTERPRISE, method="bootstrap", seed=1)
    p = st.compliance_gap(f, PRO, ENTERPRISE)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert a.estimate == p.estimate
    assert a.ci_low == pytest.approx(p.ci_low, abs=0.02)
    assert a.confidence_interval(0.8)[0] > a.ci_low


def test_predicates_lists_and_errors() -> None:
    f = frame({"free": [1, 1, 0], "pro": [1, 0, 0], "ent": [0, 0, 0]})
    g = st.compliance_gap(f, lambda c: c["trained"], {"tier": ["pro", "ent"]})
    assert g.rate_control == pytest.approx(1 / 6)
    with pytest.raises(DesignError, match=r"unknown column 'tierr'.*'tier'"):
        st.compliance_gap(f, {"tierr": "pro"}, {"tier": "ent"})
    with pytest.raises(DesignError, match=r"\['c-pro'\] match both arms"):
        st.compliance_gap(f, {"tier": "pro"}, {"trained": False})
    with pytest.raises(InsufficientDataError, match="treated arm"):
        st.compliance_gap(f, {"tier": "gold"}, {"tier": "ent"})
    with pytest.raises(DesignError, match="valid methods"):
        st.compliance_gap(f, {"tier": "pro"}, {"tier": "ent"}, method="wald")  # type: ignore[arg-type]
    two = pd.concat([f, frame({"free": [1], "ent": [0]}, model="other")])
    with pytest.raises(DesignError, match="2 models"):
        st.compliance_gap(two, {"tier": "free"}, {"tier": "ent"})
    other = st.compliance_gap(two, {"tier": "free"}, {"tier": "ent"}, model="other")
    assert (other.method, other.n_treated, other.estimate) == ("newcombe", 1, 1.0)


def test_duck_typed_input_and_rates_by() -> None:
    f = frame({"pro": [1, 1, 0, 1], "ent": [0, 1, 0, 0]})

    class Result:
        def to_frame(self) -> pd.DataFrame:
            return f

    assert st.compliance_gap(Result(), {"tier": "pro"}, {"tier": "ent"}).estimate == 0.5
    table = st.rates_by(f, "tier")
    assert table["tier"].tolist() == ["ent", "pro"]
    assert table["estimate"].tolist() == [0.25, 0.75]
    with pytest.raises(TypeError, match="to_frame"):
        st.compliance_rate([1, 2, 3])


def _true_gap(lt: float, lc: float, sd: float) -> float:
    x, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    return float(w @ (1 / (1 + np.exp(-(lt + sd * x))) - 1 / (1 + np.exp(-(lc + sd * x)))))


def test_paired_ci_coverage_by_simulation() -> None:
    """200 replicates at n = 200, request_sd = 1: coverage must be near 95 % (can fail)."""
    prof = MotivationProfile(base_logit=-2.0, rater_sycophancy=1.0, request_sd=1.0)
    true = _true_gap(-1.0, -2.0, 1.0)
    rng = np.random.default_rng(2024)
    hits = 0
    for _ in range(200):
        f = st.simulate_frame("rater_sycophancy", prof, n_requests=200, seed=rng)
        g = st.compliance_gap(f, PRO, ENTERPRISE)
        hits += g.ci_low <= true <= g.ci_high
    assert 0.91 <= hits / 200 <= 0.99
    assert not math.isnan(true) and 0.14 < true < 0.16


def _clustered_frame(rng: np.random.Generator, requests: int, samples: int) -> pd.DataFrame:
    """One condition; each request's own compliance probability (Beta(1.2, 2.8): mean 0.3,
    intra-request correlation 0.2), ``samples`` trials of each."""
    p = rng.beta(1.2, 2.8, size=requests)
    y = rng.random((requests, samples)) < p[:, None]
    return pd.DataFrame(
        {
            "model": "m",
            "condition_id": "c",
            "tier": "free",
            "request_id": np.repeat([f"r{i}" for i in range(requests)], samples),
            "sample": np.tile(np.arange(samples), requests),
            "status": "completed",
            "complied": pd.array(y.ravel(), dtype="boolean"),
        }
    )


def test_rate_interval_accounts_for_samples_of_one_request() -> None:
    """Simulation (can fail): 60 requests × 5 samples, rates varying by request. The plain
    Wilson interval over 300 'independent' trials covers the true 0.3 far less than 95 %;
    widened by the design effect it covers it near 95 %. One sample per request: unchanged."""
    rng = np.random.default_rng(7)
    clustered = naive = 0
    replicates = 300
    for _ in range(replicates):
        r = st.compliance_rate(_clustered_frame(rng, 60, 5))
        clustered += r.ci_low <= 0.3 <= r.ci_high
        low, high = st.wilson_interval(r.successes, r.n)
        naive += low <= 0.3 <= high
        assert r.method == "wilson-clustered" and r.design_effect > 1 and r.clusters == 60
    # Measured with this seed: clustered 0.95, naive 0.86, mean deff 1.85 (expected 1 + 4·0.2).
    assert 0.91 <= clustered / replicates <= 0.99
    assert naive / replicates < clustered / replicates - 0.07
    single = st.compliance_rate(_clustered_frame(rng, 200, 1))
    assert single.design_effect == 1.0 and single.method == "wilson"
    assert (single.ci_low, single.ci_high) == st.wilson_interval(single.successes, single.n)
    assert single.confidence_interval(0.5) == st.wilson_interval(single.successes, single.n, 0.5)
