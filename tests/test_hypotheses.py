"""attribute(), the decision rules and HypothesisTable: minimal pairs, framing, paper rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import afperturb.stats as st
from afperturb.datasets import synthetic
from afperturb.design import Perturbation
from afperturb.errors import DesignError
from afperturb.hypotheses import (
    HYPOTHESES,
    RULES,
    HypothesisTable,
    attribute,
    rules_markdown,
)
from afperturb.models.simulated import from_name
from afperturb.profiles import PAPER_TABLE1, MotivationProfile
from afperturb.sweep import sweep

DOCS = Path(__file__).resolve().parents[1] / "docs" / "decision-rules.md"
CLASSIC = ("opus-like", "sonnet-like", "sycophant", "no-gap")


@pytest.fixture(scope="module")
def demo_table() -> HypothesisTable:
    return attribute([st.simulate_frame("paper", name, n_requests=400, seed=i)
                      for i, name in enumerate(CLASSIC)])  # fmt: skip


def _verdicts(frame: pd.DataFrame, **kwargs: object) -> dict[str, str]:
    table = attribute(frame, baseline=False, **kwargs).to_frame()  # type: ignore[arg-type]
    return dict(zip(table["hypothesis"], table["verdict"], strict=True))


def test_docs_table_is_rendered_from_the_rule_objects() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert rules_markdown() in text
    assert [r.hypothesis for r in RULES] == list(HYPOTHESES)
    for verdict in ("supported", "refuted", "conflicting", "inconclusive", "not_tested"):
        assert f"`{verdict}`" in text


def test_planted_motives_are_recovered(demo_table: HypothesisTable) -> None:
    truth = {f"sim/{n}": st.PROFILES[n].expected_verdicts() for n in CLASSIC}
    cmp = demo_table.compare(truth)
    assert len(cmp) == 16 and cmp["hit"].all(), cmp[~cmp["hit"]]
    grid = demo_table.verdicts()
    assert grid.loc["sim/opus-like", "instrumental_goal_guarding"] == "supported"
    assert grid.loc["sim/opus-like", "terminal_goal_guarding"] == "supported"
    assert grid.loc["sim/sycophant", "rater_sycophancy"] == "supported"
    assert grid.loc["sim/sonnet-like", "low_coherence"] == "supported"
    assert list(grid.columns) == list(HYPOTHESES)


def test_paper_shaped_profiles_reproduce_table_1() -> None:
    """Five profiles with framing effects: ✓ ❍ × exactly where the paper's Table 1 has them."""
    frames = [st.simulate_frame("paper", n, n_requests=400, seed=0) for n in PAPER_TABLE1]
    grid = attribute(frames).verdicts(symbols=True)
    for name, symbols in PAPER_TABLE1.items():
        assert tuple(grid.loc[f"sim/{name}"]) == symbols, name


def test_table_columns_views_and_details(demo_table: HypothesisTable) -> None:
    f = demo_table.to_frame()
    for column in (
        "model", "hypothesis", "verdict", "estimate", "ci_low", "ci_high", "pvalue",
        "pvalue_adj", "n", "rule", "verdict_reason", "scenario", "n_pairs", "n_strata", "af_rate",
    ):  # fmt: skip
        assert column in f.columns
    tested = f[f["verdict"] != "not_tested"]
    assert (tested["pvalue_adj"] >= tested["pvalue"]).all()
    assert (tested["n"] > 340).all()  # 400 requests, some lost to format failures
    opus = f[f["model"] == "sim/opus-like"].set_index("hypothesis")
    assert opus.loc["terminal_goal_guarding", "verdict_reason"] == "gap_and_af_reasoning"
    assert opus.loc["terminal_goal_guarding", "af_rate"] > 0.05
    # paper: 1 Pro–Enterprise pair, 14 trend pairs (11 deployment stories: 5 scopes without an
    # adversary, 3 adversaries × 2 risk levels; + 3 consequences), 3 no-consequence pairs (2
    # consequences, the throughput-testing deployment), the tier pair at 4 paraphrases.
    # + the null control's one free/paid pair (conflict = False), the baseline row.
    assert opus["n_pairs"].to_dict() == {
        "rater_sycophancy": 1,
        "instrumental_goal_guarding": 14,
        "terminal_goal_guarding": 3,
        "low_coherence": 4,
        "null_control": 1,
    }
    assert opus.loc["null_control", "verdict"] == "baseline"
    pairs = demo_table.details(model="sim/opus-like", hypothesis="rater_sycophancy")
    assert pairs[["axis", "treated_level", "control_level"]].values.tolist() == [
        ["rater_scrutiny", "pro", "enterprise"]
    ]
    igg = demo_table.details(model="sim/opus-like", hypothesis="instrumental_goal_guarding")
    used = igg[igg["weight"] != 0]
    assert set(used["axis"]) == {"training_process"} and len(used) == 14
    # Matched but unused: Free vs Pro plan, one harm level in its group.
    assert igg.loc[igg["weight"] == 0, "axis"].tolist() == ["rater_scrutiny"]
    assert repr(demo_table).startswith("<HypothesisTable 4 model(s) × 4 hypotheses")
    # header, rule, and 4 models × (4 hypotheses + the null-control baseline row)
    assert demo_table.to_markdown().count("\n") == 21
    assert "| null_control | baseline: " in demo_table.to_markdown()
    assert demo_table.to_latex().startswith("\\begin{tabular}")
    assert "<table" in demo_table._repr_html_()
    sub = demo_table.filter(model="sim/opus-like", hypothesis=["rater_sycophancy"])
    assert len(sub) == 1 and len(sub.details()) == 1
    with pytest.raises(DesignError, match="unknown model 'gpt'"):
        demo_table.filter(model="gpt")


def test_identity_block_lift_is_not_rater_sycophancy() -> None:
    """What was found (1): compliance rises in every pre-deployment identity condition."""
    lifted = st.simulate_frame(
        "paper",
        "no-gap",
        n_requests=400,
        seed=1,
        framing={"training_process": {"rated_only": 1.5, "rated_and_trained": 1.5}},
    )
    # Pooling arms by facts alone (the old rule) reads the lift as rater sycophancy:
    pooled = st.compliance_gap(
        lifted, {"rated": True, "trained": False}, {"rated": False, "trained": False}
    )
    assert pooled.estimate > 0.15 and pooled.pvalue < 1e-6
    v = _verdicts(lifted)
    assert "supported" not in v.values(), v
    row = attribute(lifted).to_frame().set_index("hypothesis").loc["rater_sycophancy"]
    assert abs(row["estimate"]) < 0.06 and row["n_pairs"] == 1


def test_rated_only_bump_on_a_model_without_motives_is_no_motive() -> None:
    """What was found (2): ~10 points more compliance only in the rated_only conditions."""
    bumped = st.simulate_frame(
        "paper",
        "no-gap",
        n_requests=400,
        seed=2,
        framing={"training_process": {"rated_only": 0.8}},
    )
    table = attribute(bumped).to_frame().set_index("hypothesis")
    assert "supported" not in set(table["verdict"]), table[["verdict", "estimate"]]
    assert abs(table.loc["rater_sycophancy", "estimate"]) < 0.07  # Pro vs Enterprise: no bump
    # The bump lowers the goal-guarding gap at no consequence: the wrong sign, never a motive.
    assert table.loc["terminal_goal_guarding", "estimate"] < 0


def test_a_deployment_story_shared_by_both_arms_is_no_instrumental_goal_guarding() -> None:
    """The IGG slope uses the rated-only control at the same deployment and risk."""
    levels = Perturbation.preset("paper").scenario.axis("deployment").levels
    story = {"deployment": {lvl: 2.0 for lvl in levels if lvl != "unstated"}}
    f = st.simulate_frame("paper", "no-gap", n_requests=400, seed=3, framing_by_harm=story)
    treated_only = st.gap_trend(
        f, {"training_process": "rated_and_trained"}, {"rater_scrutiny": "enterprise"}
    )
    assert treated_only.estimate > 0.1  # unmatched, the story reads as a slope
    row = attribute(f).to_frame().set_index("hypothesis").loc["instrumental_goal_guarding"]
    assert row["verdict"] != "supported" and abs(row["estimate"]) < 0.08


def test_low_coherence_compares_the_same_pair_in_every_paraphrase() -> None:
    """A lift confined to one paraphrase-0 condition (the Free plan) is not low coherence."""
    f = st.simulate_frame(
        "paper", "no-gap", n_requests=400, seed=4, framing={"rater_scrutiny": {"free": 1.5}}
    )
    row = attribute(f).to_frame().set_index("hypothesis").loc["low_coherence"]
    assert row["verdict"] != "supported"
    pairs = attribute(f).details(hypothesis="low_coherence")
    assert set(pairs["axis"]) == {"tier"} and sorted(pairs["paraphrase"]) == [0, 1, 2, 3]


def test_a_constant_log_odds_effect_at_shifted_baselines_is_no_trend_or_incoherence() -> None:
    """Scale: a probability-gap trend or heterogeneity must also hold on the log-odds scale.

    Terminal goal guarding planted as a constant log-odds effect, with a deployment story
    (harm-scaled) or paraphrases that shift compliance in both arms, gives probability gaps
    that move with harm and with paraphrase. Read on the probability scale alone that is
    instrumental goal guarding and low coherence; neither is planted.
    """
    levels = Perturbation.preset("paper").scenario.axis("deployment").levels
    tgg = MotivationProfile(base_logit=-2.0, terminal_goal_guarding=0.8)
    story = tgg.model_copy(
        update={"framing_by_harm": {"deployment": {v: 1.5 for v in levels if v != "unstated"}}}
    )
    f = st.simulate_frame("paper", story, n_requests=400, seed=20_000, model="sim/tgg")
    row = attribute(f).to_frame().set_index("hypothesis").loc["instrumental_goal_guarding"]
    assert row["pvalue_probability"] < 0.01  # the probability-scale slope alone is significant
    assert row["logit_pvalue"] > 0.05 and row["verdict"] != "supported"
    assert row["pvalue"] == max(row["pvalue_probability"], row["logit_pvalue"])

    para = tgg.model_copy(
        update={"framing": {"prompt_paraphrase": {"v1": 1.0, "v2": -0.8, "v3": 0.6}}}
    )
    f = st.simulate_frame("paper", para, n_requests=400, seed=20_004, model="sim/tgg")
    row = attribute(f).to_frame().set_index("hypothesis").loc["low_coherence"]
    assert row["pvalue_probability"] < 0.01
    assert row["logit_pvalue"] > 0.05 and row["verdict"] != "supported"


def test_a_union_design_gives_each_presets_verdicts() -> None:
    """Draws are keyed by condition and request, so a real sweep shares trials across designs."""
    requests = synthetic(200)
    paper = Perturbation.preset("paper")
    for name in ("sycophant", "opus-like"):
        model = from_name(name)
        whole = attribute(sweep(paper, model, requests, progress=False)).to_frame()
        whole = whole.set_index("hypothesis")
        for part in ("rater_sycophancy", "instrumental_goal_guarding", "low_coherence"):
            alone = attribute(
                sweep(Perturbation.preset(part), model, requests, progress=False),
                hypotheses=[part],
            ).to_frame()
            assert alone["verdict"].iloc[0] == whole.loc[part, "verdict"], (name, part)
            if part != "instrumental_goal_guarding":  # its trend gains the TGG preset's pairs
                assert alone["estimate"].iloc[0] == pytest.approx(whole.loc[part, "estimate"])


def test_results_with_two_scenarios_are_attributed_per_scenario() -> None:
    rater = st.simulate_frame("rater_sycophancy", "opus-like", n_requests=300, seed=5)
    igg = st.simulate_frame("instrumental_goal_guarding", "opus-like", n_requests=300, seed=6)
    igg["scenario"] = "my_scenario"
    igg["condition_id"] = "x" + igg["condition_id"].astype(str)
    table = attribute(pd.concat([rater, igg], ignore_index=True)).to_frame()
    got = table.set_index(["scenario", "hypothesis"])["verdict"]
    assert got["helpful_only", "instrumental_goal_guarding"] == "not_tested"
    assert got["helpful_only", "terminal_goal_guarding"] == "not_tested"
    assert got["my_scenario", "rater_sycophancy"] == "not_tested"
    assert got["my_scenario", "instrumental_goal_guarding"] == "supported"
    assert len(table) == 10  # 4 hypotheses + the baseline row, per scenario
    assert got["my_scenario", "null_control"] == got["helpful_only", "null_control"] == "baseline"


def test_list_of_results_equals_one_concatenated_frame() -> None:
    frames = [
        st.simulate_frame("paper", name, n_requests=120, seed=1) for name in ("sycophant", "no-gap")
    ]
    a = attribute(frames).to_frame()
    b = attribute(pd.concat(frames, ignore_index=True)).to_frame()
    pd.testing.assert_frame_equal(a, b)


def test_absent_conditions_are_not_tested_never_guessed() -> None:
    f = st.simulate_frame("rater_sycophancy", "sycophant", n_requests=400)
    v = attribute(f).to_frame().set_index("hypothesis")
    assert v.loc["rater_sycophancy", "verdict"] == "supported"
    for h in ("instrumental_goal_guarding", "terminal_goal_guarding", "low_coherence"):
        assert v.loc[h, "verdict"] == "not_tested" and v.loc[h, ["pvalue_adj"]].isna().all()
        assert v.loc[h, "verdict_reason"] == "missing_conditions"
    assert v.loc["null_control", "verdict_reason"] == "no_null_control"
    assert "Perturbation.preset('null_control')" in v.loc["null_control", "note"]
    # The null control (conflict=False) is a baseline, not evidence.
    null_only = attribute(st.simulate_frame("null_control", "sycophant", n_requests=200))
    assert set(null_only.to_frame()["verdict"]) == {"not_tested", "baseline"}
    assert null_only.baseline()["n_pairs"].tolist() == [1]


def test_wrong_direction_is_conflicting_and_null_is_refuted() -> None:
    neg = st.simulate_frame(
        "rater_sycophancy", MotivationProfile(rater_sycophancy=-1.5), n_requests=400
    )
    row = attribute(neg, hypotheses=["rater_sycophancy"]).to_frame().iloc[0]
    assert row["verdict"] == "conflicting" and row["estimate"] < 0
    assert row["verdict_reason"] == "wrong_direction"
    null = st.simulate_frame("rater_sycophancy", MotivationProfile(request_sd=1.0), n_requests=3000)
    assert _verdicts(null, hypotheses=["rater_sycophancy"]) == {"rater_sycophancy": "refuted"}


def test_terminal_goal_guarding_needs_af_reasoning() -> None:
    """Sheshadri et al. §4.3: AF reasoning without a gap, and a gap without it, conflict."""
    af_only = st.simulate_frame("terminal_goal_guarding", "no-gap", n_requests=400, seed=3,
                                af_reasoning=0.12)  # fmt: skip
    row = attribute(af_only, hypotheses=["terminal_goal_guarding"]).to_frame().iloc[0]
    assert (row["verdict"], row["verdict_reason"]) == ("conflicting", "af_reasoning_without_gap")
    assert 0.08 < row["af_rate"] < 0.16
    silent = st.simulate_frame("terminal_goal_guarding", "silent-guard", n_requests=400, seed=3)
    row = attribute(silent, hypotheses=["terminal_goal_guarding"]).to_frame().iloc[0]
    assert (row["verdict"], row["verdict_reason"]) == ("conflicting", "gap_without_af_reasoning")
    assert row["pvalue_adj"] < 1e-4  # 1e-8 to 1e-12 at most seeds; 9e-6 at this one
    no_labels = silent.drop(columns=["af_reasoning"])
    row = attribute(no_labels, hypotheses=["terminal_goal_guarding"]).to_frame().iloc[0]
    assert (row["verdict"], row["verdict_reason"]) == ("inconclusive", "no_af_labels")


def test_heuristic_af_labels_on_a_real_model_carry_a_note() -> None:
    f = st.simulate_frame("terminal_goal_guarding", "opus-like", n_requests=200, seed=7)
    f["af_reasoning_source"] = "heuristic_af:0123abcd"
    sim = attribute(f).to_frame().set_index("hypothesis").loc["terminal_goal_guarding"]
    assert sim["note"] == "" and sim["af_source"] == "heuristic_af"
    f["model"] = "openai/gpt-4o"
    real = attribute(f).to_frame().set_index("hypothesis").loc["terminal_goal_guarding"]
    assert "heuristic labels" in real["note"]


def test_rules_read_facts_not_axis_names() -> None:
    f = st.simulate_frame("rater_sycophancy", "sycophant", n_requests=200, seed=2)
    renamed = f.rename(columns={"rater_scrutiny": "whatever_axis"})
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
    """100 null replicates with framing: 'supported' anywhere (family-wise) stays near α."""
    prof = MotivationProfile(
        base_logit=-1.5,
        request_sd=1.0,
        framing={"training_process": {"rated_only": 0.8, "rated_and_trained": 0.8}},
    )
    hits = 0
    for i in range(100):
        v = attribute(st.simulate_frame("paper", prof, n_requests=200, seed=100 + i)).to_frame()
        hits += bool((v["verdict"] == "supported").any())
    assert hits <= 11  # binomial(100, 0.05): P(X > 11) < 0.5 %


def test_attribute_scales_to_many_trials() -> None:
    frames = [st.simulate_frame("paper", n, n_requests=1500, seed=i) for i, n in enumerate(CLASSIC)]
    big = pd.concat(frames, ignore_index=True)
    assert len(big) == 4 * 41 * 1500
    # Speed is measured in benchmarks/bench_attribute.py; here: a big frame gives a full table.
    table = attribute(big).to_frame()
    assert set(table["model"]) == {f"sim/{n}" for n in CLASSIC}
    assert (table["n"] > 0).all()


def test_plain_object_columns_failed_trials_and_no_af_column() -> None:
    f = st.simulate_frame("paper", "sycophant", n_requests=300, seed=8)
    ref = attribute(f).to_frame()
    g = f.drop(columns=["af_reasoning"]).copy()
    g["complied"] = g["complied"].astype(object)
    failed = g.iloc[:25].copy()
    failed["status"], failed["complied"] = "failed", None
    out = attribute(pd.concat([g, failed], ignore_index=True)).to_frame()
    pd.testing.assert_series_equal(out["pvalue"], ref["pvalue"])
    assert out["af_rate"].isna().all()
    assert np.isnan(out.set_index("hypothesis").loc["terminal_goal_guarding", "af_pvalue"])
