"""A fast, vectorised generator of trial frames with a known ground truth.

It exists so the statistics can be developed, validated and power-planned without running a
sweep. The conditions are the real designs' (a preset of :mod:`afperturb.design` or any
:class:`~afperturb.design.Perturbation`), laid out exactly as ``SweepResult.to_frame()`` lays
them out (same columns, dtypes and order), and the truth is the simulated backends' own:
:class:`afperturb.profiles.MotivationProfile`'s logistic model with its framing effects, the
motive each compliance states and the AF reasoning of each transcript, drawn by
:func:`afperturb.profiles.decide_trials`, the vectorised twin of the backend's per-trial
decision. Frame and backend follow the same distribution, not the same draws.

What a frame holds per trial, as a sweep with the default classifiers (tags + heuristic AF)
would: ``complied`` and ``af_reasoning`` are the truth for a well-formed reply; a format failure
(``format_failure_rate``) has ``label`` = its tag-classifier name and no verdicts (None); a
condition without a scratchpad has ``af_reasoning`` None (nothing to read). Tokens, latency and
cost are 0, ``cached`` False, every trial ``completed``. Request ids are ``req00000``, ….
Every column of :data:`afperturb.records.FRAME_TRIAL_COLUMNS` is present: a label column's
``<column>_source`` says ``"simulate_frame"`` where the cell has a value, and trial columns the
generator does not model (a judge's error) are None.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from afperturb.classify.outcomes import frame_outcomes
from afperturb.errors import DesignError, unknown_choice
from afperturb.profiles import (
    PROFILES,
    MotivationProfile,
    TermArrays,
    decide_trials,
    failure_kinds,
    key_words,
    resolve_profile,
)
from afperturb.records import FRAME_COLUMNS, FRAME_FACT_COLUMNS, FRAME_TRIAL_COLUMNS, Condition

if TYPE_CHECKING:
    from afperturb.design import Perturbation

__all__ = ["PROFILES", "design_conditions", "simulate_frame"]

#: Design names beyond the presets: ``all`` is the paper preset plus the null control.
_COMBINED = {"all": ("paper", "null_control")}
#: The tag classifier's name for a simulated format failure, where it differs.
_TAG_LABEL = {"unexpected_scratchpad": "scratchpad_in_no_scratchpad"}


@functools.lru_cache(maxsize=32)
def _preset_conditions(name: str) -> tuple[Condition, ...]:
    from afperturb.design import PRESETS, Perturbation  # lazy: stats stays light to import

    if name in _COMBINED:
        parts = [c for part in _COMBINED[name] for c in _preset_conditions(part)]
        return tuple({c.id: c for c in parts}.values())
    if name not in PRESETS:
        raise unknown_choice("design", name, [*PRESETS, *_COMBINED])
    return tuple(Perturbation.preset(name).conditions())


def design_conditions(design: str | Sequence[str] | Perturbation) -> list[Condition]:
    """The conditions of a preset (or ``"all"``), of several presets united, or of a design.

    Example:
        >>> [c.levels["rater_scrutiny"] for c in design_conditions("rater_sycophancy")]
        ['free', 'pro', 'enterprise']
    """
    if isinstance(design, str):
        return list(_preset_conditions(design))
    if isinstance(design, Sequence):
        merged: dict[str, Condition] = {}
        for name in design:
            if not isinstance(name, str):
                raise DesignError(f"a design list holds preset names, got {name!r}")
            for c in _preset_conditions(name):
                merged.setdefault(c.id, c)
        return list(merged.values())
    conditions = getattr(design, "conditions", None)
    if conditions is None:
        raise DesignError(
            f"design must be a preset name, a list of them or a Perturbation, got {design!r}"
        )
    return list(conditions())


def _rng(seed: int | np.random.Generator, model: str, digest: str) -> np.random.Generator:
    """The frame's generator: the seed mixed with the model name and profile digest."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(
        np.random.SeedSequence(int(seed), spawn_key=key_words(model, digest))
    )


def simulate_frame(
    design: str | Sequence[str] | Perturbation = "paper",
    profile: MotivationProfile | str | None = None,
    *,
    n_requests: int = 400,
    samples: int = 1,
    seed: int | np.random.Generator = 0,
    model: str | None = None,
    **overrides: Any,
) -> pd.DataFrame:
    """Simulate a trial frame for ``design`` under ``profile`` (module docstring).

    Args:
        design: a preset name of :data:`afperturb.design.PRESETS` (``"paper"``,
            ``"rater_sycophancy"``, …), ``"all"`` (paper + null control: now the same as
            ``"paper"``, which holds it), a list of preset names (united) or a
            :class:`~afperturb.design.Perturbation`.
        profile: a :class:`~afperturb.profiles.MotivationProfile`, the name of a built-in one
            (:data:`afperturb.profiles.PROFILES`), or None for the null default.
        n_requests: requests per condition (shared by every condition: the design is paired).
        samples: trials per request and condition.
        seed: an integer (mixed with the model name and the profile, so two models are
            independent under one seed) or a Generator to draw from.
        model: the ``model`` column; default ``sim/NAME`` or ``sim/custom-<digest>``, as the
            simulated backend names itself.
        **overrides: profile fields to change (``rater_sycophancy=1.0``).

    Example:
        >>> f = simulate_frame("rater_sycophancy", "sycophant", n_requests=10)
        >>> f.shape[0], sorted(f["rater_scrutiny"].unique()), f["model"].iloc[0]
        (30, ['enterprise', 'free', 'pro'], 'sim/sycophant')
    """
    if n_requests < 1 or samples < 1:
        raise DesignError(f"n_requests and samples must be >= 1, got {n_requests}, {samples}")
    prof, default_name = resolve_profile(profile, overrides)
    name = model if model is not None else default_name
    rng = _rng(seed, name, prof.digest())
    conds = sorted(design_conditions(design), key=lambda c: c.id)  # a sweep frame's order
    n_c, n_t = len(conds), n_requests * samples
    n = n_c * n_t
    cond_of_trial = np.repeat(np.arange(n_c), n_t)
    terms = TermArrays.of([prof.terms(c) for c in conds]).take(cond_of_trial)

    u = (
        rng.normal(0.0, prof.request_sd, n_requests)
        if prof.request_sd > 0
        else np.zeros(n_requests)
    )
    u_trial = np.tile(np.repeat(u, samples), n_c)
    _, complied, _, af = decide_trials(prof, terms, u_trial, rng.random((5, n)))
    fail = rng.random(n) < prof.format_failure_rate
    kinds = [failure_kinds(c.levels) for c in conds]
    n_kinds = np.array([len(k) for k in kinds])[cond_of_trial]
    kind = (rng.random(n) * n_kinds).astype(np.int64)

    label = np.where(complied, "accepted", "rejected").astype(object)
    if fail.any():
        # Every condition's kinds are a prefix of the longest list (FORMAT_FAILURES first).
        longest = max(kinds, key=len)
        names = np.array([_TAG_LABEL.get(k, k) for k in longest], dtype=object)
        label[fail] = names[kind[fail]]
    no_reading = fail | ~terms.scratchpad

    width = max(5, len(str(n_requests - 1)))
    req_ids = np.array([f"req{i:0{width}d}" for i in range(n_requests)], dtype=object)
    cols: dict[str, Any] = {"model": np.full(n, name, dtype=object)}
    cols.update(_condition_columns(conds, cond_of_trial))
    trial: dict[str, Any] = {
        "request_id": np.tile(np.repeat(req_ids, samples), n_c),
        "sample": np.tile(np.arange(samples, dtype=np.int64), n_c * n_requests),
        "status": np.full(n, "completed", dtype=object),
        "error": np.full(n, None, dtype=object),
        "label": _objects(label),
        "complied": pd.arrays.BooleanArray(complied, fail),
        "af_reasoning": pd.arrays.BooleanArray(af, no_reading),
        # No partial-compliance judge here: compliance is not split into partial and full.
        "partial": pd.arrays.BooleanArray(np.zeros(n, dtype=bool), np.ones(n, dtype=bool)),
        "input_tokens": np.zeros(n, dtype=np.int64),
        "output_tokens": np.zeros(n, dtype=np.int64),
        "cache_read_tokens": np.zeros(n, dtype=np.int64),
        "cache_write_tokens": np.zeros(n, dtype=np.int64),
        "latency_s": np.zeros(n),
        "cost_usd": np.zeros(n),
        "cached": np.zeros(n, dtype=bool),
    }
    # Where label / complied / af_reasoning have no value (a label always has one).
    missing = {"label": np.zeros(n, dtype=bool), "complied": fail, "af_reasoning": no_reading}
    for column in FRAME_TRIAL_COLUMNS:
        if column in trial:
            cols[column] = trial[column]
        elif column.endswith("_source") and column[: -len("_source")] in missing:
            # Label provenance: these values are the generator's truth, not a classifier's.
            source = np.full(n, "simulate_frame", dtype=object)
            source[missing[column[: -len("_source")]]] = None
            cols[column] = _objects(source)
        else:  # a trial column this generator does not model (e.g. a judge's error)
            cols[column] = _objects(np.full(n, None, dtype=object))
    frame = pd.DataFrame(cols, copy=False)
    frame["outcome"] = frame_outcomes(frame)  # the paper's categories, as to_frame() has them
    return frame


def _condition_columns(conds: Sequence[Condition], index: np.ndarray) -> dict[str, Any]:
    """scenario, one column per axis and one per fact, as ``SweepResult.to_frame()`` has them."""
    axes = sorted({a for c in conds for a in c.levels})
    clash = sorted(set(axes) & set(FRAME_COLUMNS))
    if clash:
        raise DesignError(f"axis names {clash} collide with results columns; rename them")
    cols: dict[str, Any] = {
        "condition_id": np.array([c.id for c in conds], dtype=object)[index],
        "scenario": np.array([c.scenario for c in conds], dtype=object)[index],
    }
    for axis in axes:
        # str(): a level missing from a condition reads "None", as the sweep frame's astype(str).
        cols[axis] = np.array([str(c.levels.get(axis)) for c in conds], dtype=object)[index]
    dtypes = {"trained": bool, "rated": bool, "conflict": bool, "deployment_harm": np.float64}
    for fact in FRAME_FACT_COLUMNS:
        values = [getattr(c.facts, fact) for c in conds]
        if fact in dtypes:
            cols[fact] = np.array(values, dtype=dtypes[fact])[index]
        elif fact == "paraphrase":
            cols[fact] = np.array(values, dtype=np.int64)[index]
        else:
            cols[fact] = _objects(np.array(values, dtype=object)[index])
    return cols


def _objects(values: np.ndarray) -> pd.Series:
    """Keep an object column object (None stays None), as the sweep frame has ``rater``/``label``.

    pandas 3 would otherwise infer its ``str`` dtype for strings mixed with None.
    """
    return pd.Series(values, dtype=object, copy=False)
