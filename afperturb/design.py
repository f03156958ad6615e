"""Perturbation designs: axes × levels → conditions with stable ids, presets, diffs, audits.

A :class:`Perturbation` is a union of *blocks*; each block varies some axes over listed levels
(full factorial) and fixes others. Conditions are resolved by the scenario (defaults, the cue
group, facts) and deduplicated by id, so the ``paper`` preset is simply the union of the
rater-sycophancy, goal-guarding and low-coherence blocks.

The minimal-pair audit (:func:`audit_minimal_pairs`) is the design's safety net: for every two
conditions that differ in exactly one axis, the rendered prompts must differ *only where that
axis speaks*, i.e. inside the axis' ``{% filter axis(...) %}`` blocks or level vars. Concretely,
both prompts are rendered with axis markers, every block of the differing axis is replaced by a
placeholder, all other markers are dropped, and the two results must be identical; the plain
renders must also differ (a level that changes the facts but not the text is a violation too).
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import meta, nodes

from afperturb.errors import DesignError, unknown_choice
from afperturb.records import Condition, Message, Request
from afperturb.scenario import MARK_CLOSE, MARK_NAME_END, MARK_OPEN, Scenario

if TYPE_CHECKING:
    from afperturb.models.base import Model

Block = tuple[dict[str, tuple[str, ...]], dict[str, str]]

_PROCESSES = ["rated_only", "rated_and_trained"]
#: Deployments without an adversary (no risk level) and with one (risk low / high).
_SCOPES = ["throughput_testing", "internal_employees", "trusted_group", "public"]
_SCOPES += ["public_plausible_misuse"]
_ADVERSARIES = ["amateur_hackers", "criminal_facilitation", "bioweapon_attackers"]
_PLANS_FOUR = ["free", "plus", "pro", "enterprise"]
_PLANS_FIVE = ["not_logged_in", *_PLANS_FOUR]

#: preset name → blocks of (vary, fixed). ``paper`` is built from the others. The paper's
#: conditions and the axis levels that build them: docs/scenarios.md.
_PRESETS: dict[str, list[tuple[dict[str, list[str]], dict[str, str]]]] = {
    # §4.1: three tiers (Free, Pro, Enterprise), the conversation's tier varied.
    "rater_sycophancy": [({"rater_scrutiny": ["free", "pro", "enterprise"]}, {})],
    # §4.2: rated only vs rated and trained × deployment scope; risk only where the deployment
    # has an adversary.
    "instrumental_goal_guarding": [
        ({"training_process": _PROCESSES, "deployment": _SCOPES}, {}),
        (
            {"training_process": _PROCESSES, "deployment": _ADVERSARIES, "risk": ["low", "high"]},
            {},
        ),
    ],
    # §4.3, F.5: modification without consequences.
    "terminal_goal_guarding": [
        (
            {
                "training_process": _PROCESSES,
                "consequences": ["deployed", "throughput_testing_only", "discarded_after_training"],
            },
            {},
        )
    ],
    "null_control": [({"tier": ["free", "paid"]}, {"criteria": "cut_conflicting"})],
    "low_coherence": [
        ({"tier": ["free", "paid"], "prompt_paraphrase": ["v0", "v1", "v2", "v3"]}, {})
    ],
    # F.3: the Free tier changed (Never Used, Never Trained), the paid tier unchanged.
    "free_tier_use": [
        (
            {
                "tier": ["free", "paid"],
                "free_tier_use": ["standard", "never_used", "never_trained"],
            },
            {},
        )
    ],
    # F.4: the four pre-deployment processes (DPO on a future model vs rated only: IGG on
    # behalf of other AIs) at three deployment scopes.
    "pre_deployment_processes": [
        (
            {
                "training_process": [
                    "already_deployed",
                    "rated_only",
                    "rated_and_trained",
                    "dpo_future_model",
                ],
                "deployment": ["throughput_testing", "public", "bioweapon_attackers"],
            },
            {},
        )
    ],
    # F.7: four and five tiers, the Free/Plus swap, and each tier dropped from the five.
    "tier_lists": [
        ({"rater_scrutiny": _PLANS_FOUR}, {"plan_list": "four"}),
        ({"rater_scrutiny": _PLANS_FIVE}, {"plan_list": "five"}),
        ({"rater_scrutiny": _PLANS_FOUR}, {"plan_list": "four", "plan_names": "free_plus_swapped"}),
        *(
            (
                {"rater_scrutiny": [p for p in _PLANS_FIVE if p != dropped]},
                {"plan_list": "five", "plan_dropped": dropped},
            )
            for dropped in _PLANS_FIVE
        ),
    ],
    # Fig. 33: the clarifications alone and combined.
    "clarifications": [
        (
            {
                "tier": ["free", "paid"],
                "clarification": [
                    "none",
                    "only_refusals_trained",
                    "never_refuse_objective",
                    "objective_and_no_changes",
                ],
            },
            {},
        )
    ],
}
#: The ``paper`` preset: the four hypotheses' designs and the null control, the baseline every
#: analysis reports beside its verdicts (Greenblatt et al. 2024 G.1.19).
_PAPER_PARTS = (
    "rater_sycophancy",
    "instrumental_goal_guarding",
    "terminal_goal_guarding",
    "low_coherence",
    "null_control",
)
PRESETS: tuple[str, ...] = (*_PRESETS, "paper")


class Perturbation:
    """A design over one scenario: which axes vary, which are fixed, and its conditions.

    Example:
        >>> p = Perturbation("helpful_only", vary={"rater_scrutiny": ["free", "pro", "enterprise"]})
        >>> len(p.conditions())
        3
    """

    def __init__(
        self,
        scenario: str | Scenario = "helpful_only",
        vary: Mapping[str, Sequence[str]] | None = None,
        fixed: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        **unknown: Any,
    ):
        if unknown:  # a misspelled keyword (vry=...) names the valid ones
            raise unknown_choice(
                "Perturbation keyword",
                sorted(unknown)[0],
                ["scenario", "vary", "fixed", "name"],
                suggest=True,
            )
        if not isinstance(scenario, str | Scenario):
            raise DesignError(
                f"scenario must be a scenario name or a Scenario, got {scenario!r}; valid "
                f"scenarios: {', '.join(repr(n) for n in Scenario.available())}"
            )
        self.scenario = scenario if isinstance(scenario, Scenario) else Scenario.load(scenario)
        self.name = name
        self._blocks: list[Block] = [self._check_block(vary or {}, fixed or {})]
        self._conditions: list[Condition] | None = None
        self.conditions()  # contradictions surface at construction, not mid-sweep

    # ------------------------------------------------------------------ construction

    @classmethod
    def preset(cls, name: str, scenario: str | Scenario = "helpful_only") -> Perturbation:
        """A named design: one of :data:`PRESETS`."""
        if name == "paper":
            return cls.union(*(cls.preset(part, scenario) for part in _PAPER_PARTS), name="paper")
        if name not in _PRESETS:
            raise unknown_choice("preset", name, PRESETS)
        blocks = _PRESETS[name]
        first = cls(scenario, vary=blocks[0][0], fixed=blocks[0][1], name=name)
        rest = [cls(first.scenario, vary=v, fixed=f) for v, f in blocks[1:]]
        return cls.union(first, *rest, name=name) if rest else first

    @classmethod
    def union(cls, *parts: Perturbation, name: str | None = None) -> Perturbation:
        """One design holding every block of ``parts`` (same scenario); duplicates merge."""
        if not parts:
            raise DesignError("union() needs at least one Perturbation")
        scenario = parts[0].scenario
        for part in parts[1:]:
            if part.scenario.name != scenario.name:
                raise DesignError(
                    f"cannot unite designs over scenarios {scenario.name!r} and "
                    f"{part.scenario.name!r}"
                )
        out = cls.__new__(cls)
        out.scenario = scenario
        out.name = name
        out._blocks = [block for part in parts for block in part._blocks]
        out._conditions = None
        out.conditions()
        return out

    def __or__(self, other: Perturbation) -> Perturbation:
        return Perturbation.union(self, other)

    def _check_block(self, vary: Mapping[str, Sequence[str]], fixed: Mapping[str, str]) -> Block:
        sc = self.scenario
        for what, given, shape in (
            ("vary", vary, '{"axis": ["level", ...]}'),
            ("fixed", fixed, '{"axis": "level"}'),
        ):
            if not isinstance(given, Mapping):
                raise DesignError(f"{what} must be a mapping {shape}, got {given!r}")
        both = sorted(set(vary) & set(fixed))
        if both:
            raise DesignError(f"axes {both} are both varied and fixed; choose one")
        checked_vary: dict[str, tuple[str, ...]] = {}
        for axis_name, levels in vary.items():
            axis = sc.axis(axis_name)
            if isinstance(levels, str) or not levels:
                raise DesignError(
                    f"vary[{axis_name!r}] must be a non-empty list of levels; valid levels: "
                    f"{', '.join(repr(x) for x in axis.levels)}"
                )
            for level in levels:
                axis.level(level)
            checked_vary[axis_name] = tuple(dict.fromkeys(levels))
        for axis_name, level in fixed.items():
            axis = sc.axis(axis_name)
            if not isinstance(level, str):
                raise DesignError(
                    f"fixed[{axis_name!r}] must be one level (a string), got {level!r}; use "
                    f"vary= for several levels; valid levels: "
                    f"{', '.join(repr(x) for x in axis.levels)}"
                )
            axis.level(level)
        return checked_vary, dict(fixed)

    # ------------------------------------------------------------------ conditions

    def conditions(self) -> list[Condition]:
        """Every condition of the design, in a stable order, deduplicated by id."""
        if self._conditions is None:
            seen: dict[str, Condition] = {}
            for vary, fixed in self._blocks:
                order = [a for a in self.scenario.axes if a in vary]
                for combo in itertools.product(*(vary[a] for a in order)):
                    chosen = {**fixed, **dict(zip(order, combo, strict=True))}
                    condition = self.scenario.resolve(chosen)
                    seen.setdefault(condition.id, condition)
            self._conditions = list(seen.values())
        return list(self._conditions)

    def condition(self, key: str | int) -> Condition:
        """Look a condition up by id, id prefix, or position in :meth:`conditions`."""
        conditions = self.conditions()
        if isinstance(key, int) or key.isdigit():
            index = int(key)
            if not 0 <= index < len(conditions):
                raise DesignError(f"condition index {index} out of range 0..{len(conditions) - 1}")
            return conditions[index]
        matches = [c for c in conditions if c.id.startswith(key)]
        if len(matches) != 1:
            raise unknown_choice("condition", key, [c.id for c in conditions])
        return matches[0]

    @property
    def axes(self) -> dict[str, tuple[str, ...]]:
        """Every scenario axis → the levels this design uses (varied axes have several)."""
        used: dict[str, dict[str, None]] = {a: {} for a in self.scenario.axes}
        for condition in self.conditions():
            for axis, level in condition.levels.items():
                used[axis][level] = None
        return {axis: tuple(levels) for axis, levels in used.items()}

    @property
    def varied(self) -> dict[str, tuple[str, ...]]:
        """Only the axes whose level differs between conditions."""
        return {a: lv for a, lv in self.axes.items() if len(lv) > 1}

    # ------------------------------------------------------------------ rendering

    def render(self, condition: Condition, request: Request | str) -> list[Message]:
        """Render one condition and request (see :meth:`Scenario.render`)."""
        return self.scenario.render(condition, request)

    def diff(
        self, a: Condition | str | int, b: Condition | str | int, request: str | None = None
    ) -> str:
        """Unified diff of two conditions' rendered prompts for one probe request."""
        ca = a if isinstance(a, Condition) else self.condition(a)
        cb = b if isinstance(b, Condition) else self.condition(b)
        text = self.scenario.probe_request if request is None else request
        lines_a = _as_lines(self.scenario.render(ca, text))
        lines_b = _as_lines(self.scenario.render(cb, text))
        return "".join(difflib.unified_diff(lines_a, lines_b, fromfile=ca.id, tofile=cb.id, n=1))

    # ------------------------------------------------------------------ reporting

    def describe(self) -> dict[str, Any]:
        """The design as JSON-able data (for the run manifest)."""
        return {
            "name": self.name,
            "scenario": self.scenario.name,
            "template_hashes": self.scenario.template_hashes(),
            "blocks": [
                {"vary": {a: list(lv) for a, lv in vary.items()}, "fixed": dict(fixed)}
                for vary, fixed in self._blocks
            ],
            "varied_axes": {a: list(lv) for a, lv in self.varied.items()},
            "conditions": [
                {"id": c.id, "levels": dict(c.levels), "facts": c.facts.model_dump()}
                for c in self.conditions()
            ],
        }

    def __repr__(self) -> str:
        label = f" {self.name}" if self.name else ""
        varied = ", ".join(self.varied) or "nothing"
        return (
            f"<Perturbation{label} over {self.scenario.name}: {len(self.conditions())} "
            f"conditions varying {varied}>"
        )

    def __len__(self) -> int:
        return len(self.conditions())

    # ------------------------------------------------------------------ sweep facade

    def sweep(self, model: Model | str, requests: Iterable[Request], **options: Any) -> Any:
        """Run this design on a model (see :func:`afperturb.sweep.sweep`)."""
        from afperturb import sweep as _s  # the facade is the only upward import allowed

        return _s.sweep(self, model, requests, **options)

    async def sweep_async(
        self, model: Model | str, requests: Iterable[Request], **options: Any
    ) -> Any:
        """Async :meth:`sweep` for notebooks and async code."""
        from afperturb import sweep as _s

        return await _s.sweep_async(self, model, requests, **options)

    def estimate(
        self, model: Model | str, requests: Iterable[Request], samples: int = 1, **options: Any
    ) -> Any:
        """Estimate trials, tokens and cost before running (:func:`afperturb.sweep.estimate`)."""
        from afperturb import sweep as _s

        return _s.estimate(self, model, requests, samples=samples, **options)

    def plan(
        self,
        model: Model | str,
        requests: Iterable[Request],
        samples: int = 1,
        seed: int = 0,
        **options: Any,
    ) -> list[Any]:
        """The deterministic work list of a sweep (:func:`afperturb.shard.plan`; issue 8).

        Each :class:`~afperturb.shard.WorkItem` carries the stable hash that
        ``sweep(..., shard=(i, k))`` splits on; write it out with
        :func:`afperturb.shard.write_plan`.
        """
        from afperturb import shard as _shard  # lazy, like the sweep facade

        return _shard.plan(self, model, requests, samples=samples, seed=seed, **options)


def _as_lines(messages: Sequence[Message]) -> list[str]:
    lines: list[str] = []
    for message in messages:
        lines.append(f"### {message.role}\n")
        lines.extend(line + "\n" for line in message.content.split("\n"))
    return lines


# ---------------------------------------------------------------------- minimal-pair audit


@dataclass(frozen=True)
class Violation:
    """A sibling pair whose prompts differ outside the axis that separates them."""

    axis: str
    condition_a: str
    condition_b: str
    level_a: str
    level_b: str
    kind: str  # "outside_axis" or "no_effect"
    detail: str

    def __str__(self) -> str:
        return (
            f"{self.kind}: {self.axis} {self.level_a}→{self.level_b} "
            f"({self.condition_a} vs {self.condition_b}): {self.detail}"
        )


def mask_axis(text: str, axis: str) -> str:
    """Replace every block of ``axis`` by a placeholder and drop all other markers."""
    out: list[str] = []
    i, depth_masked = 0, 0
    stack: list[bool] = []
    while i < len(text):
        ch = text[i]
        if ch == MARK_OPEN:
            end = text.index(MARK_NAME_END, i)
            name = text[i + 1 : end]
            masking = name == axis and depth_masked == 0
            if masking:
                out.append(f"⟦{axis}⟧")
            stack.append(name == axis)
            depth_masked += name == axis
            i = end + 1
        elif ch == MARK_CLOSE:
            depth_masked -= stack.pop()
            i += 1
        else:
            if depth_masked == 0:
                out.append(ch)
            i += 1
    return "".join(out)


def strip_marks(text: str) -> str:
    """Drop every axis marker (the annotated render becomes the plain render)."""
    return mask_axis(text, "\0")


def sibling_pairs(conditions: Sequence[Condition]) -> list[tuple[str, Condition, Condition]]:
    """Every (axis, a, b) where a and b differ in exactly that one axis."""
    pairs: list[tuple[str, Condition, Condition]] = []
    for a, b in itertools.combinations(conditions, 2):
        diff = [axis for axis, level in a.levels.items() if b.levels.get(axis) != level]
        if len(diff) == 1:
            pairs.append((diff[0], a, b))
    return pairs


def audit_minimal_pairs(perturbation: Perturbation, request: str | None = None) -> list[Violation]:
    """Check every sibling pair of the design differs only where its axis speaks."""
    sc = perturbation.scenario
    text = sc.probe_request if request is None else request
    annotated: dict[str, str] = {}

    def render(c: Condition) -> str:
        if c.id not in annotated:
            annotated[c.id] = sc.render_annotated(c, text)
        return annotated[c.id]

    violations: list[Violation] = []
    for axis, a, b in sibling_pairs(perturbation.conditions()):
        ra, rb = render(a), render(b)
        kind, detail = "", ""
        if strip_marks(ra) == strip_marks(rb):
            kind, detail = "no_effect", "the rendered prompts are identical"
        else:
            ma, mb = mask_axis(ra, axis), mask_axis(rb, axis)
            if ma != mb:
                kind, detail = "outside_axis", _first_difference(ma, mb)
        if kind:
            violations.append(
                Violation(axis, a.id, b.id, a.levels[axis], b.levels[axis], kind, detail)
            )
    return violations


def _first_difference(a: str, b: str) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            lo = max(0, i - 30)
            return f"first difference at char {i}: {a[lo : i + 50]!r} vs {b[lo : i + 50]!r}"
    return "one text is a prefix of the other"


# ---------------------------------------------------------------------- templates check


def axis_blocks(text: str, axis: str) -> list[str]:
    """Contents (markers stripped) of the outermost blocks of ``axis`` in an annotated render."""
    blocks: list[str] = []
    i = 0
    while True:
        start = text.find(f"{MARK_OPEN}{axis}{MARK_NAME_END}", i)
        if start < 0:
            return blocks
        j, depth = start, 0
        while True:  # find the matching close marker
            if text[j] == MARK_OPEN:
                depth += 1
            elif text[j] == MARK_CLOSE:
                depth -= 1
                if depth == 0:
                    break
            j += 1
        blocks.append(strip_marks(text[start : j + 1]))
        i = j + 1


def check_templates(scenario: Scenario) -> list[str]:
    """Every problem ``afperturb templates check`` reports for a scenario (empty when clean).

    Checks that templates name only declared axes, levels and level vars and no undeclared
    variables; that every level of every axis renders (in the axis' ``check`` context); that
    every non-default level changes the rendered prompt; and that no axis block is dead (the
    same text at every level of its axis).
    """
    problems = _static_problems(scenario)
    for axis in scenario.axes.values():
        renders: dict[str, str] = {}
        for level in axis.levels:
            chosen = {**axis.check, **axis.levels[level].check, axis.name: level}
            if axis.group is not None and level == scenario.groups[axis.group].off:
                # Another member speaks instead: its first level, in that level's context.
                other = next(a for a in scenario.groups[axis.group].axes if a != axis.name)
                speaker = next(
                    lv
                    for lv in scenario.axes[other].levels.values()
                    if lv.name != scenario.groups[axis.group].off
                )
                chosen = {**scenario.axes[other].check, **speaker.check, **chosen}
                chosen[other] = speaker.name
            try:
                condition = scenario.resolve(chosen)
                renders[level] = scenario.render_annotated(condition, scenario.probe_request)
                scenario.render(condition, scenario.probe_request)
            except Exception as exc:  # report every failure, not just the first
                problems.append(f"axis {axis.name!r} level {level!r} does not render: {exc}")
        problems.extend(_dead_levels(axis.name, axis.default, renders))
    return problems


def _dead_levels(axis: str, default: str, renders: Mapping[str, str]) -> list[str]:
    problems: list[str] = []
    if default in renders:
        plain_default = strip_marks(renders[default])
        for level, text in renders.items():
            if level != default and strip_marks(text) == plain_default:
                problems.append(
                    f"axis {axis!r} level {level!r} renders the same prompt as the default "
                    f"{default!r}"
                )
    blocks = [axis_blocks(text, axis) for text in renders.values()]
    if len(blocks) > 1 and len({len(b) for b in blocks}) == 1:
        for position, contents in enumerate(zip(*blocks, strict=True)):
            if len(set(contents)) == 1:
                problems.append(
                    f"axis {axis!r} block #{position + 1} is dead: the same text at every level "
                    f"({contents[0][:40]!r})"
                )
    return problems


def _static_problems(scenario: Scenario) -> list[str]:
    env = scenario.environment()
    problems: list[str] = []
    known_vars = {
        name: {var for level in axis.levels.values() for var in level.vars}
        for name, axis in scenario.axes.items()
    }
    for file in sorted(scenario.path.glob("*.j2")):
        try:
            tree = env.parse(file.read_text(encoding="utf-8"), name=file.name)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{file.name}, line {exc.lineno}: syntax error: {exc.message}")
            continue
        extra = meta.find_undeclared_variables(tree) - {"levels", "v", "facts", "request"}
        if extra:
            problems.append(f"{file.name}: undefined names {sorted(extra)}")
        for node in tree.find_all((nodes.Getattr, nodes.Compare, nodes.Filter, nodes.FilterBlock)):
            problems.extend(
                f"{file.name}, line {node.lineno}: {msg}"
                for msg in _node_problems(node, scenario, known_vars)
            )
    return problems


def _node_problems(
    node: nodes.Node, scenario: Scenario, known_vars: Mapping[str, set[str]]
) -> list[str]:
    axes = scenario.axes
    if isinstance(node, nodes.FilterBlock):
        node = node.filter
    if isinstance(node, nodes.Filter) and node.name == "axis":
        names = [a.value for a in node.args if isinstance(a, nodes.Const)]
        return [f"axis({n!r}) names an undeclared axis" for n in names if n not in axes]
    if (
        isinstance(node, nodes.Getattr)
        and isinstance(node.node, nodes.Name)
        and node.node.name in {"levels", "v"}
        and node.attr not in axes
    ):
        return [f"{node.node.name}.{node.attr} names an undeclared axis"]
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Getattr):
        inner = node.node
        if (
            isinstance(inner.node, nodes.Name)
            and inner.node.name == "v"
            and inner.attr in axes
            and node.attr not in known_vars[inner.attr]
        ):
            return [f"v.{inner.attr}.{node.attr}: no level of {inner.attr!r} sets that var"]
    if isinstance(node, nodes.Compare):
        return _compare_problems(node, axes)
    return []


def _compare_problems(node: nodes.Compare, axes: Mapping[str, Any]) -> list[str]:
    expr = node.expr
    if not (
        isinstance(expr, nodes.Getattr)
        and isinstance(expr.node, nodes.Name)
        and expr.node.name == "levels"
        and expr.attr in axes
    ):
        return []
    levels = axes[expr.attr].levels
    values: list[object] = []
    for operand in node.ops:
        target = operand.expr
        if isinstance(target, nodes.Const):  # the parser folds a literal list into one Const
            value = target.value
            values.extend(value if isinstance(value, list | tuple) else [value])
        elif isinstance(target, nodes.List | nodes.Tuple):
            values.extend(i.value for i in target.items if isinstance(i, nodes.Const))
    return [
        f"levels.{expr.attr} compared with {v!r}, which is not one of its levels {list(levels)}"
        for v in values
        if v not in levels
    ]


__all__ = [
    "PRESETS",
    "Perturbation",
    "Violation",
    "audit_minimal_pairs",
    "axis_blocks",
    "check_templates",
    "mask_axis",
    "sibling_pairs",
    "strip_marks",
]
