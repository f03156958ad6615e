"""Which stored label a results-table cell shows, and which classifier and config produced it.

A trial may carry labels from several classifiers (tags, heuristics, judges) and from several
configs of one classifier (a judge re-run with a new prompt, a heuristic of a newer version).
:func:`resolve` picks, per trial and per label column, one label by a fixed preference order,
and says where the value came from. Nothing here depends on row order or insertion time.

**Preference order** (first that gives a verdict wins):

=================  ==========================================================================
column             order
=================  ==========================================================================
``label``          ``tags`` (its value: ``accepted``, ``rejected`` or a format failure)
``complied``       judges that set ``complied`` → ``tags`` → heuristics (``heuristic_*``)
``af_reasoning``   judges that set ``af_reasoning`` → heuristics
=================  ==========================================================================

A classifier whose name starts with ``heuristic`` is a heuristic; ``tags`` is the tag parser;
any other classifier is a judge. Several judges for one column are tried in name order.

**Several configs of one classifier** (different ``config_hash``): tried in this order —

1. the config named by ``prefer`` (``{classifier: config hash or a unique prefix of it}``);
2. the config of that classifier's most recent labelling run: the newest of the run manifests
   (a sweep's inline classifiers, ``manifest["classifiers"]``, at its ``created`` time) and the
   store's label-run records (every :meth:`~afperturb.store.Store.put_labels` call, i.e. each
   ``classify`` run, records the configs it wrote);
3. the config that labelled the most of these trials, then the smallest hash.

**Failures**: a label with value ``error`` (a judge that failed on the trial) is never a
verdict, and once a failure is met, no *heuristic* may stand in for it: the cell stays None and
``<column>_error`` says which judge failed and why. The tags may still stand for ``complied``
after a failed compliance judge (they are the model's own declared accept/reject, not a
guess), as may another judge or another config of the judge; ``complied_error`` still names
the failure. A label without a verdict that is not a failure (``nothing_to_read``, a tag format
failure, ``no_scratchpad``) lets the next classifier in the order decide.

**Source**: ``<column>_source`` is ``"<classifier>:<first 8 hex digits of its config hash>"``
(the bare name for a classifier without a hash) of the label the cell shows: the verdict's;
without a verdict, the failed judge's; without either, the first classifier in the order that
labelled the trial; None when nothing labelled it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from afperturb.errors import ClassifierError

#: The label-valued columns of the results table.
LABEL_COLUMNS: Final = ("label", "complied", "af_reasoning")
#: Companion columns, in the table's order after each label column.
COMPANIONS: Final = {
    "label": ("label_source",),
    "complied": ("complied_source", "complied_error"),
    "af_reasoning": ("af_reasoning_source", "af_reasoning_error"),
}
#: Per column, the tier of each kind of classifier (lower first; absent: never used).
TIERS: Final[dict[str, dict[str, int]]] = {
    "label": {"tags": 0},
    "complied": {"judge": 0, "tags": 1, "heuristic": 2},
    "af_reasoning": {"judge": 0, "heuristic": 1},
}
#: Columns of the label table :func:`resolve` reads (``failure``: the label's JSON for a
#: failed label, else None).
INPUT_COLUMNS: Final = (
    "trial_key",
    "classifier",
    "value",
    "complied",
    "af_reasoning",
    "config_hash",
    "failure",
)
FAILED: Final = "error"
TAGS: Final = "tags"
#: The column each built-in judge sets (its declaration's ``sets``), for failures written
#: before a failed label named its column and with no other config of the judge to tell.
BUILTIN_SETS: Final = {"strongreject": "complied", "af_reasoning": "af_reasoning"}


def kind(classifier: str) -> str:
    """``tags``, ``heuristic`` or ``judge``, by the classifier's name."""
    if classifier == TAGS:
        return "tags"
    return "heuristic" if classifier.startswith("heuristic") else "judge"


def source(classifier: str, config_hash: str) -> str:
    """The provenance string of one classifier config, e.g. ``strongreject:3f9a1c2b``."""
    return f"{classifier}:{config_hash[:8]}" if config_hash else classifier


def latest_runs(
    manifests: Iterable[Mapping[str, Any]], label_runs: Iterable[Mapping[str, Mapping[str, str]]]
) -> dict[str, str]:
    """Per classifier, the config hash of its most recent labelling run.

    ``manifests`` are sweep manifests (``created``, ``classifiers``); ``label_runs`` the stores'
    records (:meth:`~afperturb.store.Store.label_runs`). Times are compared as datetimes; an
    unreadable time counts as the oldest.
    """
    best: dict[str, tuple[datetime, str]] = {}

    def offer(classifier: str, config_hash: str, created: object) -> None:
        when = _when(created)
        seen = best.get(classifier)
        if seen is None or (when, config_hash) > seen:
            best[classifier] = (when, config_hash)

    for m in manifests:
        for classifier, config_hash in dict(m.get("classifiers") or {}).items():
            offer(str(classifier), str(config_hash), m.get("created"))
    for runs in label_runs:
        for classifier, record in runs.items():
            offer(classifier, str(record.get("config_hash", "")), record.get("created"))
    return {classifier: config_hash for classifier, (_, config_hash) in best.items()}


def _when(created: object) -> datetime:
    try:
        when = datetime.fromisoformat(str(created))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class LabelColumns:
    """A label table as columns: what :func:`resolve_columns` reads.

    The results table builds this straight from the store's rows (no DataFrame, each
    repeated string once); :func:`resolve` builds it from a DataFrame of
    :data:`INPUT_COLUMNS`. The low-cardinality columns are codes into lists of distinct values
    (in any order, one entry per value).
    """

    #: Per label, the position of its trial among the keys it is resolved for (-1: another
    #: trial's label, ignored).
    trial: npt.NDArray[np.int64]
    classifier: npt.NDArray[np.int64]
    classifiers: list[str]
    config: npt.NDArray[np.int64]
    configs: list[str]
    value: npt.NDArray[np.int64]
    values: list[Any]
    #: -1 (no verdict) / 0 / 1.
    complied: npt.NDArray[np.int8]
    af_reasoning: npt.NDArray[np.int8]
    #: The label's JSON where its value is ``error`` (else None).
    failure: npt.NDArray[np.object_]

    def __len__(self) -> int:
        return len(self.trial)

    def take(self, rows: npt.NDArray[np.int64]) -> LabelColumns:
        """These labels' ``rows``, in that order (the code lists are kept)."""
        return LabelColumns(
            self.trial[rows],
            self.classifier[rows],
            self.classifiers,
            self.config[rows],
            self.configs,
            self.value[rows],
            self.values,
            self.complied[rows],
            self.af_reasoning[rows],
            self.failure[rows],
        )

    def failed(self) -> npt.NDArray[np.bool_]:
        """Per label, whether its value is ``error`` (a judge that failed)."""
        by_value = np.array([_is_failed(v) for v in self.values], dtype=bool)
        return by_value[self.value] if len(by_value) else np.zeros(len(self), dtype=bool)

    @classmethod
    def from_frame(cls, labels: pd.DataFrame, keys: pd.Index | None = None) -> LabelColumns:
        """From a DataFrame of :data:`INPUT_COLUMNS`; ``trial`` located in ``keys`` (else 0)."""
        if keys is None:
            trial = np.zeros(len(labels), dtype=np.int64)
        else:
            trial = keys.get_indexer(pd.Index(labels["trial_key"])).astype(np.int64)
        clf_codes, clf_names = pd.factorize(labels["classifier"])
        hashes = labels["config_hash"].fillna("").astype(str)
        cfg_codes, cfg_names = pd.factorize(hashes)
        val_codes, val_names = pd.factorize(labels["value"], use_na_sentinel=False)
        return cls(
            trial,
            clf_codes.astype(np.int64),
            [str(x) for x in clf_names],
            cfg_codes.astype(np.int64),
            [str(x) for x in cfg_names],
            val_codes.astype(np.int64),
            list(val_names),
            _flags(labels["complied"]),
            _flags(labels["af_reasoning"]),
            labels["failure"].to_numpy(dtype=object),
        )

    @classmethod
    def concat(cls, parts: list[LabelColumns]) -> LabelColumns:
        """The parts' labels one after another, with their code lists merged."""
        if len(parts) == 1:
            return parts[0]
        classifier, classifiers = merge_codes([(p.classifier, p.classifiers) for p in parts])
        config, configs = merge_codes([(p.config, p.configs) for p in parts])
        value, values = merge_codes([(p.value, p.values) for p in parts])

        def cat(name: str, dtype: Any) -> Any:
            arrays = [getattr(p, name) for p in parts]
            return np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)

        return cls(
            cat("trial", np.int64),
            classifier,
            classifiers,
            config,
            configs,
            value,
            values,
            cat("complied", np.int8),
            cat("af_reasoning", np.int8),
            cat("failure", object),
        )


def _is_failed(value: Any) -> bool:
    return isinstance(value, str) and value == FAILED


def merge_codes(
    parts: list[tuple[npt.NDArray[np.int64], list[Any]]],
) -> tuple[npt.NDArray[np.int64], list[Any]]:
    """Codes into one list of distinct values, from codes into each part's own list."""
    index: dict[Any, int] = {}
    out = []
    for codes, uniques in parts:
        remap = np.array([index.setdefault(u, len(index)) for u in uniques], dtype=np.int64)
        out.append(remap[codes] if len(remap) else codes.astype(np.int64))
    merged = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
    return merged, list(index)


@dataclass(frozen=True)
class _Pairs:
    """The (classifier, config) pairs of a label table, with what each one says."""

    codes: npt.NDArray[np.intp]  # per label row, its pair
    names: list[str]
    hashes: list[str]
    rows: npt.NDArray[np.int64]  # label rows grouped by pair (see ``starts``)
    starts: npt.NDArray[np.int64]
    coverage: npt.NDArray[np.int64]
    sets: dict[str, npt.NDArray[np.bool_]]  # column -> pair sets it

    def order(self, column: str, ranks: Mapping[int, int]) -> list[int]:
        """The pairs that can fill ``column``, in preference order."""
        tiers = TIERS[column]
        found = [
            p
            for p in range(len(self.names))
            if kind(self.names[p]) in tiers and self.sets[column][p]
        ]
        return sorted(found, key=lambda p: (tiers[kind(self.names[p])], self.names[p], ranks[p]))

    def members(self, pair: int) -> npt.NDArray[np.int64]:
        return self.rows[self.starts[pair] : self.starts[pair + 1]]


def _unique_codes(
    codes: npt.NDArray[np.int64], names: list[str]
) -> tuple[npt.NDArray[np.int64], list[str]]:
    """``codes`` into ``names`` made codes into a list without repeats."""
    index: dict[str, int] = {}
    remap = np.array([index.setdefault(n, len(index)) for n in names], dtype=np.int64)
    return (remap[codes] if len(remap) else codes), list(index)


def _pairs(labels: LabelColumns, verdicts: Mapping[str, npt.NDArray[np.bool_]]) -> _Pairs:
    """The pairs, numbered in (classifier, config hash) order."""
    clf_codes, clf_list = _unique_codes(labels.classifier, labels.classifiers)
    cfg_codes, cfg_list = _unique_codes(labels.config, labels.configs)
    width = max(1, len(cfg_list))
    combined = clf_codes * width + cfg_codes
    present = np.unique(combined)
    named = [(clf_list[int(u) // width], cfg_list[int(u) % width]) for u in present]
    order = sorted(range(len(present)), key=named.__getitem__)
    lookup = np.full(len(clf_list) * width, -1, dtype=np.int64)
    lookup[present[order]] = np.arange(len(order), dtype=np.int64)
    codes = lookup[combined]
    n_pairs = len(order)
    names = [named[i][0] for i in order]
    pair_hashes = [named[i][1] for i in order]
    rows = np.argsort(codes, kind="stable").astype(np.int64)
    coverage = np.bincount(codes, minlength=n_pairs).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(coverage)]).astype(np.int64)
    sets = {
        column: np.bincount(codes, weights=verdicts[column], minlength=n_pairs) > 0
        for column in LABEL_COLUMNS
    }
    return _Pairs(codes, names, pair_hashes, rows, starts, coverage, sets)


def _failures(
    failure: npt.NDArray[np.object_], failed: npt.NDArray[np.bool_]
) -> dict[int, tuple[str, str]]:
    """Per failed label row: (error message, column its judge sets or "")."""
    out: dict[int, tuple[str, str]] = {}
    raw = failure
    for i in np.flatnonzero(failed):
        details: Mapping[str, Any] = {}
        try:
            parsed = json.loads(raw[i]) if isinstance(raw[i], str) else {}
            details = parsed.get("details") or {}
        except (ValueError, AttributeError):
            details = {}
        error = str(details.get("error") or "no reason recorded")
        out[int(i)] = (error, str(details.get("sets") or ""))
    return out


def _config_ranks(
    pairs: _Pairs, latest: Mapping[str, str], prefer: Mapping[str, str]
) -> dict[int, int]:
    """Each pair's rank among the configs of its classifier (0 first)."""
    by_name: dict[str, list[int]] = {}
    for p, name in enumerate(pairs.names):
        by_name.setdefault(name, []).append(p)
    chosen = _preferred(by_name, pairs.hashes, prefer)
    ranks: dict[int, int] = {}
    for name, members in by_name.items():
        coverage = {pairs.hashes[p]: int(pairs.coverage[p]) for p in members}
        order = config_order(coverage, chosen.get(name), latest.get(name))
        position = {h: r for r, h in enumerate(order)}
        ordered = sorted(members, key=lambda p: position[pairs.hashes[p]])
        ranks.update({p: r for r, p in enumerate(ordered)})
    return ranks


def config_order(coverage: Mapping[str, int], chosen: str | None, latest: str | None) -> list[str]:
    """One classifier's configs in the order a cell tries them (module docstring).

    The ``prefer``-chosen config, then the latest run's, then the one that labelled most
    trials (``coverage``: config → trials), then the smallest hash.
    """
    return sorted(coverage, key=lambda h: (h != chosen, h != latest, -coverage[h], h))


def preferred_config(name: str, configs: Iterable[str], wanted: str) -> str:
    """The one config of ``name`` that ``wanted`` (a hash or unique prefix) names."""
    known = sorted(set(configs))
    match = [h for h in known if h.startswith(wanted)]
    if len(match) != 1:
        what = "matches no" if not match else "matches more than one"
        raise ClassifierError(
            f"prefer[{name!r}] = {wanted!r} {what} config of {name!r}; "
            f"its configs: {', '.join(known)}"
        )
    return match[0]


def _preferred(
    by_name: Mapping[str, list[int]], hashes: list[str], prefer: Mapping[str, str]
) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for name, wanted in prefer.items():
        if name not in by_name:
            raise ClassifierError(
                f"prefer names classifier {name!r}, which labelled none of these trials; "
                f"labelled by: {', '.join(sorted(by_name)) or 'nothing'}"
            )
        chosen[name] = preferred_config(name, (hashes[p] for p in by_name[name]), wanted)
    return chosen


def _flags(column: pd.Series) -> npt.NDArray[np.int8]:
    """-1 / 0 / 1 from a nullable boolean, integer or object label column."""
    values = column.to_numpy(dtype=float, na_value=np.nan)
    out = np.full(len(values), -1, dtype=np.int8)
    known = ~np.isnan(values)
    out[known] = values[known] != 0
    return out


def resolve(
    labels: pd.DataFrame,
    keys: pd.Index,
    latest: Mapping[str, str] | None = None,
    prefer: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The label columns and their companions for the trials ``keys`` (a unique index).

    Args:
        labels: The label table (:data:`INPUT_COLUMNS`); rows of other trials are ignored.
        keys: Trial keys; every returned array is aligned with them.
        latest: Per classifier, the config of its most recent run (:func:`latest_runs`).
        prefer: Per classifier, the config hash (or a unique prefix) to prefer.

    Returns:
        ``label``, ``complied``, ``af_reasoning`` and :data:`COMPANIONS` as arrays (object,
        or ``pd.arrays.BooleanArray`` for the two booleans).

    Raises:
        ClassifierError: when ``prefer`` names a classifier or config that is not there.
    """
    return resolve_columns(LabelColumns.from_frame(labels, keys), len(keys), latest, prefer)


def resolve_columns(
    labels: LabelColumns,
    n: int,
    latest: Mapping[str, str] | None = None,
    prefer: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """:func:`resolve` on a :class:`LabelColumns` whose ``trial`` are positions in ``range(n)``.

    Labels with ``trial`` -1 (other trials') are ignored, as in :func:`resolve`.
    """
    if (labels.trial < 0).any():
        labels = labels.take(np.flatnonzero(labels.trial >= 0))
    pos = labels.trial
    failed = labels.failed()
    flags = {"complied": labels.complied, "af_reasoning": labels.af_reasoning}
    verdicts = {
        "label": np.ones(len(labels), dtype=bool),
        "complied": flags["complied"] >= 0,
        "af_reasoning": flags["af_reasoning"] >= 0,
    }
    out: dict[str, Any] = {}
    if len(labels) == 0:
        for column in LABEL_COLUMNS:
            out.update(_empty_column(column, n))
        if prefer:
            _preferred({}, [], prefer)
        return out
    pairs = _pairs(labels, verdicts)
    failures = _failures(labels.failure, failed)
    _mark_failed_sets(pairs, failures)
    ranks = _config_ranks(pairs, latest or {}, prefer or {})
    named = [source(name, h) for name, h in zip(pairs.names, pairs.hashes, strict=True)]
    sources = np.array([*named, None], dtype=object)
    values = np.empty(len(labels.values), dtype=object)
    values[:] = labels.values
    for column in LABEL_COLUMNS:
        win = np.full(n, -1, dtype=np.int64)  # label row of the verdict
        win_pair = np.full(n, -1, dtype=np.int64)
        fail_row = np.full(n, -1, dtype=np.int64)
        fail_pair = np.full(n, -1, dtype=np.int64)
        seen_pair = np.full(n, -1, dtype=np.int64)
        verdict = verdicts[column]
        for p in pairs.order(column, ranks):
            rows = pairs.members(p)
            t = pos[rows]
            open_ = win[t] < 0
            fresh = open_ & (seen_pair[t] < 0)
            seen_pair[t[fresh]] = p
            ok = open_ & verdict[rows]
            if kind(pairs.names[p]) == "heuristic":
                ok &= fail_row[t] < 0  # nothing guesses in a failed judge's place
            win[t[ok]] = rows[ok]
            win_pair[t[ok]] = p
            bad = open_ & failed[rows] & (fail_row[t] < 0)
            fail_row[t[bad]] = rows[bad]
            fail_pair[t[bad]] = p
        shown = np.where(win_pair >= 0, win_pair, np.where(fail_pair >= 0, fail_pair, seen_pair))
        out[f"{column}_source"] = sources[shown]  # -1 picks the trailing None
        if column == "label":
            label = values[labels.value[win]]  # -1 reads the last row, blanked next
            label[win < 0] = None
            out["label"] = label
            continue
        flag = np.where(win >= 0, flags[column][win], -1)
        out[column] = pd.arrays.BooleanArray(flag == 1, flag < 0)
        errors = np.full(n, None, dtype=object)
        for i in np.flatnonzero(fail_row >= 0):
            message, _ = failures[int(fail_row[i])]
            errors[i] = f"{sources[int(fail_pair[i])]} failed: {message}"
        out[f"{column}_error"] = errors
    return out


def _mark_failed_sets(pairs: _Pairs, failures: Mapping[int, tuple[str, str]]) -> None:
    """Mark the columns that failed labels would have set.

    A pair whose failures name a column sets it; one with only unnamed failures (written
    before failures named it) takes the columns other configs of its classifier set, else a
    built-in judge's declared column (:data:`BUILTIN_SETS`); else it fills no column.
    """
    unnamed: set[int] = set()
    for row, (_, column) in failures.items():
        p = int(pairs.codes[row])
        if column in pairs.sets:
            pairs.sets[column][p] = True
        else:
            unnamed.add(p)
    for p in unnamed:
        if any(pairs.sets[c][p] for c in ("complied", "af_reasoning")):
            continue
        siblings = [q for q, name in enumerate(pairs.names) if name == pairs.names[p] and q != p]
        for column in ("complied", "af_reasoning"):
            if any(pairs.sets[column][q] for q in siblings):
                pairs.sets[column][p] = True
        builtin = BUILTIN_SETS.get(pairs.names[p])
        if builtin is not None and not any(pairs.sets[c][p] for c in ("complied", "af_reasoning")):
            pairs.sets[builtin][p] = True


def _empty_column(column: str, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {f"{column}_source": np.full(n, None, dtype=object)}
    if column == "label":
        out["label"] = np.full(n, None, dtype=object)
    else:
        out[column] = pd.arrays.BooleanArray(np.zeros(n, dtype=bool), np.ones(n, dtype=bool))
        out[f"{column}_error"] = np.full(n, None, dtype=object)
    return out


_CONFIG_COLUMNS: Final = (
    "classifier",
    "config_hash",
    "source",
    "kind",
    "labels",
    "failed",
    "sets",
    "latest_run",
    "rank",
)


def configs(
    labels: pd.DataFrame,
    latest: Mapping[str, str] | None = None,
    prefer: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One row per (classifier, config) in ``labels``: what it is and where it ranks.

    Columns: ``classifier``, ``config_hash``, ``source``, ``kind``, ``labels`` (rows),
    ``failed``, ``sets`` (the label columns it can fill, comma-separated), ``latest_run``
    (whether it is its classifier's most recent run), ``rank`` (0: tried first among its
    classifier's configs).
    """
    if labels.empty:
        if prefer:
            _preferred({}, [], prefer)
        return pd.DataFrame(columns=list(_CONFIG_COLUMNS))
    return configs_columns(LabelColumns.from_frame(labels.reset_index(drop=True)), latest, prefer)


def configs_columns(
    labels: LabelColumns,
    latest: Mapping[str, str] | None = None,
    prefer: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """:func:`configs` on a :class:`LabelColumns` (every row counts; ``trial`` is not read)."""
    if len(labels) == 0:
        if prefer:
            _preferred({}, [], prefer)
        return pd.DataFrame(columns=list(_CONFIG_COLUMNS))
    failed = labels.failed()
    verdicts = {
        "label": np.ones(len(labels), dtype=bool),
        "complied": labels.complied >= 0,
        "af_reasoning": labels.af_reasoning >= 0,
    }
    pairs = _pairs(labels, verdicts)
    _mark_failed_sets(pairs, _failures(labels.failure, failed))
    latest = latest or {}
    ranks = _config_ranks(pairs, latest, prefer or {})
    n_failed = np.bincount(pairs.codes, weights=failed, minlength=len(pairs.names))
    rows = []
    for p, (name, h) in enumerate(zip(pairs.names, pairs.hashes, strict=True)):
        fills = [c for c in LABEL_COLUMNS if kind(name) in TIERS[c] and pairs.sets[c][p]]
        rows.append(
            (
                name,
                h,
                source(name, h),
                kind(name),
                int(pairs.coverage[p]),
                int(n_failed[p]),
                ",".join(fills),
                latest.get(name) == h,
                ranks[p],
            )
        )
    frame = pd.DataFrame(rows, columns=list(_CONFIG_COLUMNS))
    return frame.sort_values(["classifier", "rank"], kind="stable").reset_index(drop=True)


__all__ = [
    "BUILTIN_SETS",
    "COMPANIONS",
    "INPUT_COLUMNS",
    "LABEL_COLUMNS",
    "TIERS",
    "LabelColumns",
    "configs",
    "configs_columns",
    "kind",
    "latest_runs",
    "merge_codes",
    "resolve",
    "resolve_columns",
    "source",
]
