"""From a trial frame to per-(condition, request) counts, and arm selection on them.

Every statistic starts here. A million trial rows become a few thousand *cells* (one per
model × condition × request) holding counts, so the tests below never touch the raw rows again:
that is what keeps ``attribute()`` on a million trials within seconds.

Only completed trials with a non-null ``complied`` count towards compliance; completed trials
without a verdict are *format failures* and are counted separately, as are failed trials.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from afperturb.errors import DesignError, InsufficientDataError, unknown_choice
from afperturb.records import FRAME_TRIAL_COLUMNS

__all__ = [
    "FACT_COLUMNS",
    "TRIAL_COLUMNS",
    "ArmSpec",
    "Cells",
    "as_frame",
    "build_cells",
    "cells_of",
    "condition_mask",
    "describe_spec",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

#: Columns that vary per trial; everything else in the frame describes the condition.
TRIAL_COLUMNS = frozenset(FRAME_TRIAL_COLUMNS)
FACT_COLUMNS = ("trained", "rated", "rater", "deployment_harm", "conflict", "paraphrase")
_REQUIRED = ("condition_id", "request_id", "status", "complied")

#: An arm of a comparison: ``{axis: level}`` / ``{fact: value}`` (a list means "any of"), or a
#: predicate taking the per-condition table and returning a boolean mask.
ArmSpec = Mapping[str, Any] | Callable[[pd.DataFrame], Any]


def as_frame(data: object) -> pd.DataFrame:
    """Return ``data`` if it is a DataFrame, else ``data.to_frame()`` (duck typing)."""
    if isinstance(data, pd.DataFrame):
        return data
    to_frame = getattr(data, "to_frame", None)
    if callable(to_frame):
        frame = to_frame()
        if isinstance(frame, pd.DataFrame):
            return frame
    raise TypeError(
        f"expected a pandas DataFrame or an object with .to_frame(), got {type(data).__name__}"
    )


def _nullable_bool(column: pd.Series) -> FloatArray:
    """1.0 / 0.0 / nan from a nullable boolean (or object True/False/None) column."""
    values = column.to_numpy(dtype=object)
    present = np.asarray(pd.notna(values), dtype=bool)
    out = np.full(len(values), np.nan)
    out[present] = values[present].astype(bool).astype(np.float64)
    return out


@dataclasses.dataclass(frozen=True)
class Cells:
    """Counts per (model, condition, request): the only input the tests need.

    ``conditions`` has one row per (model, condition) with every non-trial column (model,
    condition_id, axes, facts); ``cond`` and ``req`` index each cell's condition and request.
    """

    conditions: pd.DataFrame
    requests: npt.NDArray[np.object_]
    cond: IntArray
    req: IntArray
    k: FloatArray
    n: FloatArray
    af_k: FloatArray
    af_n: FloatArray
    trials: FloatArray
    failed: FloatArray
    format_failures: FloatArray

    @property
    def n_requests(self) -> int:
        """How many distinct request ids the frame holds."""
        return len(self.requests)

    def models(self) -> list[str]:
        """The model names in order of first appearance."""
        return [str(m) for m in pd.unique(self.conditions["model"])]

    def per_request(self, mask: BoolArray, *, af: bool = False) -> tuple[FloatArray, FloatArray]:
        """Successes and trials per request over the conditions selected by ``mask``."""
        sel = mask[self.cond]
        k = self.af_k if af else self.k
        n = self.af_n if af else self.n
        r = self.req[sel]
        size = self.n_requests
        return (
            np.asarray(np.bincount(r, weights=k[sel], minlength=size), dtype=np.float64),
            np.asarray(np.bincount(r, weights=n[sel], minlength=size), dtype=np.float64),
        )

    def count(self, mask: BoolArray, what: str) -> int:
        """Total of one count column (``trials``, ``failed``, ...) over selected conditions."""
        values: FloatArray = getattr(self, what)
        return int(values[mask[self.cond]].sum())


def build_cells(frame: pd.DataFrame) -> Cells:
    """Aggregate a trial frame (SweepResult.to_frame() columns) into per-cell counts."""
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise DesignError(
            f"trial frame lacks column(s) {missing}; required: {list(_REQUIRED)} "
            "(as produced by SweepResult.to_frame())"
        )
    if len(frame) == 0:
        raise InsufficientDataError("the trial frame is empty")
    model = frame["model"].astype(str) if "model" in frame.columns else None
    m_codes = (
        pd.factorize(model)[0].astype(np.int64)
        if model is not None
        else np.zeros(len(frame), np.int64)
    )
    c_codes, c_labels = pd.factorize(frame["condition_id"].astype(str))
    key = m_codes * len(c_labels) + c_codes.astype(np.int64)
    _, first, cond_inv = np.unique(key, return_index=True, return_inverse=True)
    cond_cols = [c for c in frame.columns if c not in TRIAL_COLUMNS]
    conditions = frame.iloc[first][cond_cols].reset_index(drop=True)
    if "model" not in conditions.columns:
        conditions.insert(0, "model", "model")
    r_codes, r_labels = pd.factorize(frame["request_id"].astype(str))
    n_req = len(r_labels)
    cell_key = cond_inv.astype(np.int64) * n_req + r_codes.astype(np.int64)
    uniq, inv = np.unique(cell_key, return_inverse=True)

    completed = (frame["status"] == "completed").to_numpy(dtype=bool)
    complied = _nullable_bool(frame["complied"])
    valid = completed & ~np.isnan(complied)
    if "af_reasoning" in frame.columns:
        af = _nullable_bool(frame["af_reasoning"])
    else:
        af = np.full(len(frame), np.nan)
    af_valid = completed & ~np.isnan(af)

    def total(weights: npt.ArrayLike) -> FloatArray:
        counts = np.bincount(inv, weights=np.asarray(weights, np.float64), minlength=len(uniq))
        return np.asarray(counts, dtype=np.float64)

    return Cells(
        conditions=conditions,
        requests=np.asarray(r_labels, dtype=object),
        cond=(uniq // n_req).astype(np.int64),
        req=(uniq % n_req).astype(np.int64),
        k=total(np.where(valid, complied, 0.0)),
        n=total(valid),
        af_k=total(np.where(af_valid, af, 0.0)),
        af_n=total(af_valid),
        trials=total(np.ones(len(frame))),
        failed=total(~completed),
        format_failures=total(completed & np.isnan(complied)),
    )


def cells_of(data: object) -> Cells:
    """Cells from a DataFrame, an object with ``.to_frame()``, or already-built cells."""
    if isinstance(data, Cells):
        return data
    return build_cells(as_frame(data))


def _matches(column: pd.Series, value: object) -> BoolArray:
    if value is None:
        return np.asarray(column.isna().to_numpy(), dtype=bool)
    if isinstance(value, bool | np.bool_):
        return np.asarray((column.astype(object) == bool(value)).to_numpy(), dtype=bool)
    if isinstance(value, int | float | np.number) and pd.api.types.is_numeric_dtype(column):
        numeric = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
        return np.asarray(np.isclose(numeric, float(value)), dtype=bool)
    return np.asarray((column.astype(str) == str(value)).to_numpy(), dtype=bool)


def condition_mask(conditions: pd.DataFrame, spec: ArmSpec) -> BoolArray:
    """Boolean mask over the per-condition table for one arm specification."""
    if callable(spec):
        mask = np.asarray(spec(conditions), dtype=bool)
        if mask.shape != (len(conditions),):
            raise DesignError(
                f"an arm predicate must return one boolean per condition ({len(conditions)}), "
                f"got shape {mask.shape}"
            )
        return mask
    mask = np.ones(len(conditions), dtype=bool)
    for key, value in spec.items():
        if key not in conditions.columns:
            raise unknown_choice("column", key, sorted(map(str, conditions.columns)))
        options = value if isinstance(value, list | tuple | set | frozenset) else [value]
        hit = np.zeros(len(conditions), dtype=bool)
        for option in options:
            hit |= _matches(conditions[key], option)
        mask &= hit
    return mask


def describe_spec(spec: ArmSpec) -> str:
    """A short human-readable description of an arm, for messages and tables."""
    if callable(spec):
        return getattr(spec, "__name__", "predicate")
    return ", ".join(f"{k}={v}" for k, v in spec.items()) or "all"


def model_mask(cells: Cells, model: str | None) -> BoolArray:
    """Conditions of ``model``; without a name the frame must hold exactly one model."""
    models = cells.models()
    if model is None:
        if len(models) > 1:
            raise DesignError(
                f"the frame holds {len(models)} models; pass model= one of: {', '.join(models)}"
            )
        return np.ones(len(cells.conditions), dtype=bool)
    if model not in models:
        raise unknown_choice("model", model, models)
    return np.asarray((cells.conditions["model"] == model).to_numpy(), dtype=bool)
