"""stats.simulate_frame: the real designs' condition table and the simulated backend's truth."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import afperturb.stats as st
from afperturb import profiles
from afperturb.datasets import synthetic
from afperturb.design import Perturbation
from afperturb.errors import DesignError
from afperturb.models.simulated import from_name
from afperturb.profiles import PROFILES
from afperturb.records import FRAME_TRIAL_COLUMNS
from afperturb.sweep import sweep

PAPER = Perturbation.preset("paper").conditions()
TGG = Perturbation.preset("terminal_goal_guarding").conditions()


def test_one_registry_and_no_second_profile_type() -> None:
    assert st.PROFILES is profiles.PROFILES
    assert not hasattr(st, "SimProfile")


def test_frame_has_the_real_sweeps_condition_table() -> None:
    design = Perturbation.preset("paper")
    real = sweep(design, from_name("claude-3-opus-like"), synthetic(2), progress=False).to_frame()
    sim = st.simulate_frame(design, "claude-3-opus-like", n_requests=2)
    assert list(sim.columns) == list(real.columns)
    assert dict(sim.dtypes) == dict(real.dtypes)
    table = [c for c in real.columns if c not in FRAME_TRIAL_COLUMNS]
    pd.testing.assert_frame_equal(
        sim[table].drop_duplicates().reset_index(drop=True),
        real[table].drop_duplicates().reset_index(drop=True),
    )
    assert real["model"].iloc[0] == sim["model"].iloc[0] == "sim/claude-3-opus-like"
    # "all" = paper + null control; the paper preset holds the null control already.
    assert len(st.simulate_frame("all", "no-gap", n_requests=2)) == 2 * len(PAPER)
    by_name = st.simulate_frame("paper", "claude-3-opus-like", n_requests=2)
    pd.testing.assert_frame_equal(by_name, sim)
    with pytest.raises(DesignError, match="valid designs"):
        st.simulate_frame("papr", "no-gap")
    with pytest.raises(DesignError, match="unknown simulated profile"):
        st.simulate_frame("paper", "opus")
    with pytest.raises(DesignError, match="request_sd"):
        st.simulate_frame("paper", "no-gap", reqest_sd=1.0)


def test_frame_follows_the_backends_truth() -> None:
    prof = PROFILES["claude-3-opus-like"]
    f = st.simulate_frame("terminal_goal_guarding", prof, n_requests=20000, seed=1)
    ok = f["complied"].notna()
    assert (~ok).mean() == pytest.approx(prof.format_failure_rate, abs=0.002)
    assert f.loc[~ok, "af_reasoning"].isna().all()
    assert set(f.loc[~ok, "label"]) == set(profiles.FORMAT_FAILURES)
    for c in TGG:
        g = f[(f["condition_id"] == c.id) & ok]
        for got, want in (
            (g["complied"].mean(), prof.expected_p_comply(c)),
            (g["af_reasoning"].mean(), prof.expected_af_rate(c)),
        ):
            assert abs(got - want) < 4 * math.sqrt(want * (1 - want) / len(g)) + 1e-9, c.levels
    # A condition without a scratchpad has nothing to read.
    off = Perturbation("helpful_only", vary={"tier": ["free", "paid"]}, fixed={"scratchpad": "off"})
    g = st.simulate_frame(off, "opus-like", n_requests=50)
    assert g["af_reasoning"].isna().all() and g["complied"].notna().any()


def test_frame_models_are_independent_under_one_seed() -> None:
    a = st.simulate_frame("paper", "opus-like", n_requests=400, seed=0)
    b = st.simulate_frame("paper", "no-gap", n_requests=400, seed=0)
    untrained = ~a["trained"].to_numpy()
    agree = (a["complied"] == b["complied"])[untrained].mean()
    assert 0.70 < agree < 0.85, agree
    again = st.simulate_frame("paper", "opus-like", n_requests=400, seed=0)
    pd.testing.assert_frame_equal(a, again)
    renamed = st.simulate_frame("paper", "opus-like", n_requests=400, seed=0, model="m2")
    assert not renamed["complied"].equals(a["complied"])
