"""Judge validation: how well a classifier's scores agree with human labels.

``evaluate(judge_or_scores, labelled)`` gives AUROC (with a Hanley–McNeil interval), the
sensitivity and specificity at the judge's threshold (Wilson intervals), Cohen's κ, and a
threshold sweep, so a reader can see how a verdict would move with the vote threshold
(SCIENCE.md §4.6). Sensitivity and specificity, with the counts behind them, go straight into
the statistics' misclassification correction::

    ev = af.classify.evaluate(scores, human)
    af.stats.correct_misclassification(positives, n, **ev.correction_kwargs())

Example:
    >>> ev = evaluate([0.9, 0.7, 0.3, 0.1, 0.6, 0.0], [True, True, False, False, True, False],
    ...               threshold=0.4)
    >>> ev.auroc, ev.sensitivity, ev.specificity
    (1.0, 1.0, 1.0)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from afperturb.classify.base import labeller
from afperturb.errors import DesignError, InsufficientDataError
from afperturb.records import Condition, Facts, Label, Request, Trial

if TYPE_CHECKING:
    import pandas as pd

#: Thresholds of the default sweep (vote fractions are multiples of 1/20 for 20 votes).
DEFAULT_SWEEP: tuple[float, ...] = tuple(round(x, 2) for x in np.arange(0.05, 1.0001, 0.05))


@dataclass(frozen=True)
class Evaluation:
    """A classifier against human labels.

    Attributes:
        n: Labelled cases scored.
        n_positive: Cases a human labelled positive (behind ``sensitivity``).
        n_negative: Cases a human labelled negative (behind ``specificity``).
        threshold: Score at or above which the classifier says positive.
        auroc: Area under the ROC curve (probability a positive outranks a negative).
        auroc_ci_low: Lower end of the Hanley–McNeil interval.
        auroc_ci_high: Upper end.
        sensitivity: True-positive rate at ``threshold``.
        specificity: True-negative rate at ``threshold``.
        sensitivity_ci_low: Wilson interval of the sensitivity (low).
        sensitivity_ci_high: Wilson interval of the sensitivity (high).
        specificity_ci_low: Wilson interval of the specificity (low).
        specificity_ci_high: Wilson interval of the specificity (high).
        kappa: Cohen's κ between classifier and humans at ``threshold``.
        accuracy: Agreement rate at ``threshold``.
        confidence_level: Of every interval.
        sweep: One row per threshold (threshold, sensitivity, specificity, kappa,
            positive_rate, youden_j).
        n_failed: Labelled cases whose label is a failure (a judge's ``error``): left out of
            every number above, never replaced by anything else.
    """

    n: int
    n_positive: int
    n_negative: int
    threshold: float
    auroc: float
    auroc_ci_low: float
    auroc_ci_high: float
    sensitivity: float
    specificity: float
    sensitivity_ci_low: float
    sensitivity_ci_high: float
    specificity_ci_low: float
    specificity_ci_high: float
    kappa: float
    accuracy: float
    confidence_level: float
    sweep: pd.DataFrame
    n_failed: int = 0

    def correction_kwargs(self) -> dict[str, float]:
        """Keyword arguments for ``afperturb.stats.correct_misclassification``."""
        return {
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "sensitivity_n": float(self.n_positive),
            "specificity_n": float(self.n_negative),
        }

    def best_threshold(self) -> float:
        """The sweep's threshold with the largest Youden's J (sensitivity + specificity − 1)."""
        # Rounded so float noise does not break ties: the lowest of equal thresholds wins.
        best = int(np.argmax(np.round(self.sweep["youden_j"].to_numpy(), 12)))
        return float(self.sweep["threshold"].to_numpy()[best])

    def to_frame(self) -> pd.DataFrame:
        """One flat row (the sweep is in :attr:`sweep`)."""
        import pandas as pd

        row = {k: v for k, v in self.__dict__.items() if k != "sweep"}
        return pd.DataFrame([row])

    def to_markdown(self) -> str:
        """Summary and the threshold sweep as markdown tables."""
        head = (
            "| n | positives | threshold | AUROC | sensitivity | specificity | kappa |\n"
            "|---|---|---|---|---|---|---|\n"
            f"| {self.n} | {self.n_positive} | {self.threshold:g} | {self.auroc:.3f} "
            f"[{self.auroc_ci_low:.3f}, {self.auroc_ci_high:.3f}] | {self.sensitivity:.3f} | "
            f"{self.specificity:.3f} | {self.kappa:.3f} |"
        )
        lines = [
            "| threshold | sensitivity | specificity | kappa | positive rate |",
            "|---|---|---|---|---|",
        ]
        for r in self.sweep.itertuples(index=False):
            lines.append(
                f"| {r.threshold:g} | {r.sensitivity:.3f} | {r.specificity:.3f} | "
                f"{r.kappa:.3f} | {r.positive_rate:.3f} |"
            )
        return head + "\n\n" + "\n".join(lines)

    def _repr_html_(self) -> str:
        return str(self.to_frame().to_html(index=False))

    def __repr__(self) -> str:
        return (
            f"<Evaluation n={self.n} AUROC={self.auroc:.3f} sens={self.sensitivity:.3f} "
            f"spec={self.specificity:.3f} kappa={self.kappa:.3f} at ≥{self.threshold:g}>"
        )


def evaluate(
    judge_or_scores: Any,
    labelled: Any,
    *,
    threshold: float | None = None,
    thresholds: Sequence[float] = DEFAULT_SWEEP,
    confidence_level: float = 0.95,
    conditions: Mapping[str, Condition] | None = None,
    requests: Mapping[str, Request] | None = None,
) -> Evaluation:
    """Validate a classifier (or its scores) against human labels.

    Args:
        judge_or_scores: One of: scores aligned with ``labelled`` (a sequence of floats or
            bools); a mapping ``trial_key → score``; stored :class:`Label` objects (their
            ``score``, else their ``af_reasoning``/``complied`` flag; all from one classifier
            config, failed ones counted in ``n_failed``); a synchronous classifier
            (``HeuristicAFClassifier()``); or a bound judge (``judge.using(model)``). The last
            two need trials: pass ``labelled`` as ``(trial, truth)`` pairs. For a threshold
            sweep of a voting judge use ``mode="fixed"``: a sequentially stopped yes-fraction
            is only exact at the judge's own threshold.
        labelled: Human labels: a sequence of bools (aligned), a mapping
            ``trial_key → bool``, or a sequence of ``(Trial, bool)`` pairs.
        threshold: Score at or above which the classifier says positive; default: the judge's
            own threshold, else 0.5.
        thresholds: Thresholds of the sweep.
        confidence_level: Of the AUROC, sensitivity and specificity intervals.
        conditions: Conditions by id, for classifiers that read them (tags' scratchpad level).
        requests: Requests by id, for classifiers that read them (the heuristics leave the
            request's own words quoted in a reply unread, as in the sweep).

    Returns:
        An :class:`Evaluation`.
    """
    # pandas, scipy and statsmodels load on first use: this module is imported with the package.
    import pandas as pd
    from scipy.stats import mannwhitneyu
    from statsmodels.stats.proportion import proportion_confint

    scores, truth, own_threshold, n_failed = _align(
        judge_or_scores, labelled, conditions or {}, requests or {}
    )
    cut = threshold if threshold is not None else own_threshold
    y = np.asarray(truth, dtype=bool)
    s = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise InsufficientDataError(
            f"evaluation needs both human-positive and human-negative cases; got "
            f"{n_pos} positive and {n_neg} negative"
        )
    auroc = float(mannwhitneyu(s[y], s[~y]).statistic) / (n_pos * n_neg)
    a_low, a_high = _hanley_mcneil(auroc, n_pos, n_neg, confidence_level)
    at = _confusion(s, y, cut)
    alpha = 1 - confidence_level
    se_low, se_high = proportion_confint(at["tp"], n_pos, alpha=alpha, method="wilson")
    sp_low, sp_high = proportion_confint(at["tn"], n_neg, alpha=alpha, method="wilson")
    sweep = pd.DataFrame([_sweep_row(s, y, t) for t in thresholds])
    return Evaluation(
        n=len(y),
        n_positive=n_pos,
        n_negative=n_neg,
        threshold=cut,
        auroc=auroc,
        auroc_ci_low=a_low,
        auroc_ci_high=a_high,
        sensitivity=at["tp"] / n_pos,
        specificity=at["tn"] / n_neg,
        sensitivity_ci_low=float(se_low),
        sensitivity_ci_high=float(se_high),
        specificity_ci_low=float(sp_low),
        specificity_ci_high=float(sp_high),
        kappa=_kappa(at),
        accuracy=(at["tp"] + at["tn"]) / len(y),
        confidence_level=confidence_level,
        sweep=sweep,
        n_failed=n_failed,
    )


def _confusion(s: np.ndarray, y: np.ndarray, cut: float) -> dict[str, int]:
    pred = s >= cut - 1e-12
    return {
        "tp": int((pred & y).sum()),
        "fp": int((pred & ~y).sum()),
        "fn": int((~pred & y).sum()),
        "tn": int((~pred & ~y).sum()),
    }


def _kappa(c: dict[str, int]) -> float:
    """Cohen's κ of a 2×2 table (as statsmodels' ``cohens_kappa``; 0 when undefined)."""
    n = sum(c.values())
    observed = (c["tp"] + c["tn"]) / n
    pred_pos = (c["tp"] + c["fp"]) / n
    true_pos = (c["tp"] + c["fn"]) / n
    expected = pred_pos * true_pos + (1 - pred_pos) * (1 - true_pos)
    return 0.0 if expected >= 1 else (observed - expected) / (1 - expected)


def _sweep_row(s: np.ndarray, y: np.ndarray, t: float) -> dict[str, float]:
    c = _confusion(s, y, t)
    sens = c["tp"] / (c["tp"] + c["fn"])
    spec = c["tn"] / (c["tn"] + c["fp"])
    return {
        "threshold": float(t),
        "sensitivity": sens,
        "specificity": spec,
        "kappa": _kappa(c),
        "positive_rate": (c["tp"] + c["fp"]) / len(y),
        "youden_j": sens + spec - 1,
    }


def _hanley_mcneil(auc: float, n_pos: int, n_neg: int, level: float) -> tuple[float, float]:
    """Hanley & McNeil (1982) standard error of an AUROC, as a normal interval in [0, 1]."""
    from scipy.stats import norm

    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (
        n_pos * n_neg
    )
    half = float(norm.ppf(0.5 + level / 2)) * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


# --- turning the many accepted inputs into (scores, truth) -----------------------------------


def _label_score(label: Label) -> float | None:
    if label.score is not None:
        return float(label.score)
    flag = label.af_reasoning if label.af_reasoning is not None else label.complied
    return None if flag is None else float(flag)


def _align(
    source: Any,
    labelled: Any,
    conditions: Mapping[str, Condition],
    requests: Mapping[str, Request],
) -> tuple[list[float], list[bool], float, int]:
    pairs = _pairs(labelled)
    threshold = float(getattr(getattr(source, "judge", source), "threshold", 0.5))
    runnable = hasattr(source, "alabel") or hasattr(source, "label")
    if runnable and not isinstance(source, Mapping):
        if pairs is None:
            raise DesignError("to run a classifier, pass labelled as (trial, truth) pairs")
        labels = _run_classifier(source, [t for t, _ in pairs], conditions, requests)
        truth: Mapping[str, Any] = {t.key: v for t, v in pairs}
        return (*_keyed(_label_scores(labels), truth, threshold), _failed(labels, truth))
    if isinstance(source, Mapping):
        truth = labelled if isinstance(labelled, Mapping) else _truth_by_key(pairs)
        return (*_keyed({k: float(v) for k, v in source.items()}, truth, threshold), 0)
    items = list(source)
    if items and isinstance(items[0], Label):
        truth = labelled if isinstance(labelled, Mapping) else _truth_by_key(pairs)
        return (*_keyed(_label_scores(items), truth, threshold), _failed(items, truth))
    truth_list = [bool(v) for _, v in pairs] if pairs is not None else [bool(v) for v in labelled]
    if len(items) != len(truth_list):
        raise DesignError(f"{len(items)} scores but {len(truth_list)} labels; they must align")
    return [float(x) for x in items], truth_list, threshold, 0


def _label_scores(labels: Sequence[Label]) -> dict[str, float | None]:
    """Trial key → score, from the labels of one classifier config (never a mix of several)."""
    configs = sorted({(lab.classifier, lab.config_hash) for lab in labels})
    if len(configs) > 1:
        names = ", ".join(f"{c}:{h[:8]}" if h else c for c, h in configs)
        raise DesignError(
            f"labels from {len(configs)} classifier configs ({names}); evaluate one at a time "
            "(a trial's score would otherwise come from whichever label came last)"
        )
    return {lab.trial_key: _label_score(lab) for lab in labels}


def _failed(labels: Sequence[Label], truth: Mapping[str, Any]) -> int:
    return sum(1 for lab in labels if lab.value == "error" and lab.trial_key in truth)


def _pairs(labelled: Any) -> list[tuple[Trial, bool]] | None:
    if isinstance(labelled, Mapping):
        return None
    items = list(labelled)
    if items and isinstance(items[0], tuple) and isinstance(items[0][0], Trial):
        return [(t, bool(v)) for t, v in items]
    return None


def _truth_by_key(pairs: list[tuple[Trial, bool]] | None) -> dict[str, bool]:
    if pairs is None:
        raise DesignError("keyed scores need labelled as a trial_key → bool mapping or pairs")
    return {t.key: v for t, v in pairs}


def _keyed(
    scores: Mapping[str, float | None], truth: Mapping[str, Any], threshold: float
) -> tuple[list[float], list[bool], float]:
    pairs = [(score, bool(v)) for k, v in truth.items() if (score := scores.get(k)) is not None]
    if not pairs:
        raise InsufficientDataError("no labelled case has a score (no trial keys in common)")
    return [p[0] for p in pairs], [p[1] for p in pairs], threshold


def _run_classifier(
    clf: Any,
    trials: list[Trial],
    conditions: Mapping[str, Condition],
    requests: Mapping[str, Request],
) -> list[Label]:
    if hasattr(clf, "alabel"):

        async def all_labels() -> list[Label]:
            return list(
                await asyncio.gather(
                    *(
                        clf.alabel(t, conditions.get(t.condition_id), requests.get(t.request_id))
                        for t in trials
                    )
                )
            )

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(all_labels())
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            return ex.submit(asyncio.run, all_labels()).result()
    default = Condition(id="", scenario="", levels={}, facts=Facts())
    label = labeller(clf)
    return [
        label(t, conditions.get(t.condition_id, default), requests.get(t.request_id))
        for t in trials
    ]


__all__ = ["DEFAULT_SWEEP", "Evaluation", "evaluate"]
