"""SweepResult: the trials of one or more sweeps, as records or as one tidy table.

A result is a list of *parts* (one per model and sweep call), each either backed by a store
(read lazily: nothing is loaded until asked) or holding its rows in memory (``store=None``).
:meth:`SweepResult.to_frame` is the one table the statistics read; its columns are fixed
(``COLUMNS`` plus one column per axis, placed after ``scenario``).

Each label column (``label``, ``complied``, ``af_reasoning``) comes with ``<column>_source``
(the classifier and config whose label the cell shows) and, for the two booleans,
``<column>_error`` (a judge that failed on the trial); which label wins is the documented
preference order of :mod:`afperturb.classify._provenance`, and :meth:`SweepResult.prefer`
picks a config where one classifier has several.
"""

from __future__ import annotations

import contextlib
import gc
import html
import json
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from afperturb.classify import _provenance, outcomes
from afperturb.errors import AfperturbWarning, DesignError, unknown_choice
from afperturb.records import (
    FRAME_COLUMNS,
    FRAME_FACT_COLUMNS,
    FRAME_HEAD_COLUMNS,
    FRAME_TRIAL_COLUMNS,
    Condition,
    Label,
    Trial,
)

if TYPE_CHECKING:
    from afperturb.store import Store, TrialRow

#: Fact columns, in order, as carried by every condition.
FACT_COLUMNS = FRAME_FACT_COLUMNS
#: Columns before the axis columns.
HEAD_COLUMNS = FRAME_HEAD_COLUMNS
#: Columns after the axis columns.
TAIL_COLUMNS = (*FRAME_FACT_COLUMNS, *FRAME_TRIAL_COLUMNS)
COLUMNS = FRAME_COLUMNS
_RESERVED = frozenset(COLUMNS)


@dataclass(frozen=True)
class _Part:
    """One model's trials from one source, with the scope that selects them."""

    model: str
    conditions: Mapping[str, Condition]
    store: Store | None = None
    rows: tuple[TrialRow, ...] = ()
    request_ids: frozenset[str] | None = None
    samples: int | None = None
    run: str | None = None
    #: The configuration (``Trial.variant``) whose trials this part holds (None: every one).
    variant: str | None = None
    filters: tuple[tuple[str, frozenset[str]], ...] = ()
    manifest: Mapping[str, Any] = field(default_factory=dict)

    def _keep_conditions(self) -> set[str]:
        keep = set(self.conditions)
        for axis, values in self.filters:
            if axis == "model":
                if self.model not in values:
                    return set()
                continue
            keep = {cid for cid in keep if self.conditions[cid].levels.get(axis) in values}
        return keep

    def read(self) -> _PartTrials:
        """This part's trials as columns: every row of its source, and which ones it keeps."""
        if self.store is not None:
            chunks = self.store.frame_trial_columns(self.model, variant=self.variant)
            own = _Trials.from_columns(chunks, self.model)
        else:
            rows = [
                (
                    t.model,
                    t.condition_id,
                    t.request_id,
                    t.sample,
                    t.status,
                    t.error,
                    t.input_tokens,
                    t.output_tokens,
                    t.cache_read_tokens,
                    t.cache_write_tokens,
                    sum(c.latency_s for c in t.completions),
                    t.cost_usd,
                    r.cached,
                    t.key,
                )
                for r in self.rows
                for t in (r.trial,)
            ]
            own = _Trials.from_columns([_rows_as_columns(rows)] if rows else [], None)
        keep_conditions = self._keep_conditions()
        mask = own.matches("condition", keep_conditions.__contains__)
        if self.request_ids is not None:
            mask &= own.matches("request", self.request_ids.__contains__)
        if self.samples is not None:
            mask &= own.plain["sample"] < self.samples
        return _PartTrials(own, mask)

    def label_columns(
        self,
        read: _PartTrials,
        own_to_key: npt.NDArray[np.int64] | None,
        keys: _LazyIndex,
    ) -> _provenance.LabelColumns:
        """The labels of this part's source that label the result's trials.

        ``own_to_key`` maps each of ``read``'s rows (kept or not) to its position among the
        result's unique trial keys (-1: not one of them; None: row i is key i); ``keys`` is
        that index. As the table always did: a store part counts the labels of the store's
        trials of its model, matched to the result's trials by key; an in-memory part its
        rows' labels.
        """
        if self.store is None:
            data = [
                (
                    lab.trial_key,
                    lab.classifier,
                    lab.value,
                    lab.complied,
                    lab.af_reasoning,
                    lab.config_hash,
                    lab.model_dump_json() if lab.value == _provenance.FAILED else None,
                )
                for r in self.rows
                for lab in r.labels
            ]
            return _labels_from_chunks([data] if data else [], keys.locate)
        if self.run is not None:
            # Only one run's trials were read, but a store part counts the labels of all the
            # model's trials: the store's join says which those are.
            chunks = self.store.label_table_chunks(model=self.model)
            return _labels_from_chunks(chunks, keys.locate)
        aligned = _AlignedKeys(read.trials.plain["key"])
        locate: Callable[[npt.NDArray[np.object_]], npt.NDArray[np.int64]] = aligned
        if own_to_key is not None:
            lookup = np.concatenate([own_to_key, [-1]])  # -1 (a key not in the store) stays
            locate = lambda k: lookup[aligned(k)]  # noqa: E731
        return _labels_from_codes(self.store.frame_label_codes(self.model), locate)

    def run_records(self) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
        """The run manifests and label-run records that say which config ran last."""
        if self.store is None:
            return [self.manifest], []
        return list(self.store.manifests()), [self.store.label_runs()]

    def trials(self) -> Iterator[Trial]:
        keep = self._keep_conditions()
        source: Iterable[Trial]
        if self.store is not None:
            source = self.store.trials(model=self.model, variant=self.variant)
        else:
            source = (r.trial for r in self.rows)
        for t in source:
            if t.condition_id not in keep:
                continue
            if self.request_ids is not None and t.request_id not in self.request_ids:
                continue
            if self.samples is not None and t.sample >= self.samples:
                continue
            yield t

    def labels(self) -> Iterator[Label]:
        if self.store is not None:
            yield from self.store.labels()
        else:
            for r in self.rows:
                yield from r.labels


def _latest_variant(db: Store, model: str, manifests: Sequence[Mapping[str, Any]]) -> str | None:
    """The configuration to load by default: the latest run's, or the only one stored."""
    from afperturb.store import manifest_variant

    stored = db.variants(model)
    if len(stored) <= 1:
        return None
    runs: dict[str, list[str]] = {}
    last: dict[str, int] = {}  # variant -> position of its latest run (manifests oldest first)
    for i, m in enumerate(manifests):
        v = manifest_variant(m)
        runs.setdefault(v, []).append(str(m["run_id"]))
        last[v] = i
    ran = [v for v in stored if v in last]
    latest = max(ran, key=last.__getitem__) if ran else stored[-1]
    others = [f"{v} (runs {', '.join(runs.get(v, ['unrecorded']))})" for v in stored if v != latest]
    warnings.warn(
        f"store {str(db.path)!r} holds {len(stored)} configurations of {model!r} (another seed, "
        f"sampling params, model config or templates); loaded the latest, {latest}; the others: "
        f"{'; '.join(others)}. Load one with SweepResult.load(store, run=...).",
        AfperturbWarning,
        stacklevel=3,
    )
    return latest


class _LazyIndex:
    """A hash index of trial keys, built on first use."""

    def __init__(self, keys: npt.NDArray[np.object_]) -> None:
        self.keys = keys
        self._index: pd.Index | None = None

    @property
    def index(self) -> pd.Index:
        if self._index is None:
            self._index = pd.Index(self.keys, dtype=object)
        return self._index

    def locate(self, keys: npt.NDArray[np.object_]) -> npt.NDArray[np.int64]:
        """Positions of ``keys`` (-1: absent)."""
        return _locate(self.index, keys)


class _AlignedKeys:
    """Positions of label keys among one store part's trial keys (unique: the table's key).

    The labels written with their trials (a sweep's tags and heuristics: most of them) are
    stored in the trials' order, one run of adjacent labels per trial. Each run's key is
    compared with the next trial's, many at a time (a trial without labels is stepped over
    by looking a few trials ahead); whatever is not found so (labels written later, or of
    other trials) is looked up in a hash index of the keys, built only then. Every position
    returned holds an equal key, so the result is the hash lookup's whatever the order.
    """

    _AHEAD = 16  # trials looked ahead for a run that is not the next trial's
    _MISSES = 32  # runs not found in order before the rest of a chunk is hashed

    def __init__(self, keys: npt.NDArray[np.object_]) -> None:
        self.keys = keys
        self.next = 0  # the trial the next run is expected to label
        self.hashed = _LazyIndex(keys)

    def __call__(self, labels: npt.NDArray[np.object_]) -> npt.NDArray[np.int64]:
        n = len(labels)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        new_run = np.ones(n, dtype=bool)
        new_run[1:] = labels[1:] != labels[:-1]
        starts = np.flatnonzero(new_run)
        runs = labels[starts]
        pos = np.full(len(runs), -1, dtype=np.int64)
        self._align(runs, pos)
        missing = np.flatnonzero(pos < 0)
        if len(missing):
            pos[missing] = self.hashed.locate(runs[missing])
        return np.repeat(pos, np.diff(np.append(starts, n)))

    def _align(self, runs: npt.NDArray[np.object_], pos: npt.NDArray[np.int64]) -> None:
        keys = self.keys
        i, p, window, misses = 0, self.next, 64, 0
        while i < len(runs) and p < len(keys):
            m = min(window, len(runs) - i, len(keys) - p)
            equal = np.asarray(runs[i : i + m] == keys[p : p + m], dtype=bool)
            k = m if bool(equal.all()) else int(np.argmin(equal))
            pos[i : i + k] = np.arange(p, p + k)
            i, p = i + k, p + k
            if k == m:
                window = min(2 * window, 1 << 16)
                continue
            window = 64
            ahead = np.flatnonzero(keys[p + 1 : p + 1 + self._AHEAD] == runs[i])
            if len(ahead):
                p += 1 + int(ahead[0])  # trials without labels in between
                continue
            i, misses = i + 1, misses + 1  # not in order: hashed
            if misses > self._MISSES:
                break
        self.next = p


@dataclass(frozen=True)
class _Trials:
    """Trial rows as columns; the repeated strings (model, condition, request, status) coded.

    ``codes[c]`` indexes ``uniques[c]`` (distinct values, in no particular order); ``plain``
    holds the other columns as numpy arrays.
    """

    codes: dict[str, npt.NDArray[np.int64]]
    uniques: dict[str, list[str]]
    plain: dict[str, npt.NDArray[Any]]

    def __len__(self) -> int:
        return len(self.plain["key"])

    @classmethod
    def from_columns(
        cls, chunks: Iterable[Mapping[str, npt.NDArray[Any]]], model: str | None
    ) -> _Trials:
        """From chunks of columns: ``Store.frame_trial_columns``' (:data:`_ROW`).

        With ``model`` None the chunks carry a ``model`` column too (in-memory rows).
        """
        pieces = list(chunks)
        names = [*(["model"] if model is None else []), *_ROW]

        def column(name: str) -> npt.NDArray[Any]:
            if len(pieces) == 1:
                return pieces[0][name]
            if not pieces:
                return np.zeros(0, dtype=_PLAIN.get(name, object))
            return np.concatenate([p[name] for p in pieces])

        table = {name: column(name) for name in names}
        codes: dict[str, npt.NDArray[np.int64]] = {}
        uniques: dict[str, list[str]] = {}
        if model is None:
            codes["model"], uniques["model"] = _factorize(table["model"])
        else:
            codes["model"], uniques["model"] = np.zeros(len(table["key"]), np.int64), [model]
        for name in _CODED:
            codes[name], uniques[name] = _factorize(table[name])
        plain = {name: table[name] for name in _PLAIN}
        return cls(codes, uniques, plain)

    @classmethod
    def concat(cls, parts: Sequence[_Trials]) -> _Trials:
        """The parts' rows one after another (codes merged)."""
        if len(parts) == 1:
            return parts[0]
        codes: dict[str, npt.NDArray[np.int64]] = {}
        uniques: dict[str, list[str]] = {}
        for name in ("model", *_CODED):
            pairs = [(p.codes[name], p.uniques[name]) for p in parts]
            codes[name], uniques[name] = _provenance.merge_codes(pairs)
        plain = {
            name: np.concatenate([p.plain[name] for p in parts])
            if parts
            else np.zeros(0, dtype=dtype)
            for name, dtype in _PLAIN.items()
        }
        return cls(codes, uniques, plain)

    def take(self, rows: npt.NDArray[np.int64]) -> _Trials:
        return _Trials(
            {k: v[rows] for k, v in self.codes.items()},
            self.uniques,
            {k: v[rows] for k, v in self.plain.items()},
        )

    def matches(self, name: str, keep: Callable[[str], bool]) -> npt.NDArray[np.bool_]:
        """Per row, whether ``keep`` holds for its value of the coded column ``name``."""
        ok = np.array([bool(keep(u)) for u in self.uniques[name]], dtype=bool)
        return ok[self.codes[name]] if len(ok) else np.zeros(len(self), dtype=bool)

    def strings(self, name: str, rows: npt.NDArray[np.int64]) -> pd.Series:
        """The coded column ``name`` at ``rows``, typed as the DataFrame constructor infers."""
        uniques = pd.Series(np.array(self.uniques[name] or [""], dtype=object))
        return pd.Series(uniques.array.take(self.codes[name][rows]), copy=False)

    def ranks(self, name: str) -> npt.NDArray[np.int64]:
        """Per row, the rank of its value of ``name`` in sorted order (the values are distinct)."""
        values = self.uniques[name]
        rank = np.zeros(len(values), dtype=np.int64)
        rank[sorted(range(len(values)), key=values.__getitem__)] = np.arange(len(values))
        return rank[self.codes[name]] if len(rank) else np.zeros(len(self), dtype=np.int64)


@dataclass(frozen=True)
class _PartTrials:
    """A part's rows as read, and the mask of the ones it keeps (its scope)."""

    trials: _Trials
    kept: npt.NDArray[np.bool_]


#: The trial columns as the store gives them (``Store.frame_trial_columns``).
_ROW = (
    "condition",
    "request",
    "sample",
    "status",
    "error",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "latency_s",
    "cost_usd",
    "cached",
    "key",
)
#: Columns whose values repeat across trials: coded (one string object each).
_CODED = ("condition", "request", "status")
#: The other columns and their dtypes.
_PLAIN: dict[str, Any] = {
    "sample": np.int64,
    "error": object,
    "input_tokens": np.int64,
    "output_tokens": np.int64,
    "cache_read_tokens": np.int64,
    "cache_write_tokens": np.int64,
    "latency_s": np.float64,
    "cost_usd": np.float64,
    "cached": bool,
    "key": object,
}
_MODEL_ROW_DTYPE = np.dtype([("model", object), *((n, _PLAIN.get(n, object)) for n in _ROW)])


def _rows_as_columns(rows: Sequence[Sequence[Any]]) -> dict[str, npt.NDArray[Any]]:
    """In-memory trial rows (model, then :data:`_ROW`) as columns."""
    table = np.fromiter(rows, dtype=_MODEL_ROW_DTYPE, count=len(rows))
    return {name: np.ascontiguousarray(table[name]) for name in _MODEL_ROW_DTYPE.names or ()}


#: A label row as the store gives it (``Store.label_table``); None -> NaN in the flags.
_LABEL_DTYPE = np.dtype(
    [
        ("trial_key", object),
        ("classifier", object),
        ("value", object),
        ("complied", np.float64),
        ("af_reasoning", np.float64),
        ("config_hash", object),
        ("failure", object),
    ]
)


def _array(values: Sequence[Any], dtype: Any) -> npt.NDArray[Any]:
    if dtype is object:
        return np.fromiter(values, dtype=object, count=len(values))
    return np.array(values, dtype=dtype)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while rows are read.

    A million rows arrive as a few million short-lived tuples; each chunk's survive long
    enough to be promoted, and the full collections that follow rescan every live object
    again and again (measured: ~30 % of the read at 10⁶ trials). The rows hold no cycles;
    whatever cycles appear meanwhile are collected when the collector resumes.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _locate(index: pd.Index, keys: npt.NDArray[np.object_]) -> npt.NDArray[np.int64]:
    """Positions of ``keys`` in ``index`` (-1: absent), compared as Python strings."""
    found = index.get_indexer(pd.Index(keys, dtype=object))
    return np.asarray(found, dtype=np.int64)


def _factorize(values: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int64], list[Any]]:
    """Codes and distinct values of an object column (a missing value is one of them)."""
    codes, uniques = pd.factorize(np.ascontiguousarray(values))
    if len(codes) and codes.min() < 0:
        codes, uniques = pd.factorize(np.ascontiguousarray(values), use_na_sentinel=False)
    return codes.astype(np.int64), list(uniques)


def _labels_from_chunks(
    chunks: Iterable[Sequence[Sequence[Any]]],
    locate: Callable[[npt.NDArray[np.object_]], npt.NDArray[np.int64]],
) -> _provenance.LabelColumns:
    """Label rows (``Store.label_table`` layout) as columns, only those ``locate`` finds.

    ``locate`` maps a chunk's trial keys to positions among the result's trial keys (-1: not
    one of them; those labels are dropped, as :func:`_provenance.resolve` would).
    """
    parts = []
    for rows in chunks:
        table = np.fromiter(rows, dtype=_LABEL_DTYPE, count=len(rows))
        trial = locate(np.ascontiguousarray(table["trial_key"]))
        found = np.flatnonzero(trial >= 0)
        if len(found) == 0:
            continue
        if len(found) < len(trial):
            table, trial = table[found], trial[found]
        clf_codes, clf_names = _factorize(table["classifier"])
        cfg_codes, cfg_names = _factorize(table["config_hash"])
        val_codes, val_names = _factorize(table["value"])
        parts.append(
            _provenance.LabelColumns(
                trial,
                clf_codes,
                [str(x) for x in clf_names],
                cfg_codes,
                ["" if x is None or x != x else str(x) for x in cfg_names],
                val_codes,
                val_names,
                _flag_array(table["complied"]),
                _flag_array(table["af_reasoning"]),
                np.ascontiguousarray(table["failure"]),
            )
        )
    return _provenance.LabelColumns.concat(parts)


def _labels_from_codes(
    chunks: Iterable[tuple[list[tuple[str, str, str]], Mapping[str, npt.NDArray[Any]]]],
    locate: Callable[[npt.NDArray[np.object_]], npt.NDArray[np.int64]],
) -> _provenance.LabelColumns:
    """:func:`_labels_from_chunks` for the coded labels of ``Store.frame_label_codes``."""
    kinds: list[tuple[str, str, str]] = []
    parts = []
    for known, columns in chunks:
        kinds = known  # the list only grows: the last one numbers every kind
        trial = locate(columns["trial_key"])
        found = np.flatnonzero(trial >= 0)
        if len(found) == len(trial):
            parts.append((trial, columns["code"], columns["failure"]))
        elif len(found):
            parts.append((trial[found], columns["code"][found], columns["failure"][found]))
    clf_of, classifiers = _factorize(_array([k[0] for k in kinds], object))
    cfg_of, configs = _factorize(_array([k[1] for k in kinds], object))
    val_of, values = _factorize(_array([k[2] for k in kinds], object))
    columns_out = []
    for trial, code, failure in parts:
        kind = code // 9
        columns_out.append(
            _provenance.LabelColumns(
                trial,
                clf_of[kind],
                [str(x) for x in classifiers],
                cfg_of[kind],
                [str(x) for x in configs],
                val_of[kind],
                values,
                ((code // 3) % 3 - 1).astype(np.int8),  # 0 / 1 / 2: None / False / True
                (code % 3 - 1).astype(np.int8),
                failure,
            )
        )
    return _provenance.LabelColumns.concat(columns_out)


def _flag_array(numbers: npt.NDArray[np.float64]) -> npt.NDArray[np.int8]:
    """-1 / 0 / 1 from 1.0 / 0.0 / NaN (as ``_provenance._flags``)."""
    out = np.where(numbers != 0, 1, 0).astype(np.int8)
    out[np.isnan(numbers)] = -1
    return out


def _condition_frame(conditions: Mapping[str, Condition]) -> tuple[pd.DataFrame, list[str]]:
    axes = sorted({a for c in conditions.values() for a in c.levels})
    clash = sorted(set(axes) & _RESERVED)
    if clash:
        raise DesignError(
            f"axis names {clash} collide with results columns; rename them "
            f"(reserved: {', '.join(COLUMNS)})"
        )
    rows = []
    for c in conditions.values():
        row: dict[str, Any] = {"condition_id": c.id, "scenario": c.scenario}
        row.update({a: c.levels.get(a) for a in axes})
        row.update(c.facts.model_dump())
        rows.append(row)
    columns = ["condition_id", "scenario", *axes, *FACT_COLUMNS]
    return pd.DataFrame(rows, columns=columns), axes


@dataclass(frozen=True, repr=False)
class SweepResult:
    """Trials of one or more sweeps; see the module docstring.

    Build one with :func:`afperturb.sweep.sweep`, :meth:`load` or :meth:`combine`.
    """

    parts: tuple[_Part, ...]
    stopped_reason: str | None = None
    run_info: Mapping[str, Any] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict, compare=False)
    #: ``(classifier, config hash or prefix)`` pairs preferred over the default config order.
    preferred: tuple[tuple[str, str], ...] = ()

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_inspect_log(cls, path: str | Path, store: str | Path | None = None) -> SweepResult:
        """An inspect_ai ``.eval`` log of an afperturb task (the ``inspect`` extra).

        See :func:`afperturb.inspect.from_inspect_log`: the log's replies are replayed through
        the sweep engine into ``store`` (a temporary file when None).
        """
        from afperturb.inspect import from_inspect_log

        result: SweepResult = from_inspect_log(path, store=store)
        return result

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[TrialRow],
        conditions: Sequence[Condition],
        *,
        model: str | None = None,
        stopped_reason: str | None = None,
        run_info: Mapping[str, Any] | None = None,
        manifest: Mapping[str, Any] | None = None,
    ) -> SweepResult:
        """A result held in memory (a sweep without a store)."""
        name = model or (rows[0].trial.model if rows else "")
        part = _Part(
            model=name,
            conditions={c.id: c for c in conditions},
            rows=tuple(rows),
            manifest=dict(manifest or {}),
        )
        return cls((part,), stopped_reason, dict(run_info or {}))

    @classmethod
    def from_store(
        cls,
        store: Store,
        *,
        model: str,
        conditions: Sequence[Condition] | None = None,
        request_ids: Iterable[str] | None = None,
        samples: int | None = None,
        run: str | None = None,
        stopped_reason: str | None = None,
        run_info: Mapping[str, Any] | None = None,
        variant: str | None = None,
    ) -> SweepResult:
        """A lazy view of one model's trials in a store, optionally scoped to one design.

        ``run`` selects what that run covered: its configuration (variant), conditions,
        requests and samples, as its manifest records them, whichever run wrote the rows
        last. ``variant`` selects one configuration's trials directly.
        """
        info = dict(run_info or {})
        run_id = info.get("run_id", run)
        found = [m for m in store.manifests(model) if run_id is None or m["run_id"] == run_id]
        if run is not None and conditions is None and request_ids is None and found:
            from afperturb.store import manifest_variant

            m = found[-1]
            variant = manifest_variant(m) if variant is None else variant
            covered = set(m.get("condition_ids") or ())
            every = store.conditions()
            conditions = [c for cid, c in every.items() if not covered or cid in covered]
            request_ids = store.run_requests(run)
            samples = int(m["samples"]) if samples is None and "samples" in m else samples
        conds = {c.id: c for c in conditions} if conditions is not None else store.conditions()
        part = _Part(
            model=model,
            conditions=conds,
            store=store,
            request_ids=frozenset(request_ids) if request_ids is not None else None,
            samples=samples,
            run=run,
            variant=variant,
            manifest=found[-1] if found else {},
        )
        return cls((part,), stopped_reason, info)

    @classmethod
    def load(
        cls, store: Store | str | Path, model: str | None = None, run: str | None = None
    ) -> SweepResult:
        """Every model's trials in a store (or one model's, or what one run covered), lazily.

        A store can hold several configurations of one model (another seed, temperature or
        server: :func:`afperturb.store.run_variant`), side by side. Without ``run``, each
        model's latest configuration is loaded (that of its most recent run) and an
        :class:`~afperturb.errors.AfperturbWarning` names the others and their runs; pass
        ``run=`` to load another one, or :meth:`combine` several.
        """
        from afperturb.store import Store as _Store

        db = _Store.open(store, create=False) if isinstance(store, str | Path) else store
        manifests = db.manifests()
        if run is not None:
            runs = {m["run_id"]: m for m in manifests}
            if run not in runs:
                raise unknown_choice("run", run, list(runs))
            if model is not None and runs[run]["model"] != model:
                raise DesignError(f"run {run!r} is of model {runs[run]['model']!r}, not {model!r}")
            return cls.from_store(db, model=str(runs[run]["model"]), run=run)
        models = sorted({m["model"] for m in manifests} | set(db.models()))
        if model is not None:
            if model not in models:
                raise unknown_choice("model", model, models)
            models = [model]
        conds = db.conditions()
        parts = []
        for m in models:
            variant = _latest_variant(db, m, [x for x in manifests if x["model"] == m])
            part = cls.from_store(db, model=m, variant=variant).parts[0]
            parts.append(replace(part, conditions=conds))
        return cls(tuple(parts))

    @classmethod
    def combine(cls, results: Iterable[SweepResult]) -> SweepResult:
        """One result over several (e.g. one per model): their trials side by side."""
        items = list(results)
        parts = tuple(p for r in items for p in r.parts)
        stopped = next((r.stopped_reason for r in items if r.stopped_reason), None)
        preferred = dict(pair for r in items for pair in r.preferred)  # later results win
        return cls(parts, stopped, preferred=tuple(sorted(preferred.items())))

    # -- views ---------------------------------------------------------------------------------

    def filter(self, **levels: str | Iterable[str]) -> SweepResult:
        """Only the trials whose axis levels (or ``model``) match; a list means any of them."""
        axes = {a for p in self.parts for c in p.conditions.values() for a in c.levels}
        new: list[tuple[str, frozenset[str]]] = []
        for axis, value in levels.items():
            if axis != "model" and axis not in axes:
                raise unknown_choice("axis", axis, sorted(axes | {"model"}))
            values = frozenset([value] if isinstance(value, str) else value)
            new.append((axis, values))
        parts = tuple(replace(p, filters=(*p.filters, *new)) for p in self.parts)
        return SweepResult(parts, self.stopped_reason, self.run_info, preferred=self.preferred)

    def prefer(self, configs: Mapping[str, str]) -> SweepResult:
        """The same trials, with these classifier configs preferred in the label columns.

        ``configs`` maps a classifier name to a config hash or a unique prefix of it (as
        ``<column>_source`` shows it: ``{"af_reasoning": "3f9a1c2b"}``). Where that classifier
        has labelled a trial with several configs, the named one is used first; see
        ``docs/classifiers.md`` for the whole order. Use the returned result wherever the
        table is read (``af.attribute(res.prefer(...))``).
        """
        merged = {**dict(self.preferred), **{str(k): str(v) for k, v in configs.items()}}
        return SweepResult(
            self.parts, self.stopped_reason, self.run_info, preferred=tuple(sorted(merged.items()))
        )

    def label_configs(self) -> pd.DataFrame:
        """Every (classifier, config) that labelled these trials, and the order they are used.

        Columns: classifier, config_hash, source, kind (tags / heuristic / judge), labels,
        failed, sets (the label columns it can fill), latest_run, rank (0: used first among
        the configs of its classifier).
        """
        _, _, labels = self._read()
        return _provenance.configs_columns(labels, self._latest(), dict(self.preferred))

    @property
    def models(self) -> list[str]:
        """Model names, in order of the parts."""
        return list(dict.fromkeys(p.model for p in self.parts))

    @property
    def manifest(self) -> dict[str, Any]:
        """The run manifest of the first part (what produced these trials)."""
        return dict(self.parts[0].manifest) if self.parts else {}

    @property
    def manifests(self) -> list[dict[str, Any]]:
        """Every part's manifest."""
        return [dict(p.manifest) for p in self.parts]

    @property
    def conditions(self) -> dict[str, Condition]:
        """Every condition of every part, by id."""
        return {cid: c for p in self.parts for cid, c in p.conditions.items()}

    @property
    def store(self) -> Store | None:
        """The store behind the first part, if any (for re-judging)."""
        return next((p.store for p in self.parts if p.store is not None), None)

    def trials(self) -> Iterator[Trial]:
        """Every trial (read lazily from the store)."""
        for p in self.parts:
            yield from p.trials()

    def labels(self) -> Iterator[Label]:
        """Every stored label of these parts' trials."""
        keys: set[str] = set()
        for p in self.parts:
            read = p.read()
            keys.update(read.trials.plain["key"][read.kept])
        for p in self.parts:
            for lab in p.labels():
                if lab.trial_key in keys:
                    yield lab

    def classify(self, judges: Any) -> Any:
        """Run LLM judges over these trials (the seam for ``afperturb.classify.judges``)."""
        import importlib

        try:
            return importlib.import_module("afperturb.classify.judges").run(self, judges)
        finally:
            self._cache.clear()  # new labels: the cached table is stale

    # -- the table -----------------------------------------------------------------------------

    def to_frame(self, prefer: Mapping[str, str] | None = None) -> pd.DataFrame:
        """One row per trial, with exactly the documented columns (axis columns after scenario).

        ``prefer``: as :meth:`prefer` (``res.to_frame(prefer=...)`` is
        ``res.prefer(...).to_frame()``).
        """
        if prefer:
            return self.prefer(prefer).to_frame()
        cached = self._cache.get("frame")
        if cached is None:
            cached = self._build_frame()
            self._cache["frame"] = cached
        # Under copy-on-write (pandas 3) a shallow copy is as safe as a deep one: writes to
        # the caller's frame copy the touched columns then; a deep copy of 10⁶ rows is ~0.3 s.
        return cached.copy(deep=not _copy_on_write())

    def _read(self) -> tuple[_Trials, npt.NDArray[np.int64] | None, _provenance.LabelColumns]:
        with _collector_paused():
            return self._read_all()

    def _read_all(
        self,
    ) -> tuple[_Trials, npt.NDArray[np.int64] | None, _provenance.LabelColumns]:
        """The kept trials, the unique keys' positions and the labels of those trials.

        Returns the kept trials of every part, one after another; each row's position among
        the unique trial keys (None: the keys are unique, row i is key i); and the labels of
        those trials, each ``trial`` a position among the unique keys.
        """
        reads = [p.read() for p in self.parts]
        trials = _Trials.concat([r.trials.take(np.flatnonzero(r.kept)) for r in reads])
        at: npt.NDArray[np.int64] | None = None
        index = _LazyIndex(trials.plain["key"])
        # One store part's keys are unique (the table's key); others may repeat a trial.
        one_store = len(reads) == 1 and self.parts[0].store is not None
        if not one_store and not index.index.is_unique:
            unique = pd.unique(trials.plain["key"])
            at = _locate(pd.Index(unique, dtype=object), trials.plain["key"])
            index = _LazyIndex(unique)
        labels = []
        offset = 0
        for part, read in zip(self.parts, reads, strict=True):
            if len(reads) == 1 and bool(read.kept.all()):
                labels.append(part.label_columns(read, None, index))  # its rows are the keys
                continue
            kept = np.flatnonzero(read.kept)
            rows = offset + np.arange(len(kept), dtype=np.int64)
            offset += len(kept)
            own_to_key = np.full(len(read.trials), -1, dtype=np.int64)
            own_to_key[kept] = rows if at is None else at[rows]
            if len(reads) > 1 and len(kept) < len(read.trials):
                # A row this part leaves out may still be one of another part's trials.
                out = np.flatnonzero(~read.kept)
                own_to_key[out] = index.locate(read.trials.plain["key"][out])
            labels.append(part.label_columns(read, own_to_key, index))
        return trials, at, _provenance.LabelColumns.concat(labels)

    def _build_frame(self) -> pd.DataFrame:
        trials, at, labels = self._read()
        n_keys = len(trials) if at is None else int(at.max(initial=-1)) + 1  # at: 0..n-1
        resolved = _provenance.resolve_columns(labels, n_keys, self._latest(), dict(self.preferred))
        cond_frame, axes = _condition_frame(self.conditions)
        cond_frame = _typed_conditions(cond_frame, axes)
        order = _sort_order(
            [
                trials.ranks("model"),
                trials.ranks("condition"),
                trials.ranks("request"),
                trials.plain["sample"],
            ]
        )
        label_rows = order if at is None else at[order]
        cond_index = pd.Index(cond_frame["condition_id"], dtype=object)
        cond_rows = cond_index.get_indexer(_array(trials.uniques["condition"], object))
        cond_rows = cond_rows[trials.codes["condition"][order]]
        columns: dict[str, Any] = {
            "model": trials.strings("model", order),
            "condition_id": trials.strings("condition", order),
            "request_id": trials.strings("request", order),
            "status": trials.strings("status", order),
        }
        for name in cond_frame.columns[1:]:
            column = cond_frame[name]
            columns[name] = pd.Series(column.array.take(cond_rows), dtype=column.dtype)
        for name in _PLAIN:
            if name != "key":
                plain = trials.plain[name][order]
                columns[name] = _series(_none_for_missing(plain) if name == "error" else plain)
        for name, values in resolved.items():
            columns[name] = _series(values[label_rows])  # None where missing already
        columns.update(self._partial_columns(labels, n_keys, label_rows))
        frame = pd.DataFrame(columns, columns=[*HEAD_COLUMNS, *axes, *TAIL_COLUMNS], copy=False)
        frame["outcome"] = outcomes.frame_outcomes(frame)
        return frame

    def _partial_columns(
        self, labels: _provenance.LabelColumns, n_keys: int, rows: npt.NDArray[np.int64]
    ) -> dict[str, pd.Series]:
        """``partial`` / ``partial_source`` / ``partial_error`` from the partial-compliance judge.

        That judge sets no boolean on its labels (its ``value`` is ``partial``, ``not_partial``
        or ``maybe``: :func:`~afperturb.classify.outcomes.partial_verdict`), so its cells come
        from the labels already read for the other columns (no second read of the store).
        Of several configs, the one named by :meth:`prefer`, then that of its latest
        labelling run, then the one that labelled most trials wins, as for the other judges;
        a failed label (``error``) is never a verdict and names itself in ``partial_error``.
        ``rows`` maps each row of the table to its trial's position among the ``n_keys`` keys.
        """
        name = outcomes.PARTIAL_JUDGE
        if name not in labels.classifiers:  # the usual case: no partial judge ran
            n = len(rows)
            return {
                "partial": pd.Series(pd.arrays.BooleanArray(np.zeros(n, bool), np.ones(n, bool))),
                "partial_source": pd.Series(np.full(n, None, dtype=object)),
                "partial_error": pd.Series(np.full(n, None, dtype=object)),
            }
        verdict: list[bool | None] = [None] * n_keys
        source: list[str | None] = [None] * n_keys
        error: list[str | None] = [None] * n_keys
        code = labels.classifiers.index(name)
        mine = np.flatnonzero((labels.classifier == code) & (labels.trial >= 0))
        configs = [labels.configs[i] for i in labels.config[mine]]
        coverage: dict[str, int] = {}
        for config in configs:
            coverage[config] = coverage.get(config, 0) + 1
        wanted = dict(self.preferred).get(name)
        chosen = _provenance.preferred_config(name, coverage, wanted) if wanted else None
        order = _provenance.config_order(coverage, chosen, self._latest().get(name))
        rank_of = {h: r for r, h in enumerate(order)}
        best: dict[int, int] = {}
        for i, config in zip(mine, configs, strict=True):
            t = int(labels.trial[i])
            value = labels.values[labels.value[i]]
            if value == _provenance.FAILED:
                if error[t] is None:
                    detail = json.loads(labels.failure[i] or "{}").get("details", {})
                    error[t] = f"{_provenance.source(name, config)}: {detail.get('error', '')}"
                continue
            found = outcomes.partial_verdict(value)
            if found is None:
                continue
            if t not in best or rank_of[config] < best[t]:
                best[t] = rank_of[config]
                verdict[t], source[t] = found, _provenance.source(name, config)
        pick = np.asarray(rows, dtype=np.int64)
        is_partial = np.array([v is True for v in verdict], dtype=bool)
        unknown = np.array([v is None for v in verdict], dtype=bool)
        return {
            "partial": pd.Series(pd.arrays.BooleanArray(is_partial[pick], unknown[pick])),
            "partial_source": pd.Series(np.array(source, dtype=object)[pick], dtype=object),
            "partial_error": pd.Series(np.array(error, dtype=object)[pick], dtype=object),
        }

    def _latest(self) -> dict[str, str]:
        """Per classifier, the config of its most recent run in these parts' stores."""
        manifests: list[Mapping[str, Any]] = []
        label_runs: list[Mapping[str, Any]] = []
        seen: set[int] = set()
        for p in self.parts:
            if p.store is not None:
                if id(p.store) in seen:
                    continue
                seen.add(id(p.store))
            found, runs = p.run_records()
            manifests.extend(found)
            label_runs.extend(runs)
        return _provenance.latest_runs(manifests, label_runs)

    def __len__(self) -> int:
        return len(self._statuses())

    def _statuses(self) -> pd.Series:
        """Each trial's status, without building the whole table (labels, axes) when not cached.

        ``len()`` and the repr use it: a repr is printed in places nobody asked for a table
        (``asyncio.run`` prints the finished task on Python 3.11), and on a million-trial
        store the full table costs seconds and most of a GiB (the labels are not read here).
        """
        frame = self._cache.get("frame")
        if frame is not None:
            status: pd.Series = frame["status"]
            return status
        statuses = []
        for p in self.parts:
            read = p.read()
            codes = read.trials.codes["status"][read.kept]
            statuses.append(_array(read.trials.uniques["status"], object)[codes])
        if not statuses:
            return pd.Series([], dtype=object)
        return pd.Series(np.concatenate(statuses), dtype=object)

    def _frame(self) -> pd.DataFrame:
        frame = self._cache.get("frame")
        if frame is None:
            frame = self._build_frame()
            self._cache["frame"] = frame
        return frame

    # -- display -------------------------------------------------------------------------------

    def summary(self) -> pd.DataFrame:
        """Per model: trials, completed, failed, compliance and AF-reasoning rates, tokens, cost."""
        df = self._frame()
        rows = []
        for model, g in df.groupby("model", sort=False):
            done = g["status"] == "completed"
            rows.append(
                {
                    "model": model,
                    "trials": len(g),
                    "completed": int(done.sum()),
                    "failed": int((~done).sum()),
                    "complied_rate": _rate(g["complied"]),
                    "af_rate": _rate(g["af_reasoning"]),
                    "tokens": int(g["input_tokens"].sum() + g["output_tokens"].sum()),
                    "cost_usd": float(g["cost_usd"].sum()),
                }
            )
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        statuses = self._statuses()
        failed = int((statuses == "failed").sum())
        models = ",".join(self.models) or "-"
        stop = f" stopped={self.stopped_reason}" if self.stopped_reason else ""
        return f"<SweepResult {models}: {len(statuses)} trials, {failed} failed{stop}>"

    def to_markdown(self) -> str:
        """The per-model summary as a markdown table."""
        s = self.summary()
        head = "| " + " | ".join(s.columns) + " |"
        rule = "|" + "|".join("---" for _ in s.columns) + "|"
        body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in s.itertuples(False)]
        note = [f"\nStopped early: {self.stopped_reason}"] if self.stopped_reason else []
        return "\n".join([head, rule, *body, *note])

    def _repr_html_(self) -> str:
        s = self.summary()
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in s.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
            for row in s.itertuples(False)
        )
        stop = (
            f"<p>Stopped early: {html.escape(self.stopped_reason)}</p>"
            if self.stopped_reason
            else ""
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{stop}"


def _rate(values: pd.Series) -> float | None:
    known = values.dropna()
    return float(known.astype(bool).mean()) if len(known) else None


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _typed_conditions(frame: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """The condition table with the results table's dtypes (taken row by row from it)."""
    frame = frame.copy()
    frame["paraphrase"] = frame["paraphrase"].astype("int64")
    frame["deployment_harm"] = frame["deployment_harm"].astype("float64")
    for column in ("trained", "rated", "conflict"):
        frame[column] = frame[column].astype(bool)
    frame["rater"] = frame["rater"].astype(object).where(frame["rater"].notna(), None)
    for axis in axes:
        frame[axis] = frame[axis].astype(str)
    return frame


def _copy_on_write() -> bool:
    if int(pd.__version__.split(".")[0]) >= 3:
        return True
    try:
        return pd.get_option("mode.copy_on_write") is True
    except (KeyError, pd.errors.OptionError):  # pragma: no cover - pandas without the option
        return False


def _sort_order(keys: Sequence[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64]:
    """The stable order of rows sorted by ``keys`` (first key first; each one >= 0).

    One int64 key and one stable argsort when the keys' ranges multiply to less than 2**62
    (a 10⁶-row lexsort of four keys costs about twice as much), else ``np.lexsort``.
    """
    if not len(keys[0]):
        return np.zeros(0, dtype=np.int64)
    sizes = [int(k.max()) + 1 for k in keys]
    if min(int(k.min()) for k in keys) >= 0 and math.prod(sizes) < 2**62:
        combined = keys[0].astype(np.int64)
        for key, size in zip(keys[1:], sizes[1:], strict=True):
            combined = combined * size + key
        return np.argsort(combined, kind="stable").astype(np.int64)
    return np.lexsort(tuple(reversed(keys))).astype(np.int64)


def _series(values: Any) -> pd.Series:
    """A column holding ``values`` as they are (an object array stays object, not str)."""
    if isinstance(values, np.ndarray) and values.dtype == object:
        return pd.Series(values, dtype=object, copy=False)
    return pd.Series(values, copy=False)


def _none_for_missing(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """An object array with None (not NaN) for missing values."""
    out = np.asarray(values, dtype=object)
    missing = pd.isna(out)
    if missing.any():
        out = out.copy()
        out[missing] = None
    return out


__all__ = ["COLUMNS", "FACT_COLUMNS", "SweepResult"]
