"""Design commands: ``conditions``, ``render``, ``diff`` and ``templates check``.

They read templates and presets only (no model, no store), so they answer instantly and are
the first thing to run on a new design.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from afperturb import _paths
from afperturb.cli._core import command
from afperturb.design import (
    PRESETS,
    Perturbation,
    audit_minimal_pairs,
    check_templates,
)
from afperturb.errors import DesignError
from afperturb.records import Condition
from afperturb.scenario import Scenario

# ---------------------------------------------------------------------- shared arguments


def design_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        default="helpful_only",
        help="a built-in scenario's name, a template folder, or a prompt-file declaration "
        "(.toml naming [scenario] system_file)",
    )
    parser.add_argument("--preset", choices=PRESETS, help="a named design")
    parser.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="AXIS=L1,L2",
        help="vary an axis over levels (repeatable)",
    )
    parser.add_argument(
        "--fixed", action="append", default=[], metavar="AXIS=LEVEL", help="fix an axis"
    )


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        axis, sep, value = item.partition("=")
        if not sep or not axis or not value:
            raise DesignError(f"{flag} expects AXIS=VALUE, got {item!r}")
        out[axis.strip()] = value.strip()
    return out


def make_design(args: argparse.Namespace) -> Perturbation:
    if args.preset and (args.vary or args.fixed):
        raise DesignError("use either --preset or --vary/--fixed, not both")
    if args.preset:
        return Perturbation.preset(args.preset, Scenario.from_spec(args.scenario))
    vary = {a: [v.strip() for v in lv.split(",")] for a, lv in _pairs(args.vary, "--vary").items()}
    scenario = Scenario.from_spec(args.scenario)
    return Perturbation(scenario, vary=vary, fixed=_pairs(args.fixed, "--fixed"))


def _facts_text(condition: Condition) -> str:
    f = condition.facts
    rater = f.rater or "-"
    return (
        f"trained={int(f.trained)} rated={int(f.rated)} rater={rater} "
        f"harm={f.deployment_harm:.2f} conflict={int(f.conflict)} paraphrase={f.paraphrase}"
    )


def print_conditions(p: Perturbation, out: TextIO) -> None:
    varied = list(p.varied)
    for index, c in enumerate(p.conditions()):
        levels = " ".join(f"{a}={c.levels[a]}" for a in varied) or "(defaults)"
        print(f"{index:>3}  {c.id}  {levels}  |  {_facts_text(c)}", file=out)


# ---------------------------------------------------------------------- commands


def _conditions_args(parser: argparse.ArgumentParser) -> None:
    design_args(parser)
    parser.add_argument("--json", action="store_true", help="the design as JSON (describe())")


def _render_args(parser: argparse.ArgumentParser) -> None:
    design_args(parser)
    parser.add_argument("--condition", default="0", help="id, id prefix or index (default 0)")
    parser.add_argument("--request", help="request text (default: the scenario's probe)")
    parser.add_argument("--json", action="store_true", help="messages as JSON")


def _diff_args(parser: argparse.ArgumentParser) -> None:
    design_args(parser)
    parser.add_argument("a", help="first condition: id, id prefix or index")
    parser.add_argument("b", help="second condition: id, id prefix or index")
    parser.add_argument("--request", help="request text (default: the scenario's probe)")


CONDITIONS_EPILOG = """examples:
  afperturb conditions --preset rater_sycophancy
  afperturb conditions --vary tier=free,paid --fixed lab=openai
  afperturb conditions --preset paper --json > design.json
"""
RENDER_EPILOG = """examples:
  afperturb render --preset paper --condition 0 --request "Explain tides."
  afperturb render --vary tier=free,paid --condition 1 --json
  afperturb render --fixed prefill=strongest_reasons     # base-model prefill as last message
"""
DIFF_EPILOG = """examples:
  afperturb diff --preset null_control 0 1
  afperturb diff --vary lab=anthropic,openai 0 1 --request "Explain tides."
"""
TEMPLATES_EPILOG = """examples:
  afperturb templates check
  afperturb templates check --scenario helpful_only
  AFPERTURB_TEMPLATES=my_templates/ afperturb templates check   # your own scenarios
"""


@command(
    "conditions",
    "list a design's conditions with their ids, levels and facts",
    _conditions_args,
    CONDITIONS_EPILOG,
)
def _conditions(args: argparse.Namespace) -> int:
    p = make_design(args)
    if args.json:
        print(json.dumps(p.describe(), indent=2))
    else:
        print_conditions(p, sys.stdout)
    return 0


@command("render", "print the rendered prompt of one condition", _render_args, RENDER_EPILOG)
def _render(args: argparse.Namespace) -> int:
    p = make_design(args)
    condition = p.condition(args.condition)
    request = args.request if args.request is not None else p.scenario.probe_request
    messages = p.render(condition, request)
    if args.json:
        print(json.dumps([m.model_dump() for m in messages], indent=2))
        return 0
    print(f"# condition {condition.id}: {_facts_text(condition)}")
    for message in messages:
        print(f"### {message.role}\n{message.content}\n")
    return 0


@command("diff", "unified diff between two conditions' rendered prompts", _diff_args, DIFF_EPILOG)
def _diff(args: argparse.Namespace) -> int:
    p = make_design(args)
    print(p.diff(args.a, args.b, request=args.request), end="")
    return 0


def _templates_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = sub.add_parser("check", help="render every level, audit every preset's minimal pairs")
    check.add_argument(
        "--scenario",
        action="append",
        help="scenario to check: a built-in name, a template folder or a prompt-file "
        "declaration (repeatable; default: every built-in scenario)",
    )


@command("templates", "template tools: `templates check`", _templates_args, TEMPLATES_EPILOG)
def _templates(args: argparse.Namespace) -> int:
    names = args.scenario or Scenario.available()
    problems = 0
    for name in names:
        scenario = Scenario.from_spec(name)
        found = check_templates(scenario)
        audited = _audit(scenario, found)
        status = "ok" if not found else f"{len(found)} problem(s)"
        print(f"{scenario.name}: {len(scenario.axes)} axes, {audited} audited: {status}")
        for problem in found:
            print(f"  - {problem}")
        problems += len(found)
    return 1 if problems else 0


def _audit(scenario: Scenario, found: list[str]) -> str:
    """Audit minimal pairs: every preset on a built-in scenario, each axis alone on others.

    A scenario of the user's own (a template folder, a prompt file) need not declare the
    presets' axes, so each of its axes is varied alone (in the axis' ``check`` context).
    """
    if scenario.path.resolve().parent == _paths.templates_root().resolve():
        for preset in PRESETS:
            violations = audit_minimal_pairs(Perturbation.preset(preset, scenario))
            found.extend(f"preset {preset}: {v}" for v in violations)
        return f"{len(PRESETS)} presets"
    for axis in scenario.axes.values():
        try:
            design = Perturbation(scenario, vary={axis.name: list(axis.levels)}, fixed=axis.check)
        except DesignError as exc:
            found.append(f"axis {axis.name!r}: its levels do not form one design: {exc}")
            continue
        found.extend(f"axis {axis.name}: {v}" for v in audit_minimal_pairs(design))
    return f"{len(scenario.axes)} single-axis designs"


def show_design_demo(out: TextIO) -> int:
    """Print the paper preset: its varied axes, their levels and facts, and its conditions."""
    p = Perturbation.preset("paper")
    sc = p.scenario
    print(f"{p!r}\n", file=out)
    print("Varied axes:", file=out)
    for axis_name, levels in p.varied.items():
        axis = sc.axes[axis_name]
        print(f"  {axis_name}: {axis.description}", file=out)
        for level in levels:
            facts = dict(axis.levels[level].facts)
            extra = f"  facts {facts}" if facts else ""
            print(f"    - {level}: {axis.levels[level].description}{extra}", file=out)
    print("\nConditions:", file=out)
    print_conditions(p, out)
    return 0


__all__ = ["design_args", "make_design", "print_conditions", "show_design_demo"]
