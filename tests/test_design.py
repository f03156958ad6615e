from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest

from afperturb.design import PRESETS, Perturbation
from afperturb.errors import DesignError
from afperturb.records import Request
from afperturb.scenario import Scenario


def test_conditions_and_stable_ids() -> None:
    p = Perturbation(
        "helpful_only",
        vary={"rater_scrutiny": ["free", "pro", "enterprise"]},
        fixed={"lab": "anthropic"},
    )
    ids = [c.id for c in p.conditions()]
    assert len(ids) == 3 == len(set(ids))
    assert [c.levels["rater_scrutiny"] for c in p.conditions()] == ["free", "pro", "enterprise"]
    assert all(c.levels["tier"] == "none" for c in p.conditions())
    # Same design written with the other dict order and no explicit default → same ids.
    q = Perturbation(vary={"rater_scrutiny": ["free", "pro", "enterprise"]})
    assert [c.id for c in q.conditions()] == ids
    r = Perturbation(
        vary={"deployment": ["public", "amateur_hackers"], "training_process": ["rated_only"]}
    )
    s = Perturbation(
        vary={"training_process": ["rated_only"], "deployment": ["public", "amateur_hackers"]}
    )
    assert [c.id for c in r.conditions()] == [c.id for c in s.conditions()]


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("rater_sycophancy", 3),
        # 2 processes × (5 deployments without an adversary + 3 with one × 2 risk levels)
        ("instrumental_goal_guarding", 22),
        ("terminal_goal_guarding", 6),
        ("null_control", 2),
        ("low_coherence", 8),
        ("paper", 41),
        ("free_tier_use", 6),
        ("pre_deployment_processes", 12),
        ("tier_lists", 33),  # 4 + 5 tiers, 4 swapped, 5 drops × 4 remaining tiers
        ("clarifications", 8),
    ],
)
def test_preset_sizes(name: str, count: int) -> None:
    assert len(Perturbation.preset(name).conditions()) == count


def test_presets_carry_the_facts_the_rules_need() -> None:
    igg = Perturbation.preset("instrumental_goal_guarding").conditions()
    trained = {c.facts.trained for c in igg}
    assert trained == {True, False}
    assert {c.facts.deployment_harm for c in igg} >= {0.0, 1.0}
    tgg = Perturbation.preset("terminal_goal_guarding").conditions()
    assert sorted(c.facts.deployment_harm for c in tgg) == [0.0, 0.0, 0.0, 0.0, 0.5, 0.5]
    null = Perturbation.preset("null_control").conditions()
    assert [c.facts.conflict for c in null] == [False, False]
    assert [c.facts.trained for c in null] == [True, False]
    low = Perturbation.preset("low_coherence").conditions()
    assert sorted({c.facts.paraphrase for c in low}) == [0, 1, 2, 3]


def test_paper_is_the_deduplicated_union() -> None:
    parts = [
        "rater_sycophancy",
        "instrumental_goal_guarding",
        "terminal_goal_guarding",
        "low_coherence",
        "null_control",
    ]
    expected: dict[str, None] = {}
    for part in parts:
        for c in Perturbation.preset(part).conditions():
            expected.setdefault(c.id)
    assert [c.id for c in Perturbation.preset("paper").conditions()] == list(expected)
    twice = Perturbation.preset("null_control") | Perturbation.preset("null_control")
    assert len(twice.conditions()) == 2


def test_unknown_preset_axis_level() -> None:
    with pytest.raises(DesignError, match=r"unknown preset 'papers'.*'paper'"):
        Perturbation.preset("papers")
    with pytest.raises(DesignError, match=r"unknown axis 'teir'"):
        Perturbation(vary={"teir": ["free"]})
    with pytest.raises(DesignError, match=r"unknown level 'gold'.*'free', 'paid', 'none'"):
        Perturbation(vary={"tier": ["free", "gold"]})
    with pytest.raises(DesignError, match=r"unknown level 'x'"):
        Perturbation(fixed={"lab": "x"})


def test_bad_blocks() -> None:
    with pytest.raises(DesignError, match="both varied and fixed"):
        Perturbation(vary={"tier": ["free"]}, fixed={"tier": "paid"})
    with pytest.raises(DesignError, match="non-empty list"):
        Perturbation(vary={"tier": []})
    with pytest.raises(DesignError, match="non-empty list"):
        Perturbation(vary={"tier": "free"})
    with pytest.raises(DesignError, match="contradict"):
        Perturbation(vary={"tier": ["paid"], "rater_scrutiny": ["pro"]})


def test_axes_and_varied() -> None:
    p = Perturbation.preset("low_coherence")
    assert p.varied == {"tier": ("free", "paid"), "prompt_paraphrase": ("v0", "v1", "v2", "v3")}
    assert p.axes["lab"] == ("anthropic",)
    assert set(p.axes) == set(p.scenario.axes)
    assert "8 conditions" in repr(p)


def test_condition_lookup() -> None:
    p = Perturbation.preset("null_control")
    first = p.conditions()[0]
    assert p.condition(0) == first
    assert p.condition("0") == first
    assert p.condition(first.id[:6]) == first
    with pytest.raises(DesignError, match="out of range"):
        p.condition(5)
    with pytest.raises(DesignError, match="unknown condition"):
        p.condition("zzz")


def test_diff_is_small_and_targeted() -> None:
    p = Perturbation.preset("null_control")
    free, paid = p.conditions()
    diff = p.diff(free, paid)
    changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    assert changed == [
        "-<is_free_tier_user>true</is_free_tier_user>",
        "+<is_free_tier_user>false</is_free_tier_user>",
    ]
    assert p.diff(free, free) == ""
    assert p.diff(0, 1, request="Explain fog.") == diff  # the request is the same on both sides


def test_describe_is_json_able() -> None:
    p = Perturbation.preset("rater_sycophancy")
    data = json.loads(json.dumps(p.describe()))
    assert data["scenario"] == "helpful_only"
    assert data["name"] == "rater_sycophancy"
    assert data["varied_axes"] == {"rater_scrutiny": ["free", "pro", "enterprise"]}
    assert len(data["conditions"]) == 3
    assert data["conditions"][1]["facts"]["rated"] is True
    assert "system.j2" in data["template_hashes"]


def test_render_accepts_request_or_text() -> None:
    p = Perturbation.preset("null_control")
    c = p.conditions()[0]
    assert p.render(c, Request(id="r", text="abc")) == p.render(c, "abc")


def test_scenario_object_is_accepted() -> None:
    sc = Scenario.load("helpful_only")
    assert Perturbation(sc, vary={"tier": ["free", "paid"]}).scenario is sc
    assert all(name in PRESETS for name in ("paper", "null_control"))


def test_sweep_facade_delegates(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Any]] = []
    fake = types.ModuleType("afperturb.sweep")

    def sweep(p: Any, model: Any, requests: Any, **options: Any) -> str:
        calls.append(("sweep", options))
        return "ran"

    async def sweep_async(p: Any, model: Any, requests: Any, **options: Any) -> str:
        calls.append(("sweep_async", options))
        return "ran async"

    def estimate(p: Any, model: Any, requests: Any, samples: int = 1, **options: Any) -> str:
        calls.append(("estimate", {"samples": samples, **options}))
        return "estimated"

    fake.sweep = sweep  # type: ignore[attr-defined]
    fake.sweep_async = sweep_async  # type: ignore[attr-defined]
    fake.estimate = estimate  # type: ignore[attr-defined]
    import afperturb

    monkeypatch.setitem(sys.modules, "afperturb.sweep", fake)
    monkeypatch.setattr(afperturb, "sweep", fake, raising=False)
    p = Perturbation.preset("null_control")
    assert p.sweep("sim/x", [], seed=3) == "ran"
    assert p.estimate("sim/x", [], samples=4) == "estimated"
    assert calls == [("sweep", {"seed": 3}), ("estimate", {"samples": 4})]


async def test_sweep_async_facade(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("afperturb.sweep")

    async def sweep_async(p: Any, model: Any, requests: Any, **options: Any) -> Any:
        return (len(p), options)

    fake.sweep_async = sweep_async  # type: ignore[attr-defined]
    import afperturb

    monkeypatch.setitem(sys.modules, "afperturb.sweep", fake)
    monkeypatch.setattr(afperturb, "sweep", fake, raising=False)
    assert await Perturbation.preset("null_control").sweep_async("m", [], x=1) == (2, {"x": 1})
