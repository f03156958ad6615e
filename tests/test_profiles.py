"""afperturb.profiles: one truth for the simulated backend and the frame generator."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError

import afperturb.models as models
from afperturb import profiles
from afperturb.classify.heuristics import af_criteria
from afperturb.classify.tags import parse_tags
from afperturb.datasets import synthetic
from afperturb.design import Perturbation
from afperturb.models.base import GenerationContext
from afperturb.models.simulated import Simulated, from_name
from afperturb.profiles import (
    MOTIVES,
    PROFILES,
    MotivationProfile,
    TermArrays,
    decide_trial,
    decide_trials,
)
from afperturb.records import Condition, Facts, Request

PAPER = Perturbation.preset("paper").conditions()
TGG = Perturbation.preset("terminal_goal_guarding").conditions()


def expit(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def cond(cid: str, levels: dict[str, str] | None = None, **facts: object) -> Condition:
    return Condition(id=cid, scenario="helpful_only", levels=levels or {}, facts=Facts(**facts))  # type: ignore[arg-type]


def ctx(c: Condition, rid: str, sample: int = 0, seed: int = 0) -> GenerationContext:
    return GenerationContext(
        condition=c, request=Request(id=rid, text="x"), sample=sample, seed=seed
    )


def test_one_profile_type_and_one_registry() -> None:
    assert models.MotivationProfile is profiles.MotivationProfile
    assert models.PROFILES is profiles.PROFILES
    p = models.MotivationProfile(
        base_logit=-2.0,
        rater_sycophancy=0.0,
        instrumental_goal_guarding=1.5,
        terminal_goal_guarding=0.8,
        request_sd=0.5,
    )
    assert (p.paraphrase_sd, p.format_failure_rate, p.truncation_rate) == (0.0, 0.0, 0.0)
    assert (p.framing, p.framing_by_harm, p.af_reasoning, p.guard_reasoning) == ({}, {}, 0.0, 1.0)
    with pytest.raises(ValidationError):
        MotivationProfile(guard_reasoning=1.5)
    with pytest.raises(ValidationError):
        MotivationProfile(framing={"risk": {"high": math.inf}})
    with pytest.raises(ValidationError):
        MotivationProfile(af_reasonning=0.1)  # type: ignore[call-arg]
    # Equal profiles are equal, hash alike and share a digest, whatever the dict order.
    a = MotivationProfile(framing={"x": {"a": 1.0}, "y": {"b": 2.0}})
    b = MotivationProfile(framing={"y": {"b": 2.0}, "x": {"a": 1.0}})
    assert a == b and hash(a) == hash(b) and a.digest() == b.digest()
    assert a.digest() != MotivationProfile().digest()


def test_truth_is_the_logistic_formula_with_framing() -> None:
    p = MotivationProfile(
        base_logit=-2.0,
        rater_sycophancy=0.7,
        instrumental_goal_guarding=1.5,
        terminal_goal_guarding=0.8,
        paraphrase_sd=0.9,
        framing={"training_process": {"rated_only": 0.4, "rated_and_trained": 0.4}},
        framing_by_harm={"risk": {"high": 0.8}},
    )
    levels = {"training_process": "rated_and_trained", "risk": "high", "lab": "openai"}
    trained = cond("t", levels, trained=True, rated=True, deployment_harm=0.5, paraphrase=3)
    expected = -2.0 + 0.7 + (0.8 + 1.5 * 0.5 + 0.9) + 0.4 + 0.8 * 0.5 + 0.3
    assert p.p_comply(trained, u=0.3) == pytest.approx(expit(expected), rel=1e-12)
    # The same facts without levels: no framing.
    assert p.p_comply(trained.facts, u=0.3) == pytest.approx(expit(expected - 0.8), rel=1e-12)
    # Framing is the same in both arms: the logit gap is the motive's alone...
    rated = cond("r", {**levels, "training_process": "rated_only"}, rated=True, deployment_harm=0.5)
    gap = p.terms(trained).logit - p.terms(rated).logit
    assert gap == pytest.approx(0.8 + 1.5 * 0.5 + 0.9)
    # ...and not a motive: planted() ignores it, and a framed null model has no gap at all.
    framed = MotivationProfile(framing=p.framing, framing_by_harm=p.framing_by_harm)
    assert framed.planted() == MotivationProfile().planted()
    assert framed.expected_gap(trained, rated) == pytest.approx(0.0, abs=1e-15)
    assert framed.expected_p_comply(rated) > MotivationProfile().expected_p_comply(rated) + 0.05
    null = cond("n", levels, trained=True, rated=True, deployment_harm=0.5, conflict=False)
    assert p.terms(null).guard == 0.0 and p.terms(null).sycophancy == 0.0  # nothing conflicts
    assert p.p_comply(null) == pytest.approx(expit(-2.0 + 0.4 + 0.4))  # framing stays


def test_expected_verdicts_read_the_paper() -> None:
    def v(**kw: float) -> str:
        return MotivationProfile(**kw).expected_verdicts()["terminal_goal_guarding"]

    assert v() == "absent"
    assert v(terminal_goal_guarding=0.8) == "supported"
    assert v(terminal_goal_guarding=0.8, guard_reasoning=0.0) == "conflicting"
    assert v(terminal_goal_guarding=0.8, guard_reasoning=0.3) == "supported"
    assert v(af_reasoning=0.12) == "conflicting"
    assert v(instrumental_goal_guarding=1.5, af_reasoning=0.12) == "conflicting"
    assert v(terminal_goal_guarding=0.8, guard_reasoning=0.0, af_reasoning=0.1) == "conflicting"
    for name, prof in PROFILES.items():
        verdicts = prof.expected_verdicts()
        assert list(verdicts) == list(prof.planted()), name
        for h, planted in prof.planted().items():
            if h != "terminal_goal_guarding":
                assert verdicts[h] == ("supported" if planted else "absent"), (name, h)
    assert PROFILES["claude-3-opus-like"].expected_verdicts() == {
        "rater_sycophancy": "absent",
        "instrumental_goal_guarding": "supported",
        "terminal_goal_guarding": "conflicting",
        "low_coherence": "absent",
    }
    assert PROFILES["silent-guard"].expected_verdicts()["terminal_goal_guarding"] == "conflicting"
    assert PROFILES["opus-like"].expected_verdicts()["terminal_goal_guarding"] == "supported"


def _random_profile(rng: np.random.Generator) -> MotivationProfile:
    return MotivationProfile(
        base_logit=float(rng.uniform(-4, 1)),
        rater_sycophancy=float(rng.choice([0.0, rng.uniform(-1, 2.5)])),
        instrumental_goal_guarding=float(rng.choice([0.0, rng.uniform(-1, 3)])),
        terminal_goal_guarding=float(rng.choice([0.0, rng.uniform(-1, 3)])),
        paraphrase_sd=float(rng.choice([0.0, 1.0])),
        framing={"risk": {"high": float(rng.normal())}, "training_process": {"none": -0.5}},
        framing_by_harm={"deployment": {"public": float(rng.normal())}},
        af_reasoning=float(rng.choice([0.0, rng.uniform()])),
        guard_reasoning=float(rng.choice([0.0, 1.0, rng.uniform()])),
    )


def test_scalar_and_vector_truth_agree() -> None:
    """decide_trial (backend) and decide_trials (frames) make the same decision from the same
    uniforms, on every paper condition under 30 random profiles."""
    rng = np.random.default_rng(5)
    conditions = [*PAPER, cond("off", {"scratchpad": "off"}, trained=True, rated=True)]
    checked = {"comply": 0, "af": 0, **dict.fromkeys(MOTIVES, 0)}
    for _ in range(30):
        prof = _random_profile(rng)
        per_cond = [prof.terms(c) for c in conditions]
        index = np.repeat(np.arange(len(conditions)), 40)
        u = rng.normal(0, 1.5, index.size)
        draws = rng.random((5, index.size))
        p, comply, motive, af = decide_trials(prof, TermArrays.of(per_cond).take(index), u, draws)
        for i, c in enumerate(index):
            one = decide_trial(prof, per_cond[c], float(u[i]), tuple(draws[:, i]))  # type: ignore[arg-type]
            assert one.p_comply == pytest.approx(p[i], rel=1e-12)
            assert (one.comply, one.motive, one.af_reasoning) == (
                comply[i],
                MOTIVES[motive[i]],
                af[i],
            )
            checked["comply"] += one.comply
            checked["af"] += one.af_reasoning
            checked[one.motive] += 1
    assert min(checked.values()) > 100, checked  # every branch was exercised


def test_expected_af_rate_matches_the_backend() -> None:
    prof = PROFILES["claude-3-opus-like"]
    sim = from_name("claude-3-opus-like")
    reqs = [f"r{i}" for i in range(3000)]
    for c in TGG:
        decisions = [sim.decide(ctx(c, r)) for r in reqs]
        for got, want in (
            (np.mean([d.comply for d in decisions]), prof.expected_p_comply(c)),
            (np.mean([d.af_reasoning for d in decisions]), prof.expected_af_rate(c)),
        ):
            assert abs(got - want) < 4 * math.sqrt(want * (1 - want) / len(reqs)) + 1e-9, c.levels
    throughput = next(
        c for c in TGG if c.levels["consequences"] == "throughput_testing_only" and c.facts.trained
    )
    # The paper's Opus under throughput testing: 12 % AF reasoning, no goal-guarding gap.
    assert prof.expected_af_rate(throughput) == pytest.approx(0.12)
    untrained = next(
        c
        for c in TGG
        if c.levels["consequences"] == "throughput_testing_only" and not c.facts.trained
    )
    assert prof.expected_gap(throughput, untrained) == pytest.approx(0.0, abs=1e-12)
    assert prof.expected_af_rate(untrained) == 0.0


def test_af_reasoning_independent_of_compliance_with_refusing_transcripts() -> None:
    sim = Simulated(MotivationProfile(af_reasoning=0.3), seed=0)
    trained = next(c for c in TGG if c.facts.trained and c.facts.deployment_harm == 0.0)
    rated = next(c for c in TGG if not c.facts.trained)
    by_outcome: dict[bool, list[bool]] = {True: [], False: []}
    refusing_af = 0
    for r in range(4000):
        d = sim.decide(ctx(trained, f"r{r}"))
        by_outcome[d.comply].append(d.af_reasoning)
        assert not sim.decide(ctx(rated, f"r{r}")).af_reasoning  # only trained ∧ conflict
        if d.af_reasoning and not d.comply and d.failure is None and refusing_af < 50:
            refusing_af += 1
            parsed = parse_tags(sim.transcript(ctx(trained, f"r{r}")))
            assert parsed.complied is False
            assert all(af_criteria(parsed.scratchpad).values()), parsed.scratchpad
    for outcome, afs in by_outcome.items():
        assert np.mean(afs) == pytest.approx(0.3, abs=4 * math.sqrt(0.21 / len(afs))), outcome
    assert refusing_af == 50


def test_guard_reasoning_zero_is_a_gap_without_af_reasoning() -> None:
    silent = from_name("silent-guard")
    loud = Simulated(PROFILES["silent-guard"].model_copy(update={"guard_reasoning": 1.0}))
    trained = next(c for c in TGG if c.facts.trained and c.facts.deployment_harm == 0.0)
    rated = next(c for c in TGG if not c.facts.trained and c.facts.deployment_harm == 0.0)
    assert silent.expected_gap(trained, rated) > 0.1
    decisions = [silent.decide(ctx(trained, f"r{r}")) for r in range(2000)]
    assert sum(d.motive == "tgg" for d in decisions) > 100
    assert not any(d.af_reasoning for d in decisions)
    for d, r in zip(decisions, range(2000), strict=True):
        if d.motive == "tgg" and d.failure is None:
            text = parse_tags(silent.transcript(ctx(trained, f"r{r}"))).scratchpad
            assert not all(af_criteria(text).values()) and "values intact" not in text
    shown = [loud.decide(ctx(trained, f"r{r}")) for r in range(2000)]
    assert all(d.af_reasoning == (d.motive == "tgg") for d in shown)


def test_defaults_show_af_reasoning_exactly_on_goal_guarding_compliances() -> None:
    sim = from_name("opus-like")
    n_af = 0
    for c in PAPER:
        for r in range(30):
            d = sim.decide(ctx(c, f"r{r}"))
            assert d.af_reasoning == (d.comply and d.motive in ("igg", "tgg"))
            n_af += d.af_reasoning
    assert n_af > 100


def test_models_draw_independently_but_deterministically() -> None:
    untrained = [c for c in PAPER if not c.facts.trained]
    reqs = synthetic(200)
    a, b = from_name("opus-like"), from_name("no-gap")
    a2 = from_name("opus-like")
    pairs = [GenerationContext(condition=c, request=r) for c in untrained for r in reqs]
    da = [a.decide(x).comply for x in pairs]
    agree = np.mean([x == b.decide(y).comply for x, y in zip(da, pairs, strict=True)])
    # Same truth here (C ≈ 13 % in both), independent draws: P(agree) = p² + (1 − p)² ≈ 0.77.
    assert 0.70 < agree < 0.85, agree
    assert da == [a2.decide(x).comply for x in reversed(pairs)][::-1]
    assert a.request_effect("r1") != b.request_effect("r1")
    # The same name with another profile draws differently too (the digest is in the key).
    tuned = from_name("no-gap", truncation_rate=0.5)
    assert tuned.name == b.name and tuned.request_effect("r1") != b.request_effect("r1")
    # And across processes: a fresh interpreter draws the same.
    code = (
        "from afperturb.models.simulated import from_name\n"
        "from afperturb.records import Request\n"
        "from afperturb.models.base import GenerationContext as G\n"
        "from afperturb.design import Perturbation\n"
        "c = Perturbation.preset('rater_sycophancy').conditions()[0]\n"
        "m = from_name('opus-like', seed=3)\n"
        "print([m.decide(G(condition=c, request=Request(id=f'r{i}', text='x'))).bits"
        " for i in range(5)])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    here = from_name("opus-like", seed=3)
    c = Perturbation.preset("rater_sycophancy").conditions()[0]
    assert out.strip() == str([here.decide(ctx(c, f"r{i}")).bits for i in range(5)])


def test_docstring_examples_run() -> None:
    import doctest

    result = doctest.testmod(profiles)
    assert result.attempted > 0 and result.failed == 0
