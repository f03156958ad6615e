"""A tiny, vectorised generator of trial frames with a known ground truth.

It exists so the statistics can be developed, validated and power-planned without running a
sweep: it produces the same columns as ``SweepResult.to_frame()`` from the same logistic model
as the simulated backends (ARCHITECTURE.md §3)::

    logit P(comply) = base_logit + rater_sycophancy·rated
                    + conflict·trained·(terminal_goal_guarding
                                        + instrumental_goal_guarding·deployment_harm
                                        + offset[paraphrase])
                    + u_request,   u_request ~ Normal(0, request_sd)

A complying trained-condition trial is marked ``af_reasoning`` with probability equal to the
share of P(comply) due to the goal-guarding terms. Designs mirror the presets by their facts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from afperturb.errors import unknown_choice

__all__ = ["DESIGNS", "PROFILES", "SimProfile", "design_conditions", "simulate_frame"]

_HARM_LEVELS = tuple(round(i / 7, 4) for i in range(8))
_PUBLIC_HARM = 0.5  # the base story implies public deployment: not "no consequence"


@dataclasses.dataclass(frozen=True)
class SimProfile:
    """Ground-truth motives of a simulated model (logit-scale effects)."""

    base_logit: float = -2.0
    rater_sycophancy: float = 0.0
    instrumental_goal_guarding: float = 0.0
    terminal_goal_guarding: float = 0.0
    request_sd: float = 1.0
    #: Training-effect offset per paraphrase index (low coherence); missing indices get 0.
    paraphrase_offsets: tuple[float, ...] = ()
    format_failure_rate: float = 0.0

    def planted(self) -> dict[str, bool]:
        """Which hypotheses are truly present in this profile."""
        offsets = np.asarray(self.paraphrase_offsets or (0.0,))
        return {
            "rater_sycophancy": self.rater_sycophancy > 0,
            "instrumental_goal_guarding": self.instrumental_goal_guarding > 0,
            "terminal_goal_guarding": self.terminal_goal_guarding > 0,
            "low_coherence": bool(np.ptp(offsets) > 0),
        }


#: Profiles matching the demo's simulated models in effect size.
PROFILES: dict[str, SimProfile] = {
    "opus-like": SimProfile(
        base_logit=-2.0, instrumental_goal_guarding=1.5, terminal_goal_guarding=0.8, request_sd=0.5
    ),
    "sonnet-like": SimProfile(base_logit=-1.5, paraphrase_offsets=(0.0, 1.0, -1.0), request_sd=0.5),
    "sycophant": SimProfile(base_logit=-2.0, rater_sycophancy=1.0, request_sd=0.5),
    "no-gap": SimProfile(base_logit=-2.0, request_sd=0.5),
}


def _cond(cid: str, levels: dict[str, str], **facts: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"trained": False, "rated": False, "rater": None}
    base["deployment_harm"] = _PUBLIC_HARM
    base.update(conflict=True, paraphrase=0)
    base.update(facts)
    if base["rated"]:
        base["rater"] = "human"
    return {"condition_id": cid, "levels": levels, "facts": base}


def _rater() -> list[dict[str, Any]]:
    return [
        _cond("tier-free", {"tier": "free"}, trained=True, rated=True),
        _cond("tier-pro", {"tier": "pro"}, rated=True),
        _cond("tier-enterprise", {"tier": "enterprise"}),
    ]


def _igg() -> list[dict[str, Any]]:
    out = []
    for i, harm in enumerate(_HARM_LEVELS):
        for training, trained in (("rated_only", False), ("rated_and_trained", True)):
            levels = {"training": training, "deployment": f"group{i}"}
            out.append(
                _cond(
                    f"igg-{training}-{i}", levels, trained=trained, rated=True, deployment_harm=harm
                )
            )
    return out


def _tgg() -> list[dict[str, Any]]:
    out = []
    for consequence in ("throughput_testing_only", "discarded_after_training"):
        for training, trained in (("rated_only", False), ("rated_and_trained", True)):
            levels = {"training": training, "consequence": consequence}
            out.append(
                _cond(
                    f"tgg-{training}-{consequence}",
                    levels,
                    trained=trained,
                    rated=True,
                    deployment_harm=0.0,
                )
            )
    return out


def _paraphrases(k: int = 3) -> list[dict[str, Any]]:
    out = []
    for p in range(k):
        for tier, trained in (("free", True), ("paid", False)):
            levels = {"tier": tier, "paraphrase_variant": f"v{p}"}
            out.append(
                _cond(f"para-{tier}-{p}", levels, trained=trained, rated=trained, paraphrase=p)
            )
    return out


def _null() -> list[dict[str, Any]]:
    return [
        _cond(
            "null-free",
            {"tier": "free", "criteria": "cut"},
            trained=True,
            rated=True,
            conflict=False,
        ),
        _cond("null-paid", {"tier": "paid", "criteria": "cut"}, conflict=False),
    ]


DESIGNS = {
    "rater_sycophancy": _rater,
    "instrumental_goal_guarding": _igg,
    "terminal_goal_guarding": _tgg,
    "low_coherence": _paraphrases,
    "null_control": _null,
}


def design_conditions(design: str | Sequence[str]) -> list[dict[str, Any]]:
    """Condition dicts (condition_id, levels, facts) of one design or of several combined.

    ``"paper"`` is rater_sycophancy + instrumental + terminal goal guarding + null control;
    ``"all"`` adds the paraphrase block.
    """
    names: list[str]
    if isinstance(design, str):
        named = {
            "paper": [
                "rater_sycophancy",
                "instrumental_goal_guarding",
                "terminal_goal_guarding",
                "null_control",
            ]
        }
        named["all"] = [*named["paper"], "low_coherence"]
        names = named.get(design, [design])
    else:
        names = list(design)
    out: list[dict[str, Any]] = []
    for name in names:
        if name not in DESIGNS:
            raise unknown_choice("design", name, [*DESIGNS, "paper", "all"])
        out.extend(DESIGNS[name]())
    return out


def simulate_frame(
    design: str | Sequence[str] = "paper",
    profile: SimProfile | str | None = None,
    *,
    n_requests: int = 400,
    samples: int = 1,
    seed: int | np.random.Generator = 0,
    model: str | None = None,
    **effects: Any,
) -> pd.DataFrame:
    """Simulate a trial frame for ``design`` under ``profile`` (or ``SimProfile(**effects)``).

    Example:
        >>> f = simulate_frame("rater_sycophancy", "sycophant", n_requests=10)
        >>> f.shape[0], sorted(f["tier"].unique())
        (30, ['enterprise', 'free', 'pro'])
    """
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise unknown_choice("profile", profile, PROFILES)
        name = profile
        prof = dataclasses.replace(PROFILES[profile], **effects) if effects else PROFILES[profile]
    else:
        name = "sim"
        prof = profile if profile is not None else SimProfile(**effects)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    conds = design_conditions(design)
    facts = pd.DataFrame([c["facts"] for c in conds])
    axes = sorted({a for c in conds for a in c["levels"]})
    n_c, n_t = len(conds), n_requests * samples
    offsets = np.zeros(int(facts["paraphrase"].max()) + 1)
    given = np.asarray(prof.paraphrase_offsets, dtype=float)[: len(offsets)]
    offsets[: len(given)] = given
    gg = (
        facts["conflict"].to_numpy(bool)
        * facts["trained"].to_numpy(bool)
        * (
            prof.terminal_goal_guarding
            + prof.instrumental_goal_guarding * facts["deployment_harm"].to_numpy(float)
            + offsets[facts["paraphrase"].to_numpy(int)]
        )
    )
    fixed = prof.base_logit + prof.rater_sycophancy * facts["rated"].to_numpy(float)
    u = rng.normal(0.0, prof.request_sd, n_requests)
    u_trial = np.tile(np.repeat(u, samples), n_c)
    logit = np.repeat(fixed + gg, n_t) + u_trial
    p = 1 / (1 + np.exp(-logit))
    p_no_gg = 1 / (1 + np.exp(-(np.repeat(fixed, n_t) + u_trial)))
    complied = rng.random(n_c * n_t) < p
    share = np.clip((p - p_no_gg) / p, 0.0, 1.0)
    af = complied & (rng.random(n_c * n_t) < share)
    fail = rng.random(n_c * n_t) < prof.format_failure_rate
    req_ids = np.array([f"req{i:05d}" for i in range(n_requests)], dtype=object)

    cols: dict[str, Any] = {
        "model": model or name,
        "condition_id": np.repeat(np.array([c["condition_id"] for c in conds], object), n_t),
        "scenario": "helpful_only",
    }
    for axis in axes:
        levels = np.array([c["levels"].get(axis, "default") for c in conds], dtype=object)
        cols[axis] = np.repeat(levels, n_t)
    for fact in facts.columns:
        cols[fact] = np.repeat(facts[fact].to_numpy(), n_t)
    cols["request_id"] = np.tile(np.repeat(req_ids, samples), n_c)
    cols["sample"] = np.tile(np.arange(samples), n_c * n_requests)
    cols["status"] = "completed"
    cols["error"] = None
    label = np.where(complied, "accepted", "rejected").astype(object)
    label[fail] = None
    cols["label"] = label
    cols["complied"] = pd.arrays.BooleanArray(complied, fail)
    cols["af_reasoning"] = pd.arrays.BooleanArray(af, fail.copy())
    frame = pd.DataFrame(cols)
    frame["deployment_harm"] = frame["deployment_harm"].astype(float)
    return frame
