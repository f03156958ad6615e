"""Commands that read a store or plan one: ``attribute``, ``report``, ``plan`` and ``cache``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import pandas as pd

from afperturb.cli._core import EXIT_OK, command
from afperturb.errors import DesignError, StoreError
from afperturb.report._cli import REPORT_EPILOG, REPORT_HELP, configure_report, run_report
from afperturb.store._maintenance import cache_size, prune_cache

__all__ = ["cache_size", "prune_cache"]

command("report", REPORT_HELP, configure_report, REPORT_EPILOG)(run_report)


def _store_path(path: Path) -> Path:
    if not path.is_file():
        raise StoreError(f"no store at {str(path)!r}")
    return path


# ---------------------------------------------------------------------- attribute

ATTRIBUTE_EPILOG = """examples:
  afperturb attribute runs.sqlite
  afperturb attribute runs.sqlite --alpha 0.01 --margin 0.03 --correction bh
  afperturb attribute runs.sqlite --format latex > table1.tex
  afperturb attribute runs.sqlite --model sim/opus-like --format json

Verdicts follow the written rules in docs/decision-rules.md (the `rule` column of --format csv
or json names the rule behind each row).
"""

FORMATS = ("table", "markdown", "csv", "json", "latex")


def _attribute_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", type=Path, help="the SQLite store of one or more sweeps")
    parser.add_argument("--alpha", type=float, default=0.05, help="error rate (0.05)")
    parser.add_argument(
        "--margin", type=float, default=0.05, help="equivalence margin, probability points (0.05)"
    )
    parser.add_argument(
        "--correction",
        default="holm",
        choices=("holm", "bh", "bonferroni", "none"),
        help="multiplicity correction over the table (holm)",
    )
    parser.add_argument("--format", default="table", choices=FORMATS, help="output format")
    parser.add_argument(
        "--model", action="append", metavar="MODEL", help="only these models (repeatable)"
    )


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if 0 < abs(value) < 1e-4:
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def text_table(frame: pd.DataFrame) -> str:
    """An aligned plain-text table (the terminal's default view of a result)."""
    cells = [[_fmt(v) for v in row] for row in frame.itertuples(index=False)]
    columns = list(frame.columns)
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


@command(
    "attribute",
    "apply the decision rules to a store: one verdict per model x hypothesis",
    _attribute_args,
    ATTRIBUTE_EPILOG,
)
def _attribute(args: argparse.Namespace) -> int:
    from afperturb.hypotheses import attribute
    from afperturb.results import SweepResult
    from afperturb.store import Store

    store = Store.open(_store_path(args.store), create=False)
    try:
        results = [SweepResult.load(store, model=m) for m in args.model] if args.model else None
        result = SweepResult.combine(results) if results else SweepResult.load(store)
        table = attribute(result, args.alpha, args.margin, args.correction)
    finally:
        store.close()
    frame = table.to_frame()
    if args.format == "markdown":
        print(table.to_markdown())
    elif args.format == "latex":
        print(table.to_latex())
    elif args.format == "csv":
        print(frame.to_csv(index=False), end="")
    elif args.format == "json":
        print(frame.to_json(orient="records", indent=2, force_ascii=False))
    else:
        columns = ["model", "hypothesis", "verdict", "estimate", "ci_low", "ci_high"]
        base = frame["verdict"] == "baseline"  # the null control: say how it came out
        frame.loc[base, "verdict"] = "baseline: " + frame.loc[base, "verdict_reason"]
        print(text_table(frame[[*columns, "pvalue_adj", "n", "af_rate", "note"]]))
    return EXIT_OK


# ---------------------------------------------------------------------- plan

PLAN_EPILOG = """examples:
  afperturb plan --gap 0.05 --rate 0.12                  # requests for 90 % power
  afperturb plan --gap 0.05 --rate 0.12 --correlation 0.3 --power 0.8
  afperturb plan --gap 0.03 --rate 0.12 --n 400          # power at 400 requests

--rate is the control arm's compliance rate; --correlation the within-request correlation of
the two arms (paired designs share requests; measure it on a pilot with
af.stats.paired_correlation). Two-sided by default; --alternative greater for a one-sided test.
"""


def _plan_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gap", type=float, required=True, help="the gap to detect (0.05)")
    parser.add_argument("--rate", type=float, required=True, help="control compliance rate")
    parser.add_argument("--n", type=int, help="requests per condition: report power at n")
    parser.add_argument("--alpha", type=float, default=0.05, help="test level (0.05)")
    parser.add_argument("--power", type=float, default=0.9, help="target power (0.9)")
    parser.add_argument("--correlation", type=float, default=0.0, help="paired correlation (0)")
    parser.add_argument(
        "--alternative", default="two-sided", choices=("two-sided", "greater", "less")
    )


@command("plan", "power and sample size for detecting a compliance gap", _plan_args, PLAN_EPILOG)
def _plan(args: argparse.Namespace) -> int:
    from afperturb.stats.power import power_gap, sample_size_gap

    if not 0 < args.alpha < 1:
        raise DesignError(f"--alpha must lie in (0, 1), got {args.alpha}")
    if not 0 < args.power < 1:
        raise DesignError(f"--power must lie in (0, 1), got {args.power}")
    common = {"correlation": args.correlation, "alpha": args.alpha}
    if args.n is not None:
        if args.n < 2:
            raise DesignError(f"--n must be >= 2, got {args.n}")
        res = power_gap(args.rate, args.gap, args.n, alternative=args.alternative, **common)
        print(f"power {res.power:.3f} to detect a gap of {args.gap:g} with n = {res.n} requests")
    else:
        res = sample_size_gap(
            args.rate, args.gap, power=args.power, alternative=args.alternative, **common
        )
        print(
            f"n = {res.n} requests per condition for power {args.power:g} "
            f"(achieved {res.power:.3f}) to detect a gap of {args.gap:g}"
        )
    print(
        f"control rate {args.rate:g}, correlation {args.correlation:g}, alpha {args.alpha:g} "
        f"({args.alternative}), effect size {res.effect_size:.3f}; {res.method}"
    )
    return EXIT_OK


# ---------------------------------------------------------------------- cache

CACHE_EPILOG = """examples:
  afperturb cache runs.sqlite size
  afperturb cache runs.sqlite prune --dry-run
  afperturb cache runs.sqlite prune

prune deletes cached completions that no trial references (left behind when a trial was
re-run with other params or a model config changed) and prompt texts no completion uses, then
compacts the file. Judge completions are kept while the store holds labels from an LLM judge
(labels do not record which completions they came from).
"""


def _cache_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", type=Path, help="the SQLite store")
    parser.add_argument("action", choices=("size", "prune"), help="size: report; prune: delete")
    parser.add_argument("--dry-run", action="store_true", help="prune: count, delete nothing")


@command("cache", "the store's completion cache: `size` or `prune`", _cache_args, CACHE_EPILOG)
def _cache(args: argparse.Namespace) -> int:
    if args.action == "size":
        info = cache_size(args.store)
        print(f"{args.store}: {info['file_bytes']:,} bytes on disk")
        print(
            f"  completions {info['completions']:,} ({info['completion_bytes']:,} bytes), "
            f"texts {info['texts']:,} ({info['text_bytes']:,} bytes), "
            f"trials {info['trials']:,}, labels {info['labels']:,}"
        )
        return EXIT_OK
    res = prune_cache(args.store, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {res['completions']:,} unreferenced completion(s), {res['texts']:,} text(s)")
    freed = res["bytes_before"] - res["bytes_after"]
    print(f"{res['bytes_before']:,} -> {res['bytes_after']:,} bytes ({freed:,} freed)")
    return EXIT_OK


# ---------------------------------------------------------------------- from-inspect

FROM_INSPECT_EPILOG = """examples:
  afperturb from-inspect logs/2026-12-03T10-00-00_afperturb-paper.eval --store runs.sqlite
  afperturb attribute runs.sqlite                  # then everything else reads the store

Reads an inspect_ai .eval log of an afperturb task (`inspect eval afperturb/paper ...`, or
afperturb.inspect.task(...)) into a store, replaying its replies through the sweep engine:
conditions, requests, samples, continuations, usage, tag and heuristic labels. Needs the
inspect extra: pip install "afperturb[inspect]". A log of another task is refused (exit 2).
"""


def _from_inspect_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", type=Path, help="the .eval log")
    parser.add_argument("--store", type=Path, required=True, help="the store to write")


@command(
    "from-inspect",
    "read an inspect_ai log of an afperturb task into a store",
    _from_inspect_args,
    FROM_INSPECT_EPILOG,
)
def _from_inspect(args: argparse.Namespace) -> int:
    from afperturb.inspect import from_inspect_log

    if not args.log.is_file():
        raise StoreError(f"no log at {str(args.log)!r}")
    result = from_inspect_log(args.log, store=args.store)
    frame = result.to_frame()
    print(
        f"{len(frame)} trials of {frame['model'].iloc[0] if len(frame) else '?'} "
        f"({frame['condition_id'].nunique()} conditions) into {args.store}"
    )
    return EXIT_OK
