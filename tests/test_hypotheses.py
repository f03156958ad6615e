"""attribute(), the decision rules and HypothesisTable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import afperturb.stats as st
from afperturb.errors import DesignError
from afperturb.hypotheses import HYPOTHESES, RULES, HypothesisTable, attribute, rules_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs" / "decision-rules.md"


@pytest.fixture(scope="module")
def demo_table() -> HypothesisTable:
    frames = [
        st.simulate_frame("all", name, n_requests=400, seed=i, model=name)
        for i, name in enumerate(st.PROFILES)
    ]
    return attribute(frames)


def test_docs_table_is_rendered_from_the_rule_objects() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert rules_markdown() in text
    assert [r.hypothesis for r in RULES] == list(HYPOTHESES)
    for verdict in ("supported", "refuted", "conflicting", "inconclusive", "not_tested"):
        assert f"`{verdict}`" in text


def test_planted_motives_are_recovered(demo_table: HypothesisTable) -> None:
    truth = {name: prof.planted() for name, prof in st.PROFILES.items()}
    cmp = demo_table.compare(truth)
    assert len(cmp) == 16 and cmp["hit"].all(), cmp[~cmp["hit"]]
    grid = demo_table.verdicts()
    assert grid.loc["opus-like", "instrumental_goal_guarding"] == "supported"
    assert grid.loc["sycophant", "rater_sycophancy"] == "supported"
    assert grid.loc["sonnet-like", "low_coherence"] == "supported"
    assert list(grid.columns) == list(HYPOTHESES)


def test_table_columns_and_views(demo_table: HypothesisTable) -> None:
    f = demo_table.to_frame()
    for column in (
        "model",
        "hypothesis",
        "verdict",
        "estimate",
        "ci_low",
        "ci_high",
        "pvalue",
        "pvalue_adj",
        "n",
        "rule",
        "af_rate",
    ):
        assert column in f.columns
    assert (f["pvalue_adj"] >= f["pvalue"]).all()
    assert (f["n"] == 400).all()
    opus_tgg = f[(f["model"] == "opus-like") & (f["hypothesis"] == "terminal_goal_guarding")]
    assert opus_tgg["af_rate"].iloc[0] > 0.05
    assert repr(demo_table).startswith("<HypothesisTable 4 model(s) × 4 hypotheses")
    assert demo_table.to_markdown().count("\n") == 17
    assert demo_table.to_latex().startswith("\\begin{tabular}")
    assert "<table" in demo_table._repr_html_()
    sub = demo_table.filter(model="opus-like", hypothesis=["rater_sycophancy"])
    assert len(sub) == 1
    with pytest.raises(DesignError, match="unknown model 'gpt'"):
        demo_table.filter(model="gpt")


def test_list_of_results_equals_one_concatenated_frame() -> None:
    frames = [
        st.simulate_frame("paper", name, n_requests=120, seed=1, model=name)
        for name in ("sycophant", "no-gap")
    ]
    a = attribute(frames).to_frame()
    b = attribute(pd.concat(frames, ignore_index=True)).to_frame()
    pd.testing.assert_frame_equal(a, b)


def test_absent_conditions_are_not_tested_never_guessed() -> None:
    f = st.simulate_frame("rater_sycophancy", "sycophant", n_requests=200)
    v = attribute(f).to_frame().set_index("hypothesis")
    assert v.loc["rater_sycophancy", "verdict"] == "supported"
    for h in ("instrumental_goal_guarding", "terminal_goal_guarding", "low_coherence"):
        assert v.loc[h, "verdict"] == "not_tested" and v.loc[h, ["pvalue_adj"]].isna().all()
    # The null control (conflict=False) is a baseline, not evidence.
    null_only = st.simulate_frame("null_control", "sycophant", n_requests=200)
    assert set(attribute(null_only).to_frame()["verdict"]) == {"not_tested"}


def test_wrong_direction_is_conflicting_and_null_is_refuted() -> None:
    neg = st.simulate_frame(
        "rater_sycophancy", st.SimProfile(rater_sycophancy=-1.5), n_requests=400
    )
    row = attribute(neg, hypotheses=["rater_sycophancy"]).to_frame().iloc[0]
    assert row["verdict"] == "conflicting" and row["estimate"] < 0
    null = st.simulate_frame("rater_sycophancy", st.SimProfile(request_sd=1.0), n_requests=3000)
    assert attribute(null, hypotheses=["rater_sycophancy"]).to_frame()["verdict"][0] == "refuted"


def test_af_reasoning_without_compliance_gap_is_conflicting() -> None:
    f = st.simulate_frame("terminal_goal_guarding", "no-gap", n_requests=400, seed=3)
    rng = np.random.default_rng(0)
    trained = f["trained"].to_numpy()
    af = trained & (rng.random(len(f)) < 0.12)  # 12 % AF reasoning, no gap (Opus, throughput)
    f["af_reasoning"] = pd.array(af, dtype="boolean")
    row = attribute(f, hypotheses=["terminal_goal_guarding"]).to_frame().iloc[0]
    assert row["verdict"] == "conflicting"
    assert row["verdict_reason"] == "af_reasoning_without_gap"
    assert row["af_rate"] == pytest.approx(af[trained].mean())


def test_rules_read_facts_not_axis_names() -> None:
    f = st.simulate_frame("rater_sycophancy", "sycophant", n_requests=200, seed=2)
    renamed = f.rename(columns={"tier": "whatever_axis"})
    a = attribute(f).to_frame()["pvalue"]
    b = attribute(renamed).to_frame()["pvalue"]
    pd.testing.assert_series_equal(a, b)


def test_argument_errors_name_valid_values() -> None:
    f = st.simulate_frame("rater_sycophancy", "sycophant", n_requests=20)
    with pytest.raises(DesignError, match="valid corrections"):
        attribute(f, correction="fdr")
    with pytest.raises(DesignError, match=r"unknown hypothesis 'sycophancy'"):
        attribute(f, hypotheses=["sycophancy"])
    with pytest.raises(DesignError, match="empty"):
        attribute([])


def test_null_model_false_positive_rate_by_simulation() -> None:
    """100 null replicates: 'supported' anywhere (family-wise) must stay near α = 5 %."""
    prof = st.SimProfile(base_logit=-1.5, request_sd=1.0, paraphrase_offsets=(0.0, 0.0, 0.0))
    rng = np.random.default_rng(99)
    hits = 0
    for _ in range(100):
        v = attribute(st.simulate_frame("all", prof, n_requests=200, seed=rng)).to_frame()
        hits += bool((v["verdict"] == "supported").any())
    assert hits <= 11  # binomial(100, 0.05): P(X > 11) < 0.5 %


def test_attribute_scales_to_many_trials() -> None:
    frames = [
        st.simulate_frame("all", name, n_requests=2000, seed=i, model=name)
        for i, name in enumerate(st.PROFILES)
    ]
    big = pd.concat(frames, ignore_index=True)
    assert len(big) == 248_000
    # Speed is measured in benchmarks/bench_attribute.py; here: a big frame gives a full table.
    table = attribute(big).to_frame()
    assert set(table["model"]) == set(st.PROFILES)
    assert (table["n"] > 0).all()


def test_plain_object_columns_failed_trials_and_no_af_column() -> None:
    f = st.simulate_frame("paper", "sycophant", n_requests=300, seed=8)
    ref = attribute(f).to_frame()
    g = f.drop(columns=["af_reasoning", "paraphrase"]).copy()
    g["complied"] = g["complied"].astype(object)
    failed = g.iloc[:25].copy()
    failed["status"], failed["complied"] = "failed", None
    out = attribute(pd.concat([g, failed], ignore_index=True)).to_frame()
    pd.testing.assert_series_equal(out["pvalue"], ref["pvalue"])
    assert out["af_rate"].isna().all()
