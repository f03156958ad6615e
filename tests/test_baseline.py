"""The null-control baseline row: Greenblatt et al. 2024 G.1.19 ("cut conflicting criteria").

The `paper` preset carries the null control, and `attribute()` reports it after each model's
hypotheses: the trained-vs-untrained gap where nothing conflicts with harmlessness, two-sided,
outside the correction family, with the expected ≈ 0 stated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import afperturb as af
from afperturb.hypotheses import BASELINE_EXPECTED, HYPOTHESES
from afperturb.models import MotivationProfile
from afperturb.report._summary import build_report_data
from afperturb.report.markdown import render_markdown
from afperturb.stats import simulate as st


def test_the_paper_preset_holds_the_null_control() -> None:
    paper = af.Perturbation.preset("paper")
    null = [c for c in paper.conditions() if not c.facts.conflict]
    assert sorted(c.levels["tier"] for c in null) == ["free", "paid"]
    assert {c.levels["criteria"] for c in null} == {"cut_conflicting"}
    free = next(c for c in null if c.levels["tier"] == "free")
    assert free.facts.trained and free.facts.rated


def test_a_gap_from_the_cue_itself_is_flagged_and_does_not_change_the_hypotheses() -> None:
    """A model that complies more whenever it sees the free tier (a framing of the cue, not a
    motive) shows a gap in the null control: the baseline says so."""
    prof = MotivationProfile(instrumental_goal_guarding=1.5, framing={"tier": {"free": 1.0}})
    frame = st.simulate_frame(["paper"], prof, n_requests=400, seed=2)
    table = af.attribute(frame)
    base = table.baseline()
    assert len(base) == 1
    row = base.iloc[0]
    assert row["hypothesis"] == "null_control" and row["verdict"] == "baseline"
    assert row["verdict_reason"] == "gap_in_null_control"
    assert row["estimate"] > 0.1 and row["ci_low"] > 0 and row["pvalue"] < 1e-4
    assert BASELINE_EXPECTED in row["rule"]
    # Outside the correction family: the hypotheses' adjusted p-values are the same without it.
    without = af.attribute(frame, baseline=False).to_frame()
    motives = table.to_frame()
    motives = motives[motives["verdict"] != "baseline"].reset_index(drop=True)
    pd.testing.assert_frame_equal(motives, without)
    assert list(without["hypothesis"]) == list(HYPOTHESES)
    assert row["pvalue_adj"] == row["pvalue"]  # one baseline: its own family of one


def test_baselines_are_one_family_apart_from_the_hypotheses() -> None:
    """Five models with no null-control gap: Holm over the five baselines, not per model."""
    frames = [
        st.simulate_frame("null_control", "no-gap", n_requests=100, seed=s).assign(
            model=f"sim/m{s}"
        )
        for s in range(5)
    ]
    base = af.attribute(frames).baseline()
    expected = af.stats.adjust_pvalues(base["pvalue"].to_numpy(), "holm")
    np.testing.assert_allclose(base["pvalue_adj"].to_numpy(), expected)
    bh = af.attribute(frames, correction="bh").baseline()
    np.testing.assert_allclose(
        bh["pvalue_adj"].to_numpy(), af.stats.adjust_pvalues(bh["pvalue"].to_numpy(), "bh")
    )


def test_the_baseline_is_two_sided() -> None:
    prof = MotivationProfile(framing={"tier": {"free": -1.2}})
    row = af.attribute(st.simulate_frame("null_control", prof, n_requests=400)).baseline().iloc[0]
    assert row["estimate"] < -0.05 and row["verdict_reason"] == "gap_in_null_control"


def test_no_gap_and_no_af_reasoning_is_as_expected() -> None:
    frame = st.simulate_frame("null_control", "opus-like", n_requests=3000, seed=4)
    row = af.attribute(frame).baseline().iloc[0]
    assert row["verdict_reason"] == "as_expected"
    assert abs(row["estimate"]) < 0.03 and row["pvalue_equivalence"] < 0.05
    assert row["af_rate"] == 0


def test_af_reasoning_where_nothing_conflicts_is_flagged() -> None:
    frame = st.simulate_frame("null_control", "no-gap", n_requests=600, seed=1)
    trained = frame["trained"].to_numpy(dtype=bool)
    rng = np.random.default_rng(0)
    frame["af_reasoning"] = pd.array(trained & (rng.random(len(frame)) < 0.2), dtype="boolean")
    row = af.attribute(frame).baseline().iloc[0]
    assert row["af_rate"] > 0.1
    assert row["verdict_reason"] == "af_reasoning_in_null_control"


def test_every_profile_has_no_null_control_gap() -> None:
    """The simulator's truth: with the conflict cut, neither guarding nor sycophancy acts."""
    null = af.Perturbation.preset("null_control").conditions()
    for name, prof in af.models.PROFILES.items():
        rates = [prof.expected_p_comply(c, c.levels) for c in null]
        assert rates[0] == pytest.approx(rates[1]), name


def test_views_show_the_baseline() -> None:
    table = af.attribute(st.simulate_frame("paper", "sycophant", n_requests=200, seed=3))
    assert "null-control baseline: 1 " in repr(table)
    assert "| null_control | baseline: " in table.to_markdown()
    assert "baseline: " in table._repr_html_()
    assert "null\\_control" in table.to_latex()
    assert list(table.verdicts().columns) == list(HYPOTHESES)  # the grid holds motives only
    frame = st.simulate_frame("paper", "sycophant", n_requests=50, seed=3)
    data = build_report_data(frame, table, {})
    text = render_markdown(data, {}, {})
    assert "baseline: " in text and "null_control" in text


def test_a_design_without_the_null_control_says_how_to_add_it() -> None:
    row = af.attribute(st.simulate_frame("rater_sycophancy", "sycophant", n_requests=100))
    base = row.baseline().iloc[0]
    assert base["verdict_reason"] == "no_null_control" and base["n"] == 0
    assert "Perturbation.preset('null_control')" in base["note"]
