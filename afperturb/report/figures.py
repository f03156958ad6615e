"""The papers' figures, drawn from the trial and hypothesis tables.

matplotlib is the optional ``plot`` extra and is imported only when a figure is drawn. Figures
are built on ``matplotlib.figure.Figure`` directly, never through pyplot: nothing is shown,
no global backend is switched (a notebook's inline backend keeps working), and PNGs are
rendered by the Agg canvas.

Each figure function returns a ``Figure`` (display it in a notebook, or ``savefig`` it) and
raises :class:`~afperturb.errors.InsufficientDataError` when the data cannot make that figure
(for example no ``af_score`` column for the threshold sensitivity); :func:`write_figures`
turns those into stated reasons instead of failing the report.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from afperturb.errors import InsufficientDataError
from afperturb.report._data import (
    OUTCOME_NAMES,
    OUTCOMES,
    FrameLike,
    PairsArg,
    as_frame,
    conditions_of,
    find_pairs,
    prepare_trials,
    records,
    resolve_pairs,
)
from afperturb.report._summary import condition_summary, pair_gaps, pooled_gaps_by_harm

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INSTALL_HINT = 'figures need matplotlib: pip install "afperturb[plot]"'

#: One colour per base outcome (compliance, partial compliance, refusal); the AF variant of
#: each is the same colour, hatched, as in the paper's figures.
_COLOURS: dict[str, str] = {
    "complied_af": "#f2a93b",
    "complied": "#f2a93b",
    "partial_af": "#9e9ac8",
    "partial": "#9e9ac8",
    "refused_af": "#9ecae1",
    "refused": "#9ecae1",
    "unjudged": "#bdbdbd",
    "format_failure": "#7f7f7f",
    "failed": "#252525",
}
_HATCHED = frozenset({"complied_af", "partial_af", "refused_af"})
VERDICT_COLOURS: dict[str, str] = {
    "supported": "#2ca02c",
    "refuted": "#1f77b4",
    "conflicting": "#d62728",
    "inconclusive": "#7f7f7f",
    "baseline": "#ff7f0e",  # the null control, expected ≈ 0
}


def _new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure; raises ImportError with the install hint when matplotlib is absent."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return Figure(figsize=(width, height), layout="constrained")


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compliance_bars(trials: FrameLike, pairs: PairsArg = None, *, max_rows: int = 40) -> Figure:
    """Stacked outcome bars per model and condition (training vs unmonitored by default).

    Each bar splits all trials of one model × condition into the paper's six categories
    (compliance, partial compliance and refusal, each with and without AF reasoning; the AF
    part hatched in the colour of its base outcome), then trials whose AF or partial judge
    failed, format failures and backend failures, as the papers' headline figure does
    (:mod:`afperturb.classify.outcomes` derives the categories).
    """
    frame = prepare_trials(trials)
    if frame.empty:
        raise InsufficientDataError("no trials to draw compliance bars from")
    per_model = resolve_pairs(frame, pairs)
    summary = condition_summary(frame)
    rows: list[dict[str, Any]] = []
    for model, model_rows in summary.groupby("model", sort=False):
        wanted = list(dict.fromkeys(c for pair in per_model.get(str(model), []) for c in pair))
        by_id = {str(r["condition_id"]): r for r in records(model_rows)}
        rows.extend(by_id[cid] for cid in (wanted or list(by_id)))
    if not rows:
        raise InsufficientDataError("no trials to draw compliance bars from")
    rows = rows[:max_rows]
    fig = _new_figure(9.0, 1.9 + 0.38 * len(rows))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for outcome in OUTCOMES:
        share = np.array([r[f"n_{outcome}"] / r["n"] if r["n"] else 0.0 for r in rows])
        ax.barh(
            y,
            share,
            left=left,
            color=_COLOURS[outcome],
            hatch="//" if outcome in _HATCHED else None,
            edgecolor="#d62728" if outcome in _HATCHED else None,
            label=OUTCOME_NAMES[outcome],
        )
        left += share
    labels = [_short(f"{r['model']} | {r['condition']}", 60) for r in rows]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of trials")
    ax.set_title("Outcomes per model and condition")
    # Below the axes, outside them: constrained layout makes room (no overlap with the label).
    fig.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig


def goal_guarding_dose_response(trials: FrameLike) -> Figure:
    """The goal-guarding gap C(rated and trained) − C(rated only) against ``deployment_harm``.

    Pairs differ in exactly one axis; pairs at the same harm are pooled. Intervals are Newcombe
    (unpaired, so conservative for a paired design); the IGG verdict itself comes from the
    interaction test in the hypothesis table.

    Raises:
        InsufficientDataError: without rated-only vs rated-and-trained pairs at two or more
            harm levels.
    """
    frame = prepare_trials(trials)
    pairs: dict[str, list[tuple[str, str]]] = {}
    for model, group in frame.groupby("model", sort=False):
        conds = conditions_of(group)
        found = find_pairs(conds, control_rated=True)
        pairs[str(model)] = [(a, b) for a, b in found if conds[a].rated]
    table = pair_gaps(frame, pairs, conditions_of(frame))
    pooled = pooled_gaps_by_harm(frame, table)
    levels = pooled.groupby("model")["deployment_harm"].nunique()
    if pooled.empty or int(levels.max()) < 2:
        raise InsufficientDataError(
            "the dose-response needs rated-only vs rated-and-trained condition pairs at two or "
            "more deployment_harm levels"
        )
    fig = _new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    models = [str(m) for m, k in levels.items() if k >= 2]
    offsets = np.linspace(-0.01, 0.01, len(models)) if len(models) > 1 else [0.0]
    for offset, model in zip(offsets, models, strict=True):
        rows = pooled[pooled["model"] == model]
        x = rows["deployment_harm"].to_numpy() + offset
        gap = rows["gap"].to_numpy()
        err = np.vstack([gap - rows["ci_low"].to_numpy(), rows["ci_high"].to_numpy() - gap])
        ax.errorbar(x, gap, yerr=err, marker="o", capsize=3, label=str(model))
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("deployment_harm of the future deployment")
    ax.set_ylabel("goal-guarding gap (trained − rated only)")
    ax.set_title("Instrumental goal guarding: dose-response (95 % Newcombe CIs)")
    ax.legend(fontsize=8)
    return fig


def forest_plot(table: FrameLike) -> Figure:
    """Effect estimates with CIs per model × hypothesis, coloured by verdict.

    Raises:
        InsufficientDataError: when no row has a finite estimate.
    """
    frame = as_frame(table, "table")
    needed = {"model", "hypothesis", "verdict", "estimate", "ci_low", "ci_high"}
    if not needed <= set(frame.columns):
        missing = sorted(needed - set(frame.columns))
        raise InsufficientDataError(f"hypothesis table lacks columns {missing}")
    rows = frame[np.isfinite(pd.to_numeric(frame["estimate"], errors="coerce"))]
    if rows.empty:
        raise InsufficientDataError("no hypothesis row has a finite estimate")
    fig = _new_figure(7.5, 1.2 + 0.32 * len(rows))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    for yi, row in zip(y, rows.to_dict("records"), strict=True):
        colour = VERDICT_COLOURS.get(str(row["verdict"]).partition(":")[0], "#000000")
        lo, hi, est = (float(row[k]) for k in ("ci_low", "ci_high", "estimate"))
        if math.isfinite(lo) and math.isfinite(hi):
            ax.plot([lo, hi], [yi, yi], color=colour, linewidth=2)
        ax.plot([est], [yi], marker="o", color=colour)
    labels = [_short(f"{r['model']} · {r['hypothesis']}", 60) for r in rows.to_dict("records")]
    ax.set_yticks(y, labels, fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.8)
    from matplotlib.lines import Line2D

    seen = list(dict.fromkeys(str(v) for v in rows["verdict"]))
    handles = [
        Line2D(
            [], [], color=VERDICT_COLOURS.get(v.partition(":")[0], "#000000"), marker="o", label=v
        )
        for v in seen
    ]
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.set_xlabel("effect estimate (95 % CI)")
    ax.set_title("Hypothesis effects")
    return fig


def threshold_sensitivity(trials: FrameLike, thresholds: Any = None) -> Figure:
    """Fraction of completed trials judged AF as the vote threshold moves, per model and arm.

    Reads the judge's yes-vote fraction from an ``af_score`` column; the default threshold 0.4
    and the "maybe" band 0.2–0.4 are drawn for reference.

    Raises:
        InsufficientDataError: without an ``af_score`` column holding any vote fraction.
    """
    frame = prepare_trials(trials)
    if "af_score" not in frame.columns:
        raise InsufficientDataError("no af_score column (AF judge vote fractions) in the trials")
    scores = pd.to_numeric(frame["af_score"], errors="coerce")
    frame = frame.assign(af_score=scores)[(frame["status"] == "completed") & scores.notna()]
    if frame.empty:
        raise InsufficientDataError("the af_score column holds no vote fraction")
    grid = np.linspace(0.0, 1.0, 21) if thresholds is None else np.asarray(thresholds, float)
    fig = _new_figure(7.0, 4.2)
    ax: Axes = fig.add_subplot()
    ax.axvspan(0.2, 0.4, color="#eeeeee", label="maybe band")
    ax.axvline(0.4, color="black", linewidth=0.8, linestyle=":", label="default threshold")
    for (model, trained), group in frame.groupby(["model", "trained"], sort=False):
        values = group["af_score"].to_numpy()
        frac = [(values >= t).mean() for t in grid]
        arm = "training" if trained else "not trained"
        ax.plot(grid, frac, linestyle="-" if trained else "--", label=f"{model} ({arm})")
    ax.set_xlabel("vote threshold (yes-fraction ≥ threshold is AF)")
    ax.set_ylabel("fraction judged AF")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("AF judge threshold sensitivity")
    ax.legend(fontsize=7)
    return fig


@dataclass(frozen=True)
class FigureFiles:
    """PNG files written by :func:`write_figures`, and why any figure was not drawn."""

    written: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<FigureFiles written={sorted(self.written)} skipped={sorted(self.skipped)}>"


FIGURES: tuple[str, ...] = ("compliance_bars", "dose_response", "forest", "threshold")


def write_figures(
    trials: FrameLike,
    table: FrameLike | None,
    out_dir: str | Path,
    *,
    pairs: PairsArg = None,
    dpi: int = 110,
) -> FigureFiles:
    """Write every figure the data allows as ``out_dir/<name>.png``; say why for the others.

    Without matplotlib nothing is written and every figure is skipped with the install hint.
    """
    out = Path(out_dir)
    try:
        _new_figure(1, 1)
    except ImportError:
        return FigureFiles(skipped=dict.fromkeys(FIGURES, INSTALL_HINT))
    makers: dict[str, Callable[[], Figure]] = {
        "compliance_bars": lambda: compliance_bars(trials, pairs),
        "dose_response": lambda: goal_guarding_dose_response(trials),
        "forest": lambda: forest_plot(table) if table is not None else _no_table(),
        "threshold": lambda: threshold_sensitivity(trials),
    }
    written: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for name, make in makers.items():
        try:
            fig = make()
        except InsufficientDataError as exc:
            skipped[name] = str(exc)
            continue
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{name}.png"
        # Rendered in memory, then swapped in whole: a failed write (a full disk) leaves the
        # previous figure, which report.md links, as it was.
        from afperturb.report._write import write_atomic

        png = io.BytesIO()
        fig.savefig(png, dpi=dpi, format="png")
        write_atomic(path, png.getvalue())
        written[name] = path
    return FigureFiles(written=written, skipped=skipped)


def _no_table() -> Figure:
    raise InsufficientDataError("no hypothesis table was given")


__all__ = [
    "FIGURES",
    "INSTALL_HINT",
    "VERDICT_COLOURS",
    "FigureFiles",
    "compliance_bars",
    "forest_plot",
    "goal_guarding_dose_response",
    "threshold_sensitivity",
    "write_figures",
]
