"""The markdown report: hypothesis table, descriptive tables, figure links, run manifest.

Every cell is escaped: model names, condition levels and rules come from the store and may
hold markdown or HTML, and a markdown viewer renders raw HTML. Transcripts are not included
(they live in the HTML viewer).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from afperturb.report._summary import TABLE_COLUMNS, ReportData

# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones that can
# start markup inside a table cell (emphasis, code, links, raw HTML, entities, cell breaks).
# An underscore inside a word (rater_sycophancy) cannot open emphasis, so it stays readable.
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|~&!#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")

Formatter = Callable[[Any], str]


def md_escape(value: Any) -> str:
    """Escape one value for a markdown table cell: markup characters and line breaks."""
    text = "" if value is None else str(value)
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"\s*[\r\n]+\s*", " ", text)


def code_fence(text: str, info: str = "") -> str:
    """A fenced code block whose fence is longer than any backtick run inside ``text``."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def fmt_number(value: Any, digits: int = 3) -> str:
    """Fixed decimals; empty for missing values."""
    if value is None or value is pd.NA:
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "" if math.isnan(number) else f"{number:.{digits}f}"


def fmt_pvalue(value: Any) -> str:
    """Three significant digits, scientific below 0.001; empty for missing values."""
    text = fmt_number(value)
    if not text:
        return ""
    number = float(value)
    return f"{number:.2e}" if 0 < number < 1e-3 else f"{number:.3g}"


def fmt_percent(value: Any) -> str:
    """A rate as a percentage with one decimal."""
    text = fmt_number(value)
    return f"{float(value) * 100:.1f} %" if text else ""


def markdown_table(
    frame: pd.DataFrame, columns: Sequence[str], formats: Mapping[str, Formatter] | None = None
) -> str:
    """A pipe table of ``columns`` with per-column formatters, every cell escaped."""
    formats = formats or {}
    header = "| " + " | ".join(md_escape(c) for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    lines = [header, rule]
    for row in frame.to_dict("records"):
        cells = []
        for column in columns:
            fmt = formats.get(column, _plain)
            cells.append(md_escape(fmt(row.get(column))))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plain(value: Any) -> str:
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float):
        return fmt_number(value)
    return str(value)


HYPOTHESIS_FORMATS: dict[str, Formatter] = {
    "estimate": fmt_number,
    "ci_low": fmt_number,
    "ci_high": fmt_number,
    "pvalue": fmt_pvalue,
    "pvalue_adj": fmt_pvalue,
}
GAP_COLUMNS = (
    "model",
    "contrast",
    "context",
    "n_a",
    "n_b",
    "compliance_a",
    "compliance_b",
    "gap",
)
SUMMARY_COLUMNS = (
    "model",
    "condition",
    "trained",
    "rated",
    "n",
    "compliance",
    "ci_low",
    "ci_high",
    "af_rate",
    "n_format_failure",
    "n_failed",
)
SUMMARY_FORMATS: dict[str, Formatter] = {
    "compliance": fmt_percent,
    "ci_low": fmt_percent,
    "ci_high": fmt_percent,
    "af_rate": fmt_percent,
}


def gap_display(gaps: pd.DataFrame) -> pd.DataFrame:
    """The gap table with the CI folded into one readable column."""
    shown = gaps.copy()
    shown["gap"] = [
        f"{fmt_percent(g)} [{fmt_percent(lo)}, {fmt_percent(hi)}]"
        for g, lo, hi in zip(gaps["gap"], gaps["ci_low"], gaps["ci_high"], strict=True)
    ]
    for column in ("compliance_a", "compliance_b"):
        shown[column] = [fmt_percent(v) for v in gaps[column]]
    return shown


def overview(data: ReportData) -> str:
    """One sentence of counts: what went into this report."""
    frame = data.trials
    failed = int((frame["status"] != "completed").sum())
    return (
        f"{len(frame)} trials: {frame['model'].nunique()} models × {len(data.conditions)} "
        f"conditions × {frame['request_id'].nunique()} requests; {failed} failed."
    )


def render_markdown(
    data: ReportData, figures: Mapping[str, str], skipped: Mapping[str, str]
) -> str:
    """The whole ``report.md``; ``figures`` maps figure names to paths relative to it."""
    parts = ["# afperturb report", "", md_escape(overview(data)), "", "## Hypotheses", ""]
    if data.table.empty:
        parts.append("No hypothesis table was given.")
    else:
        parts.append(markdown_table(data.table, TABLE_COLUMNS, HYPOTHESIS_FORMATS))
    parts += [
        "",
        "## Compliance gaps (training vs control, descriptive)",
        "",
        "Newcombe 95 % intervals, unpaired and so conservative for paired designs; the "
        "verdicts above use the design-respecting tests.",
        "",
    ]
    if data.gaps.empty:
        parts.append("No condition pairs (trained vs not trained, one axis apart) were found.")
    else:
        parts.append(markdown_table(gap_display(data.gaps), GAP_COLUMNS))
    parts += ["", "## Outcomes per condition", "", "Compliance among trials with a verdict, "]
    parts[-1] += "Wilson 95 % intervals."
    parts += ["", markdown_table(data.summary, SUMMARY_COLUMNS, SUMMARY_FORMATS), ""]
    parts += ["## Figures", ""]
    for name, path in figures.items():
        parts += [f"![{md_escape(name)}]({path})", ""]
    for name, reason in skipped.items():
        parts += [f"- {md_escape(name)}: not drawn ({md_escape(reason)})"]
    parts += ["", "## Run manifest", ""]
    manifest = json.dumps(data.manifest, indent=2, sort_keys=True, default=str)
    parts += [code_fence(manifest, "json"), ""]
    return "\n".join(parts)


__all__ = ["code_fence", "markdown_table", "md_escape", "render_markdown"]
