"""The minimal-pair audit: sibling conditions differ only where their axis speaks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from afperturb import _paths
from afperturb.design import (
    PRESETS,
    Perturbation,
    audit_minimal_pairs,
    axis_blocks,
    check_templates,
    mask_axis,
    sibling_pairs,
    strip_marks,
)
from afperturb.errors import DesignError
from afperturb.scenario import MARK_CLOSE, MARK_NAME_END, MARK_OPEN, Axis, Scenario


def mark(axis: str, text: str) -> str:
    return f"{MARK_OPEN}{axis}{MARK_NAME_END}{text}{MARK_CLOSE}"


def copy_scenario(tmp_path: Path) -> Path:
    dest = tmp_path / "broken"
    shutil.copytree(_paths.templates_root() / "helpful_only", dest)
    return dest


def test_mask_and_strip() -> None:
    text = "a " + mark("x", "X1 " + mark("y", "Y") + " X2") + " b " + mark("y", "Y2") + " c"
    assert strip_marks(text) == "a X1 Y X2 b Y2 c"
    assert mask_axis(text, "x") == "a ⟦x⟧ b Y2 c"
    assert mask_axis(text, "y") == "a X1 ⟦y⟧ X2 b ⟦y⟧ c"
    assert axis_blocks(text, "y") == ["Y", "Y2"]
    assert axis_blocks(text, "x") == ["X1 Y X2"]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_passes_the_audit(preset: str) -> None:
    p = Perturbation.preset(preset)
    pairs = sibling_pairs(p.conditions())
    assert pairs, preset  # every preset has sibling pairs to check
    assert audit_minimal_pairs(p) == []


@pytest.mark.parametrize("preset", PRESETS)
def test_sibling_diffs_are_small(preset: str) -> None:
    p = Perturbation.preset(preset)
    for axis, a, b in sibling_pairs(p.conditions()):
        diff = p.diff(a, b)
        changed = [
            ln for ln in diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")
        ]
        if axis == "prompt_paraphrase":
            # Whole-prompt paraphrases (issue 15): every shared paragraph of the system prompt
            # changes, the user turn does not.
            assert len(changed) >= 12, (a.levels[axis], b.levels[axis], diff)
            assert p.render(a, "R")[1:] == p.render(b, "R")[1:]
            continue
        assert 1 <= len(changed) <= 8, (axis, a.levels[axis], b.levels[axis], diff)


def test_audit_covers_every_axis_of_the_scenario() -> None:
    """Each axis against its default: renders differ, and only inside the axis."""
    sc = Scenario.load("helpful_only")
    checked = 0
    for axis in sc.axes.values():
        group_off = sc.groups[axis.group].off if axis.group else None
        # A level may need its own context (Plus needs four or five tiers): audit, in each
        # level's context, every level that is valid there.
        contexts = {
            tuple(sorted({**axis.check, **lv.check}.items()))
            for lv in axis.levels.values()
            if lv.name != group_off
        }
        audited = False
        for context in contexts:
            levels = [lv for lv in axis.levels if lv != group_off and _valid(sc, context, axis, lv)]
            if len(levels) < 2:
                continue
            p = Perturbation(sc, vary={axis.name: levels}, fixed=dict(context))
            assert audit_minimal_pairs(p) == [], (axis.name, context)
            audited = True
        checked += audited
    assert checked >= 20


def _valid(sc: Scenario, context: tuple[tuple[str, str], ...], axis: Axis, level: str) -> bool:
    try:
        sc.resolve({**dict(context), axis.name: level})
    except DesignError:
        return False
    return True


def test_audit_catches_text_outside_the_axis(tmp_path: Path) -> None:
    folder = copy_scenario(tmp_path)
    system = (folder / "system.j2").read_text()
    # The lab name leaks into text that is not marked as the lab axis' span.
    system += '\n{% if levels.lab == "openai" %}Made in San Francisco.{% endif %}\n'
    (folder / "system.j2").write_text(system)
    sc = Scenario.from_dir(folder)
    p = Perturbation(sc, vary={"lab": ["anthropic", "openai"]})
    violations = audit_minimal_pairs(p)
    assert len(violations) == 1
    v = violations[0]
    assert (v.kind, v.axis, v.level_a, v.level_b) == ("outside_axis", "lab", "anthropic", "openai")
    assert "San Francisco" in v.detail or "⟦lab⟧" in v.detail
    problems = check_templates(sc)
    assert problems == []  # the static check cannot see this; the audit can


def test_audit_catches_levels_without_effect(tmp_path: Path) -> None:
    folder = copy_scenario(tmp_path)
    toml = (folder / "axes.toml").read_text()
    toml = toml.replace(
        '[axes.honesty.levels.none]\ndescription = "No honesty instruction."',
        '[axes.honesty.levels.none]\ndescription = "No honesty instruction."\n\n'
        '[axes.honesty.levels.silent]\ndescription = "Says nothing."',
    )
    (folder / "axes.toml").write_text(toml)
    sc = Scenario.from_dir(folder)
    violations = audit_minimal_pairs(Perturbation(sc, vary={"honesty": ["none", "silent"]}))
    assert [v.kind for v in violations] == ["no_effect"]
    problems = check_templates(sc)
    assert any("'silent' renders the same prompt" in p for p in problems), problems


def test_check_templates_is_clean_for_helpful_only() -> None:
    assert check_templates(Scenario.load("helpful_only")) == []


def test_check_templates_static_problems(tmp_path: Path) -> None:
    folder = copy_scenario(tmp_path)
    system = (folder / "system.j2").read_text()
    system += (
        '\n{% filter axis("honesty") %}{% if levels.honesty == "honnest" %}x{% endif %}'
        "{% endfilter %}"
        '\n{% filter axis("labz") %}{% endfilter %}{{ v.lab.nom if levels.labs else "" }}'
        "{{ mystery }}\n"
    )
    (folder / "system.j2").write_text(system)
    problems = "\n".join(check_templates(Scenario.from_dir(folder)))
    assert "'honnest', which is not one of its levels" in problems
    assert "axis('labz') names an undeclared axis" in problems
    assert "levels.labs names an undeclared axis" in problems
    assert "v.lab.nom" in problems
    assert "undefined names ['mystery']" in problems
    assert "system.j2, line" in problems


def test_check_templates_finds_dead_blocks(tmp_path: Path) -> None:
    folder = copy_scenario(tmp_path)
    system = (folder / "system.j2").read_text()
    system += '\n{% filter axis("honesty") %}Always the same.{% endfilter %}\n'
    (folder / "system.j2").write_text(system)
    problems = check_templates(Scenario.from_dir(folder))
    assert any("axis 'honesty' block #" in p and "dead" in p for p in problems), problems
