"""The ``afperturb`` command line: a thin argparse layer over the public API.

Subcommands live in a registry (:data:`COMMANDS`): add one with the :func:`command` decorator,
giving its name, help, a function that adds its arguments and an epilog with examples. Errors
print one line (``afperturb: error: ...``) without a traceback; the exit code says what kind
(see :mod:`afperturb.cli._core`). Nothing in the package imports the CLI.

Examples::

    afperturb demo                                   # the paper's tests on simulated models
    afperturb conditions --preset rater_sycophancy
    afperturb render --preset paper --condition 0 --request "Explain tides."
    afperturb diff --preset null_control 0 1
    afperturb templates check
    afperturb sweep examples/experiment.toml
    afperturb classify runs.sqlite --judge heuristic_motive
    afperturb attribute runs.sqlite --format markdown
    afperturb report runs.sqlite --out report/
    afperturb plan --gap 0.05 --rate 0.12
    afperturb cache runs.sqlite size
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

# Importing the command modules registers them; _ORDER below fixes the --help order.
from afperturb.cli import (
    _analyse,  # noqa: F401  (registers report, attribute, plan, cache, from-inspect)
    _design,  # noqa: F401  (registers conditions, render, diff, templates)
    _run,  # noqa: F401  (registers demo, sweep, classify)
)
from afperturb.cli._core import COMMANDS, Command, command, run_main
from afperturb.cli._core import build_parser as _build_parser
from afperturb.cli._design import show_design_demo

_DESCRIPTION = "Perturbation experiments on alignment faking."
_ORDER = (
    "demo",
    "conditions",
    "render",
    "diff",
    "templates",
    "sweep",
    "classify",
    "attribute",
    "report",
    "plan",
    "cache",
    "from-inspect",
)
for _name in sorted(COMMANDS, key=lambda n: _ORDER.index(n) if n in _ORDER else len(_ORDER)):
    COMMANDS[_name] = COMMANDS.pop(_name)


def build_parser() -> argparse.ArgumentParser:
    """The full parser, one subparser per registered command."""
    examples = __doc__.split("Examples::", 1)[1] if __doc__ else ""
    return _build_parser(
        _DESCRIPTION, "examples:" + examples.rstrip().replace("\n    ", "\n  ")[1:]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (errors print one line, no traceback)."""
    return run_main(build_parser(), argv)


__all__ = ["COMMANDS", "Command", "build_parser", "command", "main", "show_design_demo"]
