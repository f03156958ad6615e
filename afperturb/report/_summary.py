"""Descriptive tables for reports: outcome rates per condition and gaps per condition pair.

These are the numbers a reader checks the figures against. Intervals are Wilson (rates) and
Newcombe (gaps) from statsmodels: deliberately simple and unpaired, so they are conservative
for the paired designs; the hypothesis table carries the design-respecting analysis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from afperturb.classify import outcomes as _outcomes
from afperturb.errors import InsufficientDataError
from afperturb.hypotheses import SUMMARY_COLUMNS
from afperturb.report._data import (
    OUTCOMES,
    ConditionInfo,
    FrameLike,
    PairsArg,
    as_frame,
    conditions_of,
    prepare_trials,
    resolve_pairs,
)
from afperturb.stats import _sm
from afperturb.stats.rates import design_effect

#: The HypothesisTable.to_frame() columns, in display order.
TABLE_COLUMNS: tuple[str, ...] = SUMMARY_COLUMNS


def wilson(k: float, n: float, confidence_level: float = 0.95) -> tuple[float, float]:
    """Wilson interval of k/n; (nan, nan) when n is 0."""
    if n == 0:
        return (math.nan, math.nan)
    lo, hi = _sm.proportion().proportion_confint(k, n, alpha=1 - confidence_level, method="wilson")
    return (float(lo), float(hi))


def newcombe(
    k1: int, n1: int, k2: int, n2: int, confidence_level: float = 0.95
) -> tuple[float, float]:
    """Newcombe hybrid-score interval of k1/n1 − k2/n2; (nan, nan) when an arm is empty."""
    if n1 == 0 or n2 == 0:
        return (math.nan, math.nan)
    lo, hi = _sm.proportion().confint_proportions_2indep(
        k1, n1, k2, n2, method="newcomb", compare="diff", alpha=1 - confidence_level
    )
    return (float(lo), float(hi))


#: Outcomes that count as complying (partial compliance included), those that carry a
#: compliance verdict (``unjudged`` does: only its AF or partial judge failed), and the paper
#: categories with AF reasoning (refusals that consider faking alignment included).
_COMPLIED = tuple(sorted(_outcomes.COMPLIANT))
_JUDGED = (*_COMPLIED, _outcomes.REFUSED, _outcomes.REFUSED_AF, "unjudged")
_WITH_AF = tuple(sorted(_outcomes.WITH_AF))
_CATEGORIZED = _outcomes.CATEGORIES


def _verdict_flags(group: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per trial: complied, and has a verdict (format failures and failed trials have none).

    A trial whose AF or partial judge failed (``unjudged``) still has its compliance verdict.
    """
    outcomes = group["outcome"]
    judged = outcomes.isin(_JUDGED)
    unjudged = (outcomes == "unjudged") & group["complied"].astype(object).eq(True)
    return outcomes.isin(_COMPLIED) | unjudged, judged


def _verdict_counts(group: pd.DataFrame) -> tuple[int, int]:
    """(complied, with a verdict) among completed trials: format failures have no verdict."""
    complied, judged = _verdict_flags(group)
    return int(complied.sum()), int(judged.sum())


def _design_effect(group: pd.DataFrame) -> float:
    """The design effect of clustering by request within one condition's trials."""
    if "request_id" not in group or group["request_id"].is_unique:
        return 1.0
    complied, judged = _verdict_flags(group)
    per = pd.DataFrame({"k": complied, "n": judged, "r": group["request_id"]}).groupby("r").sum()
    return design_effect(per["k"].to_numpy(dtype=float), per["n"].to_numpy(dtype=float))


def condition_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per model × condition: counts of every outcome and the compliance rate.

    Columns: model, condition_id, condition, trained, rated, deployment_harm, n, n_judged,
    compliance, ci_low, ci_high, af_rate, one ``n_<outcome>`` per outcome. ``compliance`` is
    the share complying (partial compliance included) among trials with a compliance verdict;
    ``af_rate`` the share with AF reasoning, whatever they did (refusals that consider faking
    alignment included, as in the paper), among trials with one of the six categories.
    """
    rows: list[dict[str, object]] = []
    for (model, cid), group in frame.groupby(["model", "condition_id"], sort=False):
        complied, judged = _verdict_counts(group)
        # Several samples of a request are not independent: Wilson's interval at the
        # effective sample size, as afperturb.stats.compliance_rate gives it.
        deff = _design_effect(group)
        lo, hi = wilson(complied / deff, judged / deff)
        counts = group["outcome"].value_counts()
        n_af = sum(int(counts.get(o, 0)) for o in _WITH_AF)
        n_categorized = sum(int(counts.get(o, 0)) for o in _CATEGORIZED)
        first = group.iloc[0]
        row: dict[str, object] = {
            "model": str(model),
            "condition_id": str(cid),
            "condition": str(first["condition_label"]),
            "trained": bool(first["trained"]),
            "rated": bool(first["rated"]),
            "deployment_harm": float(first["deployment_harm"]),
            "n": len(group),
            "n_judged": judged,
            "compliance": complied / judged if judged else math.nan,
            "ci_low": lo,
            "ci_high": hi,
            "af_rate": n_af / n_categorized if n_categorized else math.nan,
        }
        row.update({f"n_{o}": int(counts.get(o, 0)) for o in OUTCOMES})
        rows.append(row)
    return pd.DataFrame(rows)


def _varying_axes(conditions: Mapping[str, ConditionInfo]) -> set[str]:
    keys = {k for c in conditions.values() for k in c.levels}
    return {k for k in keys if len({c.levels.get(k) for c in conditions.values()}) > 1}


def _contrast(a: ConditionInfo, b: ConditionInfo, varying: set[str]) -> dict[str, str]:
    """What differs between two conditions ("tier: free vs paid") and what they share."""
    keys = sorted(set(a.levels) | set(b.levels))
    diff = [k for k in keys if a.levels.get(k) != b.levels.get(k)]
    contrast = "; ".join(f"{k}: {a.levels.get(k)} vs {b.levels.get(k)}" for k in diff)
    shared = [f"{k}={a.levels[k]}" for k in keys if k not in diff and k in varying]
    return {"contrast": contrast or f"{a.id} vs {b.id}", "context": ", ".join(shared)}


def pair_gaps(
    frame: pd.DataFrame,
    pairs: Mapping[str, Sequence[tuple[str, str]]],
    conditions: Mapping[str, ConditionInfo],
) -> pd.DataFrame:
    """Compliance gap C(a) − C(b) with a Newcombe CI for every model's condition pairs.

    Columns: model, condition_a, condition_b, label_a, label_b, contrast (the differing
    levels), context (the shared levels that vary elsewhere), deployment_harm (of ``a``),
    n_a, n_b, compliance_a, compliance_b, gap, ci_low, ci_high.
    """
    rows: list[dict[str, object]] = []
    by_cell = dict(iter(frame.groupby(["model", "condition_id"], sort=False)))
    varying = _varying_axes(conditions)
    for model, model_pairs in pairs.items():
        for a, b in model_pairs:
            ka, na = _verdict_counts(by_cell.get((model, a), frame.iloc[0:0]))
            kb, nb = _verdict_counts(by_cell.get((model, b), frame.iloc[0:0]))
            ca = ka / na if na else math.nan
            cb = kb / nb if nb else math.nan
            lo, hi = newcombe(ka, na, kb, nb)
            rows.append(
                {
                    "model": model,
                    "condition_a": a,
                    "condition_b": b,
                    "label_a": conditions[a].label,
                    "label_b": conditions[b].label,
                    **_contrast(conditions[a], conditions[b], varying),
                    "deployment_harm": conditions[a].deployment_harm,
                    "n_a": na,
                    "n_b": nb,
                    "compliance_a": ca,
                    "compliance_b": cb,
                    "gap": ca - cb,
                    "ci_low": lo,
                    "ci_high": hi,
                }
            )
    columns = [
        "model",
        "condition_a",
        "condition_b",
        "label_a",
        "label_b",
        "contrast",
        "context",
        "deployment_harm",
        "n_a",
        "n_b",
        "compliance_a",
        "compliance_b",
        "gap",
        "ci_low",
        "ci_high",
    ]
    return pd.DataFrame(rows, columns=columns)


def pooled_gaps_by_harm(frame: pd.DataFrame, pair_table: pd.DataFrame) -> pd.DataFrame:
    """Pool a model's pairs at each ``deployment_harm`` (sum counts) for the dose-response.

    Columns: model, deployment_harm, n_pairs, gap, ci_low, ci_high.
    """
    rows: list[dict[str, object]] = []
    by_cell = dict(iter(frame.groupby(["model", "condition_id"], sort=False)))
    for (model, harm), group in pair_table.groupby(["model", "deployment_harm"], sort=True):
        ka = na = kb = nb = 0
        for a, b in zip(group["condition_a"], group["condition_b"], strict=True):
            k, n = _verdict_counts(by_cell[(model, a)])
            ka, na = ka + k, na + n
            k, n = _verdict_counts(by_cell[(model, b)])
            kb, nb = kb + k, nb + n
        lo, hi = newcombe(ka, na, kb, nb)
        gap = ka / na - kb / nb if na and nb else math.nan
        rows.append(
            {
                "model": model,
                "deployment_harm": float(str(harm)),
                "n_pairs": len(group),
                "gap": gap,
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return pd.DataFrame(
        rows, columns=["model", "deployment_harm", "n_pairs", "gap", "ci_low", "ci_high"]
    )


@dataclass(frozen=True)
class ReportData:
    """Everything a report shows, computed once and shared by markdown, HTML and figures."""

    trials: pd.DataFrame
    conditions: dict[str, ConditionInfo]
    pairs: dict[str, list[tuple[str, str]]]
    summary: pd.DataFrame
    gaps: pd.DataFrame
    table: pd.DataFrame
    manifest: dict[str, Any]

    def __repr__(self) -> str:
        return (
            f"<ReportData trials={len(self.trials)} conditions={len(self.conditions)} "
            f"hypothesis_rows={len(self.table)}>"
        )


def build_report_data(
    trials: FrameLike,
    table: FrameLike | None,
    manifest: Mapping[str, Any] | None,
    pairs: PairsArg = None,
) -> ReportData:
    """Normalise the three inputs and compute the descriptive tables.

    Raises:
        InsufficientDataError: when there is no trial at all.
    """
    frame = prepare_trials(trials)
    if frame.empty:
        raise InsufficientDataError("no trials to report: the trials table has no rows")
    conditions = conditions_of(frame)
    per_model = resolve_pairs(frame, pairs)
    hyp = (
        pd.DataFrame(columns=list(TABLE_COLUMNS))
        if table is None
        else as_frame(table, "table").copy()
    )
    for column in TABLE_COLUMNS:
        if column not in hyp.columns:
            hyp[column] = None
    if "verdict_reason" in hyp.columns:  # the null-control baseline says how it came out
        base = hyp["verdict"] == "baseline"
        hyp.loc[base, "verdict"] = "baseline: " + hyp.loc[base, "verdict_reason"].astype(str)
    return ReportData(
        trials=frame,
        conditions=conditions,
        pairs=per_model,
        summary=condition_summary(frame),
        gaps=pair_gaps(frame, per_model, conditions),
        table=hyp,
        manifest=dict(manifest or {}),
    )


__all__ = [
    "TABLE_COLUMNS",
    "ReportData",
    "build_report_data",
    "condition_summary",
    "newcombe",
    "pair_gaps",
    "pooled_gaps_by_harm",
    "wilson",
]
