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

import html
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from afperturb.classify import _provenance
from afperturb.errors import DesignError, unknown_choice
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
_TRIAL_COLUMNS = [
    "model",
    "condition_id",
    "request_id",
    "sample",
    "status",
    "error",
    "input_tokens",
    "output_tokens",
    "latency_s",
    "cost_usd",
    "cached",
    "key",
]
_LABEL_COLUMNS = list(_provenance.INPUT_COLUMNS)


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

    def trial_frame(self) -> pd.DataFrame:
        if self.store is not None:
            chunks = self.store.trial_table_chunks(model=self.model, run=self.run)
            df = _frame_from_chunks(chunks, _TRIAL_COLUMNS, _SHARED_TRIAL_COLUMNS)
        else:
            data = [
                (
                    t.model,
                    t.condition_id,
                    t.request_id,
                    t.sample,
                    t.status,
                    t.error,
                    t.input_tokens,
                    t.output_tokens,
                    sum(c.latency_s for c in t.completions),
                    t.cost_usd,
                    r.cached,
                    t.key,
                )
                for r in self.rows
                for t in (r.trial,)
            ]
            df = pd.DataFrame.from_records(data, columns=_TRIAL_COLUMNS)
        mask = df["condition_id"].isin(self._keep_conditions())
        if self.request_ids is not None:
            mask &= df["request_id"].isin(self.request_ids)
        if self.samples is not None:
            mask &= df["sample"] < self.samples
        return df.loc[mask]

    def label_frame(self) -> pd.DataFrame:
        if self.store is not None:
            chunks = self.store.label_table_chunks(model=self.model)
            return _frame_from_chunks(chunks, _LABEL_COLUMNS, _SHARED_LABEL_COLUMNS)
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
        return pd.DataFrame.from_records(data, columns=_LABEL_COLUMNS)

    def run_records(self) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
        """The run manifests and label-run records that say which config ran last."""
        if self.store is None:
            return [self.manifest], []
        return list(self.store.manifests()), [self.store.label_runs()]

    def trials(self) -> Iterator[Trial]:
        keep = self._keep_conditions()
        source: Iterable[Trial]
        if self.store is not None:
            source = self.store.trials(model=self.model, run=self.run)
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


#: Columns whose values repeat across trials (a label's trial key repeats once per
#: classifier). SQLite returns a new string object for every cell; read as categories chunk by
#: chunk, a million rows share a few thousand strings instead (about 0.45 GiB less at 1e6).
_SHARED_TRIAL_COLUMNS = ("model", "condition_id", "request_id", "status", "error")
_SHARED_LABEL_COLUMNS = ("trial_key", "classifier", "value", "config_hash")


def _frame_from_chunks(
    chunks: Iterable[list[Any]], columns: list[str], shared: Sequence[str]
) -> pd.DataFrame:
    """A table read in chunks, with the ``shared`` columns' equal strings made one object.

    The result has the dtypes ``DataFrame.from_records`` would give the whole table.
    """
    frames = []
    dtypes: dict[str, Any] = {}
    for rows in chunks:
        part = pd.DataFrame.from_records(rows, columns=columns)
        for column in shared:
            dtypes.setdefault(column, part[column].dtype)
            part[column] = part[column].astype("category")
        frames.append(part)
    if not frames:
        return pd.DataFrame.from_records([], columns=columns)
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    for column in shared:
        df[column] = df[column].astype(dtypes[column])
    return df


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
    ) -> SweepResult:
        """A lazy view of one model's trials in a store, optionally scoped to one design."""
        conds = {c.id: c for c in conditions} if conditions is not None else store.conditions()
        info = dict(run_info or {})
        run_id = info.get("run_id", run)
        found = [m for m in store.manifests(model) if run_id is None or m["run_id"] == run_id]
        part = _Part(
            model=model,
            conditions=conds,
            store=store,
            request_ids=frozenset(request_ids) if request_ids is not None else None,
            samples=samples,
            run=run,
            manifest=found[-1] if found else {},
        )
        return cls((part,), stopped_reason, info)

    @classmethod
    def load(
        cls, store: Store | str | Path, model: str | None = None, run: str | None = None
    ) -> SweepResult:
        """Every trial in a store (or one model's, or one run's), read lazily."""
        from afperturb.store import Store as _Store

        db = _Store.open(store) if isinstance(store, str | Path) else store
        models = sorted({m["model"] for m in db.manifests()} | set(db.models()))
        if model is not None:
            if model not in models:
                raise unknown_choice("model", model, models)
            models = [model]
        conds = db.conditions()
        parts = [cls.from_store(db, model=m, run=run).parts[0] for m in models]
        parts = [replace(p, conditions=conds) for p in parts]
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
        labels = self._label_table()
        labels = labels[labels["trial_key"].isin(self._trial_keys())]
        return _provenance.configs(labels, self._latest(), dict(self.preferred))

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
        keys = {k for p in self.parts for k in p.trial_frame()["key"]}
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
        return cached.copy()

    def _build_frame(self) -> pd.DataFrame:
        trials = [p.trial_frame() for p in self.parts]
        df = pd.concat(trials, ignore_index=True) if trials else _empty(_TRIAL_COLUMNS)
        keys = pd.Index(df["key"].unique())
        # resolve() drops the labels of other trials itself (one hash lookup per label).
        resolved = _provenance.resolve(
            self._label_table(), keys, self._latest(), dict(self.preferred)
        )
        if len(keys) == len(df):
            at = keys.get_indexer(df["key"])
            in_order = bool((at == np.arange(len(df))).all())
        else:
            at, in_order = keys.get_indexer(df["key"]), False
        for column, values in resolved.items():
            df[column] = values if in_order else values[at]
        cond_frame, axes = _condition_frame(self.conditions)
        df = df.merge(cond_frame, on="condition_id", how="left")
        df = df.sort_values(["model", "condition_id", "request_id", "sample"], kind="stable")
        df = df[[*HEAD_COLUMNS, *axes, *TAIL_COLUMNS]].reset_index(drop=True)
        return _typed(df, axes)

    def _trial_keys(self) -> pd.Index:
        trials = [p.trial_frame()["key"] for p in self.parts]
        return pd.Index(pd.concat(trials, ignore_index=True).unique() if trials else [])

    def _label_table(self) -> pd.DataFrame:
        labels = [p.label_frame() for p in self.parts]
        return pd.concat(labels, ignore_index=True) if labels else _empty(_LABEL_COLUMNS)

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
        store the full table costs about 2 GiB.
        """
        frame = self._cache.get("frame")
        if frame is not None:
            status: pd.Series = frame["status"]
            return status
        parts = [p.trial_frame()["status"] for p in self.parts]
        return pd.concat(parts, ignore_index=True) if parts else pd.Series([], dtype=object)

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


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame.from_records([], columns=columns)


def _rate(values: pd.Series) -> float | None:
    known = values.dropna()
    return float(known.astype(bool).mean()) if len(known) else None


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _typed(df: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    df["sample"] = df["sample"].astype("int64")
    for column in ("input_tokens", "output_tokens", "paraphrase"):
        df[column] = df[column].astype("int64")
    for column in ("latency_s", "cost_usd", "deployment_harm"):
        df[column] = df[column].astype("float64")
    for column in ("trained", "rated", "conflict", "cached"):
        df[column] = df[column].astype(bool)
    for column in ("complied", "af_reasoning"):
        df[column] = df[column].astype("boolean")
    df["rater"] = df["rater"].astype(object).where(df["rater"].notna(), None)
    for column in ("label", *(c for cs in _provenance.COMPANIONS.values() for c in cs)):
        df[column] = df[column].astype(object).where(df[column].notna(), None)
    df["error"] = df["error"].astype(object).where(df["error"].notna(), None)
    for axis in axes:
        df[axis] = df[axis].astype(str)
    return df


__all__ = ["COLUMNS", "FACT_COLUMNS", "SweepResult"]
