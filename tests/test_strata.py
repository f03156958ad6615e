"""Minimal pairs and linear contrasts over them (afperturb.stats.strata), against references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats as sps

from afperturb.errors import InsufficientDataError
from afperturb.stats import build_cells
from afperturb.stats.strata import (
    Panel,
    linear_contrast,
    minimal_pairs,
    varying_axes,
    within_group_slope_weights,
)


def _frame(conditions: list[dict[str, object]], n_requests: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for c in conditions:
        for r in range(n_requests):
            rows.append(
                {
                    "model": c.get("model", "m"),
                    "scenario": c.get("scenario", "s"),
                    **{k: v for k, v in c.items() if k not in ("model", "scenario")},
                    "request_id": f"r{r}",
                    "sample": 0,
                    "status": "completed",
                    "complied": bool(rng.random() < 0.5),
                }
            )
    return pd.DataFrame(rows)


def test_minimal_pairs_need_exactly_one_differing_axis_within_model_and_scenario() -> None:
    conds = [
        {"condition_id": "pro", "cue": "pro", "lab": "a", "trained": False, "rated": True},
        {"condition_id": "ent", "cue": "ent", "lab": "a", "trained": False, "rated": False},
        {"condition_id": "ent_b", "cue": "ent", "lab": "b", "trained": False, "rated": False},
        {"condition_id": "paid", "cue": "paid", "lab": "b", "trained": False, "rated": False},
        {
            "condition_id": "pro_other_model",
            "cue": "pro",
            "lab": "b",
            "model": "m2",
            "trained": False,
            "rated": True,
        },
    ]
    panel = Panel.of(build_cells(_frame(conds)))
    ids = panel.cells.conditions["condition_id"].tolist()
    rated = panel.cells.conditions["rated"].to_numpy(bool)
    pairs = minimal_pairs(panel, rated, ~rated)
    got = {
        (ids[t], ids[c], a)
        for t, c, a in zip(pairs.treated, pairs.control, pairs.axis, strict=True)
    }
    # pro/ent differ in cue only; pro/ent_b in cue and lab; the m2 condition pairs with nothing.
    assert got == {("pro", "ent", "cue")}


def test_varying_axes_finds_the_axes_that_set_a_fact() -> None:
    conds = [
        {
            "condition_id": f"{d}-{r}-{lab}",
            "deployment": d,
            "risk": r,
            "lab": lab,
            "deployment_harm": h * f,
        }
        for d, h in (("a", 0.2), ("b", 0.8))
        for r, f in (("low", 0.5), ("high", 1.0))
        for lab in ("x", "y")
    ]
    panel = Panel.of(build_cells(_frame(conds)))
    harm = list(panel.cells.conditions["deployment_harm"])
    assert varying_axes(panel, np.ones(len(conds), bool), harm) == {"deployment", "risk"}


def test_contrast_with_complete_data_is_the_one_sample_t_on_per_request_contrasts() -> None:
    rng = np.random.default_rng(1)
    d = rng.normal(0.1, 0.3, size=(50, 4))
    w = np.array([0.25, 0.25, 0.25, 0.25])
    got = linear_contrast(d, w)
    ref = sps.ttest_1samp(d @ w, 0.0)  # scipy.stats.ttest_1samp(d @ w, 0)
    assert got.estimate == pytest.approx(float((d @ w).mean()))
    assert got.statistic == pytest.approx(float(ref.statistic))
    assert got.pvalue("two-sided") == pytest.approx(float(ref.pvalue))


def test_contrast_with_missing_cells_matches_cluster_robust_ols() -> None:
    """Available-case strata means; variance = statsmodels' cluster sandwich × m/(m−1)."""
    rng = np.random.default_rng(2)
    m, s = 80, 3
    u = rng.normal(0, 0.3, size=(m, 1))
    d = 0.05 + u + rng.normal(0, 0.2, size=(m, s))
    d[rng.random((m, s)) < 0.25] = np.nan
    w = np.array([0.7, -0.2, 0.5])
    got = linear_contrast(d, w)
    i, j = np.nonzero(~np.isnan(d))
    x = np.eye(s)[j]
    fit = sm.OLS(d[i, j], x).fit(
        cov_type="cluster", cov_kwds={"groups": i, "use_correction": False}
    )  # statsmodels OLS on stratum dummies, clusters = requests, no small-sample factor
    assert got.estimate == pytest.approx(float(w @ fit.params))
    m_used = int((~np.isnan(d)).any(axis=1).sum())
    assert got.se == pytest.approx(float(np.sqrt(w @ fit.cov_params() @ w * m_used / (m_used - 1))))


def test_within_group_slope_is_the_fixed_effects_regression_slope() -> None:
    x = np.array([0.0, 0.5, 1.0, 0.0, 1.0, 0.3])
    group = np.array([0, 0, 0, 1, 1, 2])  # group 2 has one level: weight 0
    w = within_group_slope_weights(x, group)
    assert w[5] == 0
    y = 0.2 * x + np.array([1.0, 1.0, 1.0, -3.0, -3.0, 9.0])  # group intercepts, slope 0.2
    assert float(w @ y) == pytest.approx(0.2)
    with pytest.raises(InsufficientDataError):
        within_group_slope_weights(np.array([0.5, 0.5]), np.array([0, 1]))
