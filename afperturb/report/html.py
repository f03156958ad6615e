r"""The one-file HTML report: tables, figures, manifest and the paired transcript viewer.

The page is self-contained (inline CSS and JS, figures as base64 data URIs) and treats model
output as hostile:

- transcripts travel only as JSON in a ``<script type="application/json">`` block, with every
  ``<``, ``>`` and ``&`` written as a ``\u00XX`` escape so no ``</script>`` or ``<!--`` can end
  or bend the block;
- the viewer script builds nodes with ``createElement``/``textContent`` only;
- the static tables are escaped with :func:`html.escape`;
- a Content-Security-Policy allows exactly this page's script and stylesheet (by SHA-256 hash
  computed at write time), images from data URIs only, and nothing from any network.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from afperturb.report._data import (
    OUTCOME_NAMES,
    highlight_segments,
    parse_quotes,
    split_transcript,
)
from afperturb.report._summary import TABLE_COLUMNS, ReportData
from afperturb.report._viewer import CSS, JS
from afperturb.report.markdown import (
    GAP_COLUMNS,
    HYPOTHESIS_FORMATS,
    SUMMARY_COLUMNS,
    SUMMARY_FORMATS,
    Formatter,
    gap_display,
    overview,
)

FIGURE_TITLES: dict[str, str] = {
    "compliance_bars": "Outcomes per model and condition",
    "dose_response": "Instrumental goal guarding: gap against deployment harm",
    "forest": "Hypothesis effects",
    "threshold": "AF judge threshold sensitivity",
}


def json_for_script(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` survive."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def csp_hash(source: str) -> str:
    """The CSP source expression allowing exactly this inline script or style."""
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def content_security_policy(script: str, style: str) -> str:
    """Nothing from anywhere, except this page's own script, stylesheet and data-URI images."""
    return (
        "default-src 'none'; "
        f"script-src {csp_hash(script)}; "
        f"style-src {csp_hash(style)}; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _cell(value: Any, fmt: Formatter | None) -> str:
    if fmt is not None:
        return fmt(value)
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def html_table(
    frame: pd.DataFrame,
    columns: Sequence[str],
    formats: Mapping[str, Formatter] | None = None,
    *,
    table_id: str,
) -> str:
    """An escaped HTML table; verdict cells get a class so CSS can colour them."""
    formats = formats or {}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body: list[str] = []
    for row in frame.to_dict("records"):
        cells = []
        for column in columns:
            value = row.get(column)
            text = html.escape(_cell(value, formats.get(column)))
            cls = ""
            if column == "verdict" and isinstance(value, str):
                cls = f' class="verdict-{html.escape(value.partition(":")[0])}"'
            elif isinstance(value, int | float) and not isinstance(value, bool):
                cls = ' class="num"'
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _segments(text: str, quotes: Sequence[str]) -> list[list[Any]]:
    return [[piece, 1 if marked else 0] for piece, marked in highlight_segments(text, quotes)]


def _maybe(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def viewer_payload(data: ReportData, max_requests: int | None = 200) -> dict[str, Any]:
    """The JSON the viewer reads: conditions, pairs, request texts and split transcripts.

    ``max_requests`` caps the requests embedded per model (the first ones by id), so a
    paper-sized run still makes a page a browser opens.
    """
    frame = data.trials
    kept: list[pd.DataFrame] = []
    truncated: dict[str, int] = {}
    for model, group in frame.groupby("model", sort=False):
        ids = sorted(group["request_id"].astype(str).unique())
        if max_requests is not None and len(ids) > max_requests:
            truncated[str(model)] = len(ids)
            group = group[group["request_id"].astype(str).isin(set(ids[:max_requests]))]
        kept.append(group)
    shown = pd.concat(kept) if kept else frame
    trials = []
    for row in shown.to_dict("records"):
        quotes = parse_quotes(row.get("af_quotes"))
        parts = split_transcript(_maybe(row.get("text")))
        af = _maybe(row.get("af_reasoning"))
        trials.append(
            {
                "m": str(row["model"]),
                "c": str(row["condition_id"]),
                "r": str(row["request_id"]),
                "s": int(row.get("sample") or 0),
                "o": row["outcome"],
                "lab": _maybe(row.get("label")),
                "af": None if af is None else bool(af),
                "partial": None if _maybe(row.get("partial")) is None else bool(row["partial"]),
                "motive": _maybe(row.get("motive")),
                "score": _maybe(row.get("af_score")),
                "err": _maybe(row.get("error")),
                "sp": _segments(parts.scratchpad, quotes),
                "out": _segments(parts.output, quotes),
                "raw": _segments(parts.raw, quotes),
            }
        )
    requests: dict[str, str] = {}
    if "request_text" in shown.columns:
        for rid, text in zip(shown["request_id"], shown["request_text"], strict=True):
            if _maybe(text) is not None:
                requests.setdefault(str(rid), str(text))
    return {
        "models": list(dict.fromkeys(str(m) for m in frame["model"])),
        "conditions": {
            cid: {"label": c.label, "trained": c.trained, "rated": c.rated}
            for cid, c in data.conditions.items()
        },
        "pairs": {m: [list(p) for p in ps] for m, ps in data.pairs.items()},
        "requests": requests,
        "trials": trials,
        "truncated": truncated,
        "outcome_names": OUTCOME_NAMES,
    }


def _figures_html(figures: Mapping[str, Path], skipped: Mapping[str, str]) -> str:
    parts: list[str] = []
    for name, path in figures.items():
        encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        title = html.escape(FIGURE_TITLES.get(name, name))
        parts.append(
            f'<figure id="figure-{html.escape(name)}"><img alt="{title}" '
            f'src="data:image/png;base64,{encoded}"><figcaption>{title}</figcaption></figure>'
        )
    for name, reason in skipped.items():
        parts.append(
            f'<p class="note skipped">{html.escape(FIGURE_TITLES.get(name, name))}: '
            f"not drawn ({html.escape(reason)})</p>"
        )
    return "\n".join(parts)


def render_html(
    data: ReportData,
    figures: Mapping[str, Path],
    skipped: Mapping[str, str],
    *,
    title: str = "afperturb report",
    max_requests: int | None = 200,
) -> str:
    """The whole ``report.html`` as one string."""
    payload = viewer_payload(data, max_requests)
    note = ""
    if payload["truncated"]:
        counts = ", ".join(f"{m}: {n}" for m, n in payload["truncated"].items())
        note = (
            f'<p class="note">The viewer holds the first {max_requests} requests per model '
            f"(of {html.escape(counts)}).</p>"
        )
    hyp = (
        '<p class="note">No hypothesis table was given.</p>'
        if data.table.empty
        else html_table(data.table, TABLE_COLUMNS, HYPOTHESIS_FORMATS, table_id="hypothesis-table")
    )
    gaps = (
        '<p class="note">No trained vs untrained condition pairs one axis apart.</p>'
        if data.gaps.empty
        else html_table(gap_display(data.gaps), GAP_COLUMNS, table_id="gap-table")
    )
    summary = html_table(data.summary, SUMMARY_COLUMNS, SUMMARY_FORMATS, table_id="outcome-table")
    manifest = json.dumps(data.manifest, indent=2, sort_keys=True, default=str)
    csp = content_security_policy(JS, CSS)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{html.escape(csp)}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p id="overview">{html.escape(overview(data))}</p>
<nav><a href="#hypotheses">hypotheses</a><a href="#gaps">gaps</a>
<a href="#outcomes">outcomes</a><a href="#figures">figures</a>
<a href="#viewer">transcripts</a><a href="#manifest">manifest</a></nav>
<section id="hypotheses"><h2>Hypotheses</h2>{hyp}</section>
<section id="gaps"><h2>Compliance gaps (training vs control, descriptive)</h2>
<p class="note">Newcombe 95 % intervals, unpaired and so conservative for paired designs; the
verdicts above come from the design-respecting tests.</p>{gaps}</section>
<section id="outcomes"><h2>Outcomes per condition</h2>
<p class="note">Compliance among trials with a verdict, Wilson 95 % intervals.</p>
{summary}</section>
<section id="figures"><h2>Figures</h2>{_figures_html(figures, skipped)}</section>
<section id="viewer"><h2>Paired transcript viewer</h2>{note}
<p class="note">Model output is shown as text; judge quotes are highlighted.</p>
<div id="viewer-root"><noscript>The transcript viewer needs JavaScript.</noscript></div>
</section>
<section id="manifest"><h2>Run manifest</h2><pre id="manifest-json">{html.escape(manifest)}</pre>
</section>
<script type="application/json" id="afp-data">{json_for_script(payload)}</script>
<script>{JS}</script>
</body>
</html>
"""


__all__ = ["content_security_policy", "csp_hash", "json_for_script", "render_html"]
