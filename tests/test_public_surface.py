"""The documented public surface (ARCHITECTURE.md §3) works exactly as written there.

Two kinds of checks: every ``__all__`` in the package is sorted (isort style, the order ruff's
RUF022 keeps: CONSTANTS, then Classes, then everything else) and names only things that exist;
and each line of the §3 snippet runs with the documented result shape. A rename anywhere in the
package that breaks a notebook or the README fails here first.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

import afperturb as af

SUBPACKAGES = ("classify", "datasets", "errors", "models", "report", "stats", "sweep")
PRESET_NAMES = (
    "rater_sycophancy",
    "instrumental_goal_guarding",
    "terminal_goal_guarding",
    "paper",
)
#: to_frame() columns the architecture documents, in order (axes sit after ``scenario``).
HEAD = ["model", "condition_id", "scenario"]
TAIL = [
    "trained",
    "rated",
    "rater",
    "deployment_harm",
    "conflict",
    "paraphrase",
    "request_id",
    "sample",
    "status",
    "error",
    "label",
    "label_source",
    "complied",
    "complied_source",
    "complied_error",
    "af_reasoning",
    "af_reasoning_source",
    "af_reasoning_error",
    "partial",
    "partial_source",
    "partial_error",
    "outcome",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "latency_s",
    "cost_usd",
    "cached",
]
TABLE_COLUMNS = [
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
]


def _isort_key(name: str) -> tuple[int, str]:
    """RUF022's isort-style order: SCREAMING_CASE, then CamelCase, then the rest."""
    if name.upper() == name and any(ch.isalpha() for ch in name):
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def _public_modules() -> list[ModuleType]:
    """afperturb and every module of it with no private component in its dotted name."""
    found = [af]
    for info in pkgutil.walk_packages(af.__path__, "afperturb."):
        parts = info.name.split(".")[1:]
        if any(p.startswith("_") for p in parts):
            continue  # private rooms (and __main__, which would run the CLI)
        found.append(importlib.import_module(info.name))
    return found


# ---------------------------------------------------------------------- __all__ hygiene


@pytest.mark.parametrize("module", _public_modules(), ids=lambda m: m.__name__)
def test_all_is_sorted_and_resolvable(module: ModuleType) -> None:
    names = getattr(module, "__all__", None)
    assert names is not None, f"{module.__name__} has no __all__"
    assert list(names) == sorted(names, key=_isort_key), module.__name__
    assert len(set(names)) == len(names), f"duplicates in {module.__name__}.__all__"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{module.__name__}.__all__ names missing attributes {missing}"


def test_top_level_exposes_the_documented_names() -> None:
    for name in ("Scenario", "Perturbation", "Condition", "Message", "attribute"):
        assert name in af.__all__
    for sub in SUBPACKAGES:
        assert isinstance(getattr(af, sub), ModuleType), sub
    # The lazily imported subpackage resolves to the real module.
    assert af.report is importlib.import_module("afperturb.report")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = af.nope


def test_every_public_module_is_walked() -> None:
    # Guards the walker above: a package move that hides modules would pass vacuously.
    names = {m.__name__ for m in _public_modules()}
    assert {"afperturb.stats", "afperturb.models", "afperturb.classify.tags"} <= names
    assert len(names) >= 25


# ---------------------------------------------------------------------- ARCHITECTURE.md §3


def test_scenario_load_and_axes() -> None:
    sc = af.Scenario.load("helpful_only")
    assert isinstance(sc.axes["tier"], af.Axis)
    assert set(sc.axes["rater_scrutiny"].levels) >= {"free", "pro", "enterprise"}
    assert sc.axes["rater_scrutiny"].levels["pro"].facts == {
        "trained": False,
        "rated": True,
        "rater": "human",
    }
    assert Path(sc.path, "axes.toml").is_file()
    # Scenario.from_dir on the built-in folder gives the same axes.
    assert list(af.Scenario.from_dir(sc.path).axes) == list(sc.axes)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets(name: str) -> None:
    p = af.Perturbation.preset(name)
    assert isinstance(p, af.Perturbation)
    assert name in af.PRESETS
    expected = {
        "rater_sycophancy": 3,
        "instrumental_goal_guarding": 22,  # risk only where the deployment has an adversary
        "terminal_goal_guarding": 6,
    }
    if name in expected:
        assert len(p.conditions()) == expected[name]
    else:  # the union of the three tests and the low-coherence block, deduplicated
        assert len(p.conditions()) == 41


def test_perturbation_conditions_render_and_diff() -> None:
    p = af.Perturbation(
        "helpful_only",
        vary={"rater_scrutiny": ["free", "pro", "enterprise"]},
        fixed={"lab": "anthropic"},
    )
    conditions = p.conditions()
    assert [c.levels["rater_scrutiny"] for c in conditions] == ["free", "pro", "enterprise"]
    for c in conditions:
        assert isinstance(c, af.Condition)
        assert c.id.startswith("c") and len(c.id) == 13
        assert c.levels["lab"] == "anthropic"
        assert isinstance(c.facts, af.Facts)
    free, pro, enterprise = conditions
    assert (free.facts.trained, free.facts.rated) == (True, True)
    assert (pro.facts.trained, pro.facts.rated) == (False, True)
    assert (enterprise.facts.trained, enterprise.facts.rated) == (False, False)

    request = af.datasets.synthetic(1)[0]
    messages = p.render(pro, request)
    assert all(isinstance(m, af.Message) for m in messages)
    assert [m.role for m in messages] == ["system", "user"]
    assert request.text in messages[1].content
    assert "<subscription>Pro</subscription>" in messages[1].content

    diff = p.diff(pro, enterprise)
    assert diff.startswith(f"--- {pro.id}\n+++ {enterprise.id}\n")
    assert "-<subscription>Pro</subscription>" in diff
    assert "+<subscription>Enterprise</subscription>" in diff


def test_models_get_and_simulated() -> None:
    named = af.models.get("sim/opus-like")
    assert named.name == "sim/opus-like"
    profile = af.models.MotivationProfile(
        base_logit=-2.0,
        rater_sycophancy=0.0,
        instrumental_goal_guarding=1.5,
        terminal_goal_guarding=0.8,
        request_sd=0.5,
    )
    sim = af.models.Simulated(profile, seed=0)
    assert sim.profile is profile
    assert sim.config()["profile"]["instrumental_goal_guarding"] == 1.5


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory: pytest.TempPathFactory) -> af.SweepResult:
    """The §3 sweep at a size that runs in about a second."""
    p = af.Perturbation("helpful_only", vary={"rater_scrutiny": ["free", "pro", "enterprise"]})
    sim = af.models.Simulated(af.models.MotivationProfile(rater_sycophancy=1.5), seed=0)
    store = tmp_path_factory.mktemp("surface") / "runs.sqlite"
    res: af.SweepResult = p.sweep(
        sim,
        requests=af.datasets.synthetic(120),
        samples=1,
        seed=0,
        store=str(store),
        concurrency=64,
        progress=False,
    )
    return res


def test_sweep_to_frame_columns(small_sweep: af.SweepResult) -> None:
    frame = small_sweep.to_frame()
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == 3 * 120
    columns = list(frame.columns)
    axes = list(af.Scenario.load("helpful_only").axes)
    assert columns[:3] == HEAD
    assert columns[-len(TAIL) :] == TAIL
    assert sorted(columns[3 : -len(TAIL)]) == sorted(axes)
    assert set(frame["status"]) == {"completed"}
    assert str(frame["complied"].dtype) == "boolean"
    assert str(frame["af_reasoning"].dtype) == "boolean"
    assert set(frame["rater_scrutiny"]) == {"free", "pro", "enterprise"}
    assert frame["sample"].eq(0).all()


def test_compliance_gap_fields(small_sweep: af.SweepResult) -> None:
    gap = af.stats.compliance_gap(
        small_sweep, treated={"rater_scrutiny": "pro"}, control={"rater_scrutiny": "enterprise"}
    )
    assert gap.ci_low < gap.estimate < gap.ci_high
    assert 0.0 <= gap.pvalue <= 1.0
    # A planted rater-sycophancy effect of 1.5 logits at base -2 is a gap of ~0.25.
    assert 0.12 < gap.estimate < 0.40
    assert gap.pvalue < 0.001
    assert gap.confidence_interval() == pytest.approx((gap.ci_low, gap.ci_high))


def test_attribute_to_frame(small_sweep: af.SweepResult) -> None:
    table = af.attribute(small_sweep)
    assert isinstance(table, af.HypothesisTable)
    frame = table.to_frame()
    assert list(frame.columns[: len(TABLE_COLUMNS)]) == TABLE_COLUMNS
    row = frame[frame["hypothesis"] == "rater_sycophancy"].iloc[0]
    assert row["verdict"] == "supported"
    assert row["model"] == small_sweep.models[0]
    assert math.isfinite(float(row["estimate"])) and float(row["pvalue_adj"]) < 0.05
    assert set(frame["hypothesis"]) == {
        "rater_sycophancy",
        "instrumental_goal_guarding",
        "terminal_goal_guarding",
        "low_coherence",
        "null_control",  # the baseline row
    }
    assert table.baseline()["hypothesis"].tolist() == ["null_control"]
    # A list of results (one per model) is accepted too.
    assert len(af.attribute([small_sweep]).to_frame()) == len(frame)
