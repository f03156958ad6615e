"""Plain-data preparation for reports: normalised frames, outcomes, pairs and transcript parts.

Everything here is pure pandas/numpy on the ``SweepResult.to_frame()`` columns (plus the
optional ``text``, ``request_text`` and judge columns), so figures, markdown and HTML all read
the same numbers and the report never imports models, the sweep or the store.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from afperturb.classify import outcomes as _outcomes
from afperturb.errors import DesignError
from afperturb.records import FRAME_COLUMNS

#: Columns of ``SweepResult.to_frame()`` that are not axes.
BASE_COLUMNS: frozenset[str] = frozenset(FRAME_COLUMNS)
#: Optional per-trial columns the report understands (transcripts and judge outputs).
EXTRA_COLUMNS: frozenset[str] = frozenset(
    {"text", "request_text", "af_quotes", "af_score", "partial", "motive", "compliance_score"}
)
REQUIRED_COLUMNS: tuple[str, ...] = ("model", "condition_id", "request_id", "status")

#: Mutually exclusive per-trial outcomes, in the stacking order of the bar figure: the papers'
#: six categories (:mod:`afperturb.classify.outcomes`), then the trials without one.
OUTCOMES: tuple[str, ...] = (*_outcomes.CATEGORIES, "unjudged", "format_failure", "failed")
OUTCOME_NAMES: dict[str, str] = {
    **_outcomes.CATEGORY_NAMES,
    "unjudged": "no verdict (a judge failed)",
    "format_failure": "format failure",
    "failed": "failed (backend)",
}


class HasFrame(Protocol):
    """Anything with ``to_frame()``: SweepResult, HypothesisTable, ..."""

    def to_frame(self) -> pd.DataFrame:
        """Return the tidy table."""
        ...


FrameLike = pd.DataFrame | HasFrame


def as_frame(obj: FrameLike, what: str) -> pd.DataFrame:
    """Accept a DataFrame or any object with ``to_frame()`` (duck typing, no imports)."""
    if isinstance(obj, pd.DataFrame):
        return obj
    to_frame = getattr(obj, "to_frame", None)
    if callable(to_frame):
        frame = to_frame()
        if isinstance(frame, pd.DataFrame):
            return frame
    raise DesignError(
        f"{what} must be a pandas DataFrame or have to_frame(); got {type(obj).__name__}"
    )


def _tristate(value: Any) -> bool | None:
    """Map pandas nullable booleans, numpy bools and NaN to True/False/None."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return bool(value)


def prepare_trials(trials: FrameLike) -> pd.DataFrame:
    """Validate the trial frame and add the derived ``outcome`` and ``condition_label`` columns.

    Raises:
        DesignError: when a required column is missing (the message lists them).
    """
    frame = as_frame(trials, "trials").copy()
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DesignError(
            f"trials frame lacks columns {missing}; required: {list(REQUIRED_COLUMNS)}"
            f"; present: {sorted(map(str, frame.columns))}"
        )
    defaults: dict[str, Any] = {
        "scenario": "",
        "trained": False,
        "rated": False,
        "deployment_harm": 0.0,
        "sample": 0,
        "label": None,
        "complied": None,
        "af_reasoning": None,
        "error": None,
    }
    for column, value in defaults.items():
        if column not in frame.columns:
            frame[column] = value
    frame["trained"] = frame["trained"].map(lambda v: bool(_tristate(v)))
    frame["rated"] = frame["rated"].map(lambda v: bool(_tristate(v)))
    frame["deployment_harm"] = pd.to_numeric(frame["deployment_harm"]).fillna(0.0)
    frame["outcome"] = report_outcomes(frame)
    # Label conditions by the axes that vary in these data; fixed levels would drown them.
    axes = [a for a in axis_columns(frame) if frame[a].nunique(dropna=False) > 1]
    labels = {
        cid: condition_label(dict(group.iloc[0][axes]), str(cid))
        for cid, group in frame.groupby("condition_id", sort=False)
    }
    frame["condition_label"] = frame["condition_id"].map(labels)
    return frame


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with string keys (what pandas' stubs cannot promise)."""
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def report_outcomes(frame: pd.DataFrame) -> pd.Series:
    """Every trial's outcome (see :data:`OUTCOMES`), from the frame's verdict columns.

    A completed trial gets its category from :func:`afperturb.classify.outcomes.frame_outcomes`;
    without one it is a ``format_failure`` when it has no compliance verdict, else
    ``unjudged`` (its AF or partial-compliance judge failed: an ``*_error`` companion is set).
    A trial that did not complete is ``failed``.
    """
    out = _outcomes.frame_outcomes(frame)
    if "status" in frame.columns:
        done = np.asarray(frame["status"] == "completed", dtype=bool)
    else:
        done = np.ones(len(frame), dtype=bool)
    if "complied" in frame.columns:
        verdict = ~np.asarray(pd.isna(frame["complied"].astype(object)), dtype=bool)
    else:
        verdict = np.zeros(len(frame), dtype=bool)
    missing = np.asarray(out.isna(), dtype=bool)
    out[missing & done & ~verdict] = "format_failure"
    out[missing & done & verdict] = "unjudged"
    out[~done] = "failed"
    return out


def outcome_of(row: Mapping[str, Any]) -> str:
    """The one stacked-bar outcome of a trial (see :data:`OUTCOMES` and :func:`report_outcomes`)."""
    return str(report_outcomes(pd.DataFrame([dict(row)])).iloc[0])


def axis_columns(frame: pd.DataFrame) -> list[str]:
    """Axis columns: not a known column and constant within every condition.

    Judge columns vary per trial, so constancy within a condition separates axes from any
    extra per-trial columns a caller adds.
    """
    known = BASE_COLUMNS | EXTRA_COLUMNS | {"outcome", "condition_label"}
    candidates = [c for c in frame.columns if c not in known]
    if not candidates or frame.empty:
        return []
    grouped = frame.groupby("condition_id", sort=False)[candidates]
    constant = grouped.nunique(dropna=False).le(1).all()
    return [c for c in candidates if bool(constant[c])]


def condition_label(levels: Mapping[str, Any], fallback: str) -> str:
    """Human label of a condition: its axis levels, or its id when there are none."""
    parts = [f"{k}={v}" for k, v in sorted(levels.items()) if v is not None and v == v]
    return ", ".join(parts) if parts else fallback


@dataclass(frozen=True)
class ConditionInfo:
    """What the report needs to know about one condition."""

    id: str
    label: str
    levels: dict[str, str]
    trained: bool
    rated: bool
    deployment_harm: float


def conditions_of(frame: pd.DataFrame) -> dict[str, ConditionInfo]:
    """One :class:`ConditionInfo` per condition id, in first-seen order."""
    axes = axis_columns(frame)
    out: dict[str, ConditionInfo] = {}
    for cid, group in frame.groupby("condition_id", sort=False):
        first = group.iloc[0]
        out[str(cid)] = ConditionInfo(
            id=str(cid),
            label=str(first["condition_label"]),
            levels={a: str(first[a]) for a in axes},
            trained=bool(first["trained"]),
            rated=bool(first["rated"]),
            deployment_harm=float(first["deployment_harm"]),
        )
    return out


def _differ_in_one_axis(a: ConditionInfo, b: ConditionInfo) -> bool:
    keys = set(a.levels) | set(b.levels)
    return sum(a.levels.get(k) != b.levels.get(k) for k in keys) == 1


def find_pairs(
    conditions: Mapping[str, ConditionInfo], *, control_rated: bool | None = False
) -> list[tuple[str, str]]:
    """Pairs (training, control) of conditions that differ in exactly one axis.

    The first is trained on; the second is not, and is rated or not as ``control_rated`` says
    (``False``: unmonitored; ``True``: rated only; ``None``: either). Conditions without axes
    pair on facts alone when there is exactly one of each.
    """
    trained = [c for c in conditions.values() if c.trained]
    control = [
        c
        for c in conditions.values()
        if not c.trained and (control_rated is None or c.rated == control_rated)
    ]
    pairs = [(a.id, b.id) for a in trained for b in control if _differ_in_one_axis(a, b)]
    if not pairs and len(trained) == 1 and len(control) == 1:
        pairs = [(trained[0].id, control[0].id)]
    return pairs


def default_pairs(conditions: Mapping[str, ConditionInfo]) -> list[tuple[str, str]]:
    """Training vs unmonitored pairs; falls back to training vs any untrained condition."""
    return find_pairs(conditions, control_rated=False) or find_pairs(conditions, control_rated=None)


def check_pairs(
    pairs: Iterable[Sequence[str]], conditions: Mapping[str, ConditionInfo]
) -> list[tuple[str, str]]:
    """Validate caller-given pairs of condition ids.

    Raises:
        DesignError: for a malformed pair or an unknown condition id (names the valid ones).
    """
    checked: list[tuple[str, str]] = []
    for pair in pairs:
        if isinstance(pair, str) or len(pair) != 2:
            raise DesignError(f"a pair must be two condition ids; got {pair!r}")
        for cid in pair:
            if cid not in conditions:
                valid = ", ".join(repr(c) for c in conditions)
                raise DesignError(f"unknown condition id {cid!r} in pairs; valid: {valid}")
        checked.append((str(pair[0]), str(pair[1])))
    return checked


PairsArg = Iterable[Sequence[str]] | None


def resolve_pairs(frame: pd.DataFrame, pairs: PairsArg = None) -> dict[str, list[tuple[str, str]]]:
    """Per model, the condition pairs to compare: given ones present for it, else the defaults.

    Raises:
        DesignError: for a malformed pair or a condition id no model has.
    """
    everything = conditions_of(frame)
    wanted = None if pairs is None else check_pairs(pairs, everything)
    out: dict[str, list[tuple[str, str]]] = {}
    for model, group in frame.groupby("model", sort=False):
        present = {c: everything[c] for c in dict.fromkeys(group["condition_id"].astype(str))}
        if wanted is None:
            out[str(model)] = default_pairs(present)
        else:
            out[str(model)] = [(a, b) for a, b in wanted if a in present and b in present]
    return out


# --- transcripts -------------------------------------------------------------------------

_SCRATCHPAD = re.compile(
    r"<SCRATCHPAD_REASONING>(.*?)(?:</SCRATCHPAD_REASONING>|\Z)", re.DOTALL | re.IGNORECASE
)
_OUTPUT = re.compile(r"<OUTPUT>(.*?)(?:</OUTPUT>|\Z)", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class TranscriptParts:
    """A reply split for display: hidden reasoning, the final answer, and untagged text."""

    scratchpad: str
    output: str
    raw: str


def split_transcript(text: str | None) -> TranscriptParts:
    """Split a reply into scratchpad (all blocks joined) and the last ``<OUTPUT>``.

    A reply with neither tag is kept whole as ``raw``: format failures are shown, not hidden.
    """
    if not text:
        return TranscriptParts("", "", "")
    pads = [m.strip() for m in _SCRATCHPAD.findall(text)]
    outputs = _OUTPUT.findall(text)
    if not pads and not outputs:
        return TranscriptParts("", "", text)
    output = outputs[-1].strip() if outputs else ""
    return TranscriptParts("\n\n".join(p for p in pads if p), output, "")


def parse_quotes(value: Any) -> list[str]:
    """Judge quotes from a dict, list, JSON string or None into a flat list of strings."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return [value] if value.strip() else []
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, str):
        return [value]
    quotes: list[str] = []
    if isinstance(value, Iterable):
        for item in value:
            quotes.extend(parse_quotes(item))
    return [q for q in quotes if q.strip()]


_ELLIPSIS = re.compile(r"\.\.\.|…|\[\.\.\.\]")
_QUOTE_MARKS = "\"'“”‘’` "


def _quote_patterns(quotes: Sequence[str]) -> list[re.Pattern[str]]:
    """Regexes for judge quotes as judges write them.

    Judges re-wrap whitespace, change case, wrap quotes in quote marks and elide with "...";
    each elided fragment matches on its own. A lone word under 8 characters is skipped: it
    would light up every occurrence of "the" or "I".
    """
    patterns: dict[str, re.Pattern[str]] = {}
    for quote in quotes:
        for fragment in _ELLIPSIS.split(quote):
            words = fragment.strip().strip(_QUOTE_MARKS).split()
            if not words or (len(" ".join(words)) < 8 and len(words) < 2):
                continue
            source = r"\s+".join(re.escape(w) for w in words)
            patterns.setdefault(source, re.compile(source, re.IGNORECASE))
    return list(patterns.values())


def highlight_segments(text: str, quotes: Sequence[str]) -> list[tuple[str, bool]]:
    """Cut ``text`` into (piece, is_quoted) runs, marking every occurrence of every quote.

    Quotes match across whitespace differences and case; overlapping matches merge; the
    pieces concatenate back to ``text`` exactly.
    """
    spans = [m.span() for pattern in _quote_patterns(quotes) for m in pattern.finditer(text)]
    spans = [(lo, hi) for lo, hi in spans if hi > lo]
    if not spans:
        return [(text, False)] if text else []
    spans.sort()
    merged = [list(spans[0])]
    for lo, hi in spans[1:]:
        if lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    out: list[tuple[str, bool]] = []
    pos = 0
    for lo, hi in merged:
        if lo > pos:
            out.append((text[pos:lo], False))
        out.append((text[lo:hi], True))
        pos = hi
    if pos < len(text):
        out.append((text[pos:], False))
    return out


__all__ = [
    "OUTCOMES",
    "OUTCOME_NAMES",
    "ConditionInfo",
    "FrameLike",
    "PairsArg",
    "TranscriptParts",
    "as_frame",
    "axis_columns",
    "check_pairs",
    "conditions_of",
    "default_pairs",
    "find_pairs",
    "highlight_segments",
    "outcome_of",
    "prepare_trials",
    "records",
    "report_outcomes",
    "resolve_pairs",
    "split_transcript",
]
